package batch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/relay/deliver"
	"github.com/petitiond/petitiond/store"
)

var testRecipients = []string{"familias@ofapp.test", "copias@sr.test"}

func openTestStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// acceptLetters stores n counted letters, "Carta de sN", and returns their IDs.
func acceptLetters(t *testing.T, st *store.Store, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		from := fmt.Sprintf("s%d@ed.test", i)
		body := fmt.Sprintf("From: <%s>\r\nSubject: Libertad\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCarta de s%d.\r\n", from, i)
		res, err := st.Accept(context.Background(), store.NewLetter{From: from, DedupAddress: from,
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"}, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}
	return ids
}

func testCloser(st *store.Store, maxLetters int) *Closer {
	return NewCloser(CloserConfig{MaxLetters: maxLetters, MaxWait: time.Hour, CampaignName: "Libertad",
		From: "relay@campaign.test", Recipients: testRecipients}, st, slog.New(slog.DiscardHandler), nil)
}

// runParts runs the closer and a delivery scheduler into sink until the
// test ends.
func runParts(t *testing.T, st *store.Store, c *Closer, sink *sinkserver.Server) {
	t.Helper()
	tr := deliver.NewSMTP(deliver.SMTPOptions{Hostname: "mx.campaign.test", Smarthost: sink.Addr,
		StartTLS: deliver.StartTLSOff, Timeout: 5 * time.Second})
	sched := deliver.NewScheduler(st, tr, deliver.SchedulerOptions{From: "relay@campaign.test",
		Policy: deliver.Policy{Min: time.Second, Max: time.Second, GiveUpAfter: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- c.Run(ctx) }()
	go func() { errs <- sched.Run(ctx, ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("part: %v", err)
			}
		}
	})
}

// TestUnbatchableLetterIsHeld: the builder fails (or panics) on one letter;
// that letter is held as unbatchable, the others are batched and reach a
// real receiving SMTP server.
func TestUnbatchableLetterIsHeld(t *testing.T) {
	for name, fail := range map[string]func(){
		"error": nil,
		"panic": func() { panic("index out of range in a MIME part") },
	} {
		t.Run(name, func(t *testing.T) {
			st := openTestStore(t)
			ids := acceptLetters(t, st, 4)
			poison := ids[1]
			c := testCloser(st, 4)
			c.build = func(s Spec) ([]byte, error) {
				for _, l := range s.Letters {
					if l.ID == poison {
						if fail != nil {
							fail()
						}
						return nil, errors.New("cannot read the letter")
					}
				}
				return Build(s)
			}
			sink, err := sinkserver.Start(sinkserver.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			runParts(t, st, c, sink)

			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			msgs, err := sink.Wait(ctx, len(testRecipients))
			if err != nil {
				t.Fatalf("waiting for the batch at the recipients: %v", err)
			}
			for _, m := range msgs {
				// Each letter's bytes are in the digest as received.
				for i, want := range []bool{true, false, true, true} {
					if got := bytes.Contains(m.Data, fmt.Appendf(nil, "Carta de s%d.\r\n", i)); got != want {
						t.Errorf("copy to %v carries the letter of s%d: %v, want %v", m.To, i, got, want)
					}
				}
			}
			held, err := st.Held()
			if err != nil || len(held) != 1 || held[0].ID != poison || held[0].HeldReason != store.HeldUnbatchable {
				t.Fatalf("held = %+v, %v; want %s held as unbatchable", held, err, poison)
			}
			b, err := st.Batch(1)
			if err != nil || strings.Contains(strings.Join(b.LetterIDs, " "), poison) || len(b.LetterIDs) != 3 {
				t.Errorf("batch 1 = %+v, %v", b, err)
			}
			evs, _ := st.Events(0, 0)
			found := false
			for _, e := range evs {
				if e.Event == store.EventHeld && e.Letter == poison && strings.HasPrefix(e.Reason, "unbatchable: ") {
					found = true
				}
			}
			if !found {
				t.Errorf("no held event says why %s was set aside: %+v", poison, evs)
			}
		})
	}
}

// TestBuildFailureNotOfALetter: when the builder fails whatever the letters
// (here: on every batch), no letter is blamed and held; they stay pending.
func TestBuildFailureNotOfALetter(t *testing.T) {
	st := openTestStore(t)
	acceptLetters(t, st, 3)
	c := testCloser(st, 3)
	c.build = func(Spec) ([]byte, error) { return nil, errors.New("bad campaign.from") }
	if err := c.closeOne(context.Background(), store.CloseFull); err == nil {
		t.Fatal("closeOne succeeded with a builder that always fails")
	}
	if held, _ := st.Held(); len(held) != 0 {
		t.Errorf("held %+v for a fault that is not in any letter", held)
	}
	if p, _ := st.Pending(); p.Letters != 3 {
		t.Errorf("pending = %+v, want the 3 letters still waiting", p)
	}
}

// TestCloseRule is SPEC 7's rule: full, or the oldest waited max_wait, and
// at most one batch per max_wait for the time rule.
func TestCloseRule(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	const wait = time.Hour
	for _, c := range []struct {
		name     string
		p        store.PendingState
		now      time.Time
		rule     store.CloseRule
		sleepFor time.Duration
	}{
		{"nothing waits", store.PendingState{}, t0, "", time.Hour},
		{"full", store.PendingState{Letters: 10, Oldest: t0}, t0, store.CloseFull, 0},
		{"young", store.PendingState{Letters: 1, Oldest: t0}, t0.Add(20 * time.Minute), "", 40 * time.Minute},
		{"waited max_wait", store.PendingState{Letters: 1, Oldest: t0}, t0.Add(wait), store.CloseWait, 0},
		{"old, but a time-rule batch closed 10 minutes ago",
			store.PendingState{Letters: 1, Oldest: t0, LastWaitClose: t0.Add(2 * time.Hour)}, t0.Add(2*time.Hour + 10*time.Minute), "", 50 * time.Minute},
		{"old, and the last time-rule batch is max_wait ago",
			store.PendingState{Letters: 1, Oldest: t0, LastWaitClose: t0.Add(time.Hour)}, t0.Add(2 * time.Hour), store.CloseWait, 0},
		{"full right after a time-rule batch",
			store.PendingState{Letters: 10, Oldest: t0, LastWaitClose: t0.Add(2 * time.Hour)}, t0.Add(2 * time.Hour), store.CloseFull, 0},
		{"last time-rule batch in the future (clock set back)",
			store.PendingState{Letters: 1, Oldest: t0, LastWaitClose: t0.Add(24 * time.Hour)}, t0.Add(wait), store.CloseWait, 0},
	} {
		rule, sleep := closeRule(c.p, c.now, 10, wait)
		if rule != c.rule || (rule == "" && sleep != c.sleepFor) {
			t.Errorf("%s: closeRule = %q, %v; want %q, %v", c.name, rule, sleep, c.rule, c.sleepFor)
		}
	}
}
