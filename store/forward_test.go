package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// queue stores nl on a secondary and returns its ID.
func queue(t *testing.T, s *Store, nl NewLetter, mailFrom string) string {
	t.Helper()
	id, err := s.ReserveForwardID()
	if err != nil {
		t.Fatal(err)
	}
	nl.ID = id
	got, err := s.QueueForward(context.Background(), nl, mailFrom, "libertad@campaign.example")
	if err != nil || got != id {
		t.Fatalf("QueueForward = %q, %v; want %s", got, err, id)
	}
	return id
}

func mustDue(t *testing.T, s *Store, now time.Time) []string {
	t.Helper()
	due, _, err := s.DueForwards(now, 100)
	if err != nil {
		t.Fatal(err)
	}
	return due
}

// TestQueueForwardCountsNothing: a secondary's letter gets an S… ID, is
// stored with its envelope and body and a queued event, waits in the
// forwarding queue, and moves no counter of SPEC 9 but its own; IDs go on
// after a reopen, on the one sequence L… IDs use too.
func TestQueueForwardCountsNothing(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	nl := verified(clk, "ana@example.org")
	id := queue(t, s, nl, "bounce@example.org")
	if id != "S00000001" {
		t.Errorf("first ID %s, want S00000001", id)
	}
	l := mustLetter(t, s, id)
	if l.State != StateForwarding || l.Forward == nil || l.Forward.MailFrom != "bounce@example.org" ||
		l.Forward.Rcpt != "libertad@campaign.example" || !l.Forward.Since.Equal(clk.Now()) {
		t.Fatalf("letter %s = %+v (forward %+v)", id, l, l.Forward)
	}
	if body, err := s.Body(id); err != nil || string(body) != string(nl.Body) {
		t.Errorf("body %q, %v", body, err)
	}
	st := mustStats(t, s)
	if st.Counted != 0 || st.Pending != 0 || st.Held != 0 || st.Forward != (ForwardCounts{Waiting: 1}) {
		t.Errorf("stats %+v, want nothing counted and one letter waiting", st)
	}
	if n := bucketLen(t, s, bucketDedup); n != 0 {
		t.Errorf("%d dedup keys on a secondary, want none", n)
	}
	if ev := eventsOfKind(t, s, EventQueued); len(ev) != 1 || ev[0].Letter != id || ev[0].Sender != nl.From {
		t.Errorf("queued events %+v", ev)
	}
	if due := mustDue(t, s, clk.Now()); len(due) != 1 || due[0] != id {
		t.Errorf("due %v, want [%s]", due, id)
	}
	// The same sender again is stored again: the primary decides.
	if second := queue(t, s, verified(clk, "ana@example.org"), "bounce@example.org"); second != "S00000002" {
		t.Errorf("second ID %s", second)
	}
	// An L… ID is not an ID of a letter to forward, nor the reverse.
	bad := verified(clk, "bo@example.org")
	bad.ID = "L00000009"
	if _, err := s.QueueForward(context.Background(), bad, "", "postmaster@campaign.example"); err == nil {
		t.Errorf("QueueForward took an L… ID")
	}
	bad.ID = "S00000009"
	if _, err := s.Accept(context.Background(), bad); err == nil {
		t.Errorf("Accept took an S… ID")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Now: clk.Now})
	if due := mustDue(t, s, clk.Now()); len(due) != 2 {
		t.Errorf("after a reopen %d letters due, want 2", len(due))
	}
	if next, err := s.ReserveForwardID(); err != nil || next != "S00000003" {
		t.Errorf("next ID after a reopen %s, %v; want S00000003", next, err)
	}
	if next, err := s.ReserveLetterID(); err != nil || next != "L00000004" {
		t.Errorf("next letter ID %s, %v; want L00000004 (one sequence)", next, err)
	}
}

// TestForwardAttempts: an attempt is recorded before dialing and moves the
// letter's next attempt; a deferral keeps it waiting with its error; 250
// from the primary deletes it and every trace of it but the journal; a
// second outcome for the same letter is refused.
func TestForwardAttempts(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	a := queue(t, s, verified(clk, "ana@example.org"), "ana@example.org")
	clk.Advance(time.Second)
	b := queue(t, s, verified(clk, "bo@example.org"), "")
	if due := mustDue(t, s, clk.Now()); len(due) != 2 || due[0] != a || due[1] != b {
		t.Fatalf("due %v, want oldest first", due)
	}

	retry := clk.Now().Add(5 * time.Minute)
	l, err := s.StartForward(ctx, a, at(retry))
	if err != nil || l.Forward.Attempts != 1 || !l.Forward.NextAttempt.Equal(retry) {
		t.Fatalf("StartForward = %+v, %v", l, err)
	}
	due, next, err := s.DueForwards(clk.Now(), 100)
	if err != nil || len(due) != 1 || due[0] != b || !next.Equal(retry) {
		t.Errorf("due after an attempt started: %v next %v (%v); want [%s] next %v", due, next, err, b, retry)
	}
	later := clk.Now().Add(10 * time.Minute)
	if err := s.DeferForward(ctx, a, later, "connection refused"); err != nil {
		t.Fatal(err)
	}
	if l := mustLetter(t, s, a); l.Forward.LastError != "connection refused" || !l.Forward.NextAttempt.Equal(later) {
		t.Errorf("after a deferral %+v", l.Forward)
	}
	if due := mustDue(t, s, later); len(due) != 2 {
		t.Errorf("due at the next attempt %v", due)
	}

	if err := s.Forwarded(ctx, a, "127.0.0.2:25 said: 250 2.0.0 queued as L00000007"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Letter(a); !errors.Is(err, ErrNotFound) {
		t.Errorf("forwarded letter still stored: %v", err)
	}
	if _, err := s.Body(a); !errors.Is(err, ErrNotFound) {
		t.Errorf("forwarded letter's body still stored: %v", err)
	}
	rec, err := s.Lookup(Supporter{Address: "ana@example.org"})
	if err != nil || len(rec.Letters) != 0 {
		t.Errorf("lookup after forwarding: %+v, %v", rec, err)
	}
	if due := mustDue(t, s, later); len(due) != 1 || due[0] != b {
		t.Errorf("due after forwarding %v", due)
	}
	if st := mustStats(t, s); st.Forward != (ForwardCounts{Waiting: 1, Forwarded: 1}) || st.Counted != 0 {
		t.Errorf("stats %+v", st)
	}
	if ev := eventsOfKind(t, s, EventForwarded); len(ev) != 1 || ev[0].Letter != a {
		t.Errorf("forwarded events %+v", ev)
	}
	// A crash between the primary's 250 and this write forwards again; a
	// second outcome for a letter already forwarded changes nothing.
	if err := s.Forwarded(ctx, a, "again"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Forwarded: %v, want ErrNotFound", err)
	}
	if err := s.DeferForward(ctx, a, later, "x"); err == nil {
		t.Errorf("DeferForward of a forwarded letter succeeded")
	}
	if st := mustStats(t, s); st.Forward.Forwarded != 1 {
		t.Errorf("forwarded %d after a repeated outcome, want 1", st.Forward.Forwarded)
	}
}

// TestForwardRefusedIsHeld: a letter the primary refused waits for an
// admin, held as forward_failed with its message readable (held show);
// a release puts it back in the queue, due now and never counted; a drop
// removes it.
func TestForwardRefusedIsHeld(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, HeldRetention: time.Hour})
	nl := verified(clk, "ana@example.org")
	id := queue(t, s, nl, "ana@example.org")
	if _, err := s.StartForward(ctx, id, at(clk.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := s.FailForward(ctx, id, "the primary refused it: 550 5.7.20 unverified"); err != nil {
		t.Fatal(err)
	}
	if due := mustDue(t, s, clk.Now().Add(time.Hour)); len(due) != 0 {
		t.Errorf("a held letter is still due: %v", due)
	}
	held, err := s.Held()
	if err != nil || len(held) != 1 || held[0].ID != id || held[0].HeldReason != HeldForwardFailed {
		t.Fatalf("held %+v, %v", held, err)
	}
	if msg, err := s.HeldMessage(id); err != nil || string(msg) != string(nl.Body) {
		t.Errorf("held show: %q, %v", msg, err)
	}
	if st := mustStats(t, s); st.Held != 1 || st.Forward.Waiting != 0 {
		t.Errorf("stats %+v", st)
	}
	if ev := eventsOfKind(t, s, EventFailed); len(ev) != 1 || ev[0].Letter != id {
		t.Errorf("failed events %+v", ev)
	}
	// Unlike unverified mail, such a letter does not expire unseen: it
	// got a 250.
	if n, _, err := s.ExpireHeld(ctx, clk.Advance(48*time.Hour)); err != nil || n != 0 {
		t.Errorf("ExpireHeld purged %d (%v)", n, err)
	}

	if dup, err := s.Release(ctx, id); err != nil || dup {
		t.Fatalf("Release = %v, %v", dup, err)
	}
	l := mustLetter(t, s, id)
	if l.State != StateForwarding || l.Forward.Attempts != 0 || !l.Forward.Since.Equal(clk.Now()) {
		t.Errorf("released letter %+v (forward %+v)", l, l.Forward)
	}
	if due := mustDue(t, s, clk.Now()); len(due) != 1 || due[0] != id {
		t.Errorf("due after the release %v", due)
	}
	if st := mustStats(t, s); st.Held != 0 || st.Counted != 0 || st.Forward.Waiting != 1 {
		t.Errorf("stats after the release %+v", st)
	}

	if err := s.FailForward(ctx, id, "gave up"); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Letter(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("dropped letter: %v", err)
	}
	if st := mustStats(t, s); st.Held != 0 || st.Forward.Waiting != 0 {
		t.Errorf("stats after the drop %+v", st)
	}
}

// TestEraseWithdrawsALetterToForward: erasing a supporter on a secondary
// takes their waiting letter out of the queue (it is never forwarded) and
// leaves none of their data, the envelope included, in the store's files.
func TestEraseWithdrawsALetterToForward(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	id := queue(t, s, ana(clk, anaAddr), anaAddr)
	other := queue(t, s, verified(clk, "bo@example.org"), "bo@example.org")
	if rec := mustLookup(t, s, anaSupporter()); len(rec.Letters) != 1 || rec.Letters[0].State != StateForwarding {
		t.Fatalf("lookup %+v", rec)
	}
	er := mustErase(t, s, anaSupporter())
	if len(er.Withdrawn) != 1 || er.Withdrawn[0] != id {
		t.Errorf("erasure %+v", er)
	}
	if due := mustDue(t, s, clk.Now()); len(due) != 1 || due[0] != other {
		t.Errorf("due after the erasure %v, want only %s", due, other)
	}
	if _, err := s.StartForward(context.Background(), id, at(clk.Now())); !errors.Is(err, ErrState) {
		t.Errorf("StartForward of an erased letter: %v, want ErrState", err)
	}
	if st := mustStats(t, s); st.Forward.Waiting != 1 {
		t.Errorf("waiting %d after the erasure, want 1", st.Forward.Waiting)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if found := anaTraces(t, dir); len(found) > 0 {
		t.Errorf("after the erasure the store's files still hold %q", found)
	}
}

func TestParseForwardID(t *testing.T) {
	for _, ok := range []string{"S00000001", "S0000001A"} {
		if n, err := parseLetterID(ok); err != nil || formatID(forwardPrefix, n) != ok {
			t.Errorf("parseLetterID(%q) = %d, %v", ok, n, err)
		}
	}
	for _, bad := range []string{"S", "S0000001a", "S00000000", "s00000001"} {
		if _, err := parseLetterID(bad); err == nil {
			t.Errorf("parseLetterID(%q) accepted it", bad)
		}
	}
}
