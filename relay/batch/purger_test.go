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
