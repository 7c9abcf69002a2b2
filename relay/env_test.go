package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/store"
)

const campaignAddr = "libertad@campaign.test"

// env is a running daemon on loopback with its own DNS server for DKIM keys.
type env struct {
	t    *testing.T
	cfg  *config.Config
	d    *relay.Daemon
	ks   *keyserver.Server
	keys map[string]*keyserver.Key // by domain
	addr string
	// opts are passed to relay.New; the logger is set by start.
	opts relay.Options
}

// testConfig is the embedded default pointed at loopback and a temp store.
func testConfig(t *testing.T, dnsAddr string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Campaign.Addresses = []string{campaignAddr}
	cfg.Campaign.Recipients = []string{"familias@ofapp.test", "copias@sr.test"}
	cfg.Campaign.From = "relay@campaign.test"
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.Hostname = "mx.campaign.test"
	cfg.SMTP.Timeout = config.Duration{Duration: 10 * time.Second}
	cfg.Verify.DNSResolver = dnsAddr
	cfg.Verify.DNSTimeout = config.Duration{Duration: 500 * time.Millisecond}
	cfg.Store.Dir = filepath.Join(t.TempDir(), "data")
	cfg.Admin.Listen = ""
	if p := cfg.Validate(); len(p) > 0 {
		t.Fatalf("test config invalid: %v", p)
	}
	return cfg
}

// newKeyServer starts a DNS server with an RSA and an ed25519 signing domain.
func newKeyServer(t *testing.T) (*keyserver.Server, map[string]*keyserver.Key) {
	t.Helper()
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("start DNS server: %v", err)
	}
	t.Cleanup(func() { ks.Close() })
	keys := map[string]*keyserver.Key{}
	for _, k := range []struct{ domain, algo string }{
		{"rsa.test", "rsa"}, {"ed.test", "ed25519"}, {"gmail.com", "ed25519"}, {"mail.example.org", "ed25519"},
	} {
		key, err := keyserver.NewKey(k.domain, "sel", k.algo)
		if err != nil {
			t.Fatalf("key for %s: %v", k.domain, err)
		}
		ks.SetKey(key)
		keys[k.domain] = key
	}
	return ks, keys
}

func startEnv(t *testing.T, mutate func(*config.Config)) *env {
	t.Helper()
	e := newEnv(t, mutate)
	e.start()
	return e
}

// newEnv prepares a daemon's config and DNS server without starting it.
func newEnv(t *testing.T, mutate func(*config.Config)) *env {
	t.Helper()
	ks, keys := newKeyServer(t)
	cfg := testConfig(t, ks.Addr)
	if mutate != nil {
		mutate(cfg)
	}
	return &env{t: t, cfg: cfg, ks: ks, keys: keys}
}

func (e *env) start() {
	e.t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := e.opts
	opts.Logger = log
	d, err := relay.New(e.cfg, opts)
	if err != nil {
		e.t.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(); err != nil {
		e.t.Fatalf("start daemon: %v", err)
	}
	e.d = d
	e.addr = d.SMTPAddrs()[0].String()
	e.t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.d.Shutdown(ctx); err != nil {
		e.t.Errorf("shutdown: %v", err)
	}
	e.d = nil
}

func (e *env) store() *store.Store { return e.d.Store() }

// send delivers one message in its own session and returns the end-of-data
// reply (or the first refusal).
func (e *env) send(msg []byte, rcpts ...string) smtpclient.Reply {
	e.t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{campaignAddr}
	}
	c, err := smtpclient.Dial(e.addr, 10*time.Second)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	defer c.Quit()
	if r, err := c.Hello("client.test"); err != nil || r.Code != 250 {
		e.t.Fatalf("EHLO: %v %v", r, err)
	}
	r, err := c.Send("bounce@client.test", rcpts, msg)
	if err != nil {
		e.t.Fatalf("send: %v", err)
	}
	return r
}

// letterText is a plain letter from the given From header value.
func letterText(from, subject, body string) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: <%s>\r\nSubject: %s\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%d.%s@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		from, campaignAddr, subject, time.Now().UnixNano(), strings.NewReplacer("<", "", ">", "", " ", "").Replace(from), body))
}

// signed is a letter signed by the key of domain.
func (e *env) signed(domain, from string, opt keyserver.SignOptions) []byte {
	e.t.Helper()
	msg := letterText(from, "Libertad", "Free the political prisoners of the October 2019 revolt.")
	out, err := e.keys[domain].Sign(msg, opt)
	if err != nil {
		e.t.Fatalf("sign: %v", err)
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
