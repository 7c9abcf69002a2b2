package deliver

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/store"
)

// supporterEnv is a store with a confirmation request queued for each of
// senders, and a scheduler whose supporters' transport is tr (batches have
// a transport that must never be used).
type supporterEnv struct {
	st      *store.Store
	letters []string
}

func newSupporterEnv(t *testing.T, tr Transport, opt SchedulerOptions, paused bool, senders ...string) *supporterEnv {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if paused {
		if _, _, err := st.SetPause(ctx, true, "test"); err != nil {
			t.Fatal(err)
		}
	}
	e := &supporterEnv{st: st}
	for i, from := range senders {
		res, err := st.Accept(ctx, store.NewLetter{From: from, DedupAddress: from, Hold: store.HeldConfirm,
			ConfirmVia: "libertad@campaign.test", Verdict: store.Verdict{Kind: store.VerdictUnverified},
			Body: []byte("Subject: x\r\n\r\nhola\r\n")})
		if err != nil {
			t.Fatal(err)
		}
		tok := store.ConfirmToken{ID: strings.Repeat(string(rune('a'+i)), 8), Secret: "secret"}
		if _, err := st.SendConfirm(ctx, store.ConfirmSend{Letter: res.ID, Token: tok, TTL: time.Hour,
			Message: []byte("From: relay@campaign.test\r\nTo: " + from + "\r\nSubject: confirm\r\n\r\nreply, please\r\n")}); err != nil {
			t.Fatal(err)
		}
		e.letters = append(e.letters, res.ID)
	}
	opt.From, opt.Supporters, opt.Workers = "relay@campaign.test", tr, 2
	runScheduler(t, NewScheduler(st, failTransport{t}, opt), st)
	return e
}

// failTransport stands for the batches' transport where none may be used.
type failTransport struct{ t *testing.T }

func (f failTransport) Deliver(context.Context, string, string, []byte) (Receipt, error) {
	f.t.Errorf("mail to a supporter went through the batches' transport")
	return Receipt{}, &Error{Permanent: true, Msg: "wrong transport"}
}

func (e *supporterEnv) waitCounts(t *testing.T, what string, cond func(store.SupporterMailCounts) bool) store.SupporterMailCounts {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := e.st.Stats()
		if err == nil && cond(st.Supporters) {
			return st.Supporters
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v %v", what, st.Supporters, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Mail to supporters goes through its own transport with the null
// envelope sender, is retried after a temporary failure, and leaves the
// queue once delivered.
func TestSupporterMailDelivered(t *testing.T) {
	sink := startSink(t, sinkserver.Options{})
	sink.FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "greylisted"})
	e := newSupporterEnv(t, sinkTransport(t, sink),
		SchedulerOptions{Policy: Policy{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond, GiveUpAfter: time.Hour}},
		false, "ana@sin-firma.test")
	deadline := time.Now().Add(15 * time.Second)
	for deferred := 0; deferred == 0; {
		evs, _ := e.st.LastEvents(50)
		for _, ev := range evs {
			if ev.Event == store.EventDeferred && ev.Letter == e.letters[0] {
				deferred++
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no deferred event for the greylisted request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sink.FailRcpt(nil)
	e.waitCounts(t, "the request delivered", func(c store.SupporterMailCounts) bool { return c.Queued == 0 })
	msgs := sink.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || len(msgs[0].To) != 1 || msgs[0].To[0] != "ana@sin-firma.test" {
		t.Fatalf("sink got %+v, want one message from <> to the supporter", msgs)
	}
	evs, _ := e.st.LastEvents(50)
	last := evs[len(evs)-1]
	if last.Event != store.EventDelivered || last.Letter != e.letters[0] || last.Batch != 0 ||
		!strings.HasPrefix(last.Reason, "confirmation request to the sender: ") {
		t.Errorf("last event %+v", last)
	}
}

// A permanent refusal fails the request at once: its letter is held as
// unconfirmed.
func TestSupporterMailRefused(t *testing.T) {
	sink := startSink(t, sinkserver.Options{})
	sink.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no such user"})
	e := newSupporterEnv(t, sinkTransport(t, sink),
		SchedulerOptions{Policy: Policy{Min: time.Hour, Max: time.Hour, GiveUpAfter: 100 * time.Hour}},
		false, "nadie@sin-firma.test")
	e.waitCounts(t, "the request failed", func(c store.SupporterMailCounts) bool { return c.ConfirmUndeliverable == 1 })
	l, err := e.st.Letter(e.letters[0])
	if err != nil || l.HeldReason != store.HeldUnconfirmed {
		t.Errorf("letter %+v, %v; want held as unconfirmed", l, err)
	}
}

// While paused nothing goes to supporters; resuming sends it.
func TestSupporterMailWaitsForResume(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "supporters")
	seen := &pauseSeen{ch: make(chan struct{}, 1)}
	e := newSupporterEnv(t, Mailbox{Dir: dir},
		SchedulerOptions{Policy: Policy{Min: time.Hour, Max: time.Hour, GiveUpAfter: 100 * time.Hour}, Logger: slog.New(seen)},
		true, "ana@sin-firma.test", "beto@sin-firma.test")
	select {
	case <-seen.ch:
	case <-time.After(15 * time.Second):
		t.Fatal("the scheduler never looked at the queue")
	}
	if c, _ := e.st.Stats(); c.Supporters.Queued != 2 {
		t.Fatalf("queued %d", c.Supporters.Queued)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "new", "*")); len(files) != 0 {
		t.Fatalf("mail written while paused: %v", files)
	}
	if _, _, err := e.st.SetPause(context.Background(), false, ""); err != nil {
		t.Fatal(err)
	}
	e.waitCounts(t, "both delivered", func(c store.SupporterMailCounts) bool { return c.Queued == 0 })
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	if len(files) != 2 {
		t.Fatalf("supporters Maildir holds %v, want 2 messages", files)
	}
	got := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "Return-Path: <>\nDelivered-To: ") {
			t.Errorf("%s starts %q", f, b[:min(60, len(b))])
		}
		got[strings.SplitN(strings.SplitN(string(b), "Delivered-To: ", 2)[1], "\n", 2)[0]] = true
	}
	if !got["ana@sin-firma.test"] || !got["beto@sin-firma.test"] {
		t.Errorf("Delivered-To lines %v", got)
	}
}

// pauseSeen is a log handler that signals the scheduler's line saying it
// found the daemon paused.
type pauseSeen struct {
	slog.Handler
	ch chan struct{}
}

func (p *pauseSeen) Enabled(context.Context, slog.Level) bool { return true }

func (p *pauseSeen) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "delivery paused") {
		select {
		case p.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

func (p *pauseSeen) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *pauseSeen) WithGroup(string) slog.Handler      { return p }
