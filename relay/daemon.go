// Package relay ties petitiond's parts into one daemon: the store, the SMTP
// front end, the batch closer, the delivery scheduler and the admin listener.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/relay/batch"
	"github.com/petitiond/petitiond/relay/deliver"
	"github.com/petitiond/petitiond/relay/inbound"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// Options are the daemon's outside dependencies, passed in so tests drive them.
type Options struct {
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
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
}

// The admin listener's metrics are what the SMTP front end reports to.
var _ inbound.Metrics = (*admin.Metrics)(nil)

// dkimKeyCache is how long a fetched DKIM key is reused: a burst of letters
// from one provider then costs one DNS lookup, and a revoked key stops
// verifying within a minute.
const dkimKeyCache = time.Minute

// Daemon is a running petitiond.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *store.Store
	smtp    *inbound.Server
	admin   *admin.Server // nil when admin.listen is ""
	closer  *batch.Closer
	purger  *batch.Purger
	deliver *deliver.Scheduler

	cancel context.CancelFunc // stops the schedulers
	abort  context.CancelFunc // abandons deliveries in flight
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

// New opens the store and builds the parts; nothing listens until Start.
func New(cfg *config.Config, opt Options) (*Daemon, error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	adminToken := cfg.Admin.Token
	if opt.AdminToken != "" {
		adminToken = opt.AdminToken
	}
	// Refuse an open admin listener before touching the store or any port.
	if err := admin.CheckListen(cfg.Admin.Listen, adminToken); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.Store.Dir, store.Options{Logger: log, Now: opt.Now, Retention: cfg.Store.Retention.Duration})
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, store: st}
	var metrics inbound.Metrics
	if cfg.Admin.Listen != "" {
		d.admin, err = admin.New(st, admin.Options{
			Listen: cfg.Admin.Listen, Token: adminToken, Logger: log, Now: opt.Now,
			// d.deliver is set below, before anything can call this.
			WakeDelivery: func() { d.deliver.Wake() },
		})
		if err != nil {
			st.Close()
			return nil, err
		}
		metrics = d.admin.Metrics()
	}
	v := verify.New(verify.Options{Resolver: cfg.Verify.DNSResolver, Timeout: cfg.Verify.DNSTimeout.Duration,
		KeyCache: dkimKeyCache})
	in, err := inbound.New(cfg, st, v, inbound.Options{Logger: log, Now: opt.Now, Metrics: metrics})
	if err != nil {
		st.Close()
		return nil, err
	}
	d.smtp = in
	tr, err := newTransport(cfg, opt)
	if err != nil {
		st.Close()
		return nil, err
	}
	d.deliver = deliver.NewScheduler(st, tr, deliver.SchedulerOptions{
		From:   cfg.Campaign.From,
		Policy: deliver.Policy{Min: cfg.Delivery.RetryMin.Duration, Max: cfg.Delivery.RetryMax.Duration, GiveUpAfter: cfg.Delivery.GiveUpAfter.Duration},
		Logger: log, Now: opt.Now,
	})
	var signer *batch.Signer
	if cfg.DKIM.KeyFile != "" {
		if signer, err = batch.LoadSigner(cfg.DKIM.Domain, cfg.DKIM.Selector, cfg.DKIM.KeyFile); err != nil {
			st.Close()
			return nil, fmt.Errorf("dkim signing key ([dkim]): %w", err)
		}
	}
	d.closer = batch.NewCloser(batch.CloserConfig{
		MaxLetters: cfg.Batch.MaxLetters, MaxWait: cfg.Batch.MaxWait.Duration, CampaignName: cfg.Campaign.Name,
		From: cfg.Campaign.From, Recipients: cfg.Campaign.Recipients, Signer: signer,
	}, st, log, opt.Now, func(*store.Batch) { d.deliver.Wake() })
	d.purger = batch.NewPurger(st, log, opt.Now)
	return d, nil
}

// newTransport makes the outbound transport [delivery] asks for.
func newTransport(cfg *config.Config, opt Options) (deliver.Transport, error) {
	if cfg.Delivery.Mode == "maildir" {
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
		Username: cfg.Delivery.Username, Password: password, StartTLS: cfg.Delivery.StartTLS,
		TLSConfig: opt.DeliveryTLS, Resolver: cfg.Verify.DNSResolver,
	}
	if err := so.Validate(); err != nil {
		return nil, fmt.Errorf("[delivery]: %w", err)
	}
	return deliver.NewSMTP(so), nil
}

// Start listens and serves in the background.
func (d *Daemon) Start() error {
	if d.admin != nil {
		if err := d.admin.Start(); err != nil {
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
	d.wg.Add(4)
	go func() {
		defer d.wg.Done()
		if err := d.smtp.Serve(); err != nil {
			d.fail(fmt.Errorf("smtp: %w", err))
		}
	}()
	go func() {
		defer d.wg.Done()
		d.closer.Run(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.purger.Run(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.deliver.Run(ctx, abort)
	}()
	for _, a := range d.smtp.Addrs() {
		d.log.Info("listening for letters", "addr", a.String(), "hostname", d.cfg.SMTP.Hostname)
	}
	return nil
}

func (d *Daemon) fail(err error) {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	if d.err == nil {
		d.err = err
	}
}

// SMTPAddrs are the SMTP listeners' addresses.
func (d *Daemon) SMTPAddrs() []net.Addr { return d.smtp.Addrs() }

// AdminAddr is the admin listener's address, nil when admin.listen is "".
func (d *Daemon) AdminAddr() net.Addr {
	if d.admin == nil {
		return nil
	}
	return d.admin.Addr()
}

// Store is the daemon's store.
func (d *Daemon) Store() *store.Store { return d.store }

// Shutdown stops taking mail, lets sessions and deliveries in flight finish
// until ctx ends, and closes the store.
func (d *Daemon) Shutdown(ctx context.Context) error {
	var errs []error
	if err := d.smtp.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("smtp shutdown: %w", err))
	}
	if d.cancel != nil {
		d.cancel()
		// Deliveries in flight may finish while ctx lasts; then they are
		// abandoned and stay queued for the next start.
		stop := context.AfterFunc(ctx, d.abort)
		d.wg.Wait()
		stop()
		d.abort()
	}
	// The admin listener goes last, so followers see the final deliveries,
	// but before the store closes under it. It gets its own short grace:
	// its streams end at once and other requests are quick, and deliveries
	// may have used up ctx.
	if d.admin != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		err := d.admin.Shutdown(actx)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.store.Close(); err != nil {
		errs = append(errs, err)
	}
	d.errMu.Lock()
	if d.err != nil {
		errs = append(errs, d.err)
	}
	d.errMu.Unlock()
	return errors.Join(errs...)
}

// Run starts the daemon and runs it until ctx ends, then shuts down with a
// grace period for sessions and deliveries in flight.
func Run(ctx context.Context, cfg *config.Config, opt Options) error {
	d, err := New(cfg, opt)
	if err != nil {
		return err
	}
	if err := d.Start(); err != nil {
		d.store.Close()
		return err
	}
	<-ctx.Done()
	d.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.Shutdown(sctx)
}
