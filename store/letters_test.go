package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var letterIDPattern = regexp.MustCompile(`^L[0-9A-F]{8}$`)

func TestAcceptCounted(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	nl := verified(clk, "ana@example.org")
	nl.RemoteIP = "198.51.100.7"
	body := bytes.Clone(nl.Body)

	res, err := s.Accept(context.Background(), nl)
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || !letterIDPattern.MatchString(res.ID) {
		t.Fatalf("Accept = %+v, want a fresh ID like L%%08X", res)
	}
	// The caller may reuse its buffer once Accept returned.
	copy(nl.Body, "XXXX")

	l := mustLetter(t, s, res.ID)
	if l.State != StatePending || l.From != nl.From || l.Name != nl.Name || l.RemoteIP != "198.51.100.7" ||
		!l.Received.Equal(nl.Received) || l.Size != len(body) || l.Verdict != nl.Verdict || l.Unverified() {
		t.Errorf("letter = %+v", l)
	}
	if !bytes.Equal(l.DedupKey, s.DedupKey("ana@example.org")) {
		t.Errorf("letter dedup key = %x, want the HMAC of the address", l.DedupKey)
	}
	got, err := s.Body(res.ID)
	if err != nil || !bytes.Equal(got, body) {
		t.Errorf("Body = %q, %v; want %q", got, err, body)
	}
	st := mustStats(t, s)
	if st != (Stats{Counted: 1, Pending: 1}) {
		t.Errorf("Stats = %+v, want counted=1 pending=1", st)
	}
	p, err := s.Pending()
	if err != nil || p.Letters != 1 || !p.Oldest.Equal(nl.Received) {
		t.Errorf("Pending = %+v, %v; want 1, %v", p, err, nl.Received)
	}
	evs := allEvents(t, s)
	if len(evs) != 1 {
		t.Fatalf("journal = %+v, want one event", evs)
	}
	e := evs[0]
	if e.Event != EventAccepted || e.Letter != res.ID || e.Sender != nl.From || e.IP != "198.51.100.7" || e.Seq != 1 || e.Time.IsZero() {
		t.Errorf("event = %+v", e)
	}

	// IDs follow arrival order.
	res2 := mustAccept(t, s, verified(clk, "bea@example.org"))
	if res.ID != "L00000001" || res2.ID != "L00000002" {
		t.Errorf("IDs = %s, %s; want L00000001, L00000002", res.ID, res2.ID)
	}
}

func TestAcceptCountedNeedsDedupAddress(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	nl := verified(clk, "ana@example.org")
	nl.DedupAddress = ""
	if _, err := s.Accept(context.Background(), nl); err == nil {
		t.Fatal("Accept of a counted letter without dedup address succeeded")
	}
	if st := mustStats(t, s); st != (Stats{}) {
		t.Errorf("Stats after failed Accept = %+v, want zero", st)
	}
	if evs := allEvents(t, s); len(evs) != 0 {
		t.Errorf("journal after failed Accept = %+v", evs)
	}
}

func TestAcceptDuplicateVerified(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	first := mustAccept(t, s, verified(clk, "ana@example.org"))

	again := verified(clk, "Ana@Example.org") // written differently, same normalised address
	again.DedupAddress = "ana@example.org"
	again.RemoteIP = "203.0.113.9"
	res := mustAccept(t, s, again)
	if !res.Duplicate || res.ID != "" {
		t.Fatalf("second Accept = %+v, want Duplicate with no ID", res)
	}
	if n := bucketLen(t, s, bucketBodies); n != 1 {
		t.Errorf("%d bodies stored, want 1 (the duplicate is not stored)", n)
	}
	if n := bucketLen(t, s, bucketLetters); n != 1 {
		t.Errorf("%d letter records, want 1", n)
	}
	st := mustStats(t, s)
	if st != (Stats{Counted: 1, Duplicates: 1, Pending: 1}) {
		t.Errorf("Stats = %+v", st)
	}
	dups := eventsOfKind(t, s, EventDuplicate)
	if len(dups) != 1 || dups[0].Sender != "Ana@Example.org" || dups[0].IP != "203.0.113.9" || dups[0].Letter != "" {
		t.Errorf("duplicate events = %+v", dups)
	}
	// The duplicate used no ID.
	next := mustAccept(t, s, verified(clk, "bea@example.org"))
	if first.ID != "L00000001" || next.ID != "L00000002" {
		t.Errorf("IDs = %s, %s", first.ID, next.ID)
	}
}

func TestAcceptRelayUnverified(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})

	// A new sender under policy "relay": counted, marked unverified.
	res := mustAccept(t, s, unverified(clk, "ana@example.org", ""))
	if res.Duplicate || res.ID == "" {
		t.Fatalf("Accept = %+v", res)
	}
	l := mustLetter(t, s, res.ID)
	if l.State != StatePending || !l.Unverified() {
		t.Errorf("letter = %+v, want pending and unverified", l)
	}
	if acc := eventsOfKind(t, s, EventAccepted); len(acc) != 1 || acc[0].Letter != res.ID {
		t.Errorf("accepted events = %+v", acc)
	}

	// Same sender again, unverified: recorded under its own ID as a
	// duplicate, and the result looks like a fresh letter (SPEC 4: the
	// reply must not reveal that the address was counted).
	before := mustStats(t, s)
	dup := mustAccept(t, s, unverified(clk, "ana@example.org", ""))
	if dup.ID == "" || dup.ID == res.ID || dup.Duplicate {
		t.Fatalf("unverified duplicate = %+v, want its own ID and no Duplicate flag", dup)
	}
	l = mustLetter(t, s, dup.ID)
	if l.State != StateDuplicate {
		t.Errorf("state = %s, want %s", l.State, StateDuplicate)
	}
	// Its body is kept too, so storing it costs what counting a new
	// letter does (issue 9 point 11).
	if body, err := s.Body(dup.ID); err != nil || len(body) == 0 {
		t.Errorf("Body of unverified duplicate: %d bytes, %v", len(body), err)
	}
	after := mustStats(t, s)
	if after.Counted != before.Counted || after.Pending != before.Pending || after.Duplicates != before.Duplicates+1 {
		t.Errorf("Stats %+v -> %+v, want only duplicates+1", before, after)
	}
	dups := eventsOfKind(t, s, EventDuplicate)
	if len(dups) != 1 || dups[0].Letter != dup.ID || dups[0].DuplicateOf != DuplicateOfCounted {
		t.Errorf("duplicate events = %+v", dups)
	}
	// It is never batched.
	b, err := closeNext(context.Background(), s, 10, []string{"familias@ofapp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.LetterIDs) != 1 || b.LetterIDs[0] != res.ID {
		t.Errorf("batch letters = %v, want only %s", b.LetterIDs, res.ID)
	}
}

// The dedup bucket must hold no readable address (SPEC 6).
func TestDedupIndexHoldsNoAddress(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	const normalised = "anamaria@example.org"
	nl := verified(clk, "Ana.Maria+libertad@Example.ORG")
	nl.DedupAddress = normalised
	res := mustAccept(t, s, nl)
	mustAccept(t, s, verified(clk, "bea@example.org"))
	wantKey := s.DedupKey(normalised)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(dir, FileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(normalised)) {
		t.Errorf("the normalised address %q appears in the store file", normalised)
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		secret := tx.Bucket(bucketMeta).Get(keySecret)
		if len(secret) < 32 {
			t.Errorf("dedup secret is %d bytes, want at least 32", len(secret))
		}
		n := 0
		found := false
		err := tx.Bucket(bucketDedup).ForEach(func(k, v []byte) error {
			n++
			if len(k) != sha256.Size {
				t.Errorf("dedup key %q is %d bytes, want a %d-byte HMAC", k, len(k), sha256.Size)
			}
			for _, a := range []string{normalised, "bea@example.org", nl.From} {
				if bytes.Contains(k, []byte(a)) || bytes.Contains(v, []byte(a)) {
					t.Errorf("dedup entry %x=%q holds address %q", k, v, a)
				}
			}
			if bytes.Equal(k, wantKey) {
				found = true
				if string(v) != res.ID {
					t.Errorf("dedup value = %q, want letter ID %s", v, res.ID)
				}
			}
			return nil
		})
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(normalised))
		if !bytes.Equal(m.Sum(nil), wantKey) {
			t.Errorf("dedup key %x is not HMAC-SHA256(stored secret, address)", wantKey)
		}
		if n != 2 || !found {
			t.Errorf("dedup bucket has %d keys (found ours: %v), want 2", n, found)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDedupSecretPerStoreAndPersistent(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir1, dir2 := t.TempDir(), t.TempDir()
	s1 := openStore(t, dir1, Options{Now: clk.Now})
	s2 := openStore(t, dir2, Options{Now: clk.Now})
	const addr = "ana@example.org"
	k1, k2 := s1.DedupKey(addr), s2.DedupKey(addr)
	if bytes.Equal(k1, k2) {
		t.Fatal("two stores give the same dedup key: the secret is not per store")
	}
	if bytes.Equal(k1, s1.DedupKey("bea@example.org")) {
		t.Fatal("different addresses give the same key")
	}
	mustAccept(t, s1, verified(clk, addr))
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s1 = openStore(t, dir1, Options{Now: clk.Now})
	if !bytes.Equal(s1.DedupKey(addr), k1) {
		t.Error("dedup key changed across reopen: the secret did not persist")
	}
	if res := mustAccept(t, s1, verified(clk, addr)); !res.Duplicate {
		t.Errorf("Accept after reopen = %+v, want Duplicate", res)
	}
	// The other store never counted the address.
	if res := mustAccept(t, s2, verified(clk, addr)); res.Duplicate {
		t.Errorf("Accept in a second store = %+v, want counted", res)
	}
}

func TestHoldRelease(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	res := mustAccept(t, s, unverified(clk, "ana@example.org", HeldUnverified))
	if res.ID == "" || res.Duplicate {
		t.Fatalf("Accept = %+v", res)
	}
	held, err := s.Held()
	if err != nil || len(held) != 1 || held[0].ID != res.ID || held[0].State != StateHeld || held[0].HeldReason != HeldUnverified {
		t.Fatalf("Held = %+v, %v", held, err)
	}
	if st := mustStats(t, s); st != (Stats{Held: 1}) {
		t.Errorf("Stats = %+v, want held=1 only", st)
	}
	if ev := eventsOfKind(t, s, EventHeld); len(ev) != 1 || ev[0].Letter != res.ID {
		t.Errorf("held events = %+v", ev)
	}
	if p, _ := s.Pending(); p.Letters != 0 {
		t.Errorf("Pending = %+v, want 0", p)
	}

	dup, err := s.Release(ctx, res.ID)
	if err != nil || dup {
		t.Fatalf("Release = %v, %v", dup, err)
	}
	l := mustLetter(t, s, res.ID)
	if l.State != StatePending || l.HeldReason != "" || l.Verdict.Kind != VerdictAdmin || l.Verdict.Reason != "no signature" {
		t.Errorf("released letter = %+v, want pending with verdict admin", l)
	}
	if _, err := s.Body(res.ID); err != nil {
		t.Errorf("Body after release: %v", err)
	}
	if st := mustStats(t, s); st != (Stats{Counted: 1, Pending: 1}) {
		t.Errorf("Stats = %+v, want counted=1 pending=1", st)
	}
	if held, _ := s.Held(); len(held) != 0 {
		t.Errorf("Held after release = %+v", held)
	}
	if ev := eventsOfKind(t, s, EventReleased); len(ev) != 1 || ev[0].Letter != res.ID || ev[0].Sender != "ana@example.org" {
		t.Errorf("released events = %+v", ev)
	}
	if _, err := s.Release(ctx, res.ID); !errors.Is(err, ErrState) {
		t.Errorf("second Release: err = %v, want ErrState", err)
	}
	if _, err := s.Release(ctx, "L0000FFFF"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Release of unknown ID: err = %v, want ErrNotFound", err)
	}
	// The released sender is now counted.
	if r := mustAccept(t, s, verified(clk, "ana@example.org")); !r.Duplicate {
		t.Errorf("verified letter after release = %+v, want Duplicate", r)
	}
}

func TestReleaseAfterSenderCounted(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	held := mustAccept(t, s, unverified(clk, "ana@example.org", HeldUnverified))
	// The reply to an unverified letter never depends on the dedup index:
	// a second held letter of a counted sender is still just held.
	counted := mustAccept(t, s, verified(clk, "ana@example.org"))
	if counted.Duplicate {
		t.Fatal("held letter counted its sender")
	}
	// Another letter: the same one again would be a repeat of the first.
	second := unverified(clk, "ana@example.org", HeldUnverified)
	second.Body = append(second.Body, "P.S. Libertad.\r\n"...)
	held2 := mustAccept(t, s, second)
	if held2.ID == "" || held2.Duplicate {
		t.Fatalf("held letter of a counted sender = %+v, want plain held", held2)
	}

	dup, err := s.Release(ctx, held.ID)
	if err != nil || !dup {
		t.Fatalf("Release = %v, %v; want duplicate", dup, err)
	}
	l := mustLetter(t, s, held.ID)
	if l.State != StateDuplicate {
		t.Errorf("state = %s, want %s", l.State, StateDuplicate)
	}
	if _, err := s.Body(held.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Body of released duplicate: %v, want ErrNotFound", err)
	}
	st := mustStats(t, s)
	if st.Counted != 1 || st.Pending != 1 || st.Duplicates != 1 || st.Held != 1 {
		t.Errorf("Stats = %+v, want counted=1 pending=1 duplicates=1 held=1", st)
	}
	if ev := eventsOfKind(t, s, EventDuplicate); len(ev) != 1 || ev[0].Letter != held.ID {
		t.Errorf("duplicate events = %+v", ev)
	}
	if ev := eventsOfKind(t, s, EventReleased); len(ev) != 0 {
		t.Errorf("released events = %+v, want none", ev)
	}
	b, err := closeNext(ctx, s, 10, []string{"familias@ofapp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.LetterIDs) != 1 || b.LetterIDs[0] != counted.ID {
		t.Errorf("batch letters = %v, want only %s", b.LetterIDs, counted.ID)
	}
	if _, err := s.Release(ctx, held.ID); !errors.Is(err, ErrState) {
		t.Errorf("Release of a duplicate: %v, want ErrState", err)
	}
	if dup, err := s.Release(ctx, held2.ID); err != nil || !dup {
		t.Errorf("Release of the second held letter = %v, %v; want duplicate", dup, err)
	}
	if st := mustStats(t, s); st.Held != 0 || st.Duplicates != 2 || st.Counted != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestPostmasterHeldAndDropped(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	nl := verified(clk, "someone@example.net")
	nl.DedupAddress = ""
	nl.Hold = HeldPostmaster
	res := mustAccept(t, s, nl)
	if res.ID == "" || res.Duplicate {
		t.Fatalf("Accept = %+v", res)
	}
	held, _ := s.Held()
	if len(held) != 1 || held[0].HeldReason != HeldPostmaster {
		t.Fatalf("Held = %+v", held)
	}
	if st := mustStats(t, s); st.Counted != 0 || st.Held != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if _, err := s.Release(ctx, res.ID); !errors.Is(err, ErrState) {
		t.Fatalf("Release of postmaster mail: %v, want ErrState", err)
	}
	if l := mustLetter(t, s, res.ID); l.State != StateHeld {
		t.Errorf("failed Release changed state to %s", l.State)
	}

	if err := s.Drop(ctx, res.ID); err != nil {
		t.Fatal(err)
	}
	if held, _ := s.Held(); len(held) != 0 {
		t.Errorf("Held after drop = %+v", held)
	}
	if _, err := s.Letter(res.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Letter after drop: %v, want ErrNotFound", err)
	}
	if _, err := s.Body(res.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Body after drop: %v, want ErrNotFound", err)
	}
	if st := mustStats(t, s); st != (Stats{}) {
		t.Errorf("Stats after drop = %+v, want zero", st)
	}
	ev := eventsOfKind(t, s, EventDropped)
	if len(ev) != 1 || ev[0].Letter != res.ID || ev[0].Reason != string(HeldPostmaster) || ev[0].Sender != nl.From {
		t.Errorf("dropped events = %+v", ev)
	}
	if err := s.Drop(ctx, res.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Drop: %v, want ErrNotFound", err)
	}
	// Only held letters can be dropped.
	counted := mustAccept(t, s, verified(clk, "ana@example.org"))
	if err := s.Drop(ctx, counted.ID); !errors.Is(err, ErrState) {
		t.Errorf("Drop of a pending letter: %v, want ErrState", err)
	}
}

func TestReject(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	err := s.Reject(context.Background(), Rejection{From: "eve@example.com", RemoteIP: "203.0.113.66", Reason: "dkim: no aligned signature"})
	if err != nil {
		t.Fatal(err)
	}
	if st := mustStats(t, s); st != (Stats{Rejected: 1}) {
		t.Errorf("Stats = %+v, want rejected=1", st)
	}
	evs := allEvents(t, s)
	if len(evs) != 1 {
		t.Fatalf("journal = %+v", evs)
	}
	e := evs[0]
	if e.Event != EventRejected || e.Sender != "eve@example.com" || e.IP != "203.0.113.66" || e.Reason != "dkim: no aligned signature" || e.Letter != "" {
		t.Errorf("event = %+v", e)
	}
	if !e.Time.Equal(clk.Now()) {
		t.Errorf("event time = %v, want the store clock %v", e.Time, clk.Now())
	}
	if n := bucketLen(t, s, bucketLetters); n != 0 {
		t.Errorf("%d letters stored for a rejection", n)
	}
}

func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	a := mustAccept(t, s, verified(clk, "ana@example.org"))
	clk.Advance(time.Minute)
	b := mustAccept(t, s, verified(clk, "bea@example.org"))
	clk.Advance(time.Minute)
	c := mustAccept(t, s, verified(clk, "cas@example.org"))
	h := mustAccept(t, s, unverified(clk, "dan@example.org", HeldUnverified))
	batch, err := closeNext(ctx, s, 1, []string{"familias@ofapp.example", "copias@sr.example"})
	if err != nil || batch == nil {
		t.Fatalf("CloseBatch = %v, %v", batch, err)
	}
	ref := DeliveryRef{Batch: batch.ID, Index: 0}
	retryAt := clk.Now().Add(5 * time.Minute)
	// The attempt is recorded before dialing; a crash follows.
	if _, err := s.StartAttempt(ctx, ref, at(retryAt)); err != nil {
		t.Fatal(err)
	}
	statsBefore := mustStats(t, s)
	lastSeq := allEvents(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{Now: clk.Now})
	if got := mustStats(t, s); got != statsBefore {
		t.Errorf("Stats after reopen = %+v, want %+v", got, statsBefore)
	}
	for _, id := range []string{b.ID, c.ID} {
		if l := mustLetter(t, s, id); l.State != StatePending {
			t.Errorf("letter %s after reopen is %s, want pending", id, l.State)
		}
	}
	if l := mustLetter(t, s, a.ID); l.State != StateBatched || l.Batch != batch.ID {
		t.Errorf("letter %s after reopen = %+v", a.ID, l)
	}
	p, err := s.Pending()
	if err != nil || p.Letters != 2 || !p.Oldest.Equal(mustLetter(t, s, b.ID).Received) {
		t.Errorf("Pending after reopen = %+v, %v", p, err)
	}
	if held, _ := s.Held(); len(held) != 1 || held[0].ID != h.ID {
		t.Errorf("Held after reopen = %+v", held)
	}
	// The copy being tried when the process died waits for its backoff;
	// the other is still due.
	due, next, err := s.Due(clk.Now(), 10)
	if err != nil || len(due) != 1 || due[0] != (DeliveryRef{Batch: batch.ID, Index: 1}) || !next.Equal(retryAt) {
		t.Errorf("Due(now) after reopen = %v, next %v, %v", due, next, err)
	}
	if due, _, _ := s.Due(retryAt, 10); len(due) != 2 {
		t.Errorf("Due(retryAt) after reopen = %v, want both copies", due)
	}
	// Work goes on where it stopped: IDs, batch numbers, journal sequence.
	d := mustAccept(t, s, verified(clk, "eli@example.org"))
	if d.ID != "L00000005" {
		t.Errorf("next ID after reopen = %s, want L00000005", d.ID)
	}
	b2, err := closeNext(ctx, s, 10, []string{"familias@ofapp.example"})
	if err != nil || b2 == nil || b2.ID != 2 || len(b2.LetterIDs) != 3 {
		t.Fatalf("CloseBatch after reopen = %+v, %v", b2, err)
	}
	evs := allEvents(t, s)
	if len(evs) <= len(lastSeq) || evs[len(evs)-1].Seq <= lastSeq[len(lastSeq)-1].Seq {
		t.Errorf("journal did not continue after reopen: %d then %d events", len(lastSeq), len(evs))
	}
	if r := mustAccept(t, s, verified(clk, "ana@example.org")); !r.Duplicate {
		t.Errorf("counted sender after reopen = %+v, want Duplicate", r)
	}
}
