package batch

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/store"
)

// TestPurgerExpiresHeld: the purger follows the store's feed and purges a
// held letter once store.held_retention has passed, when the next held
// letter wakes it.
func TestPurgerExpiresHeld(t *testing.T) {
	var clock atomic.Int64 // the test's clock, in Unix nanoseconds
	clock.Store(time.Date(2019, 10, 18, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Now: now, HeldRetention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	hold := func(from string) string {
		res, err := st.Accept(context.Background(), store.NewLetter{From: from, DedupAddress: from,
			Verdict: store.Verdict{Kind: store.VerdictUnverified}, Hold: store.HeldUnverified,
			Body: []byte("From: <" + from + ">\r\n\r\nLibertad.\r\n")})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	old := hold("ana@ed.test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewPurger(st, slog.New(slog.DiscardHandler), now).Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	clock.Add(int64(time.Hour))
	recent := hold("bo@ed.test")
	wait.For(t, "the old held letter purged", 10*time.Second, func() bool {
		_, err := st.Letter(old)
		return errors.Is(err, store.ErrNotFound)
	})
	if _, err := st.Letter(recent); err != nil {
		t.Errorf("the recent held letter %s went too: %v", recent, err)
	}
}

// TestSteadyNow: a step of the wall clock forward does not move the purge
// clock past the time elapsed since start; a step back holds it back.
func TestSteadyNow(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name    string
		elapsed time.Duration
		wall    time.Time
		want    time.Time
	}{
		{"no step", time.Hour, start.Add(time.Hour), start.Add(time.Hour)},
		{"stepped forward a year", time.Hour, start.AddDate(1, 0, 0), start.Add(time.Hour)},
		{"stepped back", time.Hour, start.Add(-time.Hour), start.Add(-time.Hour)},
	} {
		if got := steadyNow(start, c.elapsed, c.wall); !got.Equal(c.want) {
			t.Errorf("%s: steadyNow = %v, want %v", c.name, got, c.want)
		}
	}
	// With the real clocks, it is now.
	s := time.Now()
	if got := steadyNow(s, time.Since(s), time.Now()); time.Since(got) > time.Minute || got.After(time.Now()) {
		t.Errorf("steadyNow with no step = %v, now %v", got, time.Now())
	}
}
