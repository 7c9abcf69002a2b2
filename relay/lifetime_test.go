package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/testclock"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/store"
)

// gateWriter is a log destination that can be stuck, like stderr piped to a
// reader that stopped reading: once closed, every Write waits for open.
type gateWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	gate chan struct{} // nil: open
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	gate := w.gate
	w.mu.Unlock()
	if gate != nil {
		<-gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *gateWriter) close() {
	w.mu.Lock()
	w.gate = make(chan struct{})
	w.mu.Unlock()
}

func (w *gateWriter) open() {
	w.mu.Lock()
	close(w.gate)
	w.gate = nil
	w.mu.Unlock()
}

// lines parses what was written as JSON log lines.
func (w *gateWriter) lines(t *testing.T) []map[string]any {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(w.buf.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

var sessionInReply = regexp.MustCompile(`\(session ([0-9a-f]+)\)`)

// TestBlockedLogDoesNotDelayReplies: with the log stuck (nobody reads
// stderr), letters still get their 250; once the log moves again, every
// event's line is there, at its level (SPEC 8), with the session ID the
// reply named.
func TestBlockedLogDoesNotDelayReplies(t *testing.T) {
	e := testenv.Prepare(t, nil)
	w := &gateWriter{}
	e.Options.Logger = slog.New(slog.NewJSONHandler(w, nil))
	e.Start()
	w.close()
	opened := false
	defer func() {
		if !opened {
			w.open() // let the daemon stop
		}
	}()

	const letters = 5
	for i := range letters {
		from := string(rune('a'+i)) + "@ed.test"
		expectReply(t, from, e.Send(e.Signed("ed.test", from)), "250 2.0.0 queued as L")
	}
	bad := e.Send([]byte("From: eva@ed.test\r\nSubject: x\n\r\nbody\r\n"))
	expectReply(t, "bare LF", bad, "554 5.6.0")
	m := sessionInReply.FindStringSubmatch(bad.Text)
	if m == nil {
		t.Fatalf("refusal %q names no session", bad.Text)
	}
	session := m[1]

	w.open()
	opened = true
	byEvent := map[string][]map[string]any{}
	testenv.WaitFor(t, "the event lines", 10*time.Second, func() bool {
		byEvent = map[string][]map[string]any{}
		for _, l := range w.lines(t) {
			if ev, ok := l["event"].(string); ok {
				byEvent[ev] = append(byEvent[ev], l)
			}
		}
		return len(byEvent["accepted"]) == letters && len(byEvent["rejected"]) == 1
	})
	for _, l := range byEvent["accepted"] {
		if l["level"] != "INFO" || l["letter"] == nil || l["session"] == nil {
			t.Errorf("accepted line %v: want level INFO with letter and session", l)
		}
	}
	r := byEvent["rejected"][0]
	if r["level"] != "WARN" || r["session"] != session || r["class"] != string(store.RejectBareLineEnding) {
		t.Errorf("rejected line %v: want level WARN, session %s, class bare_line_ending", r, session)
	}
}

// listenerTrap opens the daemon's SMTP listeners and keeps them, so a test
// can close one underneath the daemon.
type listenerTrap struct {
	mu  sync.Mutex
	lns []net.Listener
}

func (lt *listenerTrap) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		lt.mu.Lock()
		lt.lns = append(lt.lns, ln)
		lt.mu.Unlock()
	}
	return ln, err
}

func (lt *listenerTrap) closeFirst(t *testing.T) {
	t.Helper()
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if len(lt.lns) == 0 {
		t.Fatal("no listener opened")
	}
	if err := lt.lns[0].Close(); err != nil {
		t.Fatal(err)
	}
}

// TestListenerClosedStopsRun: when the SMTP listener dies underneath the
// daemon, Run stops with an error naming it instead of running deaf.
func TestListenerClosedStopsRun(t *testing.T) {
	e := testenv.Prepare(t, nil)
	cfg := e.Config
	trap := &listenerTrap{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, cfg, relay.Options{Listen: trap.listen}) }()
	testenv.WaitFor(t, "the SMTP listener", 10*time.Second, func() bool {
		trap.mu.Lock()
		defer trap.mu.Unlock()
		return len(trap.lns) == 1
	})
	trap.closeFirst(t)
	select {
	case err := <-done:
		if err == nil || !regexp.MustCompile(`SMTP listener`).MatchString(err.Error()) {
			t.Errorf("Run = %v, want an error naming the SMTP listener", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running 20s after its SMTP listener died")
	}
	// It shut down properly: the store can be opened again.
	st, err := store.Open(cfg.Store.Dir, store.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("store after Run returned: %v", err)
	}
	st.Close()
}

// TestListenerClosedHealthz: a daemon that is not driven by Run reports a
// dead SMTP listener on /healthz (503) and through Done and Err.
func TestListenerClosedHealthz(t *testing.T) {
	trap := &listenerTrap{}
	e := testenv.Prepare(t, func(c *config.Config) { c.Admin.Listen = "127.0.0.1:0" })
	e.Options.Listen = trap.listen
	e.Start()
	health := func() int {
		resp, err := http.Get(e.AdminURL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := health(); code != http.StatusOK {
		t.Fatalf("healthz before: %d", code)
	}
	trap.closeFirst(t)
	testenv.WaitFor(t, "healthz 503", 10*time.Second, func() bool { return health() == http.StatusServiceUnavailable })
	d := e.Daemon()
	select {
	case <-d.Done():
	default:
		t.Error("Done not closed")
	}
	if err := d.Err(); err == nil {
		t.Error("Err is nil with the SMTP listener dead")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Env.Stop(ctx); err == nil {
		t.Error("Shutdown does not report the listener that died")
	}
}

// freeAddr is a loopback address nothing listens on (just now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStartFailureClosesWhatItOpened: when an SMTP address is taken, Run
// fails and leaves nothing open: the admin port and the store are free.
func TestStartFailureClosesWhatItOpened(t *testing.T) {
	cfg := testenv.Prepare(t, nil).Config
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg.SMTP.Listen = []string{"127.0.0.1:0", taken.Addr().String()}
	cfg.Admin.Listen = freeAddr(t)
	err = relay.Run(context.Background(), cfg, relay.Options{})
	if err == nil {
		t.Fatal("Run with an SMTP address in use succeeded")
	}
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		t.Errorf("admin address still taken after the failed start: %v", err)
	} else {
		ln.Close()
	}
	st, err := store.Open(cfg.Store.Dir, store.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("store still locked after the failed start: %v", err)
	}
	st.Close()
}

// TestNewFailureClosesStore: a part that cannot be made (here the DKIM
// signing key is missing) leaves the store closed.
func TestNewFailureClosesStore(t *testing.T) {
	cfg := testenv.Prepare(t, nil).Config
	cfg.DKIM = config.DKIM{Domain: "campaign.test", Selector: "s", KeyFile: filepath.Join(t.TempDir(), "missing.pem")}
	if _, err := relay.New(cfg, relay.Options{}); err == nil {
		t.Fatal("New with a missing key file succeeded")
	}
	st, err := store.Open(cfg.Store.Dir, store.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("store still locked after New failed: %v", err)
	}
	st.Close()
}

// TestReleasedOldLettersMakeOneBatch (SPEC 7): twenty held letters, older
// than max_wait, released one by one, wait from their release: they make
// one batch, not one batch each.
func TestReleasedOldLettersMakeOneBatch(t *testing.T) {
	clk := testclock.NewManual(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	e := testenv.Prepare(t, func(c *config.Config) {
		c.Batch.MaxWait = config.Duration{Duration: time.Hour}
		c.Batch.MaxLetters = 100
		c.Delivery.Mode = config.DeliveryMaildir
	})
	e.Options.Now = clk.Now
	e.Start()
	st := e.Store()
	const n = 20
	var ids []string
	for i := range n {
		from := "held" + string(rune('a'+i)) + "@rsa.test"
		expectReply(t, from, e.Send(e.Letter(from, "Libertad", "unsigned, so held")), "250 2.0.0 queued as L")
	}
	held, err := st.Held()
	if err != nil || len(held) != n {
		t.Fatalf("held = %d letters, %v; want %d", len(held), err, n)
	}
	for _, l := range held {
		ids = append(ids, l.ID)
	}

	clk.Advance(2 * time.Hour) // every held letter is older than max_wait
	for _, id := range ids {
		if _, err := st.Release(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	// The clock stands still: nothing is due yet. Each release woke the
	// closer; none closed a batch.
	if bs, _ := st.Batches(); len(bs) != 0 {
		t.Fatalf("%d batches right after the releases, want none before max_wait", len(bs))
	}

	// max_wait after the releases, a new letter wakes the closer (if the
	// last release has not already: then the new letter waits its turn).
	clk.Advance(time.Hour + time.Second)
	expectReply(t, "a verified letter", e.Send(e.Signed("ed.test", "late@ed.test")), "250 2.0.0 queued as L")
	var bs []store.Batch
	testenv.WaitFor(t, "the released letters batched", 10*time.Second, func() bool {
		var err error
		bs, err = st.Batches()
		batched := 0
		for _, b := range bs {
			batched += len(b.LetterIDs)
		}
		return err == nil && batched >= n
	})
	if len(bs) != 1 {
		t.Fatalf("%d batches, want one", len(bs))
	}
	in := map[string]bool{}
	for _, id := range bs[0].LetterIDs {
		in[id] = true
	}
	for _, id := range ids {
		if !in[id] {
			t.Errorf("released letter %s is not in the batch", id)
		}
	}
	if bs[0].Rule != store.CloseWait {
		t.Errorf("batch closed by %q, want max_wait", bs[0].Rule)
	}
	for _, id := range ids {
		if l, err := st.Letter(id); err != nil || l.Verdict.Kind != store.VerdictAdmin {
			t.Errorf("released letter %s: %+v, %v; want verdict admin", id, l, err)
		}
	}
	if err := e.Daemon().Err(); err != nil {
		t.Errorf("a part of the daemon stopped: %v", err)
	}
}

// TestShutdownRightAfterStart: a daemon stopped the moment it started (a
// SIGTERM during start-up) stops, even when its SMTP listeners have not
// begun to serve yet.
func TestShutdownRightAfterStart(t *testing.T) {
	cfg := testenv.Prepare(t, nil).Config
	for i := range 20 {
		d, err := relay.New(cfg, relay.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- d.Shutdown(ctx)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Shutdown = %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Shutdown right after Start still waiting after 30s", i)
		}
	}
}
