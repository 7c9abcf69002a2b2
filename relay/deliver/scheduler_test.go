package deliver

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
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
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := st.Accept(ctx, store.NewLetter{From: "ana@rsa.test", DedupAddress: "ana@rsa.test",
		Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "rsa.test"}, Body: []byte("Subject: x\r\n\r\nhola\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CloseBatch(ctx, store.NewBatch{Number: 1, RunningTotal: 1, LetterIDs: []string{res.ID},
		MessageID: "<batch-1@campaign.test>", Message: []byte("Subject: batch 1\r\nMessage-ID: <batch-1@campaign.test>\r\n\r\nletters\r\n"),
		Recipients: []string{"familias@ofapp.test", "copias@sr.test"}})
	if err != nil || b == nil {
		t.Fatalf("close batch: %v %v", b, err)
	}
	s := NewScheduler(st, tr, SchedulerOptions{From: "relay@campaign.test", Policy: policy, Workers: 2})
	runCtx, cancel := context.WithCancel(context.Background())
	abort, abortCancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := s.Run(runCtx, abort); err != nil {
			t.Errorf("scheduler: %v", err)
		}
		close(done)
	}()
	e := &schedEnv{st: st, sched: s}
	e.stop = sync.OnceFunc(func() {
		cancel()
		abortCancel()
		<-done
		st.Close()
	})
	t.Cleanup(e.stop)
	return e
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
