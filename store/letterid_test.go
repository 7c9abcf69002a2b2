package store

import (
	"context"
	"testing"
)

// TestReserveLetterID: reserved IDs grow, Accept stores a letter under its
// reserved ID, a reserved ID never stored leaves a harmless gap, and after a
// reopen the next ID comes after the highest stored one.
func TestReserveLetterID(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})

	a, err := s.ReserveLetterID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.ReserveLetterID()
	if err != nil {
		t.Fatal(err)
	}
	if a != "L00000001" || b != "L00000002" {
		t.Fatalf("reserved %s, %s; want L00000001, L00000002", a, b)
	}
	// b is stored first: letters may commit out of reservation order.
	nl := verified(clk, "bea@example.org")
	nl.ID = b
	if res := mustAccept(t, s, nl); res.ID != b {
		t.Fatalf("Accept with reserved ID %s = %+v", b, res)
	}
	if l := mustLetter(t, s, b); l.From != "bea@example.org" {
		t.Errorf("letter %s = %+v", b, l)
	}
	// a is never used (its letter was refused): a gap.
	if res := mustAccept(t, s, verified(clk, "cai@example.org")); res.ID != "L00000003" {
		t.Errorf("Accept without a reserved ID got %s, want L00000003", res.ID)
	}
	// The same ID twice is refused, never overwritten.
	again := verified(clk, "dan@example.org")
	again.ID = b
	if _, err := s.Accept(context.Background(), again); err == nil {
		t.Errorf("Accept with the taken ID %s succeeded", b)
	}
	if l := mustLetter(t, s, b); l.From != "bea@example.org" {
		t.Errorf("letter %s after a second Accept under its ID = %+v", b, l)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Now: clk.Now})
	if id, err := s.ReserveLetterID(); err != nil || id != "L00000004" {
		t.Errorf("first ID after reopening = %s, %v; want L00000004", id, err)
	}
}

func TestParseLetterID(t *testing.T) {
	for _, ok := range []string{"L00000001", "L0000001A", "L100000000"} {
		if n, err := parseLetterID(ok); err != nil || formatLetterID(n) != ok {
			t.Errorf("parseLetterID(%q) = %d, %v", ok, n, err)
		}
	}
	for _, bad := range []string{"", "L", "L1", "L0000001a", "X00000001", "L00000000", "L0000000G", "L+0000001"} {
		if _, err := parseLetterID(bad); err == nil {
			t.Errorf("parseLetterID(%q) accepted it", bad)
		}
	}
}
