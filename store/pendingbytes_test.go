package store

import (
	"context"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// pendingBytesNow is the kept sum and the sum of the pending letters' sizes
// read one by one.
func pendingBytesNow(t *testing.T, s *Store) (kept, summed uint64) {
	t.Helper()
	err := s.view(func(tx *bolt.Tx) error {
		kept = getU64(tx.Bucket(bucketMeta), ctrPendingBytes)
		return tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
			l, err := getLetter(tx, string(k[8:]))
			if err != nil {
				return err
			}
			summed += uint64(l.Size)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return kept, summed
}

// The kept sum of pending bytes follows every way into and out of the
// queue, and a store that never kept it gets it at Open.
func TestPendingBytesFollowQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	clk := newClock()
	s := openStore(t, dir, Options{Now: clk.Now})
	check := func(step string) {
		t.Helper()
		kept, summed := pendingBytesNow(t, s)
		if kept != summed {
			t.Fatalf("after %s: kept %d pending bytes, the letters add up to %d", step, kept, summed)
		}
	}
	var ids []string
	for i := range 6 {
		nl := verified(clk, fmt.Sprintf("s%d@example.org", i))
		nl.Body = append(nl.Body, make([]byte, 100*i)...) // sizes differ
		ids = append(ids, mustAccept(t, s, nl).ID)
	}
	check("accepting")
	if kept, _ := pendingBytesNow(t, s); kept == 0 {
		t.Fatal("no pending bytes kept after six letters")
	}
	if err := s.HoldUnbatchable(ctx, ids[0], "test"); err != nil {
		t.Fatal(err)
	}
	check("holding one as unbatchable")
	if _, err := s.Release(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	check("releasing it")
	held := mustAccept(t, s, unverified(clk, "h@example.org", HeldUnverified)).ID
	if _, err := s.Release(ctx, held); err != nil {
		t.Fatal(err)
	}
	check("releasing a held letter")
	if _, err := s.Erase(ctx, Supporter{Address: "s3@example.org"}); err != nil {
		t.Fatal(err)
	}
	check("erasing a pending letter's sender")
	if _, err := closeNext(ctx, s, 3, []string{"org@example.net"}); err != nil {
		t.Fatal(err)
	}
	check("closing a batch")

	// A store from before the sum: Open adds it up.
	want, _ := pendingBytesNow(t, s)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(ctrPendingBytes) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Now: clk.Now})
	if kept, _ := pendingBytesNow(t, s); kept != want {
		t.Errorf("after reopening without the sum: %d pending bytes, want %d", kept, want)
	}
	check("reopening")
	for _, c := range []struct {
		maxBytes int64
		over     bool
	}{{int64(want), false}, {int64(want) - 1, true}} {
		if over, err := s.PendingOver(100, c.maxBytes); err != nil || over != c.over {
			t.Errorf("PendingOver(100, %d) = %v, %v; want %v", c.maxBytes, over, err, c.over)
		}
	}
}
