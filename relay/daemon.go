// Package relay ties petitiond's parts into one daemon: the store, the SMTP
// front end, the batch closer, the delivery scheduler, the purger, the event
// log and the admin listener. Every part that reacts to a change follows the
// store's feed; none calls another.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/monoclock"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/relay/batch"
	"github.com/petitiond/petitiond/relay/deliver"
	"github.com/petitiond/petitiond/relay/eventlog"
	"github.com/petitiond/petitiond/relay/forward"
	"github.com/petitiond/petitiond/relay/inbound"
	"github.com/petitiond/petitiond/relay/notify"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// Options are the daemon's outside dependencies, passed in so tests drive them.
type Options struct {
	Logger *slog.Logger
	// Now is the clock; nil means a monoclock, which system clock steps
	// do not move.
	Now func() time.Time
	// DeliveryPort overrides port 25 for MX delivery (tests run the
	// recipients' mail hosts on loopback ports).
	DeliveryPort string
	// DeliveryTLS is the base TLS config for outbound STARTTLS (tests pass
	// their own roots); nil means the system's.
	DeliveryTLS *tls.Config
	// AdminToken overrides [admin].token when set (cmd passes
	// PETITIOND_ADMIN_TOKEN, so the secret need not sit in the file).
	AdminToken string
	// Listen opens one smtp.listen address; nil means a TCP listener on
	// it. Sockets handed over by a service manager come in here.
	Listen func(addr string) (net.Listener, error)
	// SMTPLimits tunes the SMTP front end's defences (session lifetime,
	// data rate, memory for letters in flight, unverified mail per hour,
	// free disk); the zero value takes the defaults.
	SMTPLimits inbound.Limits
	// Dial opens outbound SMTP connections (batches, and a secondary's
	// letters to its primary); nil means a net.Dialer. Tests bind the
	// source address with it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// The admin listener's metrics are what the SMTP front end reports to.
var _ inbound.Metrics = (*admin.Metrics)(nil)

// dkimKeyCache is how long a fetched DKIM key is reused: a burst of letters
// from one provider then costs one DNS lookup, and a revoked key stops
// verifying within a minute.
const dkimKeyCache = time.Minute

// shutdownGrace bounds what Shutdown still waits for once its context is
// used up: the admin listener's requests and the last log lines.
const shutdownGrace = 2 * time.Second

// Daemon is a running petitiond. Its long-running parts (SMTP listeners,
// admin listener, batch closer, delivery scheduler, purger, event log) run
// until Shutdown; if one stops before, the daemon reports it on /healthz
// and Done closes, so Run stops with that error rather than go on deaf.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *store.Store
	smtp    *inbound.Server
	admin   *admin.Server // nil when admin.listen is ""
	closer  *batch.Closer
	purger  *batch.Purger
	deliver *deliver.Scheduler
	notify  *notify.Notifier
	forward *forward.Forwarder // a secondary's, in place of closer, deliver and notify
	events  *eventlog.Writer

	started  bool
	stopping atomic.Bool
	smtpDown atomic.Bool        // the SMTP listeners stopped serving
	cancel   context.CancelFunc // stops the schedulers
	abort    context.CancelFunc // abandons deliveries in flight
	workers  sync.WaitGroup     // closer, purger, scheduler, notifier
	servers  sync.WaitGroup     // SMTP and admin listeners
	logDone  chan struct{}      // the event log wrote its last line

	errMu sync.Mutex
	err   error         // the first part that stopped on its own
	died  chan struct{} // closed when err is set
}

// New opens the store and builds the parts; nothing listens until Start.
// On error, nothing is left open.
func New(cfg *config.Config, opt Options) (d *Daemon, err error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		// Batch ages and give-up times are measured on one clock that
		// system clock steps do not move.
		opt.Now = monoclock.New(log).Now
	}
	adminToken := cfg.Admin.Token
	if opt.AdminToken != "" {
		adminToken = opt.AdminToken
	}
	// Refuse an open admin listener, an unreadable key and the rest before
	// touching the store or any port (check-config runs the same Check).
	if _, err := Check(cfg, opt); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.Store.Dir, store.Options{Now: opt.Now, Retention: cfg.Store.Retention.Duration,
		HeldRetention: cfg.Store.HeldRetention.Duration, Receipts: cfg.Receipts.Enabled})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	d = &Daemon{cfg: cfg, log: log, store: st, died: make(chan struct{}), logDone: make(chan struct{})}
	// The event log follows from here, so nothing the daemon does is
	// missing from it.
	if d.events, err = eventlog.New(st, log); err != nil {
		return nil, err
	}
	var metrics inbound.Metrics
	if cfg.Admin.Listen != "" {
		if d.admin, err = newAdmin(cfg, st, adminToken, log, opt, d.Err, d.smtpServing); err != nil {
			return nil, err
		}
		metrics = d.admin.Metrics()
	}
	v := verify.New(verify.Options{Resolver: cfg.Verify.DNSResolver, Timeout: cfg.Verify.DNSTimeout.Duration,
		KeyCache: dkimKeyCache, SPF: cfg.Verify.SPF})
	if d.smtp, err = inbound.New(cfg, st, v, inbound.Options{Logger: log, Now: opt.Now, Metrics: metrics, Listen: opt.Listen,
		Limits: opt.SMTPLimits}); err != nil {
		return nil, err
	}
	tr, err := newTransport(cfg, opt)
	if err != nil {
		return nil, err
	}
	d.deliver = deliver.NewScheduler(st, tr, deliver.SchedulerOptions{
		From: cfg.Campaign.From, Supporters: supportersTransport(cfg, tr),
		Policy: deliver.Policy{Min: cfg.Delivery.RetryMin.Duration, Max: cfg.Delivery.RetryMax.Duration, GiveUpAfter: cfg.Delivery.GiveUpAfter.Duration},
		Logger: log, Now: opt.Now,
	})
	var signer *batch.Signer
	if cfg.DKIM.KeyFile != "" {
		if signer, err = batch.LoadSigner(cfg.DKIM.Domain, cfg.DKIM.Selector, cfg.DKIM.KeyFile); err != nil {
			return nil, fmt.Errorf("dkim signing key ([dkim]): %w", err)
		}
	}
	d.closer = batch.NewCloser(batch.CloserConfig{
		MaxLetters: cfg.Batch.MaxLetters, MaxWait: cfg.Batch.MaxWait.Duration, MaxBytes: cfg.Batch.MaxBytes,
		CampaignName: cfg.Campaign.Name, From: cfg.Campaign.From, Recipients: cfg.Campaign.Recipients, Signer: signer,
		Language: cfg.Campaign.Language, Location: cfg.Campaign.Location(),
	}, st, log, opt.Now)
	d.purger = batch.NewPurger(st, log, opt.Now)
	if cfg.Secondary.Primary != "" {
		if d.forward, err = newForwarder(cfg, st, log, opt); err != nil {
			return nil, err
		}
	}
	if d.notify, err = notify.New(st, notify.Options{Campaign: cfg.Campaign.Name, From: cfg.Campaign.From,
		Language: cfg.Campaign.Language, Location: cfg.Campaign.Location(), TTL: cfg.Verify.ConfirmTTL.Duration,
		PerHour: cfg.Verify.ConfirmPerHour, Receipts: cfg.Receipts.Enabled, Signer: signer, Logger: log, Now: opt.Now,
	}); err != nil {
		return nil, err
	}
	return d, nil
}

// newForwarder makes a secondary's forwarder: every letter goes to
// [secondary] primary, retried as [delivery] retries batches (SPEC 12). It
// sends no credentials: those of [delivery] are for the smarthost.
func newForwarder(cfg *config.Config, st *store.Store, log *slog.Logger, opt Options) (*forward.Forwarder, error) {
	so := deliver.SMTPOptions{
		Hostname: cfg.SMTP.Hostname, Smarthost: cfg.Secondary.Primary, StartTLS: string(cfg.Delivery.StartTLS),
		TLSConfig: opt.DeliveryTLS, Resolver: cfg.Verify.DNSResolver, Dial: opt.Dial,
	}
	if err := so.Validate(); err != nil {
		return nil, fmt.Errorf("[secondary] primary: %w", err)
	}
	return forward.New(st, deliver.NewSMTP(so), forward.Options{
		Policy: deliver.Policy{Min: cfg.Delivery.RetryMin.Duration, Max: cfg.Delivery.RetryMax.Duration, GiveUpAfter: cfg.Delivery.GiveUpAfter.Duration},
		Logger: log, Now: opt.Now,
	}), nil
}

// supportersTransport is where the mail to supporters goes: in maildir
// mode one Maildir (SupportersMaildir); over SMTP, the batches' way (the
// supporter's MX, or the smarthost).
func supportersTransport(cfg *config.Config, tr deliver.Transport) deliver.Transport {
	if cfg.Delivery.Mode == config.DeliveryMaildir {
		return deliver.Mailbox{Dir: SupportersMaildir(cfg)}
	}
	return tr
}

// SupportersMaildir is the Maildir the mail to supporters is written to in
// maildir mode: "supporters" below delivery.maildir (SPEC 11).
func SupportersMaildir(cfg *config.Config) string {
	return filepath.Join(cfg.DataPath(cfg.Delivery.Maildir), "supporters")
}

// newAdmin makes the admin listener. Without a configured token (admin.token
// or PETITIOND_ADMIN_TOKEN) it uses the one in <store.dir>/admin.token,
// made at first start, which the admin commands read; /metrics then needs
// no token (SPEC 10). Only a loopback listener gets here without one
// (admin.CheckListen).
func newAdmin(cfg *config.Config, st *store.Store, token string, log *slog.Logger, opt Options, parts, smtp func() error) (*admin.Server, error) {
	configured := token != ""
	if !configured {
		var created bool
		var err error
		if token, created, err = admin.LoadOrCreateToken(cfg.Store.Dir); err != nil {
			return nil, err
		}
		if created {
			log.Info("admin token made; the admin commands read it from there", "file", admin.TokenFile(cfg.Store.Dir))
		}
	}
	return admin.New(st, admin.Options{
		Listen: cfg.Admin.Listen, Token: token, ReaderToken: cfg.Admin.ReaderToken, OpenMetrics: !configured,
		Hosts: []string{cfg.SMTP.Hostname}, Campaign: cfg.Campaign.Name, Language: cfg.Campaign.Language,
		Location: cfg.Campaign.Location(), Logger: log, Now: opt.Now, Parts: parts, SMTP: smtp,
		Fold:         verify.FoldOptions{Subaddress: cfg.Dedup.FoldSubaddress, GmailDots: cfg.Dedup.FoldGmailDots},
		MinFreeBytes: cfg.Store.MinFreeBytes, Secondary: cfg.Secondary.Primary != "",
	})
}

// newTransport makes the outbound transport [delivery] asks for.
func newTransport(cfg *config.Config, opt Options) (deliver.Transport, error) {
	if cfg.Delivery.Mode == config.DeliveryMaildir {
		return deliver.Maildir{Root: cfg.DataPath(cfg.Delivery.Maildir)}, nil
	}
	var password string
	if cfg.Delivery.PasswordFile != "" {
		b, err := os.ReadFile(cfg.Delivery.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("delivery.password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	so := deliver.SMTPOptions{
		Hostname: cfg.SMTP.Hostname, Smarthost: cfg.Delivery.Smarthost, Port: opt.DeliveryPort,
		Username: cfg.Delivery.Username, Password: password, StartTLS: string(cfg.Delivery.StartTLS),
		TLSConfig: opt.DeliveryTLS, Resolver: cfg.Verify.DNSResolver, Dial: opt.Dial,
	}
	if err := so.Validate(); err != nil {
		return nil, fmt.Errorf("[delivery]: %w", err)
	}
	return deliver.NewSMTP(so), nil
}

// Start listens and serves in the background. If a listener cannot open,
// it closes the ones it opened and returns the error; Shutdown then closes
// the rest.
func (d *Daemon) Start() error {
	if d.started {
		return errors.New("relay: daemon already started")
	}
	d.started = true
	go func() {
		defer close(d.logDone)
		// The event log ends with the store, after the last event.
		d.watch("event log", d.events.Run(context.Background()))
	}()
	if d.admin != nil {
		if err := d.admin.Listen(); err != nil {
			return err
		}
	}
	if err := d.smtp.Listen(); err != nil {
		if d.admin != nil {
			_ = d.admin.Shutdown(context.Background())
		}
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	abort, abortCancel := context.WithCancel(context.Background())
	d.cancel, d.abort = cancel, abortCancel
	d.part(&d.servers, "SMTP listener", func() error {
		defer d.smtpDown.Store(true)
		return d.smtp.Serve()
	})
	if d.admin != nil {
		d.part(&d.servers, "admin listener", d.admin.Serve)
	}
	if d.forward != nil {
		// A secondary closes no batch and sends only to its primary.
		d.part(&d.workers, "forwarder", func() error { return d.forward.Run(ctx, abort) })
	} else {
		d.part(&d.workers, "batch closer", func() error { return d.closer.Run(ctx) })
		d.part(&d.workers, "delivery scheduler", func() error { return d.deliver.Run(ctx, abort) })
		d.part(&d.workers, "notifier", func() error { return d.notify.Run(ctx) })
	}
	d.part(&d.workers, "purger", func() error { return d.purger.Run(ctx) })
	for _, a := range d.smtp.Addrs() {
		d.log.Info("listening for letters", "addr", a.String(), "hostname", d.cfg.SMTP.Hostname)
	}
	return nil
}

// part runs one long-running part in the background; wg tracks it.
func (d *Daemon) part(wg *sync.WaitGroup, name string, run func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.watch(name, run())
	}()
}

// watch records a part that stopped while the daemon was not stopping: the
// daemon must not run without it.
func (d *Daemon) watch(name string, err error) {
	if d.stopping.Load() {
		if err != nil && !errors.Is(err, store.ErrClosed) {
			d.log.Error("part failed while stopping", "part", name, "err", err)
		}
		return
	}
	if errors.Is(err, store.ErrClosed) {
		// Only Shutdown closes the store; if something else did, every
		// write fails and /healthz's write check says so.
		d.log.Error("part stopped: the store is closed", "part", name)
		return
	}
	if err == nil {
		err = errors.New("stopped")
	}
	err = fmt.Errorf("%s: %w", name, err)
	d.errMu.Lock()
	first := d.err == nil
	if first {
		d.err = err
		close(d.died)
	}
	d.errMu.Unlock()
	if first {
		d.log.Error("a part of the daemon stopped; petitiond stops", "part", name, "err", err)
	}
}

// smtpServing is nil while the SMTP listeners take connections (for
// /healthz).
func (d *Daemon) smtpServing() error {
	if d.smtpDown.Load() {
		return errors.New("not listening: the SMTP listener stopped")
	}
	return nil
}

// Done is closed when a part stopped on its own; Err says which and why.
func (d *Daemon) Done() <-chan struct{} { return d.died }

// Err is nil while every part runs, else the first that stopped on its own.
func (d *Daemon) Err() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

// SMTPAddrs are the addresses the SMTP listeners are bound to (ports
// resolved), once Start returned.
func (d *Daemon) SMTPAddrs() []net.Addr { return d.smtp.Addrs() }

// AdminAddr is the admin listener's address, nil when admin.listen is "".
func (d *Daemon) AdminAddr() net.Addr {
	if d.admin == nil {
		return nil
	}
	return d.admin.Addr()
}

// Store is the daemon's store, open until Shutdown.
func (d *Daemon) Store() *store.Store { return d.store }

// Shutdown stops taking mail, lets sessions and deliveries in flight finish
// until ctx ends, and closes the store. It returns, with any error of its
// own, the error of a part that had stopped on its own.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.stopping.Store(true)
	var errs []error
	switch err := d.smtp.Shutdown(ctx); {
	case err == nil:
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// The grace period ended with letters still coming in: they are cut
		// off, none was answered 250, their senders will retry. A shutdown
		// as asked, not a failure.
		d.log.Warn("sessions still inside DATA at the end of the shutdown grace period were cut off; none was answered 250, their senders will retry")
	default:
		errs = append(errs, fmt.Errorf("smtp shutdown: %w", err))
	}
	if d.cancel != nil {
		d.cancel()
		// Deliveries in flight may finish while ctx lasts; then they are
		// abandoned and stay queued for the next start.
		stop := context.AfterFunc(ctx, d.abort)
		d.workers.Wait()
		stop()
		d.abort()
	}
	// The admin listener goes last, so followers see the final deliveries,
	// but before the store closes under it. It gets its own short grace:
	// its streams end at once and other requests are quick, and deliveries
	// may have used up ctx.
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if d.admin != nil {
		if err := d.admin.Shutdown(grace); err != nil {
			errs = append(errs, err)
		}
	}
	d.servers.Wait()
	if err := d.store.Close(); err != nil {
		errs = append(errs, err)
	}
	if d.started {
		// The last lines, unless the log is stuck.
		select {
		case <-d.logDone:
		case <-grace.Done():
		}
	}
	if err := d.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Run starts the daemon and runs it until ctx ends or one of its parts
// stops, then shuts down with a grace period for sessions and deliveries in
// flight. A part that stopped on its own makes Run return its error.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	d, err := New(cfg, opt)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.Start(); err != nil {
		return errors.Join(err, d.Shutdown(sctx))
	}
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case <-d.Done():
	}
	// A fresh grace period from now.
	cancel()
	sctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.Shutdown(sctx)
}
