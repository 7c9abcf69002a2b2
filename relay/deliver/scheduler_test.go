package deliver

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/testclock"
	"github.com/petitiond/petitiond/store"
)

func TestBackoffDoublesUpToMax(t *testing.T) {
	p := Policy{Min: time.Second, Max: 8 * time.Second}
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {9, 8 * time.Second}} {
		for i := 0; i < 20; i++ {
			got := p.Backoff(c.n)
			if got < c.want*9/10 || got > c.want*11/10 {
				t.Fatalf("Backoff(%d) = %v, want %v ±10%%", c.n, got, c.want)
			}
		}
	}
}

// schedEnv is a store holding one closed batch for two recipients, and a
// scheduler delivering it through tr.
type schedEnv struct {
	st    *store.Store
	sched *Scheduler
	stop  func()
}

func newSchedEnv(t *testing.T, tr Transport, policy Policy) *schedEnv {
	t.Helper()
	return newSchedEnvWith(t, tr, SchedulerOptions{Policy: policy}, 1, "")
}

// newSchedEnvWith is newSchedEnv with options (From and Workers are set
// here), a batch of letters letters, and extra text in its message.
func newSchedEnvWith(t *testing.T, tr Transport, opt SchedulerOptions, letters int, text string) *schedEnv {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for i := range letters {
		from := fmt.Sprintf("ana%d@rsa.test", i)
		res, err := st.Accept(ctx, store.NewLetter{From: from, DedupAddress: from,
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "rsa.test"}, Body: []byte("Subject: x\r\n\r\nhola\r\n")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}
	b, err := st.CloseBatch(ctx, store.NewBatch{Number: 1, RunningTotal: uint64(letters), LetterIDs: ids,
		MessageID: "<batch-1@campaign.test>", Message: []byte("Subject: batch 1\r\nMessage-ID: <batch-1@campaign.test>\r\n\r\nletters\r\n" + text),
		Recipients: []string{"familias@ofapp.test", "copias@sr.test"}})
	if err != nil || b == nil {
		t.Fatalf("close batch: %v %v", b, err)
	}
	opt.From, opt.Workers = "relay@campaign.test", 2
	s := NewScheduler(st, tr, opt)
	return &schedEnv{st: st, sched: s, stop: runScheduler(t, s, st)}
}

// runScheduler runs s until the returned stop (also a cleanup of t), which
// ends it, waits for it and closes st.
func runScheduler(t *testing.T, s *Scheduler, st *store.Store) (stop func()) {
	runCtx, cancel := context.WithCancel(context.Background())
	abort, abortCancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := s.Run(runCtx, abort); err != nil {
			t.Errorf("scheduler: %v", err)
		}
		close(done)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		abortCancel()
		<-done
		st.Close()
	})
	t.Cleanup(stop)
	return stop
}

func (e *schedEnv) waitBatch(t *testing.T, what string, cond func(b *store.Batch) bool) *store.Batch {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := e.st.Batch(1)
		if err == nil && cond(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v %v", what, b, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sinkTransport(t *testing.T, sink *sinkserver.Server) Transport {
	return NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Smarthost: sink.Addr, StartTLS: StartTLSOff, Timeout: 5 * time.Second})
}

func TestSchedulerPermanentFailure(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sink.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no such user"})
	e := newSchedEnv(t, sinkTransport(t, sink), Policy{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond, GiveUpAfter: time.Hour})
	b := e.waitBatch(t, "both failed", func(b *store.Batch) bool {
		return b.Recipients[0].State == store.DeliveryFailed && b.Recipients[1].State == store.DeliveryFailed
	})
	for _, d := range b.Recipients {
		if d.Attempts != 1 || !strings.Contains(d.LastError, "550") {
			t.Errorf("%s: attempts %d, last error %q; a 5xx must fail at once", d.Address, d.Attempts, d.LastError)
		}
	}
	// An admin retry after the fault is fixed delivers at once: the
	// scheduler, idle with nothing due, sees the requeue on the store's feed.
	sink.FailRcpt(nil)
	if n, err := e.st.Retry(context.Background(), 1); err != nil || n != 2 {
		t.Fatalf("retry: %d %v", n, err)
	}
	e.waitBatch(t, "delivered after retry", (*store.Batch).Complete)
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("sink got %d copies, want 2", n)
	}
}

func TestSchedulerRetriesThenDelivers(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sink.FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "later"})
	e := newSchedEnv(t, sinkTransport(t, sink), Policy{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond, GiveUpAfter: time.Hour})
	b := e.waitBatch(t, "three attempts each", func(b *store.Batch) bool {
		return b.Recipients[0].Attempts >= 3 && b.Recipients[1].Attempts >= 3
	})
	if d := b.Recipients[0]; d.State != store.DeliveryDeferred || !strings.Contains(d.LastError, "451") {
		t.Errorf("deferred copy: %+v", d)
	}
	sink.FailRcpt(nil)
	e.waitBatch(t, "delivered", (*store.Batch).Complete)
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("sink got %d copies, want exactly 2", n)
	}
	events, _ := e.st.LastEvents(100)
	deferred := 0
	for _, ev := range events {
		if ev.Event == store.EventDeferred {
			deferred++
		}
	}
	if deferred < 4 {
		t.Errorf("%d deferred events, want one per failed attempt", deferred)
	}
}

func TestSchedulerGivesUp(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := sinkTransport(t, sink)
	sink.Close() // the host is down for good
	e := newSchedEnv(t, tr, Policy{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond, GiveUpAfter: 300 * time.Millisecond})
	b := e.waitBatch(t, "given up", func(b *store.Batch) bool {
		return b.Recipients[0].State == store.DeliveryFailed && b.Recipients[1].State == store.DeliveryFailed
	})
	for _, d := range b.Recipients {
		if d.Attempts < 2 || !strings.Contains(d.LastError, "gave up after") {
			t.Errorf("%s: attempts %d, last error %q", d.Address, d.Attempts, d.LastError)
		}
	}
}

// blockingTransport holds every delivery until released, so the test can
// look at the store while an attempt is in flight.
type blockingTransport struct {
	started chan string
	release chan struct{}
}

func (b *blockingTransport) Deliver(ctx context.Context, _, rcpt string, _ []byte) (Receipt, error) {
	b.started <- rcpt
	select {
	case <-b.release:
		return Receipt{Path: "released"}, nil
	case <-ctx.Done():
		return Receipt{}, ctx.Err()
	}
}

// TestAttemptRecordedBeforeDialing: while an attempt is in flight the store
// already shows it, with the next attempt pushed out by the backoff, so a
// crash now would retry later rather than at once.
func TestAttemptRecordedBeforeDialing(t *testing.T) {
	tr := &blockingTransport{started: make(chan string, 2), release: make(chan struct{})}
	e := newSchedEnv(t, tr, Policy{Min: time.Hour, Max: 2 * time.Hour, GiveUpAfter: 100 * time.Hour})
	for i := 0; i < 2; i++ {
		select {
		case <-tr.started:
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery started")
		}
	}
	b, err := e.st.Batch(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range b.Recipients {
		if d.Attempts != 1 || time.Until(d.NextAttempt) < 50*time.Minute {
			t.Errorf("in flight: %s attempts %d next %v", d.Address, d.Attempts, d.NextAttempt)
		}
	}
	if due, _, _ := e.st.Due(time.Now(), 10); len(due) != 0 {
		t.Errorf("copies in flight are due again: %v", due)
	}
	close(tr.release)
	e.waitBatch(t, "delivered", (*store.Batch).Complete)
}

// MinAttempts counts the attempts the policy makes before give_up_after,
// waits at their longest: by hand for two policies, and against a plain
// walk of the schedule for the daemon's default.
func TestMinAttempts(t *testing.T) {
	for _, c := range []struct {
		p    Policy
		want int
	}{
		// 0, 1.1s, 2.2s, ... 9.9s, then 11s is past 10s.
		{Policy{Min: time.Second, Max: time.Second, GiveUpAfter: 10 * time.Second}, 11},
		// 0, 22, 66 (waits 20, 40), then 50 at a time: 121, 176, 231, 286, 341.
		{Policy{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond, GiveUpAfter: 300 * time.Millisecond}, 8},
		{Policy{Min: time.Hour, Max: time.Hour, GiveUpAfter: time.Minute}, 2},
	} {
		if got := c.p.MinAttempts(); got != c.want {
			t.Errorf("%+v: MinAttempts = %d, want %d", c.p, got, c.want)
		}
	}
	p := Policy{Min: 5 * time.Minute, Max: time.Hour, GiveUpAfter: 120 * time.Hour}
	n, at := 1, time.Duration(0)
	for ; at < p.GiveUpAfter; n++ {
		at += p.wait(n) + p.wait(n)/10
	}
	if got := p.MinAttempts(); got != n {
		t.Errorf("default policy: MinAttempts = %d, the schedule makes %d", got, n)
	}
}

// TestClockJumpDoesNotGiveUpEarly: the clock jumps 1000 hours forward
// after the first attempt; a copy of a host that stays down is failed only
// after the attempts retry_min..give_up_after imply, not at its next
// attempt.
func TestClockJumpDoesNotGiveUpEarly(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := sinkTransport(t, sink)
	sink.Close() // the host is down for good
	clk := &testclock.Skewed{}
	tr2 := &jumpOnFirst{Transport: tr, jump: func() { clk.Advance(1000 * time.Hour) }}
	policy := Policy{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond, GiveUpAfter: 300 * time.Millisecond}
	e := newSchedEnvWith(t, tr2, SchedulerOptions{Policy: policy, Now: clk.Now}, 1, "")
	b := e.waitBatch(t, "given up", func(b *store.Batch) bool {
		return b.Recipients[0].State == store.DeliveryFailed && b.Recipients[1].State == store.DeliveryFailed
	})
	for _, d := range b.Recipients {
		if d.Attempts < policy.MinAttempts() || !strings.Contains(d.LastError, "gave up after") {
			t.Errorf("%s: failed after %d attempts (%q), want at least %d", d.Address, d.Attempts, d.LastError, policy.MinAttempts())
		}
	}
}

// jumpOnFirst calls jump once, as the first delivery starts.
type jumpOnFirst struct {
	Transport
	once sync.Once
	jump func()
}

func (j *jumpOnFirst) Deliver(ctx context.Context, from, rcpt string, msg []byte) (Receipt, error) {
	j.once.Do(j.jump)
	return j.Transport.Deliver(ctx, from, rcpt, msg)
}

// The delivered event says which host took the copy and what it replied.
func TestDeliveredEventHasReceipt(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	e := newSchedEnv(t, sinkTransport(t, sink), Policy{Min: time.Second, Max: time.Second, GiveUpAfter: time.Hour})
	e.waitBatch(t, "delivered", (*store.Batch).Complete)
	events, _ := e.st.LastEvents(100)
	n := 0
	for _, ev := range events {
		if ev.Event != store.EventDelivered {
			continue
		}
		n++
		if want := "[127.0.0.1]:" + portOf(t, sink.Addr) + " said: 250 2.0.0"; !strings.Contains(ev.Reason, want) {
			t.Errorf("delivered event %q lacks %q", ev.Reason, want)
		}
	}
	if n != 2 {
		t.Errorf("%d delivered events, want 2", n)
	}
}

// A copy deferred because the host lacks 8BITMIME keeps that kind, so pages
// and scripts can say it without reading the text; it is not given up
// early either.
func TestNo8BitMIMEKindKept(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{No8BitMIME: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	e := newSchedEnvWith(t, sinkTransport(t, sink), SchedulerOptions{Policy: Policy{Min: time.Hour, Max: time.Hour, GiveUpAfter: 100 * time.Hour}},
		1, "Libertad a los presos pol\xc3\xadticos.\r\n")
	b := e.waitBatch(t, "deferred", func(b *store.Batch) bool {
		return b.Recipients[0].State == store.DeliveryDeferred && b.Recipients[1].State == store.DeliveryDeferred
	})
	for _, d := range b.Recipients {
		if d.ErrorKind != store.FailureNo8BitMIME || !strings.Contains(d.LastError, "8BITMIME") {
			t.Errorf("%s: kind %q, error %q", d.Address, d.ErrorKind, d.LastError)
		}
	}
	if len(sink.Messages()) != 0 {
		t.Errorf("an 8-bit batch went to a host without 8BITMIME")
	}
}

// A copy the host refuses as too big is not failed but set aside for the
// batch closer to split; a batch of one letter cannot be split, and fails
// with an error naming the letter.
func TestTooBigSetAsideOrFailed(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{MaxMessageBytes: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	policy := Policy{Min: time.Hour, Max: time.Hour, GiveUpAfter: 100 * time.Hour}
	for letters, want := range map[int]store.DeliveryState{1: store.DeliveryFailed, 2: store.DeliveryDeferred} {
		e := newSchedEnvWith(t, sinkTransport(t, sink), SchedulerOptions{Policy: policy}, letters, "")
		b := e.waitBatch(t, "settled", func(b *store.Batch) bool {
			return b.Recipients[0].State == want && b.Recipients[1].State == want && b.Recipients[1].Attempts > 0
		})
		for _, d := range b.Recipients {
			if d.ErrorKind != store.FailureTooBig || d.Attempts != 1 {
				t.Errorf("%d letters, %s: %+v", letters, d.Address, d)
			}
			switch letters {
			case 1:
				if !strings.Contains(d.LastError, "letter "+b.LetterIDs[0]+" alone") || d.TooBig != nil {
					t.Errorf("one letter, %s: %+v", d.Address, d)
				}
			case 2:
				if d.TooBig == nil || d.TooBig.Limit != 40 || !d.NextAttempt.IsZero() {
					t.Errorf("two letters, %s: %+v", d.Address, d)
				}
			}
		}
		if letters == 2 {
			if refs, err := e.st.SplitsDue(); err != nil || len(refs) != 2 {
				t.Errorf("copies waiting to be split: %v, %v", refs, err)
			}
		}
		e.stop()
	}
}
