package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestPause: pausing and resuming are persisted across a reopen, each
// change journalled once; asking again for the state it is in changes
// nothing.
func TestPause(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	ctx := context.Background()
	if p, err := s.Paused(); err != nil || p.Paused {
		t.Fatalf("fresh store: Paused = %+v, %v", p, err)
	}
	p, changed, err := s.SetPause(ctx, true, "the families asked to wait")
	if err != nil || !changed || !p.Paused || !p.Since.Equal(clk.Now()) || p.Reason != "the families asked to wait" {
		t.Fatalf("SetPause(true) = %+v, %v, %v", p, changed, err)
	}
	clk.Advance(time.Minute)
	if again, changed, err := s.SetPause(ctx, true, "other"); err != nil || changed || !again.Since.Equal(p.Since) || again.Reason != p.Reason {
		t.Errorf("pausing twice = %+v, %v, %v; want the first pause unchanged", again, changed, err)
	}
	s.Close()

	s = openStore(t, dir, Options{Now: clk.Now})
	if got, err := s.Paused(); err != nil || !got.Paused || !got.Since.Equal(p.Since) || got.Reason != p.Reason {
		t.Fatalf("after reopening: Paused = %+v, %v; want %+v", got, err, p)
	}
	if got, changed, err := s.SetPause(ctx, false, ""); err != nil || !changed || got.Paused {
		t.Fatalf("SetPause(false) = %+v, %v, %v", got, changed, err)
	}
	if _, changed, _ := s.SetPause(ctx, false, ""); changed {
		t.Error("resuming twice changed something")
	}
	if got, _ := s.Paused(); got.Paused {
		t.Errorf("still paused after resume: %+v", got)
	}
	paused, resumed := eventsOfKind(t, s, EventPaused), eventsOfKind(t, s, EventResumed)
	if len(paused) != 1 || paused[0].Reason != "the families asked to wait" || len(resumed) != 1 ||
		!strings.Contains(resumed[0].Reason, p.Since.Format(time.RFC3339)) {
		t.Errorf("events paused %+v, resumed %+v", paused, resumed)
	}
}

// TestHeldMessage: a held letter's bytes come back exactly; a letter that
// is not held, or none, is refused with the error that says which.
func TestHeldMessage(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	nl := unverified(clk, "dan@example.org", HeldPostmaster)
	nl.Body = []byte("Return-Path: <>\r\nFrom: MAILER-DAEMON\r\nSubject: Undelivered\r\n\r\n\x00binary\xff\r\n.\r\n")
	want := bytes.Clone(nl.Body)
	held := mustAccept(t, s, nl).ID
	counted := mustAccept(t, s, verified(clk, "ana@example.org")).ID

	got, err := s.HeldMessage(held)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("HeldMessage = %q, %v; want %q", got, err, want)
	}
	if _, err := s.HeldMessage(counted); !errors.Is(err, ErrState) {
		t.Errorf("HeldMessage of a pending letter: %v, want ErrState", err)
	}
	if _, err := s.HeldMessage("L0000FFFF"); !errors.Is(err, ErrNotFound) {
		t.Errorf("HeldMessage of no letter: %v, want ErrNotFound", err)
	}
}

// TestHeldHeadsAndCounts: the listing gives each held letter with at most n
// bytes of its message; the counts go by reason.
func TestHeldHeadsAndCounts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	a := mustAccept(t, s, unverified(clk, "a@example.org", HeldUnverified)).ID
	b := mustAccept(t, s, unverified(clk, "b@example.org", HeldUnverified)).ID
	pm := unverified(clk, "mailer@example.org", HeldPostmaster)
	pm.Body = []byte("Subject: x\r\n\r\nshort\r\n")
	c := mustAccept(t, s, pm).ID
	mustAccept(t, s, verified(clk, "ana@example.org"))

	heads, err := s.HeldHeads(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 3 || heads[0].ID != a || heads[1].ID != b || heads[2].ID != c {
		t.Fatalf("HeldHeads = %+v", heads)
	}
	if string(heads[0].Head) != "From: <a@e" || string(heads[2].Head) != "Subject: x" {
		t.Errorf("heads %q, %q", heads[0].Head, heads[2].Head)
	}
	if heads, _ := s.HeldHeads(1 << 20); !bytes.Equal(heads[2].Head, pm.Body) {
		t.Errorf("a head longer than the message: %q", heads[2].Head)
	}
	counts, err := s.HeldCounts()
	if err != nil || len(counts) != 2 || counts[HeldUnverified] != 2 || counts[HeldPostmaster] != 1 {
		t.Errorf("HeldCounts = %v, %v", counts, err)
	}
}

// TestReleaseAndDropMany: every ID gets its own decision, in order; one
// that cannot be carried out does not stop the others, and the writes share
// commits.
func TestReleaseAndDropMany(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	var ids []string
	for i := range 40 {
		ids = append(ids, mustAccept(t, s, unverified(clk, fmt.Sprintf("s%d@example.org", i), HeldUnverified)).ID)
	}
	// Counted meanwhile: its held letter becomes a duplicate.
	mustAccept(t, s, verified(clk, "s1@example.org"))
	pm := mustAccept(t, s, unverified(clk, "mailer@example.org", HeldPostmaster)).ID

	commits, _ := s.CommitStats()
	got := s.ReleaseMany(ctx, ids[:20])
	if after, _ := s.CommitStats(); after-commits >= 20 {
		t.Errorf("20 releases took %d commits: they should share some", after-commits)
	}
	release := append(append([]string{}, ids[:20]...), pm, "L0000FFFF")
	got = append(got, s.ReleaseMany(ctx, release[20:])...)
	if len(got) != len(release) {
		t.Fatalf("%d decisions for %d IDs", len(got), len(release))
	}
	for i, d := range got {
		want := EventReleased
		switch {
		case i == 1:
			want = EventDuplicate
		case d.ID == pm:
			if !errors.Is(d.Err, ErrState) || d.Event != "" {
				t.Errorf("releasing postmaster mail: %+v, want ErrState", d)
			}
			continue
		case d.ID == "L0000FFFF":
			if !errors.Is(d.Err, ErrNotFound) || d.Event != "" {
				t.Errorf("releasing no letter: %+v, want ErrNotFound", d)
			}
			continue
		}
		if d.ID != release[i] || d.Event != want || d.Err != nil {
			t.Errorf("decision %d = %+v, want %s %s", i, d, release[i], want)
		}
	}
	dropped := s.DropMany(ctx, append(append([]string{}, ids[20:]...), pm, ids[0]))
	for i, d := range dropped {
		if i == len(dropped)-1 {
			if !errors.Is(d.Err, ErrState) {
				t.Errorf("dropping a released letter: %+v, want ErrState", d)
			}
			continue
		}
		if d.Event != EventDropped || d.Err != nil {
			t.Errorf("drop %d = %+v", i, d)
		}
	}
	st := mustStats(t, s)
	if st.Held != 0 || st.Counted != 20 || st.Duplicates != 1 || st.Pending != 20 {
		t.Errorf("Stats = %+v, want held 0, counted 20 (19 released and 1 verified), 1 duplicate", st)
	}
}

// TestFlush: deferred copies are due now, with an event each; a delivered
// copy, and one already due, stay as they are, and so do attempts and the
// give-up clock.
func TestFlush(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	if n, err := s.Flush(ctx); err != nil || n != 0 {
		t.Fatalf("Flush of an empty queue = %d, %v", n, err)
	}
	rcpts := []string{"familias@ofapp.example", "copias@sr.example", "tres@third.example"}
	mustAccept(t, s, verified(clk, "ana@example.org"))
	b, err := closeNext(ctx, s, 10, rcpts)
	if err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	later := start.Add(time.Hour)
	for i := range 2 {
		ref := DeliveryRef{Batch: b.ID, Index: i}
		if _, err := s.StartAttempt(ctx, ref, at(later)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Defer(ctx, DeliveryRef{Batch: b.ID, Index: 0}, later, "451 try later"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, DeliveryRef{Batch: b.ID, Index: 1}, "250 ok"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	if due, _, _ := s.Due(clk.Now(), 10); len(due) != 1 || due[0].Index != 2 {
		t.Fatalf("before the flush, due = %+v; want only the third copy, never tried", due)
	}

	n, err := s.Flush(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want 1", n, err)
	}
	due, _, err := s.Due(clk.Now(), 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("after the flush, due = %+v, %v; want the deferred and the queued copy", due, err)
	}
	got, err := s.Batch(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	d := got.Recipients[0]
	if d.State != DeliveryDeferred || !d.NextAttempt.Equal(clk.Now()) || d.Attempts != 1 || !d.Since.Equal(start) || d.LastError != "451 try later" {
		t.Errorf("flushed copy = %+v", d)
	}
	if got.Recipients[1].State != DeliveryDelivered {
		t.Errorf("delivered copy = %+v", got.Recipients[1])
	}
	evs := eventsOfKind(t, s, EventRequeued)
	if len(evs) != 1 || evs[0].Batch != b.ID || evs[0].Recipient != rcpts[0] || !strings.Contains(evs[0].Reason, "451 try later") {
		t.Errorf("requeued events = %+v", evs)
	}
	if bucketLen(t, s, bucketQueue) != 2 {
		t.Errorf("queue has %d entries, want 2 (no stale key left)", bucketLen(t, s, bucketQueue))
	}
}
