// Package admin is petitiond's admin HTTP listener ([admin]): the JSON API
// the admin commands use (stats, held letters, batches, events and a live
// event stream), /healthz, /metrics in the Prometheus text format and, on a
// loopback listener only, /debug/pprof/. It reads the store and changes
// state only through store calls, which record their own events.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/petitiond/petitiond/loopback"
	"github.com/petitiond/petitiond/store"
)

// Options configure the admin listener.
type Options struct {
	// Listen is [admin].listen, "host:port".
	Listen string
	// Token is the bearer token every request must carry; "" means none,
	// which New allows only on a loopback listener.
	Token  string
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Heartbeat is how often an idle event stream sends an empty line, so
	// proxies keep it open and a dead client is noticed; 0 means 15s.
	Heartbeat time.Duration
	// Parts, when set, says whether the daemon's other parts run (nil) or
	// which one stopped: /healthz then answers 503.
	Parts func() error
	// MinFreeBytes is store.min_free_bytes: /healthz answers 503 below it.
	MinFreeBytes int64
}

// Server is the admin listener.
type Server struct {
	st        *store.Store
	opt       Options
	log       *slog.Logger
	now       func() time.Time
	tokenHash [sha256.Size]byte
	metrics   *Metrics
	health    *healthCheck
	startSeq  uint64 // the journal's end when New ran: metrics count from there

	ctx    context.Context // ends at Shutdown: streams and the metrics feed stop
	cancel context.CancelFunc
	srv    *http.Server
	ln     net.Listener
}

// CheckListen refuses an admin listener that others could reach without a
// token: whoever reaches it can release letters and read who signed. Call it
// before anything listens.
func CheckListen(listen, token string) error {
	if listen == "" || token != "" || loopback.HostPort(listen) {
		return nil
	}
	return fmt.Errorf("admin: admin.listen %q is not a loopback address, so an admin token is required: "+
		"set admin.token (or PETITIOND_ADMIN_TOKEN), or listen on 127.0.0.1", listen)
}

// New makes the admin server for st; nothing listens until Start. It fails
// when CheckListen does.
func New(st *store.Store, opt Options) (*Server, error) {
	if err := CheckListen(opt.Listen, opt.Token); err != nil {
		return nil, err
	}
	s := &Server{st: st, opt: opt, log: opt.Logger, now: opt.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.opt.Heartbeat <= 0 {
		s.opt.Heartbeat = 15 * time.Second
	}
	if opt.Token != "" {
		s.tokenHash = sha256.Sum256([]byte(opt.Token))
	}
	var err error
	if s.startSeq, err = st.LastSeq(); err != nil {
		return nil, fmt.Errorf("admin: read the journal's end: %w", err)
	}
	s.metrics = newMetrics(st, s.now)
	s.health = &healthCheck{check: st.CheckWritable, free: st.FreeBytes, minFree: uint64(max(opt.MinFreeBytes, 0)),
		now: s.now, reuse: time.Second, timeout: 5 * time.Second}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
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
	s.srv = &http.Server{
		Handler:           s.handler(pprofOK),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: the event stream is long-lived; it sets a
		// deadline per write instead.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("admin listener", "addr", ln.Addr().String(), "token", s.opt.Token != "", "pprof", pprofOK)
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
		return fmt.Errorf("admin: shutdown: %w", err)
	}
	return nil
}

func (s *Server) handler(pprofOK bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /api/stats", s.stats)
	mux.HandleFunc("GET /api/held", s.heldList)
	mux.HandleFunc("POST /api/held/{id}/release", s.heldRelease)
	mux.HandleFunc("POST /api/held/{id}/drop", s.heldDrop)
	mux.HandleFunc("GET /api/batches", s.batchList)
	mux.HandleFunc("GET /api/batches/{id}", s.batchShow)
	mux.HandleFunc("GET /api/batches/{id}/message", s.batchMessage)
	mux.HandleFunc("POST /api/batches/{id}/retry", s.batchRetry)
	mux.HandleFunc("GET /api/events", s.events)
	mux.HandleFunc("GET /api/events/follow", s.follow)
	mux.HandleFunc("POST /api/backup", s.backup)
	if pprofOK {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return s.auth(mux)
}

// auth requires the bearer token on every request when one is set. Both
// sides are hashed first so the comparison takes the same time whatever the
// token's length and content.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.opt.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) != 1 {
			s.log.Warn("admin request with a missing or wrong token", "remote", r.RemoteAddr, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="petitiond"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		next.ServeHTTP(w, r)
	})
}
