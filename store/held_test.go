package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// resend is the same letter sent again: a new Message-ID and Date, the
// same text.
func resend(nl NewLetter, n int) NewLetter {
	nl.Body = append(fmt.Appendf(nil, "Message-ID: <%d@client.test>\r\nDate: %d\r\n", n, n), nl.Body...)
	return nl
}

// TestHeldRepeatNotStoredTwice: the same unsigned letter sent again gets a
// 250 with an ID of its own, like any stored letter, but no second copy is
// kept; another text, another sender or another hold reason is a letter of
// its own; once the first is released or dropped, the letter may be held
// again.
func TestHeldRepeatNotStoredTwice(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	letter := unverified(clk, "ana@example.org", HeldUnverified)
	first := mustAccept(t, s, resend(letter, 1))
	ids := map[string]bool{first.ID: true}
	for n := 2; n <= 4; n++ {
		res := mustAccept(t, s, resend(letter, n))
		if res.ID == "" || res.Duplicate || ids[res.ID] {
			t.Fatalf("repeat %d = %+v: want a new ID and no duplicate flag, as for any held letter", n, res)
		}
		ids[res.ID] = true
		if l := mustLetter(t, s, res.ID); l.State != StateDuplicate {
			t.Errorf("repeat %s is %s, want %s", res.ID, l.State, StateDuplicate)
		}
		if _, err := s.Body(res.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("repeat %s has a body of its own: %v", res.ID, err)
		}
	}
	if n := bucketLen(t, s, bucketBodies); n != 1 {
		t.Errorf("%d bodies stored for one letter sent four times", n)
	}
	if held, _ := s.Held(); len(held) != 1 || held[0].ID != first.ID {
		t.Errorf("held = %+v, want only %s", held, first.ID)
	}
	if st := mustStats(t, s); st.Held != 1 || st.Duplicates != 3 {
		t.Errorf("stats = %+v, want held 1, duplicates 3", st)
	}
	if evs := eventsOfKind(t, s, EventDuplicate); len(evs) != 3 || evs[0].Reason != "the same letter is held already as "+first.ID ||
		evs[0].DuplicateOf != DuplicateOfHeld {
		t.Errorf("duplicate events = %+v", evs)
	}

	other := letter
	other.Body = append(other.Body, "P.S."...)
	otherSender := unverified(clk, "bo@example.org", HeldUnverified)
	otherSender.Body = letter.Body
	postmaster := letter
	postmaster.Hold, postmaster.DedupAddress = HeldPostmaster, ""
	for name, nl := range map[string]NewLetter{"other text": other, "other sender": otherSender, "postmaster": postmaster} {
		if l := mustLetter(t, s, mustAccept(t, s, nl).ID); l.State != StateHeld {
			t.Errorf("%s: %s, want held", name, l.State)
		}
	}
	again := mustAccept(t, s, postmaster)
	if l := mustLetter(t, s, again.ID); l.State != StateDuplicate {
		t.Errorf("postmaster mail sent twice: the second is %s, want %s", l.State, StateDuplicate)
	}

	if _, err := s.Release(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if l := mustLetter(t, s, mustAccept(t, s, resend(letter, 5)).ID); l.State != StateHeld {
		t.Errorf("the letter after its first copy was released: %s, want held", l.State)
	}
}

// TestHeldExpiry: a held letter nobody decided on goes after the held
// retention, with its body, its repeats' records and a purged event; a
// released letter and one held as unbatchable (counted) stay.
func TestHeldExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	t0 := clk.Now()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, HeldRetention: time.Hour})
	ctx := context.Background()
	a := mustAccept(t, s, unverified(clk, "ana@example.org", HeldUnverified)).ID
	counted := mustAccept(t, s, verified(clk, "cy@example.org")).ID
	if err := s.HoldUnbatchable(ctx, counted, "test"); err != nil {
		t.Fatal(err)
	}
	released := mustAccept(t, s, unverified(clk, "dan@example.org", HeldUnverified)).ID
	if _, err := s.Release(ctx, released); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute)
	repeat := mustAccept(t, s, resend(unverified(clk, "ana@example.org", HeldUnverified), 2)).ID
	clk.Advance(20 * time.Minute)
	b := mustAccept(t, s, unverified(clk, "bo@example.org", HeldPostmaster)).ID

	n, next, err := s.ExpireHeld(ctx, t0.Add(59*time.Minute))
	if err != nil || n != 0 || !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("ExpireHeld before the retention = %d, %v, %v; want none, next at %v", n, next, err, t0.Add(time.Hour))
	}
	n, next, err = s.ExpireHeld(ctx, t0.Add(time.Hour))
	if err != nil || n != 1 || !next.Equal(t0.Add(70*time.Minute)) {
		t.Fatalf("ExpireHeld at the retention = %d, %v, %v; want 1, next at +70m", n, next, err)
	}
	if _, err := s.Letter(a); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired letter %s: %v, want gone", a, err)
	}
	if _, err := s.Body(a); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired letter's body: %v, want gone", err)
	}
	n, next, err = s.ExpireHeld(ctx, t0.Add(2*time.Hour))
	if err != nil || n != 2 || !next.IsZero() {
		t.Fatalf("ExpireHeld later = %d, %v, %v; want 2, nothing next", n, next, err)
	}
	for _, id := range []string{repeat, b} {
		if _, err := s.Letter(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired %s: %v, want gone", id, err)
		}
	}
	held, _ := s.Held()
	if len(held) != 1 || held[0].ID != counted {
		t.Errorf("held after expiry = %+v, want only the unbatchable %s", held, counted)
	}
	if l := mustLetter(t, s, released); l.State != StatePending {
		t.Errorf("released letter is %s", l.State)
	}
	var purged []string
	for _, e := range eventsOfKind(t, s, EventPurged) {
		purged = append(purged, e.Letter)
	}
	if fmt.Sprint(purged) != fmt.Sprint([]string{a, repeat, b}) {
		t.Errorf("purged events for %v, want %v", purged, []string{a, repeat, b})
	}
	if st := mustStats(t, s); st.Held != 1 || st.Counted != 2 {
		t.Errorf("stats after expiry = %+v, want held 1 (the unbatchable), counted 2", st)
	}
	if n := bucketLen(t, s, bucketHeldDedup); n != 0 {
		t.Errorf("%d held dedup keys left", n)
	}
}

// TestFreeBytes: the store reports the free space of its file system, and
// fails for a directory that is gone.
func TestFreeBytes(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), Options{})
	n, err := s.FreeBytes()
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil || n == 0 {
		t.Fatalf("FreeBytes = %d, %v", n, err)
	}
	gone := &Store{dir: t.TempDir() + "/gone"}
	if _, err := gone.FreeBytes(); err == nil {
		t.Error("FreeBytes of a missing directory succeeded")
	}
}

// TestRelayDuplicateExpires: under policy relay, an unverified letter from
// a sender counted already is kept whole (so its reply's timing tells
// nothing) but never batched: it goes after the held retention, body and
// record, with a purged event that says what it was, and the purge asks
// for a wipe.
func TestRelayDuplicateExpires(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, HeldRetention: time.Hour})
	ctx := context.Background()
	counted := mustAccept(t, s, verified(clk, "ana@example.org")).ID
	clk.Advance(time.Minute)
	dup := mustAccept(t, s, unverified(clk, "ana@example.org", "")).ID
	if l := mustLetter(t, s, dup); l.State != StateDuplicate {
		t.Fatalf("repeat under policy relay is %s, want %s", l.State, StateDuplicate)
	}
	if n, _, err := s.ExpireHeld(ctx, clk.Advance(59*time.Minute)); err != nil || n != 0 {
		t.Fatalf("ExpireHeld before the retention = %d, %v; want none", n, err)
	}
	if _, err := s.Body(dup); err != nil {
		t.Fatalf("body before the retention: %v", err)
	}
	wanted, done, err := s.wipeGenerations()
	if err != nil {
		t.Fatal(err)
	}
	n, next, err := s.ExpireHeld(ctx, clk.Advance(2*time.Minute)) // an hour after it came
	if err != nil || n != 1 || !next.IsZero() {
		t.Fatalf("ExpireHeld at the retention = %d, %v, %v; want 1, nothing next", n, next, err)
	}
	if _, err := s.Letter(dup); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired duplicate %s: %v, want gone", dup, err)
	}
	if _, err := s.Body(dup); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired duplicate's body: %v, want gone", err)
	}
	if n := bucketLen(t, s, bucketBodies); n != 1 {
		t.Errorf("%d bodies left, want only the counted letter's", n)
	}
	if l := mustLetter(t, s, counted); l.State != StatePending {
		t.Errorf("the counted letter is %s after the expiry", l.State)
	}
	purged := eventsOfKind(t, s, EventPurged)
	if len(purged) != 1 || purged[0].Letter != dup || !strings.Contains(purged[0].Reason, "already counted") {
		t.Errorf("purged events = %+v", purged)
	}
	if w, _, _ := s.wipeGenerations(); w == wanted || done == w {
		t.Errorf("the expiry asked for no wipe (wipe marks %d -> %d, done %d)", wanted, w, done)
	}
}
