package batch

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// Builds that share one scratch give Build's bytes, whatever came before,
// and a message already returned is never written over by the next build.
func TestBuildReusesScratch(t *testing.T) {
	spec := func(n int, word string) Spec {
		var letters []Letter
		for i := range n {
			addr := fmt.Sprintf("persona%d@supporter.example", i)
			letters = append(letters, Letter{ID: fmt.Sprintf("L%07dA", i), Received: t0.Add(time.Duration(i) * time.Second),
				Name: "Persona " + word, Address: addr, Raw: plainLetter(addr, word, word+" número "+fmt.Sprint(i))})
		}
		return baseSpec(letters...)
	}
	var sc scratch
	var kept [][]byte
	var want [][]byte
	for _, s := range []Spec{spec(40, "Libertad"), spec(3, "Justicia"), spec(25, "Verdad")} {
		w, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := build(s, nil, &sc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Errorf("build %d with a used scratch differs from Build", len(kept)+1)
		}
		kept, want = append(kept, got), append(want, w)
	}
	for i := range kept {
		if !bytes.Equal(kept[i], want[i]) {
			t.Errorf("message %d changed after later builds", i+1)
		}
	}
}

// BenchmarkBuild1000Scratch is BenchmarkBuild1000 as the closer builds:
// paced, in one scratch kept across builds.
func BenchmarkBuild1000Scratch(b *testing.B) {
	s := baseSpec(benchLetters(b, 1000)...)
	b.ReportAllocs()
	var sc scratch
	for b.Loop() {
		if _, err := buildPaced(s, &sc); err != nil {
			b.Fatal(err)
		}
	}
}
