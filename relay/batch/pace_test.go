package batch

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"
)

// The pacer rests paceRest times as long as each spent slice took, and
// only then.
func TestPacer(t *testing.T) {
	clock := t0
	var slept []time.Duration
	p := &pacer{slice: time.Millisecond, start: clock,
		now:   func() time.Time { return clock },
		sleep: func(d time.Duration) { slept = append(slept, d); clock = clock.Add(d) }}
	for _, work := range []time.Duration{
		300 * time.Microsecond, 300 * time.Microsecond, // 0.6 ms: no rest yet
		500 * time.Microsecond, // 1.1 ms: rest 1.1 ms
		2 * time.Millisecond,   // 2 ms at once: rest 2 ms
		999 * time.Microsecond, // under the slice
	} {
		clock = clock.Add(work)
		p.yield()
	}
	want := []time.Duration{3300 * time.Microsecond, 6 * time.Millisecond}
	if !slices.Equal(slept, want) {
		t.Errorf("rested %v, want %v", slept, want)
	}
}

// A paced build is the same message, with a pause possible after every
// letter prepared and every letter written into the digest.
func TestBuildYieldsBetweenLetters(t *testing.T) {
	var letters []Letter
	for i := range 5 {
		addr := fmt.Sprintf("persona%d@supporter.example", i)
		letters = append(letters, Letter{ID: fmt.Sprintf("L%07dA", i), Received: t0.Add(time.Duration(i) * time.Second),
			Address: addr, Raw: plainLetter(addr, "Libertad", "Carta número "+fmt.Sprint(i))})
	}
	s := baseSpec(letters...)
	want, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	yields := 0
	got, err := build(s, func() { yields++ }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("a build with yields differs from Build")
	}
	if yields != 2*len(letters) {
		t.Errorf("%d yields for %d letters, want %d", yields, len(letters), 2*len(letters))
	}
	if paced, err := buildPaced(s, new(scratch)); err != nil || !bytes.Equal(paced, want) {
		t.Errorf("buildPaced differs from Build (err %v)", err)
	}
}
