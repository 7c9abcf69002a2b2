package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func rejectN(t *testing.T, s *Store, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := s.Reject(context.Background(), Rejection{From: "x@example.com", Reason: fmt.Sprintf("r%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func seqs(evs []Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func equalSeqs(evs []Event, want ...uint64) bool {
	got := seqs(evs)
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func TestJournalBounded(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, JournalMax: 10})
	rejectN(t, s, 1, 25)

	last, err := s.LastEvents(100)
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(last, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25) {
		t.Fatalf("LastEvents(100) seqs = %v, want 16..25", seqs(last))
	}
	for i, e := range last {
		if want := fmt.Sprintf("r%d", 16+i); e.Reason != want || e.Event != EventRejected {
			t.Errorf("event %d = %+v, want reason %s", e.Seq, e, want)
		}
	}
	if n := bucketLen(t, s, bucketEvents); n != 10 {
		t.Errorf("journal bucket holds %d events, want 10", n)
	}
	if last, _ := s.LastEvents(3); !equalSeqs(last, 23, 24, 25) {
		t.Errorf("LastEvents(3) = %v, want 23 24 25", seqs(last))
	}
	if last, _ := s.LastEvents(0); len(last) != 0 {
		t.Errorf("LastEvents(0) = %v", seqs(last))
	}
}

func TestEventsPaging(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, JournalMax: 10})
	rejectN(t, s, 1, 25)
	for _, tc := range []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{0, 4, []uint64{16, 17, 18, 19}}, // trimmed events are skipped
		{19, 4, []uint64{20, 21, 22, 23}},
		{23, 4, []uint64{24, 25}},
		{25, 4, nil},
		{100, 4, nil},
		{20, 0, []uint64{21, 22, 23, 24, 25}}, // no limit
	} {
		evs, err := s.Events(tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !equalSeqs(evs, tc.want...) {
			t.Errorf("Events(%d, %d) = %v, want %v", tc.after, tc.limit, seqs(evs), tc.want)
		}
	}
	// Following the journal page by page reads every kept event once.
	var all []uint64
	var after uint64
	for {
		page, err := s.Events(after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, seqs(page)...)
		after = page[len(page)-1].Seq
	}
	if len(all) != 10 || all[0] != 16 || all[9] != 25 {
		t.Errorf("paged journal = %v", all)
	}
}

// Lowering JournalMax across a restart must still bound the journal.
func TestJournalBoundAfterReopenWithSmallerMax(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now, JournalMax: 100})
	if err != nil {
		t.Fatal(err)
	}
	rejectN(t, s, 1, 30)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Now: clk.Now, JournalMax: 10})
	rejectN(t, s, 31, 35)
	if n := bucketLen(t, s, bucketEvents); n > 10 {
		// BUG: writer.event (events.go) deletes only the single key
		// seq-JournalMax, so older events are never trimmed.
		t.Errorf("journal holds %d events with JournalMax 10", n)
	}
}

func TestSubscribe(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	rejectN(t, s, 1, 2) // before subscribing: not delivered
	sub := s.Subscribe()
	defer sub.Close()

	res := mustAccept(t, s, verified(clk, "ana@example.org"))
	rejectN(t, s, 3, 4)
	b, err := s.CloseBatch(context.Background(), 10, []string{"familias@ofapp.example"}, simpleBuild)
	if err != nil {
		t.Fatal(err)
	}

	want := []struct {
		seq  uint64
		kind string
	}{{3, EventAccepted}, {4, EventRejected}, {5, EventRejected}, {6, EventBatched}}
	for _, w := range want {
		e := recv(t, sub)
		if e.Seq != w.seq || e.Event != w.kind {
			t.Fatalf("got event %d %s, want %d %s", e.Seq, e.Event, w.seq, w.kind)
		}
		switch e.Event {
		case EventAccepted:
			if e.Letter != res.ID || e.Sender != "ana@example.org" {
				t.Errorf("accepted event = %+v", e)
			}
		case EventBatched:
			if e.Batch != b.ID {
				t.Errorf("batched event = %+v", e)
			}
		}
	}
	// What the subscription delivered is what the journal holds.
	journal, _ := s.Events(2, 0)
	if !equalSeqs(journal, 3, 4, 5, 6) {
		t.Errorf("journal = %v", seqs(journal))
	}
	select {
	case e := <-sub.C:
		t.Errorf("unexpected extra event %+v", e)
	default:
	}

	// A failed write publishes nothing.
	bad := verified(clk, "bea@example.org")
	bad.DedupAddress = ""
	if _, err := s.Accept(context.Background(), bad); err == nil {
		t.Fatal("Accept without dedup address succeeded")
	}
	rejectN(t, s, 7, 7)
	if e := recv(t, sub); e.Seq != 7 || e.Reason != "r7" {
		t.Errorf("after a failed write got %+v, want seq 7", e)
	}

	sub.Close()
	if _, ok := <-sub.C; ok {
		t.Error("channel still open after Subscription.Close")
	}
	sub.Close() // harmless
	rejectN(t, s, 8, 8)
}

func TestSubscriptionClosedByStoreClose(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	sub := s.Subscribe()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-sub.C:
		if ok {
			t.Error("got an event, want a closed channel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("subscription not closed by Store.Close")
	}
	sub.Close()
}

// gateHandler is a slog handler that stalls while logging one sender's
// events: it stands for the scheduler pausing a goroutine between its
// commit and the publishing of its events.
type gateHandler struct {
	sender  string
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func (h *gateHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *gateHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *gateHandler) WithGroup(string) slog.Handler            { return h }
func (h *gateHandler) Handle(_ context.Context, r slog.Record) error {
	stall := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "sender" && a.Value.String() == h.sender {
			stall = true
		}
		return true
	})
	if stall {
		h.once.Do(func() { close(h.entered) })
		<-h.gate
	}
	return nil
}

// A follower must see events in commit (Seq) order, whatever the writers'
// goroutines do after their commit.
func TestSubscribeOrderAcrossWriters(t *testing.T) {
	t.Parallel()
	clk := newClock()
	h := &gateHandler{sender: "slow@example.org", entered: make(chan struct{}), gate: make(chan struct{})}
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, Logger: slog.New(h)})
	var openGate sync.Once
	letGo := func() { openGate.Do(func() { close(h.gate) }) }
	t.Cleanup(letGo) // runs before the store's Close
	sub := s.Subscribe()
	defer sub.Close()

	slowDone := make(chan error, 1)
	go func() {
		_, err := s.Accept(context.Background(), verified(clk, "slow@example.org"))
		slowDone <- err
	}()
	select {
	case <-h.entered: // committed as seq 1, not yet published
	case <-time.After(5 * time.Second):
		t.Fatal("slow writer never reached publishing")
	}
	fastDone := make(chan error, 1)
	go func() {
		_, err := s.Accept(context.Background(), verified(clk, "fast@example.org"))
		fastDone <- err
	}()
	// Let the fast writer finish (or stay blocked behind the slow one, which
	// would be fine), then let the slow one go.
	select {
	case err := <-fastDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(500 * time.Millisecond):
	}
	letGo()
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}

	first, second := recv(t, sub), recv(t, sub)
	if first.Seq != 1 || second.Seq != 2 {
		// BUG: Store.update (store.go) publishes from each caller's
		// goroutine after its commit, so events reach followers (and the
		// log) in whatever order those goroutines run, not in Seq order.
		t.Errorf("subscription delivered seq %d (%s) then %d (%s), want 1 then 2",
			first.Seq, first.Sender, second.Seq, second.Sender)
	}
}

// The JSON shapes scripts read (SPEC 9): absent fields are omitted.
func TestJSONShapes(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	rejectN(t, s, 1, 1)
	evs := allEvents(t, s)
	data, err := json.Marshal(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "event", "sender", "reason"} {
		if _, ok := m[k]; !ok {
			t.Errorf("event JSON %s lacks %q", data, k)
		}
	}
	for _, k := range []string{"letter", "batch", "ip", "recipient"} {
		if _, ok := m[k]; ok {
			t.Errorf("event JSON %s has empty field %q", data, k)
		}
	}
	if ts, _ := m["time"].(string); ts != clk.Now().Format(time.RFC3339) {
		t.Errorf("event time = %v, want RFC 3339 %s", m["time"], clk.Now().Format(time.RFC3339))
	}

	data, err = json.Marshal(mustStats(t, s))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"counted", "duplicates", "held", "rejected", "batches", "deliveries"} {
		if _, ok := st[k]; !ok {
			t.Errorf("stats JSON %s lacks %q", data, k)
		}
	}
	d, _ := st["deliveries"].(map[string]any)
	for _, k := range []string{"queued", "deferred", "delivered", "failed"} {
		if _, ok := d[k]; !ok {
			t.Errorf("stats JSON %s lacks deliveries.%q", data, k)
		}
	}
}
