// Package relay ties petitiond's parts into one daemon: the store, the SMTP
// front end, the batch closer and the delivery scheduler.
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
}

// Daemon is a running petitiond.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	store   *store.Store
	smtp    *inbound.Server
	closer  *batch.Closer
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
	st, err := store.Open(cfg.Store.Dir, store.Options{Logger: log, Now: opt.Now, Retention: cfg.Store.Retention.Duration})
	if err != nil {
		return nil, err
	}
	v := verify.New(verify.Options{Resolver: cfg.Verify.DNSResolver, Timeout: cfg.Verify.DNSTimeout.Duration})
	in, err := inbound.New(cfg, st, v, inbound.Options{Logger: log, Now: opt.Now})
	if err != nil {
		st.Close()
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, store: st, smtp: in}
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
	if err := d.smtp.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	abort, abortCancel := context.WithCancel(context.Background())
	d.cancel, d.abort = cancel, abortCancel
	d.wg.Add(3)
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
