// Package admin is petitiond's admin HTTP listener ([admin]): the JSON API
// the admin commands use (stats, held letters, batches, events and a live
// event stream), the organisers' pages (page.go), /healthz, /metrics in the
// Prometheus text format and, on a loopback listener only, /debug/pprof/.
// access.go says who may use which. It reads the store and changes state
// only through store calls, which record their own events.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/petitiond/petitiond/loopback"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// Options configure the admin listener.
type Options struct {
	// Listen is [admin].listen, "host:port".
	Listen string
	// Token is the admin token: the API, its actions and pprof need it as a
	// Bearer header. Required: admin.token, PETITIOND_ADMIN_TOKEN, or the
	// one made at first start (LoadOrCreateToken).
	Token string
	// ReaderToken is admin.reader_token: it opens the organisers' pages
	// and nothing else; "" means only the admin token opens them.
	ReaderToken string
	// OpenMetrics serves /metrics without a token. SPEC 10: so it is when
	// admin.token is not configured (the token was made at first start,
	// and a scraper on this machine cannot be expected to read it).
	OpenMetrics bool
	// Hosts are the names, besides localhost and the listener's own
	// address, that a request's Host header may carry: the names this
	// machine is reached by (the daemon passes smtp.hostname).
	Hosts []string
	// Campaign is campaign.name, shown on the pages.
	Campaign string
	// Language is campaign.language, the pages' language ("es", "en"; ""
	// means "en"); Location is campaign.timezone (nil means UTC).
	Language string
	Location *time.Location
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Heartbeat is how often an idle event stream sends an empty line, so
	// proxies keep it open and a dead client is noticed; 0 means 15s.
	Heartbeat time.Duration
	// Parts, when set, says whether the daemon's other parts run (nil) or
	// which one stopped: /healthz then answers 503.
	Parts func() error
	// SMTP, when set, says whether the SMTP listeners take connections
	// (nil) or why not, for /healthz.
	SMTP func() error
	// Fold is [dedup]: how lookup and erase normalise an address.
	Fold verify.FoldOptions
	// MinFreeBytes is store.min_free_bytes: /healthz answers 503 below it.
	MinFreeBytes int64
	// Secondary: the daemon is a secondary MX ([secondary] primary), whose
	// stats say what waits to be forwarded.
	Secondary bool
}

// Server is the admin listener.
type Server struct {
	st       *store.Store
	opt      Options
	log      *slog.Logger
	now      func() time.Time
	tokens   tokens
	hosts    []string   // lower case, no final dot
	listenIP netip.Addr // the bound IP, once Listen ran
	pages    *pages
	search   chan struct{} // one search at a time: each is a bounded scan
	// searchScan is how many letters a search reads at most:
	// searchMaxScan, less in tests.
	searchScan int
	metrics    *Metrics
	prom       http.Handler // /metrics
	health     *healthCheck
	startSeq   uint64 // the journal's end when New ran: metrics count from there
	// wrongTokens limits the log lines of refused credentials (ratelog.go).
	wrongTokens logLimit

	ctx    context.Context // ends at Shutdown: streams and the metrics feed stop
	cancel context.CancelFunc
	srv    *http.Server
	ln     net.Listener
}

// CheckListen refuses an admin listener that others could reach without a
// configured token: whoever reaches it can release letters and read who
// signed, and a token made at first start sits in a file only this
// machine's admin reads. Call it before anything listens.
func CheckListen(listen, token string) error {
	if listen == "" || token != "" || loopback.HostPort(listen) {
		return nil
	}
	return fmt.Errorf("admin: admin.listen %q is not a loopback address, so an admin token is required: "+
		"set admin.token (or PETITIOND_ADMIN_TOKEN), or listen on 127.0.0.1", listen)
}

// New makes the admin server for st; nothing listens until Start. It fails
// when CheckListen does, without a token, or for a language with no
// catalogue.
func New(st *store.Store, opt Options) (*Server, error) {
	if err := CheckListen(opt.Listen, opt.Token); err != nil {
		return nil, err
	}
	if opt.Token == "" {
		return nil, errors.New("admin: the admin listener needs an admin token (admin.token, PETITIOND_ADMIN_TOKEN, or the file " + TokenFileName + " in store.dir)")
	}
	if opt.ReaderToken == opt.Token {
		return nil, errors.New("admin: admin.reader_token must differ from the admin token")
	}
	s := &Server{st: st, opt: opt, log: opt.Logger, now: opt.Now, tokens: newTokens(opt.Token, opt.ReaderToken),
		search: make(chan struct{}, 1), searchScan: searchMaxScan}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.opt.Heartbeat <= 0 {
		s.opt.Heartbeat = 15 * time.Second
	}
	s.hosts = allowedNames(opt.Listen, opt.Hosts)
	var err error
	if s.pages, err = newPages(opt.Language, opt.Location); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if s.startSeq, err = st.LastSeq(); err != nil {
		return nil, fmt.Errorf("admin: read the journal's end: %w", err)
	}
	s.metrics = newMetrics(st, s.now)
	s.prom = promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
	s.health = &healthCheck{check: st.CheckWritable, free: st.FreeBytes, minFree: uint64(max(opt.MinFreeBytes, 0)),
		now: s.now, reuse: time.Second, timeout: 5 * time.Second}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// allowedNames are the Host names a request may carry besides localhost
// and IPs: the listen address's host when it is a name, and hosts.
func allowedNames(listen string, hosts []string) []string {
	var names []string
	if h, _, err := net.SplitHostPort(listen); err == nil {
		hosts = append([]string{h}, hosts...)
	}
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		if _, err := netip.ParseAddr(h); h == "" || err == nil {
			continue
		}
		names = append(names, h)
	}
	return names
}

// Metrics is what the SMTP front end reports to (it implements
// inbound.Metrics).
func (s *Server) Metrics() *Metrics { return s.metrics }

// Listen opens opt.Listen; Serve then answers on it.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opt.Listen)
	if err != nil {
		return fmt.Errorf("admin: listen on %s (admin.listen): %w", s.opt.Listen, err)
	}
	// pprof shows memory and goroutines, letters included: only where the
	// configured and the bound address are both this machine's.
	pprofOK := loopback.HostPort(s.opt.Listen)
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		pprofOK = false
	}
	s.ln = ln
	if ta, ok := ln.Addr().(*net.TCPAddr); ok {
		s.listenIP, _ = netip.AddrFromSlice(ta.IP)
		s.listenIP = s.listenIP.Unmap()
	}
	s.srv = &http.Server{
		Handler:           s.handler(pprofOK),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: the event stream is long-lived; it sets a
		// deadline per write instead.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("admin listener", "addr", ln.Addr().String(), "reader_token", s.opt.ReaderToken != "",
		"open_metrics", s.opt.OpenMetrics, "pprof", pprofOK)
	return nil
}

// Serve answers requests and counts the store's events for /metrics until
// Shutdown, then returns nil; any other return is the listener failing.
func (s *Server) Serve() error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.metrics.follow(s.ctx, s.st, s.startSeq, s.log)
	}()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	// The listener failed: stop counting too, the daemon is told.
	s.cancel()
	return fmt.Errorf("admin: serve on %s: %w", s.ln.Addr(), err)
}

// Addr is the address listened on (port resolved), nil before Listen.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown ends the event streams, stops taking requests and waits for those
// in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	// Shutdown closes only listeners that Serve took: close ours in case
	// Serve never ran.
	_ = s.ln.Close()
	if err != nil {
		_ = s.srv.Close()
		if ctx.Err() != nil {
			// A browser on the pages keeps connections it opened ahead
			// of need, which Shutdown leaves for 5s; a request cut at
			// the end of the grace is the client's loss, not a fault
			// of the daemon's.
			s.log.Info("admin listener closed with connections still open", "err", err)
			return nil
		}
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

// route is one entry of the router: a ServeMux pattern, who may use it,
// and its handler.
type route struct {
	pattern string
	access  access
	handler http.HandlerFunc
}

// routes is every path the listener answers, one line each.
func (s *Server) routes() []route {
	return []route{
		{"GET /healthz", public, s.healthz},
		{"GET /metrics", metricsAccess, s.prom.ServeHTTP},
		{"GET /login", public, s.loginForm},
		{"POST /login", public, s.login},
		{"POST /logout", public, s.logout},

		// The organisers' pages (page.go).
		{"GET /{$}", pageAccess, s.home},
		{"GET /batches/{id}", pageAccess, s.batchPage},
		{"GET /batches/{id}/csv", pageAccess, s.batchCSV},
		{"GET /batches/{id}/eml", pageAccess, s.batchEML},
		{"GET /search", pageAccess, s.searchPage},
		{"GET /signers.csv", pageAccess, s.signersCSV},

		// The API the admin commands use.
		{"GET /api/stats", adminAccess, s.stats},
		{"GET /api/held", adminAccess, s.heldList},
		{"POST /api/held/{id}/release", adminAccess, s.heldRelease},
		{"POST /api/held/{id}/drop", adminAccess, s.heldDrop},
		{"GET /api/batches", adminAccess, s.batchList},
		{"GET /api/batches/{id}", adminAccess, s.batchShow},
		{"GET /api/batches/{id}/message", adminAccess, s.batchMessage},
		{"POST /api/batches/{id}/retry", adminAccess, s.batchRetry},
		{"GET /api/events", adminAccess, s.events},
		{"GET /api/events/follow", adminAccess, s.follow},

		// The actions on many letters or the daemon as a whole
		// (handlers.go).
		{"GET /api/held/{id}/message", adminAccess, s.heldMessage},
		{"POST /api/held/release", adminAccess, s.heldDecide(store.EventReleased)},
		{"POST /api/held/drop", adminAccess, s.heldDecide(store.EventDropped)},
		{"POST /api/batches/flush", adminAccess, s.batchFlush},
		{"GET /api/pause", adminAccess, s.pauseState},
		{"POST /api/pause", adminAccess, s.setPause(true)},
		{"POST /api/resume", adminAccess, s.setPause(false)},

		// A supporter's rights (privacy.go).
		{"GET /api/lookup", adminAccess, s.lookup},
		{"POST /api/erase", adminAccess, s.erase},

		// Backup (backup.go).
		{"POST /api/backup", adminAccess, s.backup},
	}
}

// pprofRoutes show memory and goroutines, letters included: admin only,
// and only on a loopback listener.
func pprofRoutes() []route {
	return []route{
		{"/debug/pprof/", adminAccess, pprof.Index},
		{"/debug/pprof/cmdline", adminAccess, pprof.Cmdline},
		{"/debug/pprof/profile", adminAccess, pprof.Profile},
		{"/debug/pprof/symbol", adminAccess, pprof.Symbol},
		{"/debug/pprof/trace", adminAccess, pprof.Trace},
	}
}

// handler is the whole listener: the Host check, the cross-origin check,
// then each route behind its access level.
func (s *Server) handler(pprofOK bool) http.Handler {
	mux := http.NewServeMux()
	rs := s.routes()
	if pprofOK {
		rs = append(rs, pprofRoutes()...)
	}
	for _, rt := range rs {
		mux.HandleFunc(rt.pattern, s.guard(rt.access, rt.handler))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s.checkHost(s.crossOrigin(mux))
}
