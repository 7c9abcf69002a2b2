package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/relay/inbound"
	"github.com/petitiond/petitiond/store"
)

func openStore(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startServer runs an admin server on listen for st until the test ends.
func startServer(t *testing.T, st *store.Store, listen, token string) *Server {
	t.Helper()
	return startServerWith(t, st, Options{Listen: listen, Token: token})
}

// testToken is the admin token of servers whose test names none.
const testToken = "t3st-admin-token"

// startServerWith runs an admin server with opt until the test ends.
func startServerWith(t *testing.T, st *store.Store, opt Options) *Server {
	t.Helper()
	if opt.Token == "" {
		opt.Token = testToken
	}
	opt.Logger = slog.New(slog.DiscardHandler)
	s, err := New(st, opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func baseOf(s *Server) string { return "http://" + s.Addr().String() }

// reject appends one "rejected" event: the cheapest way to make events.
func reject(t *testing.T, st *store.Store, i int) {
	t.Helper()
	if err := st.Reject(context.Background(), store.Rejection{From: fmt.Sprintf("s%d@x.test", i), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		listen, token string
		ok            bool
	}{
		{"", "", true},
		{"127.0.0.1:8025", "", true},
		{"127.0.0.2:0", "", true},
		{"[::1]:8025", "", true},
		{"localhost:8025", "", true},
		{"0.0.0.0:0", "", false},
		{":8025", "", false},
		{"[::]:8025", "", false},
		{"192.0.2.1:8025", "", false},
		{"admin.example:8025", "", false},
		{"0.0.0.0:0", "t0ken", true},
	} {
		err := CheckListen(c.listen, c.token)
		if (err == nil) != c.ok {
			t.Errorf("CheckListen(%q, %q) = %v, want ok %v", c.listen, c.token, err, c.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "admin.listen") || !strings.Contains(err.Error(), "admin.token")) {
			t.Errorf("CheckListen(%q): error %q does not name admin.listen and admin.token", c.listen, err)
		}
	}
}

func TestAuth(t *testing.T) {
	st := openStore(t)
	s := startServer(t, st, "127.0.0.1:0", "s3cret token")
	for _, c := range []struct {
		header string
		want   int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Bearer s3cret", http.StatusUnauthorized},
		{"Bearer s3cret token2", http.StatusUnauthorized},
		{"Basic s3cret token", http.StatusUnauthorized},
		{"Bearer s3cret token", http.StatusOK},
		{"bearer s3cret token", http.StatusOK},
	} {
		for _, path := range []string{"/api/stats", "/metrics", "/debug/pprof/"} {
			req, _ := http.NewRequest("GET", baseOf(s)+path, nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e Error
			if resp.StatusCode == http.StatusUnauthorized {
				if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
					t.Errorf("%s with %q: 401 without a JSON error (%v)", path, c.header, err)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: 401 without WWW-Authenticate", path)
				}
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s with %q: %d, want %d", path, c.header, resp.StatusCode, c.want)
			}
		}
	}
	// The client names the fix.
	c, err := NewClient(baseOf(s), "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stats(context.Background()); !errors.Is(err, ErrUnauthorized) ||
		err.Error() != "admin token rejected (401): set PETITIOND_ADMIN_TOKEN or admin.token" {
		t.Errorf("wrong token: %v", err)
	}
}

// TestPprofOnlyOnLoopback: the listener decides; a non-loopback one (with a
// token, as it must have) has no /debug/pprof/.
func TestPprofOnlyOnLoopback(t *testing.T) {
	st := openStore(t)
	for _, c := range []struct {
		handlerFor bool
		want       int
	}{{true, http.StatusOK}, {false, http.StatusNotFound}} {
		s, err := New(st, Options{Listen: "127.0.0.1:0", Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "/debug/pprof/", nil)
		req.Host = "127.0.0.1"
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := &recorder{header: http.Header{}}
		s.handler(c.handlerFor).ServeHTTP(rec, req)
		if rec.status != c.want {
			t.Errorf("pprof enabled %v: %d, want %d", c.handlerFor, rec.status, c.want)
		}
	}
}

type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(code int) { r.status = code }

// TestHealthz: 200 while the store takes writes, 503 once it cannot.
func TestHealthz(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, st, "127.0.0.1:0", "")
	s.health.reuse = 50 * time.Millisecond // keep the test quick
	get := func() int {
		resp, err := http.Get(baseOf(s) + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	commits, _ := st.CommitStats()
	if code := get(); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
	if after, _ := st.CommitStats(); after != commits+1 {
		t.Errorf("healthz made %d commits, want 1 (a real write)", after-commits)
	}
	st.Close()
	wait.For(t, "healthz 503 after the store closed", 5*time.Second, func() bool { return get() == http.StatusServiceUnavailable })
}

// TestFollowResumes: a follower sees events as they come, and after the
// listener went away and came back on the same port, it resumes after the
// last event it saw: nothing missed, nothing twice.
func TestFollowResumes(t *testing.T) {
	st := openStore(t)
	reject(t, st, 0) // before the follower: -n 1 shows it
	s := startServer(t, st, "127.0.0.1:0", "")
	c, err := NewClient(baseOf(s), testToken)
	if err != nil {
		t.Fatal(err)
	}
	c.MaxBackoff = 100 * time.Millisecond
	var mu sync.Mutex
	var seqs []uint64
	var lost, back int
	seen := func(n int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return len(seqs) >= n }
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Follow(ctx, 1, func(e Event) error {
			mu.Lock()
			seqs = append(seqs, e.Seq)
			mu.Unlock()
			return nil
		}, FollowNotify{
			Lost: func(error) { mu.Lock(); lost++; mu.Unlock() },
			Back: func() { mu.Lock(); back++; mu.Unlock() },
		})
	}()
	wait.For(t, "the backlog event", 5*time.Second, seen(1))
	for i := 1; i <= 3; i++ {
		reject(t, st, i)
	}
	wait.For(t, "live events", 5*time.Second, seen(4))

	// The listener goes; events happen meanwhile; it comes back.
	addr := s.Addr().String()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 4; i <= 6; i++ {
		reject(t, st, i)
	}
	startServer(t, st, addr, "")
	reject(t, st, 7)
	wait.For(t, "events after the restart", 5*time.Second, seen(8))
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("sequence numbers %v, want 1..8 in order", seqs)
		}
	}
	if lost == 0 || back == 0 {
		t.Errorf("notified lost %d, back %d times; want both", lost, back)
	}
}

// TestObserve: events count where they belong, by their typed kind and
// class; an admin's requeue is not a delivery attempt, nor is mail to a
// supporter a batch copy's.
func TestObserve(t *testing.T) {
	m := newMetrics(openStore(t), time.Now)
	for _, e := range []store.Event{
		{Event: store.EventAccepted}, {Event: store.EventRejected, Class: store.RejectSize, Reason: "whatever the text says"},
		{Event: store.EventRejected, Class: "smuggled_class", Reason: "bare CR or LF"},
		{Event: store.EventBatched}, {Event: store.EventDeferred, Batch: 1, Reason: "attempt 1: 451 later; next try soon"},
		{Event: store.EventRequeued, Reason: "after: 550 no"}, {Event: store.EventPurged},
		// Mail to a supporter names a letter: not a batch copy's attempt.
		{Event: store.EventDeferred, Letter: "L00000001", Reason: "receipt to the sender: attempt 1: 451 later"},
		{Event: store.EventConfirmed, Letter: "L00000002"},
	} {
		m.observe(e)
	}
	m.SessionRefused(inbound.RefusedMaxPerIP)
	m.SessionRefused("new_limit")
	m.Verdict(inbound.DKIMTempError)
	for _, c := range []struct {
		c    prometheus.Counter
		want float64
	}{
		{m.letters.WithLabelValues("accepted"), 1}, {m.letters.WithLabelValues("rejected"), 2},
		{m.rejections.WithLabelValues("size"), 1}, {m.rejections.WithLabelValues("other"), 1},
		{m.rejections.WithLabelValues("bare_line_ending"), 0}, {m.batches, 1},
		{m.attempts.WithLabelValues("deferred"), 1}, {m.letters.WithLabelValues("confirmed"), 1},
		{m.refused.WithLabelValues("max_per_ip"), 1}, {m.refused.WithLabelValues("other"), 1},
		{m.dkim.WithLabelValues("temperror"), 1},
	} {
		var pb dto.Metric
		if err := c.c.Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != c.want {
			t.Errorf("%s = %v, want %v", c.c.Desc(), got, c.want)
		}
	}
}

// TestHealthzParts: a part of the daemon that stopped turns /healthz to
// 503, naming it, although the store is fine.
func TestHealthzParts(t *testing.T) {
	var mu sync.Mutex
	var stopped error
	s := startServerWith(t, openStore(t), Options{Listen: "127.0.0.1:0", Parts: func() error {
		mu.Lock()
		defer mu.Unlock()
		return stopped
	}})
	get := func() (int, string) {
		resp, err := http.Get(baseOf(s) + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(); code != http.StatusOK {
		t.Fatalf("healthz with every part running: %d %s", code, body)
	}
	mu.Lock()
	stopped = errors.New("SMTP listener: use of closed network connection")
	mu.Unlock()
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "SMTP listener") {
		t.Errorf("healthz with a stopped part: %d %s", code, body)
	}
}

func TestBaseURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8025": "http://127.0.0.1:8025",
		"0.0.0.0:8025":   "http://127.0.0.1:8025",
		":8025":          "http://127.0.0.1:8025",
		"[::]:8025":      "http://[::1]:8025",
		"localhost:80":   "http://localhost:80",
	} {
		if got, err := BaseURL(listen); err != nil || got != want {
			t.Errorf("BaseURL(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
}
