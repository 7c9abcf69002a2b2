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

	"github.com/petitiond/petitiond/internal/batchmime"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/testclock"
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
	if err := c.closeOne(context.Background(), store.CloseFull, 3); err == nil {
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

// acceptSized stores n counted letters with texts of about size bytes
// each, a second apart, and returns their IDs.
func acceptSized(t *testing.T, st *store.Store, clk *testclock.Manual, n, size int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		from := fmt.Sprintf("s%d@ed.test", i)
		body := fmt.Sprintf("From: <%s>\r\nSubject: Libertad\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
			from, strings.Repeat(fmt.Sprintf("Carta de s%d. ", i), size/14))
		res, err := st.Accept(context.Background(), store.NewLetter{Received: clk.Now(), From: from, DedupAddress: from,
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"}, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
		clk.Advance(time.Second)
	}
	return ids
}

// TestMaxBytes: batch.max_bytes closes a batch as soon as the waiting
// letters cannot fit one message (without waiting for max_letters or
// max_wait), and a batch takes only the letters that fit; every message
// stays within it, every letter goes once and in order, and the letters
// left over go when their time comes.
func TestMaxBytes(t *testing.T) {
	clk := testclock.NewManual(time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC))
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const maxBytes = 20000
	ids := acceptSized(t, st, clk, 6, 5000)
	c := NewCloser(CloserConfig{MaxLetters: 100, MaxWait: time.Hour, MaxBytes: maxBytes, CampaignName: "Libertad",
		From: "relay@campaign.test", Recipients: testRecipients}, st, slog.New(slog.DiscardHandler), clk.Now)

	c.closeDue(context.Background())
	sizeClosed, err := st.Batches()
	if err != nil || len(sizeClosed) == 0 {
		t.Fatalf("no batch closed for max_bytes with the letters' bytes over it: %v", err)
	}
	for _, b := range sizeClosed {
		if b.Rule != store.CloseSize {
			t.Errorf("batch %d closed by %q, want %q", b.ID, b.Rule, store.CloseSize)
		}
	}
	if p, _ := st.Pending(); p.Letters == 0 {
		t.Errorf("every letter went before max_wait, though the rest fit one message's bytes")
	}
	clk.Advance(time.Hour)
	c.closeDue(context.Background())
	all, err := st.Batches()
	if err != nil {
		t.Fatal(err)
	}
	var batched []string
	for _, b := range all {
		msg, err := st.BatchMessage(b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg) > maxBytes {
			t.Errorf("batch %d is %d bytes, over max_bytes %d", b.ID, len(msg), maxBytes)
		}
		if !bytes.Contains(msg, fmt.Appendf(nil, "batch %d: %d letter", b.ID, len(b.LetterIDs))) {
			t.Errorf("batch %d's subject does not count its %d letters", b.ID, len(b.LetterIDs))
		}
		batched = append(batched, b.LetterIDs...)
	}
	if strings.Join(batched, ",") != strings.Join(ids, ",") {
		t.Errorf("batched %v, want every letter once, in order: %v", batched, ids)
	}
	if len(all) < 3 {
		t.Errorf("%d batches for 6 letters of which about 2 fit max_bytes", len(all))
	}
	if p, _ := st.Pending(); p.Letters != 0 {
		t.Errorf("%d letters still wait after max_wait", p.Letters)
	}
}

// A letter too big for max_bytes even alone still goes, alone.
func TestMaxBytesLetterAlone(t *testing.T) {
	clk := testclock.NewManual(time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC))
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids := acceptSized(t, st, clk, 2, 30000)
	c := NewCloser(CloserConfig{MaxLetters: 100, MaxWait: time.Hour, MaxBytes: 20000, CampaignName: "Libertad",
		From: "relay@campaign.test", Recipients: testRecipients}, st, slog.New(slog.DiscardHandler), clk.Now)
	c.closeDue(context.Background())
	clk.Advance(time.Hour)
	c.closeDue(context.Background())
	all, _ := st.Batches()
	if len(all) != 2 || len(all[0].LetterIDs) != 1 || all[0].LetterIDs[0] != ids[0] || all[1].LetterIDs[0] != ids[1] {
		t.Errorf("batches %+v, want each letter alone", all)
	}
}

// largestFit finds the most letters that fit, by building: a message's
// size here is 1000 plus twice its letters' bytes.
func TestLargestFit(t *testing.T) {
	letters := make([]Letter, 10)
	for i := range letters {
		letters[i].Raw = make([]byte, 100*(i+1)) // 100, 200, ... 1000
	}
	builds := 0
	build := func(ls []Letter) ([]byte, error) {
		builds++
		n := 1000
		for _, l := range ls {
			n += 2 * len(l.Raw)
		}
		return make([]byte, n), nil
	}
	for _, c := range []struct {
		limit int64
		want  int
	}{
		{1e6, 10},         // all
		{1000 + 2*600, 3}, // 100+200+300 exactly
		{1000 + 2*600 - 1, 2},
		{1100, 1}, // not even the first alone: it goes alone
		{1, 1},
	} {
		builds = 0
		n, msg, err := largestFit(letters, c.limit, build)
		if err != nil || n != c.want {
			t.Errorf("limit %d: %d letters, %v; want %d", c.limit, n, err, c.want)
		}
		if want, _ := build(letters[:n]); len(msg) != len(want) {
			t.Errorf("limit %d: the message of %d letters is %d bytes, want %d", c.limit, n, len(msg), len(want))
		}
		if builds > 6 {
			t.Errorf("limit %d: %d builds for 10 letters", c.limit, builds)
		}
	}
	if _, _, err := largestFit(letters, 1500, func([]Letter) ([]byte, error) { return nil, errors.New("no") }); err == nil {
		t.Errorf("a builder's error is lost")
	}
}

// The closer writes the batch in campaign.language with times in
// campaign.timezone, and gives the builder each letter's verdict.
func TestCloserLanguageAndZone(t *testing.T) {
	clk := testclock.NewManual(time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC))
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, v := range []store.Verdict{{Kind: store.VerdictSPF, Domain: "spf.test"}, {Kind: store.VerdictAdmin}} {
		from := "a" + string(v.Kind) + "@ed.test"
		if _, err := st.Accept(context.Background(), store.NewLetter{From: from, DedupAddress: from, Verdict: v,
			Body: []byte("From: <" + from + ">\r\nSubject: x\r\n\r\nLibertad.\r\n")}); err != nil {
			t.Fatal(err)
		}
	}
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	for lang, want := range map[string][]string{
		"es": {"lote 1: 2 cartas", "15-01-2026 09:00 (UTC-03:00)", "SPF de spf.test", "liberada por un administrador"},
		"en": {"batch 1: 2 letters", "15 Jan 2026 09:00 (UTC-03:00)", "SPF of spf.test", "released by an admin"},
	} {
		c := NewCloser(CloserConfig{MaxLetters: 2, MaxWait: time.Hour, CampaignName: "Libertad", From: "relay@campaign.test",
			Recipients: testRecipients, Language: lang, Location: santiago}, st, slog.New(slog.DiscardHandler), clk.Now)
		pb, err := st.NextBatch(2)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := c.buildSigned(c.spec(pb, clk.Now()))
		if err != nil {
			t.Fatal(err)
		}
		b, err := batchmime.Read(msg)
		if err != nil {
			t.Fatal(err)
		}
		text := b.Header.Get("Subject") + "\n" + b.Summary
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s batch lacks %q:\n%s", lang, w, text)
			}
		}
		if rows, err := b.Rows(); err != nil || len(rows) != 2 || rows[0].Verified != "spf" || rows[1].Verified != "admin" {
			t.Errorf("%s CSV rows %+v, %v", lang, rows, err)
		}
		if d := b.Header.Get("Date"); !strings.HasSuffix(d, "-0300") {
			t.Errorf("%s Date %q, want Santiago's offset", lang, d)
		}
	}
}
