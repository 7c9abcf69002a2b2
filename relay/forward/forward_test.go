package forward

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/relay/deliver"
	"github.com/petitiond/petitiond/store"
)

// rig is a secondary's store and forwarder, with a receiving SMTP server
// standing in for the primary.
type rig struct {
	st      *store.Store
	primary *sinkserver.Server
	f       *Forwarder
	start   func()
	stop    func()
}

// newRig makes a rig whose forwarder runs.
func newRig(t *testing.T, policy deliver.Policy) *rig {
	t.Helper()
	r := prepareRig(t, policy)
	r.start()
	return r
}

// prepareRig makes a rig; start runs its forwarder.
func prepareRig(t *testing.T, policy deliver.Policy) *rig {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	primary, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := deliver.NewSMTP(deliver.SMTPOptions{Hostname: "mx2.campaign.test", Smarthost: primary.Addr, StartTLS: "off",
		Timeout: 5 * time.Second})
	f := New(st, tr, Options{Policy: policy, Workers: 2, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := &rig{st: st, primary: primary, f: f}
	var started bool
	r.start = func() {
		started = true
		go func() { done <- f.Run(ctx, context.Background()) }()
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if !started {
				return
			}
			if err := <-done; err != nil {
				t.Errorf("forwarder: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		r.stop()
		primary.Close()
		st.Close()
	})
	return r
}

// fast retries in a few milliseconds, and gives up after an hour.
var fast = deliver.Policy{Min: 10 * time.Millisecond, Max: 20 * time.Millisecond, GiveUpAfter: time.Hour}

// queue stores a letter as the secondary's front end does and returns its
// ID and bytes.
func (r *rig) queue(t *testing.T, sender, mailFrom string) (string, []byte) {
	t.Helper()
	body := fmt.Appendf(nil, "From: <%s>\r\nSubject: Libertad\r\n\r\nLiberen a los presos politicos.\r\n", sender)
	id, err := r.st.QueueForward(context.Background(), store.NewLetter{From: sender, RemoteIP: "192.0.2.7",
		Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "example.org"}, DedupAddress: sender, Body: body},
		mailFrom, "libertad@campaign.test")
	if err != nil {
		t.Fatal(err)
	}
	return id, body
}

func (r *rig) stats(t *testing.T) store.Stats {
	t.Helper()
	st, err := r.st.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (r *rig) waitStats(t *testing.T, what string, cond func(store.Stats) bool) {
	t.Helper()
	wait.For(t, what, 10*time.Second, func() bool { return cond(r.stats(t)) })
}

func (r *rig) events(t *testing.T, kind store.EventKind) []store.Event {
	t.Helper()
	evs, err := r.st.Events(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Event
	for _, e := range evs {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// TestForwardUnchanged: each letter reaches the primary byte for byte, with
// the sender's MAIL FROM (the null sender too) and the campaign address as
// recipient, and the secondary keeps nothing of it afterwards.
func TestForwardUnchanged(t *testing.T) {
	r := newRig(t, fast)
	ids := map[string][]byte{}
	a, abody := r.queue(t, "ana@example.org", "bounce@example.org")
	b, bbody := r.queue(t, "bo@example.org", "")
	ids[a], ids[b] = abody, bbody
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := r.primary.Wait(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		want := abody
		if bytes.Equal(m.Data, bbody) {
			want = bbody
		}
		if !bytes.Equal(m.Data, want) {
			t.Errorf("the primary got\n%q\nwant one of the letters as stored", m.Data)
		}
		if len(m.To) != 1 || m.To[0] != "libertad@campaign.test" {
			t.Errorf("RCPT %v", m.To)
		}
		if wantFrom := map[bool]string{true: "bounce@example.org", false: ""}[bytes.Equal(want, abody)]; m.From != wantFrom {
			t.Errorf("MAIL FROM %q, want %q", m.From, wantFrom)
		}
	}
	r.waitStats(t, "the queue to empty", func(st store.Stats) bool { return st.Forward == store.ForwardCounts{Forwarded: 2} })
	for id := range ids {
		if _, err := r.st.Letter(id); err == nil {
			t.Errorf("letter %s still on the secondary after the primary took it", id)
		}
	}
	if ev := r.events(t, store.EventForwarded); len(ev) != 2 {
		t.Errorf("%d forwarded events, want 2", len(ev))
	}
	if st := r.stats(t); st.Counted != 0 || st.Batches != 0 {
		t.Errorf("the secondary counted or batched: %+v", st)
	}
}

// TestForwardRetriesThenHolds: a 4xx from the primary defers the letter and
// it goes once the primary takes it; a 5xx holds it for an admin, whose
// release sends it again.
func TestForwardRetriesThenHolds(t *testing.T) {
	r := newRig(t, fast)
	r.primary.FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "try later"})
	a, _ := r.queue(t, "ana@example.org", "ana@example.org")
	wait.For(t, "two deferrals", 10*time.Second, func() bool { return len(r.events(t, store.EventDeferred)) >= 2 })
	if l, err := r.st.Letter(a); err != nil || l.State != store.StateForwarding || l.Forward.Attempts < 2 {
		t.Fatalf("deferred letter %+v, %v", l, err)
	}
	r.primary.FailRcpt(nil)
	r.waitStats(t, "the letter forwarded", func(st store.Stats) bool { return st.Forward.Forwarded == 1 })

	r.primary.FailData(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 7, 20}, Msg: "unverified"})
	b, bbody := r.queue(t, "bo@example.org", "bo@example.org")
	r.waitStats(t, "the refused letter held", func(st store.Stats) bool { return st.Held == 1 && st.Forward.Waiting == 0 })
	l, err := r.st.Letter(b)
	if err != nil || l.State != store.StateHeld || l.HeldReason != store.HeldForwardFailed {
		t.Fatalf("refused letter %+v, %v", l, err)
	}
	if msg, err := r.st.HeldMessage(b); err != nil || !bytes.Equal(msg, bbody) {
		t.Errorf("held show: %v", err)
	}
	if ev := r.events(t, store.EventFailed); len(ev) != 1 || ev[0].Letter != b {
		t.Errorf("failed events %+v", ev)
	}
	r.primary.FailData(nil)
	if _, err := r.st.Release(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	r.waitStats(t, "the released letter forwarded", func(st store.Stats) bool {
		return st.Forward.Forwarded == 2 && st.Held == 0 && st.Forward.Waiting == 0
	})
}

// TestForwardGivesUp: a primary that never takes the letter within
// give_up_after, over the attempts that implies, leaves it held.
func TestForwardGivesUp(t *testing.T) {
	r := newRig(t, deliver.Policy{Min: 5 * time.Millisecond, Max: 5 * time.Millisecond, GiveUpAfter: 50 * time.Millisecond})
	r.primary.FailMail(&sinkserver.Fault{Code: 421, Enhanced: [3]int{4, 3, 2}, Msg: "down"})
	id, _ := r.queue(t, "ana@example.org", "ana@example.org")
	r.waitStats(t, "the letter held", func(st store.Stats) bool { return st.Held == 1 })
	if l, err := r.st.Letter(id); err != nil || l.HeldReason != store.HeldForwardFailed {
		t.Errorf("letter %+v, %v", l, err)
	}
}

// TestForwardPaused: while the daemon is paused a look at the queue
// starts no attempt; resuming sends what waited.
func TestForwardPaused(t *testing.T) {
	r := prepareRig(t, fast)
	ctx := context.Background()
	if _, _, err := r.st.SetPause(ctx, true, "test"); err != nil {
		t.Fatal(err)
	}
	id, _ := r.queue(t, "ana@example.org", "ana@example.org")
	workers := deliver.NewDispatcher[string](1)
	if d := r.f.dispatch(ctx, workers, func() {}); d != idle {
		t.Errorf("paused dispatch sleeps %v, want %v", d, idle)
	}
	workers.Wait() // any attempt it started has ended
	if l, err := r.st.Letter(id); err != nil || l.Forward.Attempts != 0 {
		t.Errorf("letter while paused: %+v, %v", l, err)
	}
	if n := r.primary.MailCommands(); n != 0 {
		t.Errorf("%d transactions with the primary while paused", n)
	}
	r.start()
	if _, _, err := r.st.SetPause(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	r.waitStats(t, "the letter forwarded after the resume", func(st store.Stats) bool { return st.Forward.Forwarded == 1 })
}
