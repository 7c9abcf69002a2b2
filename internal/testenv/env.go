// Package testenv runs a whole petitiond on loopback with the real parts
// around it: the daemon on a store of its own, a DNS server publishing the
// supporters' DKIM keys, receiving SMTP servers for the recipients (found by
// MX or as a smarthost) or their Maildirs, and an SMTP client for letters.
//
// The relay and command tests use it through Test, which fails the test
// instead of returning errors; `petitiond demo` uses Env directly. Nothing
// here imports package testing.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/relay/deliver"
	"github.com/petitiond/petitiond/store"
)

// Options say what environment to make.
type Options struct {
	// Dir is where the environment writes its files (a batch signing key);
	// required.
	Dir string
	// StoreDir is store.dir; "" means Dir/data. It need not exist.
	StoreDir string
	// DNS serves the DKIM keys, for environments that share one; nil
	// starts a server for Domains at Selector, which Close stops.
	DNS      *DNS
	Selector string // "" means "sel"
	Domains  []Domain
	// Configure adjusts the config after the environment pointed it at
	// loopback, the DNS server and the store; the result must validate.
	Configure func(*config.Config)
	// Daemon is what relay.New gets, but for its Logger.
	Daemon relay.Options
	// Logger receives the daemon's log; nil discards it.
	Logger *slog.Logger
}

// Env is a daemon and the servers around it. Config and Options are read at
// each Start, so a caller may change them between New and Start.
type Env struct {
	Config  *config.Config
	Options relay.Options
	DNS     *DNS

	dir     string
	ownDNS  bool
	closers []func() error // servers started for the daemon to deliver to

	mu sync.Mutex
	d  *relay.Daemon
}

// ioTimeout bounds every SMTP exchange with the daemon and its shutdown.
const ioTimeout = 10 * time.Second

// New prepares an environment: its DNS server runs, the daemon does not.
func New(opt Options) (*Env, error) {
	if opt.Dir == "" {
		return nil, errors.New("testenv: Options.Dir is required")
	}
	e := &Env{Options: opt.Daemon, DNS: opt.DNS, dir: opt.Dir}
	e.Options.Logger = opt.Logger
	if e.DNS == nil {
		sel := opt.Selector
		if sel == "" {
			sel = "sel"
		}
		var err error
		if e.DNS, err = StartDNS(sel, opt.Domains...); err != nil {
			return nil, err
		}
		e.ownDNS = true
	}
	cfg := config.Default()
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.Verify.DNSResolver = e.DNS.Addr
	cfg.Store.Dir = opt.StoreDir
	if cfg.Store.Dir == "" {
		cfg.Store.Dir = filepath.Join(opt.Dir, "data")
	}
	cfg.Admin.Listen = ""
	if opt.Configure != nil {
		opt.Configure(cfg)
	}
	if p := cfg.Validate(); len(p) > 0 {
		e.Close()
		return nil, fmt.Errorf("testenv: config: %w", p)
	}
	e.Config = cfg
	return e, nil
}

// Start runs the daemon on the store. Its listeners' ports are kept in
// Config, so after Stop a Start comes back on the same addresses.
func (e *Env) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.d != nil {
		return errors.New("testenv: daemon already running")
	}
	// The daemon keeps the config it is given: give it its own, so that
	// pinning the ports below races with nothing it reads.
	cfg := *e.Config
	d, err := relay.New(&cfg, e.Options)
	if err != nil {
		return err
	}
	if err := d.Start(); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		return errors.Join(err, d.Shutdown(ctx))
	}
	e.d = d
	var listen []string
	for _, a := range d.SMTPAddrs() {
		listen = append(listen, a.String())
	}
	e.Config.SMTP.Listen = listen
	if a := d.AdminAddr(); a != nil {
		e.Config.Admin.Listen = a.String()
	}
	return nil
}

// Stop shuts the daemon down, giving sessions and deliveries in flight
// until ctx ends; it does nothing when the daemon is not running.
func (e *Env) Stop(ctx context.Context) error {
	e.mu.Lock()
	d := e.d
	e.d = nil
	e.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.Shutdown(ctx)
}

// Restart stops the daemon and starts it again on the same store.
func (e *Env) Restart(ctx context.Context) error {
	if err := e.Stop(ctx); err != nil {
		return fmt.Errorf("testenv: restart: %w", err)
	}
	return e.Start()
}

// Close stops the daemon and every server the environment started.
func (e *Env) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	errs := []error{e.Stop(ctx)}
	for _, c := range slices.Backward(e.closers) {
		errs = append(errs, c())
	}
	e.closers = nil
	if e.ownDNS {
		errs = append(errs, e.DNS.Close())
		e.ownDNS = false
	}
	return errors.Join(errs...)
}

// Daemon is the running daemon, or nil.
func (e *Env) Daemon() *relay.Daemon {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.d
}

// Store is the running daemon's store.
func (e *Env) Store() *store.Store { return e.Daemon().Store() }

// SMTPAddr is the first SMTP listener's address.
func (e *Env) SMTPAddr() string { return e.Config.SMTP.Listen[0] }

// AdminURL is the admin API's base URL, "" without an admin listener.
func (e *Env) AdminURL() string {
	if e.Config.Admin.Listen == "" {
		return ""
	}
	return "http://" + e.Config.Admin.Listen
}

// CampaignAddr is the first campaign address, where letters go.
func (e *Env) CampaignAddr() string { return e.Config.Campaign.Addresses[0] }

// Dial opens an SMTP session with the daemon and reads its greeting.
func (e *Env) Dial() (*smtpclient.Conn, error) { return smtpclient.Dial(e.SMTPAddr(), ioTimeout) }

// Send delivers msg in a session of its own, from a client that says EHLO
// client.test and MAIL FROM:<bounce@client.test>, to rcpts (by default the
// campaign address), and returns the reply to the letter (or the first
// refusal).
func (e *Env) Send(msg []byte, rcpts ...string) (smtpclient.Reply, error) {
	if len(rcpts) == 0 {
		rcpts = []string{e.CampaignAddr()}
	}
	return smtpclient.SendMail(e.SMTPAddr(), "client.test", "bounce@client.test", rcpts, msg, ioTimeout)
}

// MailHosts starts a receiving SMTP server for every recipient, and for
// the addresses also (supporters, whose providers get the mail to
// supporters), found by MX, and has the daemon deliver there
// (delivery.mode "smtp"). Call it before Start.
func (e *Env) MailHosts(also ...string) (*MailHosts, error) {
	mh, err := StartMailHosts(e.DNS.Server, append(slices.Clone(e.Config.Campaign.Recipients), also...))
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, mh.Close)
	e.Config.Delivery.Mode = "smtp"
	e.Config.Delivery.Smarthost = ""
	e.Options.DeliveryPort = mh.Port
	return mh, nil
}

// Smarthost starts one receiving SMTP server and has the daemon relay every
// copy through it, without STARTTLS. Call it before Start.
func (e *Env) Smarthost(opt sinkserver.Options) (*sinkserver.Server, error) {
	s, err := sinkserver.Start(opt)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, s.Close)
	e.Config.Delivery.Mode = "smtp"
	e.Config.Delivery.Smarthost = s.Addr
	e.Config.Delivery.StartTLS = "off"
	return s, nil
}

// Maildir is rcpt's Maildir (delivery.mode "maildir").
func (e *Env) Maildir(rcpt string) string {
	return deliver.Maildir{Root: e.Config.DataPath(e.Config.Delivery.Maildir)}.Dir(rcpt)
}

// Delivered lists the messages delivered to rcpt's Maildir, sorted by
// file name.
func (e *Env) Delivered(rcpt string) ([]string, error) {
	return filepath.Glob(filepath.Join(e.Maildir(rcpt), "new", "*"))
}

// SignBatches has the daemon sign its batches as domain, with a new
// ed25519 key published at selector. Call it before Start.
func (e *Env) SignBatches(domain, selector string) error {
	k, err := keyserver.NewKey(domain, selector, "ed25519")
	if err != nil {
		return fmt.Errorf("testenv: batch key: %w", err)
	}
	e.DNS.SetKey(k)
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		return fmt.Errorf("testenv: batch key: %w", err)
	}
	path := filepath.Join(e.dir, "batch-"+domain+".key")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("testenv: batch key: %w", err)
	}
	e.Config.DKIM = config.DKIM{Domain: domain, Selector: selector, KeyFile: path}
	return nil
}

// Letter is a plain UTF-8 letter as a mail client writes it, with CRLF line
// endings and a Message-ID of its own.
func Letter(from, to, subject, body string) []byte {
	return fmt.Appendf(nil, "From: %s\r\nTo: <%s>\r\nSubject: %s\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%s@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		from, to, subject, rand.Text(), body)
}
