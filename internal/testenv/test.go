package testenv

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/wait"
)

// The test campaign: a campaign address and a from address on
// campaign.test, and two recipients on two domains so that MX delivery
// finds two mail hosts.
const (
	CampaignAddr = "libertad@campaign.test"
	CampaignFrom = "relay@campaign.test"
	Familias     = "familias@ofapp.test"
	Copias       = "copias@sr.test"
)

// Body is the text of the letters Test.Signed makes.
const Body = "Free the political prisoners of the October 2019 revolt."

// UseCampaign points cfg at the test campaign, with a DNS timeout short
// enough for tests of lookups that never get an answer.
func UseCampaign(cfg *config.Config) {
	cfg.Campaign.Addresses = []string{CampaignAddr}
	cfg.Campaign.Recipients = []string{Familias, Copias}
	cfg.Campaign.From = CampaignFrom
	cfg.SMTP.Hostname = "mx.campaign.test"
	cfg.SMTP.Timeout = config.Duration{Duration: 10 * time.Second}
	cfg.Verify.DNSTimeout = config.Duration{Duration: 500 * time.Millisecond}
}

// SigningDomains are the supporters' signing domains of the tests: RSA and
// ed25519 keys, Gmail (whose addresses fold dots), and a signer that is a
// subdomain of its From domain (mail.example.org for example.org).
func SigningDomains() []Domain {
	return []Domain{{"rsa.test", "rsa"}, {"ed.test", "ed25519"}, {"gmail.com", "ed25519"}, {"mail.example.org", "ed25519"}}
}

// TB is the part of *testing.T and *testing.B that Test uses.
type TB interface {
	wait.TB
	Errorf(format string, args ...any)
	Log(args ...any)
	Cleanup(func())
	TempDir() string
}

// Test is an Env bound to a test: its methods fail the test instead of
// returning errors, and the test's end closes it.
type Test struct {
	*Env
	t TB
}

// WaitFor polls cond until it holds, failing the test when timeout passes.
func WaitFor(t TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	wait.For(t, what, timeout, cond)
}

// Prepare makes an environment for the test campaign and its signing
// domains, with mutate applied to the config; the daemon is not started.
func Prepare(t TB, mutate func(*config.Config)) *Test {
	t.Helper()
	return PrepareWith(t, Options{Domains: SigningDomains(), Configure: func(c *config.Config) {
		UseCampaign(c)
		if mutate != nil {
			mutate(c)
		}
	}})
}

// Start is Prepare, then Start.
func Start(t TB, mutate func(*config.Config)) *Test {
	t.Helper()
	e := Prepare(t, mutate)
	e.Start()
	return e
}

// PrepareWith makes an environment from opt: Dir defaults to a temporary
// directory and Logger to the test's log.
func PrepareWith(t TB, opt Options) *Test {
	t.Helper()
	if opt.Dir == "" {
		opt.Dir = t.TempDir()
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	env, err := New(opt)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("closing the test environment: %v", err)
		}
	})
	return &Test{Env: env, t: t}
}

// logWriter writes the daemon's log lines to the test's log.
type logWriter struct{ t TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Start runs the daemon.
func (e *Test) Start() {
	e.t.Helper()
	if err := e.Env.Start(); err != nil {
		e.t.Fatalf("start the daemon: %v", err)
	}
}

// Stop shuts the daemon down; Env.Stop is for a test that looks at how
// the shutdown went.
func (e *Test) Stop() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := e.Env.Stop(ctx); err != nil {
		e.t.Errorf("stop the daemon: %v", err)
	}
}

// Restart stops the daemon and starts it again on the same store and
// addresses.
func (e *Test) Restart() {
	e.t.Helper()
	e.Stop()
	e.Start()
}

// Dial opens an SMTP session with the daemon and reads its greeting.
func (e *Test) Dial() *smtpclient.Conn {
	e.t.Helper()
	c, err := e.Env.Dial()
	if err != nil {
		e.t.Fatalf("dial the daemon: %v", err)
	}
	return c
}

// Send delivers msg in a session of its own and returns the reply to it.
func (e *Test) Send(msg []byte, rcpts ...string) smtpclient.Reply {
	e.t.Helper()
	r, err := e.Env.Send(msg, rcpts...)
	if err != nil {
		e.t.Fatalf("send a letter: %v (reply %v)", err, r)
	}
	return r
}

// Queued sends msg, requires a 250 with a letter ID and returns the ID.
func (e *Test) Queued(msg []byte, rcpts ...string) string {
	e.t.Helper()
	r := e.Send(msg, rcpts...)
	id := r.LetterID()
	if id == "" {
		e.t.Fatalf("reply %q, want 250 queued as ID", r.String())
	}
	return id
}

// Letter is an unsigned letter from from to the campaign address.
func (e *Test) Letter(from, subject, body string) []byte {
	return Letter(from, e.CampaignAddr(), subject, body)
}

// Signed is a letter from from, with Body as text, signed by domain's key.
func (e *Test) Signed(domain, from string) []byte {
	e.t.Helper()
	return e.SignedWith(domain, from, keyserver.SignOptions{})
}

// SignedWith is Signed with signing options.
func (e *Test) SignedWith(domain, from string, opt keyserver.SignOptions) []byte {
	e.t.Helper()
	return e.Sign(domain, e.Letter(from, "Libertad", Body), opt)
}

// Sign signs msg with domain's key.
func (e *Test) Sign(domain string, msg []byte, opt keyserver.SignOptions) []byte {
	e.t.Helper()
	out, err := e.DNS.Sign(domain, msg, opt)
	if err != nil {
		e.t.Fatalf("%v", err)
	}
	return out
}

// MailHosts has the daemon deliver to a receiving SMTP server per
// recipient, and per address of also, found by MX. Call it before Start.
func (e *Test) MailHosts(also ...string) *MailHosts {
	e.t.Helper()
	mh, err := e.Env.MailHosts(also...)
	if err != nil {
		e.t.Fatalf("%v", err)
	}
	return mh
}

// Smarthost has the daemon relay every copy through one receiving SMTP
// server. Call it before Start.
func (e *Test) Smarthost() *sinkserver.Server {
	e.t.Helper()
	s, err := e.Env.Smarthost(sinkserver.Options{})
	if err != nil {
		e.t.Fatalf("%v", err)
	}
	return s
}

// SignBatches has the daemon sign its batches as domain. Call it before
// Start.
func (e *Test) SignBatches(domain, selector string) {
	e.t.Helper()
	if err := e.Env.SignBatches(domain, selector); err != nil {
		e.t.Fatalf("%v", err)
	}
}

// Delivered lists the files in rcpt's Maildir.
func (e *Test) Delivered(rcpt string) []string {
	e.t.Helper()
	files, err := e.Env.Delivered(rcpt)
	if err != nil {
		e.t.Fatalf("maildir of %s: %v", rcpt, err)
	}
	return files
}
