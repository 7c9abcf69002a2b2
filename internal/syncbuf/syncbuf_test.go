package syncbuf

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
)

// TestConcurrentWritesAndJSONLines: lines written from many goroutines at
// once all come back whole (run with -race).
func TestConcurrentWritesAndJSONLines(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewJSONHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				log.Info("line", "writer", i, "n", j)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	lines := b.JSONLines(t)
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	seen := map[string]bool{}
	for _, m := range lines {
		seen[fmt.Sprint(m["writer"], "/", m["n"])] = true
	}
	if len(seen) != 400 {
		t.Errorf("%d distinct lines, want 400", len(seen))
	}
}
