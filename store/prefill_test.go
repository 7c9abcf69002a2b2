package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A prefilled store looks like one whose letters were all counted, batched,
// delivered and purged: the senders are counted (a verified repeat is a
// duplicate), nothing is pending, and new letters carry on from there.
func TestPrefill(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now, JournalMax: 1000})
	ctx := context.Background()

	// Runs of 1100 senders in chunks of 1000: chunks of 1000 and 100, and a
	// last run of 300.
	if err := s.prefill(ctx, 2500, 1000, 1100); err != nil {
		t.Fatalf("Prefill: %v", err)
	}
	st := mustStats(t, s)
	if st.Counted != 2500 || st.Pending != 0 || st.Batches != 0 {
		t.Errorf("stats after prefill = %+v, want 2500 counted, 0 pending, 0 batches", st)
	}
	if n := bucketLen(t, s, bucketDedup); n != 2500 {
		t.Errorf("dedup index has %d keys, want 2500", n)
	}
	if n := bucketLen(t, s, bucketPending); n != 0 {
		t.Errorf("pending queue has %d letters, want 0", n)
	}

	// Each synthetic letter is from a distinct prefill address, and its
	// dedup key is that address's HMAC.
	senders := map[string]bool{}
	for n := 1; n <= 2500; n++ {
		l := mustLetter(t, s, fmt.Sprintf("L%08X", n))
		if l.State != StateBatched || !l.Purged || l.Verdict.Kind != VerdictDKIM || !strings.HasSuffix(l.From, "@prefill.test") {
			t.Fatalf("prefilled letter = %+v", l)
		}
		if !bytes.Equal(l.DedupKey, s.DedupKey(l.From)) {
			t.Fatalf("letter %s: dedup key is not the HMAC of %s", l.ID, l.From)
		}
		senders[l.From] = true
	}
	for n := 1; n <= 2500; n++ {
		if addr := fmt.Sprintf("prefill-%d@prefill.test", n); !senders[addr] {
			t.Fatalf("no letter from %s", addr)
		}
	}
	dup := mustAccept(t, s, verified(clk, "prefill-2500@prefill.test"))
	if !dup.Duplicate {
		t.Errorf("letter from a prefilled sender = %+v, want a duplicate", dup)
	}
	next := mustAccept(t, s, verified(clk, "late@example.org"))
	if next.ID != "L000009C5" { // 2500 + 1
		t.Errorf("letter after the prefill got ID %s", next.ID)
	}

	// The journal holds at most JournalMax events, ending with the real
	// letters' ones after the last prefilled ones.
	evs := allEvents(t, s)
	if len(evs) != 1000 {
		t.Fatalf("journal has %d events, want 1000", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Fatalf("journal not contiguous at %d: %d then %d", i, evs[i-1].Seq, evs[i].Seq)
		}
	}
	if last := evs[len(evs)-1]; last.Seq != 2502 || last.Letter != next.ID {
		t.Errorf("last event = %+v, want seq 2502 for %s", last, next.ID)
	}
	if e := evs[len(evs)-3]; e.Event != EventAccepted || e.Letter != "L000009C4" || !strings.HasPrefix(e.Sender, "prefill-") {
		t.Errorf("last prefill event = %+v", e)
	}

	// The next batch takes only the real pending letter, and its running
	// total counts the prefilled ones as batched before.
	b, err := closeNext(ctx, s, 100, []string{"familias@ofapp.example"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{next.ID}; fmt.Sprint(b.LetterIDs) != fmt.Sprint(want) {
		t.Errorf("first batch after the prefill has %v, want %v", b.LetterIDs, want)
	}
	msg, err := s.BatchMessage(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := "(total 2501)"; !bytes.Contains(msg, []byte(want)) {
		t.Errorf("batch message %q does not say %s", msg[:80], want)
	}
}

// A store that has taken a real letter is never prefilled, before or after
// an earlier prefill: its tally must not include synthetic senders.
func TestPrefillRefusesAStoreThatTookMail(t *testing.T) {
	t.Parallel()
	clk := newClock()
	ctx := context.Background()

	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	mustAccept(t, s, verified(clk, "ana@example.org"))
	if err := s.Prefill(ctx, 10, 0); !errors.Is(err, errTookMail) {
		t.Errorf("Prefill after a letter = %v, want errTookMail", err)
	}
	if st := mustStats(t, s); st.Counted != 1 {
		t.Errorf("counted = %d after a refused prefill, want 1", st.Counted)
	}

	s = openStore(t, t.TempDir(), Options{Now: clk.Now})
	if err := s.Prefill(ctx, 10, 0); err != nil {
		t.Fatal(err)
	}
	mustAccept(t, s, verified(clk, "ana@example.org"))
	if err := s.Prefill(ctx, 10, 0); !errors.Is(err, errTookMail) {
		t.Errorf("second Prefill after a letter = %v, want errTookMail", err)
	}
	if st := mustStats(t, s); st.Counted != 11 {
		t.Errorf("counted = %d, want 11", st.Counted)
	}
}

// Two prefills add distinct senders; a cancelled one stops between chunks
// and keeps what it committed.
func TestPrefillAgainAndCancel(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), Options{})
	ctx := context.Background()
	for range 2 {
		if err := s.Prefill(ctx, 300, 0); err != nil {
			t.Fatalf("Prefill: %v", err)
		}
	}
	if st := mustStats(t, s); st.Counted != 600 {
		t.Errorf("counted = %d after two prefills of 300", st.Counted)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err := s.Prefill(cctx, 300, 100)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Prefill with a cancelled context = %v", err)
	}
	if err := s.Prefill(ctx, -1, 0); err == nil {
		t.Error("Prefill(-1) succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Prefill(ctx, 1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Prefill on a closed store = %v, want ErrClosed", err)
	}
}
