package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestScanLetters: pages of letters in arrival order or newest first,
// resuming after the last one seen, with bodies when asked; every letter
// once whatever the page size.
func TestScanLetters(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	var ids []string
	for i := range 7 {
		ids = append(ids, mustAccept(t, s, verified(clk, fmt.Sprintf("s%d@ed.test", i))).ID)
	}
	ids = append(ids, mustAccept(t, s, unverified(clk, "held@ed.test", HeldUnverified)).ID)

	for _, backward := range []bool{false, true} {
		want := slices.Clone(ids)
		if backward {
			slices.Reverse(want)
		}
		for _, size := range []int{1, 3, 8, 100} {
			var got []string
			after := ""
			for {
				page, err := s.ScanLetters(LetterScan{After: after, Backward: backward, Limit: size, Bodies: true})
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range page {
					got = append(got, l.ID)
					if len(l.Body) == 0 {
						t.Errorf("%s: no body", l.ID)
					}
				}
				if len(page) < size {
					break
				}
				after = page[len(page)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Errorf("backward %v, pages of %d: %v, want %v", backward, size, got, want)
			}
		}
	}
	// After an ID that is not stored: from the next one either way.
	if page, _ := s.ScanLetters(LetterScan{After: "L00000003x", Limit: 1}); len(page) != 1 || page[0].ID != ids[3] {
		t.Errorf("forward after a gap: %v", page)
	}
	if page, _ := s.ScanLetters(LetterScan{After: "L00000003x", Backward: true, Limit: 1}); len(page) != 1 || page[0].ID != ids[2] {
		t.Errorf("backward after a gap: %v", page)
	}
	if page, _ := s.ScanLetters(LetterScan{After: "Z", Backward: true, Limit: 1}); len(page) != 1 || page[0].ID != ids[7] {
		t.Errorf("backward from past the end: %v", page)
	}
	if page, _ := s.ScanLetters(LetterScan{Limit: 2}); page[0].Body != nil {
		t.Errorf("a body without asking")
	}
}

// TestLettersByID: the letters asked for, in that order, their bodies when
// asked; an unknown ID is ErrNotFound.
func TestLettersByID(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	a := mustAccept(t, s, verified(clk, "a@ed.test")).ID
	b := mustAccept(t, s, verified(clk, "b@ed.test")).ID
	got, err := s.LettersByID([]string{b, a}, true)
	if err != nil || len(got) != 2 || got[0].ID != b || got[1].ID != a || got[0].From != "b@ed.test" || len(got[1].Body) == 0 {
		t.Fatalf("LettersByID: %+v, %v", got, err)
	}
	if got, _ := s.LettersByID([]string{a}, false); got[0].Body != nil {
		t.Errorf("a body without asking")
	}
	if _, err := s.LettersByID([]string{a, "L0000FFFF"}, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("an unknown ID: %v", err)
	}
}
