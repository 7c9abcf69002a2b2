// Package inbound is petitiond's SMTP front end: it takes letters for the
// campaign's addresses only, enforces the session limits, rejects broken and
// hostile input, has each letter verified and stored, and is the one place
// where SMTP replies are chosen.
package inbound

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// Store is what the front end needs of the store.
type Store interface {
	ReserveLetterID() (string, error)
	Accept(ctx context.Context, nl store.NewLetter) (store.Accepted, error)
	// A secondary MX stores letters to forward instead (SPEC 12).
	ReserveForwardID() (string, error)
	QueueForward(ctx context.Context, nl store.NewLetter, mailFrom, rcpt string) (string, error)
	Reject(ctx context.Context, r store.Rejection) error
	// ConfirmLive and Confirm take replies to confirmation requests
	// (SPEC 11).
	ConfirmLive(tok store.ConfirmToken) (bool, error)
	Confirm(ctx context.Context, r store.ConfirmReply) (store.Confirmation, error)
}

// Verifier checks a letter's DKIM signatures and its envelope sender's SPF.
type Verifier interface {
	Verify(ctx context.Context, msg []byte, from verify.Sender) verify.Verdict
	CheckSPF(ctx context.Context, ip net.IP, helo, mailFrom string) verify.SPFResult
}

// Metrics receives counts of what the front end saw; nil-safe.
type Metrics interface {
	Session()
	SessionRefused(why RefusalClass)
	Verdict(result DKIMResult)
}

// RefusalClass says which connection limit refused a connection, or cut
// one short.
type RefusalClass string

// Refusal classes.
const (
	RefusedMaxConnections RefusalClass = "max_connections"
	RefusedMaxPerIP       RefusalClass = "max_per_ip"
	// CutLifetime: the session outlived its lifetime.
	CutLifetime RefusalClass = "session_lifetime"
	// CutTooSlow: the client sent below the minimum data rate.
	CutTooSlow RefusalClass = "too_slow"
)

// text is what the 421 tells the client, and the log.
func (c RefusalClass) text() string {
	switch c {
	case RefusedMaxPerIP:
		return "too many connections from your address"
	case CutLifetime:
		return "session lasted too long"
	case CutTooSlow:
		return "client sent too slowly"
	}
	return "too many connections"
}

// DKIMResult is a letter's DKIM outcome, for metrics.
type DKIMResult string

// DKIM results. A temporary error asked the sender to retry; none is a
// letter without any signature, apart from one whose signature failed.
const (
	DKIMPass      DKIMResult = "pass"
	DKIMFail      DKIMResult = "fail"
	DKIMNone      DKIMResult = "none"
	DKIMTempError DKIMResult = "temperror"
)

// Options are the front end's moving parts, passed in so tests drive them.
type Options struct {
	Logger  *slog.Logger
	Now     func() time.Time
	Metrics Metrics
	// Listen opens one smtp.listen address; nil means net.Listen("tcp",
	// addr).
	Listen func(addr string) (net.Listener, error)
	Limits Limits
}

// maxLineLength is the longest line, CRLF included, that the front end
// reads in a command or a message. RFC 5321 4.5.3.1.6 allows 1000; a
// letter with longer lines is still taken up to this length (the batch
// carries it base64-encoded), and refused beyond it.
const maxLineLength = 2000

// Server is the SMTP front end.
type Server struct {
	cfg      *config.Config
	store    Store
	verifier Verifier
	log      *slog.Logger
	now      func() time.Time
	metrics  Metrics
	srv      *smtp.Server
	listen   func(addr string) (net.Listener, error)
	fold     verify.FoldOptions
	// addresses and domains are lower-cased campaign addresses and their
	// domains (for postmaster@).
	addresses map[string]bool
	domains   map[string]bool
	// bounceAddr is campaign.from, lower-cased: where batches' bounces go.
	bounceAddr string
	// secondary: this front end is a backup MX's, which stores letters to
	// forward to [secondary] primary (SPEC 12).
	secondary bool
	// trusted are [secondary] trusted: the secondaries whose
	// Authentication-Results field is believed.
	trusted []netip.Prefix

	inFlight     *budget // bytes of letters in memory
	inFlightWait time.Duration
	unverified   *unverifiedCap
	freeBytes    func() (uint64, error)

	// draining is read by sessions while they hold their own lock, so it
	// is atomic rather than under mu (which Shutdown holds while taking
	// sessions' locks).
	draining atomic.Bool

	conns *conns // every open connection, across listeners

	// base is the parent of every session's context; Shutdown cancels it
	// when it gives up waiting for sessions.
	base       context.Context
	cancelBase context.CancelFunc

	mu        sync.Mutex
	listeners []net.Listener
	sessions  map[*session]struct{}
}

// New makes a front end from the config; it does not listen yet.
func New(cfg *config.Config, st Store, v Verifier, opt Options) (*Server, error) {
	s := &Server{
		cfg: cfg, store: st, verifier: v, log: opt.Logger, now: opt.Now, metrics: opt.Metrics, listen: opt.Listen,
		fold:      verify.FoldOptions{Subaddress: cfg.Dedup.FoldSubaddress, GmailDots: cfg.Dedup.FoldGmailDots},
		addresses: map[string]bool{}, domains: map[string]bool{}, sessions: map[*session]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.metrics == nil {
		s.metrics = nopMetrics{}
	}
	if s.listen == nil {
		s.listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.bounceAddr = asciiLower(cfg.Campaign.From)
	s.secondary = cfg.Secondary.Primary != ""
	var err error
	if s.trusted, err = trustedPrefixes(cfg.Secondary.Trusted); err != nil {
		return nil, err
	}
	for _, a := range cfg.Campaign.Addresses {
		a = asciiLower(a)
		s.addresses[a] = true
		if at := strings.LastIndexByte(a, '@'); at >= 0 {
			s.domains[a[at+1:]] = true
		}
	}
	s.conns = newConns(cfg.SMTP.Hostname, cfg.SMTP.MaxConnections, cfg.SMTP.MaxPerIP, sessionPace(cfg, opt.Limits), s.refused)
	l := opt.Limits
	if l.InFlightBytes <= 0 {
		l.InFlightBytes = DefaultInFlightLetters * cfg.SMTP.MaxMessageBytes
	}
	// Room for at least one letter of the largest size, with its
	// Received: field and the byte that shows the end.
	s.inFlight = newBudget(max(l.InFlightBytes, cfg.SMTP.MaxMessageBytes+receivedRoom+1))
	s.inFlightWait = l.InFlightWait
	if s.inFlightWait <= 0 {
		s.inFlightWait = DefaultInFlightWait
	}
	if l.UnverifiedBytesPerHour <= 0 {
		l.UnverifiedBytesPerHour = DefaultUnverifiedBytesPerHour
	}
	s.unverified = newUnverifiedCap(l.UnverifiedBytesPerHour)
	s.freeBytes = l.FreeBytes
	if s.freeBytes == nil {
		s.freeBytes = statfsFree(cfg.Store.Dir)
	}
	srv := smtp.NewServer(backend{s})
	srv.Domain = cfg.SMTP.Hostname
	srv.MaxLineLength = maxLineLength
	srv.RefusalNote = refusalNote
	srv.MaxMessageBytes = cfg.SMTP.MaxMessageBytes
	if len(s.trusted) > 0 {
		// Room for what a secondary adds on top; the session holds every
		// other client to smtp.max_message_bytes (maxMessageBytes).
		srv.MaxMessageBytes += forwardedRoom
	}
	srv.MaxRecipients = 20
	srv.ReadTimeout = cfg.SMTP.Timeout.Duration
	srv.WriteTimeout = cfg.SMTP.Timeout.Duration
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogErrorLog{s.log}
	if cfg.SMTP.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.SMTP.TLSCert, cfg.SMTP.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("inbound: load TLS certificate (smtp.tls_cert, smtp.tls_key): %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.srv = srv
	return s, nil
}

// Listen opens every smtp.listen address; Serve then takes connections.
func (s *Server) Listen() error {
	for _, addr := range s.cfg.SMTP.Listen {
		ln, err := s.listen(addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("inbound: listen on %s (smtp.listen): %w", addr, err)
		}
		s.mu.Lock()
		s.listeners = append(s.listeners, &limitListener{Listener: ln, table: s.conns})
		s.mu.Unlock()
	}
	return nil
}

// Addrs are the addresses actually listened on (ports resolved).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	return out
}

// Serve takes connections on every listener until Shutdown, then returns
// nil. If a listener fails before, it returns at once with that error, so
// the daemon does not go on deaf on one of its addresses; the others serve
// until Shutdown.
func (s *Server) Serve() error {
	s.mu.Lock()
	lns := append([]net.Listener(nil), s.listeners...)
	s.mu.Unlock()
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			err := s.srv.Serve(ln)
			// Shutdown closes the listeners itself (below), so an accept
			// error while draining is the shutdown, not a failure.
			if err != nil && !errors.Is(err, smtp.ErrServerClosed) && !s.draining.Load() {
				err = fmt.Errorf("inbound: listener on %s failed: %w", ln.Addr(), err)
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	for range lns {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// Shutdown stops taking connections, lets every transaction in progress
// finish (its letter stored and answered), and closes each session as soon
// as it is between transactions, with a 421. What is left when ctx ends is
// closed: no 250 was given for it, so the sender retries.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	// go-smtp closes only the listeners its Serve has registered; one whose
	// Serve has not begun yet (a shutdown right after start) would keep
	// accepting forever, so close them all here.
	s.mu.Lock()
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	done := make(chan error, 1)
	// go-smtp's Shutdown closes the listeners, then waits for every
	// connection's goroutine to end; we end the connections below (its own
	// Close does nothing once Shutdown has begun).
	go func() { done <- s.srv.Shutdown(context.Background()) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.closeIdleSessions()
		if s.idle() {
			// Only connections that never said EHLO are left.
			s.conns.closeAll()
		}
		select {
		case err := <-done:
			s.cancelBase()
			// A listener that had already failed was reported by Serve.
			if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
				err = nil
			}
			return err
		case <-ctx.Done():
			// A session inside DATA is cut off; one inside the store
			// finishes that write first, so nothing outlives Shutdown.
			s.cancelBase()
			s.conns.closeAll()
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// closeIdleSessions closes every session that is not inside a transaction.
func (s *Server) closeIdleSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		if ss.closeIfIdle() {
			delete(s.sessions, ss)
		}
	}
}

// idle reports whether no session is left.
func (s *Server) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions) == 0
}

func (s *Server) track(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[ss] = struct{}{}
}

func (s *Server) untrack(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.listeners = nil
}

func (s *Server) refused(ip, session string, why RefusalClass) {
	s.metrics.SessionRefused(why)
	if why == CutLifetime || why == CutTooSlow {
		s.log.Warn("session cut", "session", session, "ip", ip, "reason", why.text())
		return
	}
	s.log.Warn("connection refused", "session", session, "ip", ip, "reason", why.text())
}

// diskHasRoom reports whether the store's file system keeps
// store.min_free_bytes free after n more bytes. When the free space cannot
// be read, mail goes on (a full disk still shows as store errors).
func (s *Server) diskHasRoom(n int64) bool {
	min := s.cfg.Store.MinFreeBytes
	if min <= 0 {
		return true
	}
	free, err := s.freeBytes()
	if err != nil {
		s.log.Warn("cannot read the store's free disk space", "err", err)
		return true
	}
	return free >= uint64(min)+uint64(n)
}

// refusalNote names the session in every refusal go-smtp writes, ours
// included, so a sender's report of a refusal leads to its log lines.
func refusalNote(c *smtp.Conn) string {
	if lc := connOf(c.Conn()); lc != nil {
		return "(session " + lc.id + ")"
	}
	return ""
}

type backend struct{ s *Server }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.metrics.Session()
	id := newSessionID()
	if lc := connOf(c.Conn()); lc != nil {
		id = lc.id
	}
	if b.s.draining.Load() {
		// go-smtp would answer the error and keep the connection open
		// without a session; say 421 and hang up instead.
		refuse(c.Conn(), "421 4.3.2 "+b.s.cfg.SMTP.Hostname+" shutting down, try again later (session "+id+")\r\n")
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down, try again later"}
	}
	ss := &session{s: b.s, id: id, ip: remoteIP(c.Conn().RemoteAddr()), conn: c.Conn(), smtpConn: c}
	ss.ctx, ss.cancel = context.WithCancel(b.s.base)
	b.s.track(ss)
	return ss, nil
}

func newSessionID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// slogErrorLog routes go-smtp's internal errors (broken connections and the
// like) to the structured log.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Printf(format string, v ...any) {
	l.log.Debug("smtp: " + fmt.Sprintf(format, v...))
}
func (l slogErrorLog) Println(v ...any) { l.log.Debug("smtp: " + fmt.Sprintln(v...)) }

type nopMetrics struct{}

func (nopMetrics) Session()                    {}
func (nopMetrics) SessionRefused(RefusalClass) {}
func (nopMetrics) Verdict(DKIMResult)          {}

// forwardedRoom is how much larger than smtp.max_message_bytes a letter
// from a trusted secondary may be: its Received: and Authentication-Results
// fields, on a letter it took at the size limit.
const forwardedRoom = 4096

// trustedPrefixes parses [secondary] trusted (Validate checked it): an IP
// stands for itself.
func trustedPrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, t := range list {
		if p, err := netip.ParsePrefix(t); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(t)
		if err != nil {
			return nil, fmt.Errorf("inbound: secondary.trusted %q is not an IP address or CIDR prefix", t)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// trusts reports whether ip is one of [secondary] trusted.
func (s *Server) trusts(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maxMessageBytes is the largest letter the front end takes from a client
// at ip: smtp.max_message_bytes, with forwardedRoom more from a trusted
// secondary.
func (s *Server) maxMessageBytes(ip string) int64 {
	if s.trusts(ip) {
		return s.cfg.SMTP.MaxMessageBytes + forwardedRoom
	}
	return s.cfg.SMTP.MaxMessageBytes
}
