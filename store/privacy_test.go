package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/testclock"
	"github.com/petitiond/petitiond/internal/traces"
)

// The supporter these tests erase: every string of theirs is one no other
// letter contains, so finding it in a file can only mean it was not erased.
const (
	anaAddr = "Anacleta.Vidaurre@privacy.test"
	anaName = "Anacleta Vidaurre Quispe"
	anaText = "texto-de-anacleta-que-nadie-mas-escribe"
	anaIP   = "203.0.113.77"
)

// ana is a letter from the distinctive supporter; spelled is the address
// as this letter writes it.
func ana(clk *testclock.Manual, spelled string) NewLetter {
	return NewLetter{
		Received: clk.Now(), From: spelled, Name: anaName, RemoteIP: anaIP, Session: "sess-ana",
		Verdict:      Verdict{Kind: VerdictDKIM, Domain: "privacy.test", Selector: "s1"},
		DedupAddress: strings.ToLower(anaAddr),
		Body: []byte("From: " + anaName + " <" + spelled + ">\r\nSubject: Libertad " + anaName + "\r\n\r\n" +
			anaText + "\r\n"),
	}
}

// anaSupporter names ana for Lookup and Erase: addresses are the same
// supporter when they are equal but for case (the tests' normalisation).
func anaSupporter() Supporter {
	return Supporter{Address: strings.ToLower(anaAddr), Same: func(a string) bool { return strings.EqualFold(a, anaAddr) }}
}

// anaTraces lists the strings of ana that any file under dir still holds.
func anaTraces(t *testing.T, dir string) []string {
	t.Helper()
	return tracesOf(t, dir, anaAddr, anaName, anaText, anaIP)
}

// tracesOf lists where files under dir hold the needles.
func tracesOf(t *testing.T, dir string, needles ...string) []string {
	t.Helper()
	found, err := traces.Find(dir, needles...)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// deliverAll marks every copy of a batch delivered.
func deliverAll(t *testing.T, s *Store, b *Batch) {
	t.Helper()
	for i := range b.Recipients {
		if err := s.MarkDelivered(context.Background(), DeliveryRef{Batch: b.ID, Index: i}, "250 ok"); err != nil {
			t.Fatalf("MarkDelivered: %v", err)
		}
	}
}

func mustErase(t *testing.T, s *Store, sp Supporter) *Erasure {
	t.Helper()
	er, err := s.Erase(context.Background(), sp)
	if err != nil {
		t.Fatalf("Erase: %v", err)
	}
	return er
}

func mustLookup(t *testing.T, s *Store, sp Supporter) *SupporterRecord {
	t.Helper()
	rec, err := s.Lookup(sp)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	return rec
}

func recordIDs(rec *SupporterRecord) []string {
	var ids []string
	for _, l := range rec.Letters {
		ids = append(ids, l.ID)
	}
	return ids
}

// TestLookupFindsASupportersLetters: through the sender index, a counted
// letter, an unverified repeat and held mail of the supporter; postmaster
// mail (no dedup key) through the held list; nobody else's letters.
func TestLookupFindsASupportersLetters(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	counted := mustAccept(t, s, ana(clk, anaAddr)).ID
	repeat := ana(clk, "ANACLETA.VIDAURRE@privacy.test")
	repeat.Verdict = Verdict{Kind: VerdictUnverified, Reason: "no signature"}
	dup := mustAccept(t, s, repeat).ID // relay policy: a duplicate record
	held := ana(clk, anaAddr)
	held.Verdict, held.Hold = Verdict{Kind: VerdictUnverified, Reason: "no signature"}, HeldUnverified
	heldID := mustAccept(t, s, held).ID
	pm := ana(clk, anaAddr)
	pm.DedupAddress, pm.Hold = "", HeldPostmaster
	pmID := mustAccept(t, s, pm).ID
	mustAccept(t, s, verified(clk, "someone.else@privacy.test"))

	rec := mustLookup(t, s, anaSupporter())
	want := []string{counted, dup, heldID, pmID}
	if got := recordIDs(rec); !slices.Equal(got, want) {
		t.Fatalf("Lookup found %v, want %v", got, want)
	}
	states := map[string]LetterState{}
	for _, l := range rec.Letters {
		states[l.ID] = l.State
		if !l.Body && l.ID != dup {
			t.Errorf("letter %s: body not reported as stored", l.ID)
		}
		if l.From == "" || l.Name != anaName || l.RemoteIP != anaIP {
			t.Errorf("letter %s: the record's personal data is not reported: %+v", l.ID, l.Letter)
		}
	}
	if states[counted] != StatePending || states[dup] != StateDuplicate || states[heldID] != StateHeld || states[pmID] != StateHeld {
		t.Errorf("states %v", states)
	}
	// Accepted, duplicate, held, held: four events name ana.
	if rec.Events != 4 {
		t.Errorf("Lookup counted %d events naming the supporter, want 4", rec.Events)
	}
	if other := mustLookup(t, s, Supporter{Address: "nobody@privacy.test"}); len(other.Letters) != 0 {
		t.Errorf("an unknown address found letters: %v", recordIDs(other))
	}
}

// TestEraseWithdrawsAPendingLetter: a letter not yet batched is withdrawn:
// not counted, out of the pending queue, its dedup key gone, so a new
// letter from the same address counts again; its events lose sender and
// IP; one "erased" event names its ID, not the address.
func TestEraseWithdrawsAPendingLetter(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	id := mustAccept(t, s, ana(clk, anaAddr)).ID
	other := mustAccept(t, s, verified(clk, "bo@privacy.test")).ID
	if dup := mustAccept(t, s, ana(clk, anaAddr)); !dup.Duplicate {
		t.Fatalf("second letter: %+v, want a duplicate", dup)
	}
	if err := s.Reject(context.Background(), Rejection{Class: RejectFrom, From: "anacleta.vidaurre@PRIVACY.test",
		RemoteIP: anaIP, Reason: "From anacleta.vidaurre@PRIVACY.test is not allowed"}); err != nil {
		t.Fatal(err)
	}

	er := mustErase(t, s, anaSupporter())
	if !slices.Equal(er.Letters, []string{id}) || !slices.Equal(er.Withdrawn, []string{id}) {
		t.Errorf("erasure %+v, want letter %s withdrawn", er, id)
	}
	// accepted + duplicate + rejected.
	if er.Events != 3 {
		t.Errorf("erasure cleared %d events, want 3", er.Events)
	}
	st := mustStats(t, s)
	if st.Counted != 1 || st.Pending != 1 {
		t.Errorf("after erasing a pending letter: counted %d pending %d, want 1 and 1", st.Counted, st.Pending)
	}
	l := mustLetter(t, s, id)
	if l.State != StateErased || !l.Erased || l.From != "" || l.Name != "" || l.RemoteIP != "" || l.DedupKey != nil || l.Verdict.Domain != "" {
		t.Errorf("erased record: %+v", l)
	}
	if _, err := s.Body(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("body after erasure: %v, want ErrNotFound", err)
	}
	pb, err := s.NextBatch(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pb.Letters) != 1 || pb.Letters[0].ID != other {
		t.Errorf("next batch after erasure holds %d letters, want only %s", len(pb.Letters), other)
	}
	for _, e := range allEvents(t, s) {
		if strings.Contains(strings.ToLower(fmt.Sprintf("%+v", e)), strings.ToLower(anaAddr)) || e.IP == anaIP {
			t.Errorf("event still names the supporter: %+v", e)
		}
	}
	erased := eventsOfKind(t, s, EventErased)
	if len(erased) != 1 || !strings.Contains(erased[0].Reason, id) || erased[0].Sender != "" {
		t.Errorf("erased events: %+v", erased)
	}
	if rec := mustLookup(t, s, anaSupporter()); len(rec.Letters) != 0 || rec.Events != 0 {
		t.Errorf("lookup after erasure: %d letters, %d events", len(rec.Letters), rec.Events)
	}
	again := mustAccept(t, s, ana(clk, anaAddr))
	if again.Duplicate || again.ID == "" {
		t.Fatalf("a new letter after the erasure: %+v, want counted", again)
	}
	if st := mustStats(t, s); st.Counted != 2 {
		t.Errorf("counted %d after the new letter, want 2", st.Counted)
	}
}

// TestEraseKeepsABatchedLetterCounted: a letter already delivered stays
// counted, anonymous, with its dedup key (a new letter is a duplicate); the
// batch's stored message goes, and BatchMessage says it was erased.
func TestEraseKeepsABatchedLetterCounted(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	id := mustAccept(t, s, ana(clk, anaAddr)).ID
	mustAccept(t, s, verified(clk, "bo@privacy.test"))
	b, err := closeNext(context.Background(), s, 10, []string{"familias@ofapp.test", "copias@sr.test"})
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(t, s, b)
	msgFile := filepath.Join(dir, messageDir, b.File)
	if _, err := os.Stat(msgFile); err != nil {
		t.Fatalf("batch message file: %v", err)
	}

	er := mustErase(t, s, anaSupporter())
	if !slices.Equal(er.Letters, []string{id}) || len(er.Withdrawn) != 0 || !slices.Equal(er.Batches, []uint64{b.ID}) {
		t.Errorf("erasure %+v", er)
	}
	if st := mustStats(t, s); st.Counted != 2 || st.Batches != 1 {
		t.Errorf("stats after erasing a batched letter: %+v, want 2 counted", st)
	}
	l := mustLetter(t, s, id)
	if l.State != StateBatched || l.Batch != b.ID || !l.Erased || l.From != "" || l.Name != "" {
		t.Errorf("erased batched letter: %+v", l)
	}
	if _, err := s.BatchMessage(b.ID); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "erased") {
		t.Errorf("BatchMessage after erasure: %v, want it to say erased", err)
	}
	if _, err := os.Stat(msgFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("batch message file after erasure: %v", err)
	}
	rec := mustLookup(t, s, anaSupporter())
	if len(rec.Letters) != 1 || !rec.Letters[0].Erased || !rec.Letters[0].Delivered ||
		len(rec.Batches) != 1 || rec.Batches[0].Message != "erased" {
		t.Errorf("lookup after erasure: %+v", rec)
	}
	if found := anaTraces(t, dir); len(found) > 0 {
		t.Errorf("after the erasure the store's files still hold: %v", found)
	}
	if res := mustAccept(t, s, ana(clk, anaAddr)); !res.Duplicate {
		t.Errorf("a new letter after erasing a batched one: %+v, want a duplicate", res)
	}
}

// TestEraseWaitsForABatchInFlight: while a copy of the batch is queued its
// message is needed, so nothing is erased.
func TestEraseWaitsForABatchInFlight(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	id := mustAccept(t, s, ana(clk, anaAddr)).ID
	b, err := closeNext(context.Background(), s, 10, []string{"familias@ofapp.test"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Erase(context.Background(), anaSupporter())
	if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), fmt.Sprintf("batch %d", b.ID)) {
		t.Fatalf("Erase during delivery: %v, want ErrState naming batch %d", err, b.ID)
	}
	if l := mustLetter(t, s, id); l.Erased || l.From == "" {
		t.Errorf("a refused erasure changed the letter: %+v", l)
	}
	if _, err := s.BatchMessage(b.ID); err != nil {
		t.Errorf("a refused erasure removed the message: %v", err)
	}
	// A failed copy no longer needs the message: the erasure goes ahead,
	// and the copy cannot be retried.
	if err := s.Fail(context.Background(), DeliveryRef{Batch: b.ID}, "550 no"); err != nil {
		t.Fatal(err)
	}
	mustErase(t, s, anaSupporter())
	if _, err := s.Retry(context.Background(), b.ID); !errors.Is(err, ErrState) {
		t.Errorf("Retry of an erased batch: %v, want ErrState", err)
	}
}

// TestEraseLeavesNothingInTheFile: bbolt keeps old versions of changed
// pages on its freelist; after the erasure no file under the store's
// directory holds the address, name, IP or text, though they were there
// (in letters, bodies, events, the batch message) before.
func TestEraseLeavesNothingInTheFile(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	// Enough letters around ana's that the erasure frees pages of several
	// kinds, and her letter moves through states (old copies of her record).
	for i := range 200 {
		mustAccept(t, s, verified(clk, fmt.Sprintf("supporter%03d@privacy.test", i)))
		if i == 100 {
			mustAccept(t, s, ana(clk, anaAddr))
		}
	}
	mustAccept(t, s, ana(clk, anaAddr)) // a duplicate event
	b, err := closeNext(context.Background(), s, 500, []string{"familias@ofapp.test"})
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(t, s, b)
	if found := anaTraces(t, dir); len(found) == 0 {
		t.Fatal("before the erasure no file holds the supporter: the test would prove nothing")
	}
	er := mustErase(t, s, anaSupporter())
	if er.Wipe.Zeroed == 0 {
		t.Errorf("the wipe zeroed no page: %+v", er.Wipe)
	}
	if found := anaTraces(t, dir); len(found) > 0 {
		t.Errorf("after the erasure the store's files still hold: %v", found)
	}
	// Every other supporter is intact.
	if st := mustStats(t, s); st.Counted != 201 {
		t.Errorf("counted %d, want 201", st.Counted)
	}
	if l := mustLetter(t, s, b.LetterIDs[0]); l.From != "supporter000@privacy.test" {
		t.Errorf("another letter after the wipe: %+v", l)
	}
}

// TestOpenFinishesAnInterruptedWipe: an erasure committed but not yet
// wiped (a crash in between) leaves old pages in the file; the next Open
// wipes them before the store serves.
func TestOpenFinishesAnInterruptedWipe(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		mustAccept(t, s, verified(clk, fmt.Sprintf("supporter%03d@privacy.test", i)))
	}
	id := mustAccept(t, s, ana(clk, anaAddr)).ID
	if _, err := s.eraseCommit(context.Background(), anaSupporter()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if found := anaTraces(t, dir); len(found) == 0 {
		t.Fatal("an unwiped erasure left nothing in the file: the test would prove nothing")
	}
	s = openStore(t, dir, Options{Now: clk.Now})
	if found := anaTraces(t, dir); len(found) > 0 {
		t.Errorf("after reopening, the store's files still hold: %v", found)
	}
	if l := mustLetter(t, s, id); !l.Erased {
		t.Errorf("letter after reopening: %+v", l)
	}
	if st := mustStats(t, s); st.Counted != 50 {
		t.Errorf("counted %d, want 50", st.Counted)
	}
}

// TestWipeWaitsForAnOlderReader: a read transaction that began before the
// erasure still sees the old pages; the wipe waits for it instead of
// zeroing pages under it.
func TestWipeWaitsForAnOlderReader(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	id := mustAccept(t, s, ana(clk, anaAddr)).ID
	for i := range 50 {
		mustAccept(t, s, verified(clk, fmt.Sprintf("supporter%03d@privacy.test", i)))
	}
	// A reader outside Store.view (as a backup's long read would be).
	tx, err := s.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Erase(context.Background(), anaSupporter())
		done <- err
	}()
	waitFor(t, "the erasure to commit", func() bool {
		l, err := s.Letter(id)
		return err == nil && l.Erased
	})
	// The wipe must not finish while the old reader is open. (Only a
	// wrong wipe can return here, so this wait cannot fail a right one.)
	select {
	case err := <-done:
		t.Errorf("Erase returned (%v) while a reader could still see the old pages", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The old reader still reads the letter as it was.
	l, err := getLetter(tx, id)
	body := tx.Bucket(bucketBodies).Get([]byte(id))
	if err != nil || l.From != anaAddr || !bytes.Contains(body, []byte(anaText)) {
		t.Errorf("the reader that began before the erasure reads %+v (%v) and body %q", l, err, body)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Erase: %v", err)
	}
}

// TestPurgeIsWiped: a purged body stays in free pages until the wipe the
// purge asks for.
func TestPurgeIsWiped(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now, Retention: time.Hour})
	for i := range 20 {
		mustAccept(t, s, verified(clk, fmt.Sprintf("supporter%03d@privacy.test", i)))
	}
	mustAccept(t, s, ana(clk, anaAddr))
	b, err := closeNext(context.Background(), s, 50, []string{"familias@ofapp.test"})
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(t, s, b)
	clk.Advance(2 * time.Hour)
	if err := s.Purge(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(anaTraces(t, dir), func(f string) bool { return strings.Contains(f, anaText) }) {
		t.Fatal("the purged body is not in a free page before the wipe: the test would prove nothing")
	}
	if _, err := s.Wipe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(anaTraces(t, dir), func(f string) bool { return strings.Contains(f, anaText) }) {
		t.Errorf("the purged body is still in the file after the wipe: %v", anaTraces(t, dir))
	}
	// A second wipe has nothing left to do.
	if st, err := s.Wipe(context.Background()); err != nil || st.Zeroed != 0 {
		t.Errorf("second wipe: %+v, %v", st, err)
	}
}

// heldLetter is an unsigned letter from sender, held for an admin, with a
// name and text no other letter holds.
func heldLetter(clk *testclock.Manual, sender, name, text string) NewLetter {
	nl := unverified(clk, sender, HeldUnverified)
	nl.Name = name
	nl.Body = []byte("From: " + nl.Name + " <" + sender + ">\r\nSubject: Libertad\r\n\r\n" + text + "\r\n")
	return nl
}

// TestHeldRemovalsAreWiped: a held letter dropped (alone or among others),
// one that expired, and one released as a duplicate lose their body and
// name from the store file itself, free pages included, not only from
// what the store answers. (Their journal events keep the sender until
// store.retention, by design.)
func TestHeldRemovalsAreWiped(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now, HeldRetention: time.Hour})
	ctx := context.Background()
	texts, names := map[string]string{}, map[string]string{}
	hold := func(what, sender string) string {
		texts[what], names[what] = "texto-"+what+"-que-nadie-mas-escribe", "Nombre "+what+" Unico"
		return mustAccept(t, s, heldLetter(clk, sender, names[what], texts[what])).ID
	}
	dropped := hold("dropped", "ana@privacy.test")
	droppedMany := hold("dropped-many", "bo@privacy.test")
	expired := hold("expired", "cy@privacy.test")
	released := hold("released", "dan@privacy.test")
	// Enough other letters that the removals free pages among pages in use.
	for i := range 30 {
		mustAccept(t, s, verified(clk, fmt.Sprintf("supporter%03d@privacy.test", i)))
	}
	mustAccept(t, s, verified(clk, "dan@privacy.test")) // counted meanwhile
	// gone reports which of the letters no file under dir holds: their
	// text, and their name but for the one released, whose record stays.
	gone := func(whats ...string) []string {
		var out []string
		for _, what := range whats {
			needles := []string{texts[what], names[what]}
			if what == "released" {
				needles = needles[:1]
			}
			if len(tracesOf(t, dir, needles...)) == 0 {
				out = append(out, what)
			}
		}
		return out
	}
	if g := gone("dropped", "dropped-many", "expired", "released"); len(g) > 0 {
		t.Fatalf("before any removal no file holds %v: the test would prove nothing", g)
	}

	// Each is checked at once: any later wipe covers every free page.
	if err := s.Drop(ctx, dropped); err != nil {
		t.Fatal(err)
	}
	if g := gone("dropped"); len(g) != 1 {
		t.Error("after Drop the store's files still hold the letter")
	}
	if d := s.DropMany(ctx, []string{droppedMany}); d[0].Err != nil {
		t.Fatal(d[0].Err)
	}
	if g := gone("dropped-many"); len(g) != 1 {
		t.Error("after DropMany the store's files still hold the letter")
	}
	if dup, err := s.Release(ctx, released); err != nil || !dup {
		t.Fatalf("Release = %v, %v; want a duplicate", dup, err)
	}
	if g := gone("released"); len(g) != 1 {
		t.Error("after Release made it a duplicate the store's files still hold the letter's text")
	}
	// An expiry is wiped by the Wipe that follows it (the purger's).
	if n, _, err := s.ExpireHeld(ctx, clk.Advance(time.Hour)); err != nil || n != 1 {
		t.Fatalf("ExpireHeld = %d, %v; want the one letter still held", n, err)
	}
	if _, err := s.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if g := gone("expired"); len(g) != 1 {
		t.Errorf("after the expiry and a wipe the store's files still hold the expired letter: %v",
			tracesOf(t, dir, texts["expired"], names["expired"]))
	}
	if _, err := s.Letter(expired); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired letter: %v", err)
	}
	if st := mustStats(t, s); st.Counted != 31 || st.Held != 0 {
		t.Errorf("stats after the removals: %+v", st)
	}
}

// TestForgetOldSenders: events older than the retention time lose sender
// and IP (and the address in their reason); newer ones keep them; the next
// due time follows the oldest event kept.
func TestForgetOldSenders(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, Retention: 10 * time.Hour})
	if err := s.Reject(context.Background(), Rejection{Class: RejectFrom, From: anaAddr, RemoteIP: anaIP,
		Reason: "From " + anaAddr + " has no domain we know"}); err != nil {
		t.Fatal(err)
	}
	old := mustAccept(t, s, ana(clk, anaAddr)).ID
	clk.Advance(5 * time.Hour)
	recent := mustAccept(t, s, verified(clk, "bo@privacy.test")).ID
	clk.Advance(6 * time.Hour) // ana's events are 11h old, bo's 6h

	next, err := s.ForgetOldSenders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range allEvents(t, s) {
		switch {
		case e.Letter == old || e.Event == EventRejected:
			if e.Sender != "" || e.IP != "" || strings.Contains(e.Reason, anaAddr) {
				t.Errorf("old event kept the supporter: %+v", e)
			}
		case e.Letter == recent:
			if e.Sender == "" || e.IP == "" {
				t.Errorf("recent event lost its sender: %+v", e)
			}
		}
	}
	if want := clk.Now().Add(4 * time.Hour); !next.Equal(want) {
		t.Errorf("next due %v, want %v (bo's event plus retention)", next, want)
	}
	// A second call finds nothing new.
	clk.Advance(time.Minute)
	if _, err := s.ForgetOldSenders(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestEraseRemovesPartsMessages: a copy that went in parts has a message
// file per part; the erasure removes them all, and a part's message then
// says it was erased.
func TestEraseRemovesPartsMessages(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	ctx := context.Background()
	mustAccept(t, s, verified(clk, "bo@privacy.test"))
	mustAccept(t, s, ana(clk, anaAddr))
	b, err := closeNext(ctx, s, 10, []string{"familias@ofapp.test"})
	if err != nil {
		t.Fatal(err)
	}
	ref := DeliveryRef{Batch: b.ID}
	if err := s.SplitTooBig(ctx, ref, TooBig{Size: 5000, Reason: "552 5.3.4 too big"}); err != nil {
		t.Fatal(err)
	}
	sc, err := s.SplitSnapshot(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddParts(ctx, ref, partsOf(sc, []int{0}, []int{1})); err != nil {
		t.Fatal(err)
	}
	for part := 1; part <= 2; part++ {
		if err := s.MarkDelivered(ctx, DeliveryRef{Batch: b.ID, Part: part}, "250 ok"); err != nil {
			t.Fatal(err)
		}
	}
	if files := messageFiles(t, dir); len(files) != 3 {
		t.Fatalf("message files before the erasure: %v, want the batch's and two parts'", files)
	}
	er := mustErase(t, s, anaSupporter())
	if !slices.Equal(er.Batches, []uint64{b.ID}) {
		t.Errorf("erasure %+v", er)
	}
	if files := messageFiles(t, dir); len(files) != 0 {
		t.Errorf("message files after the erasure: %v", files)
	}
	if _, err := s.DeliveryMessage(DeliveryRef{Batch: b.ID, Part: 2}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "erased") {
		t.Errorf("a part's message after the erasure: %v", err)
	}
	if found := anaTraces(t, dir); len(found) > 0 {
		t.Errorf("after the erasure the store's files still hold: %v", found)
	}
}
