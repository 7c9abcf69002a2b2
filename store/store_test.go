package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeBolt makes a bbolt file in dir with what fill puts in it.
func writeBolt(t *testing.T, dir string, fill func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// assertUnlocked checks that a failed Open let go of the file.
func assertUnlocked(t *testing.T, dir string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("file still locked after a failed Open: %v", err)
	}
	db.Close()
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	openStore(t, dir, Options{})
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("store dir mode = %o, want 700", perm)
	}
	fi, err = os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("store file mode = %o, want no group/other access", perm)
	}
}

func TestOpenSchemaMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeBolt(t, dir, func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keySchema, u64(99))
	})
	s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("Open of a schema-99 store succeeded")
	}
	if !errors.Is(err, ErrSchema) {
		t.Errorf("err = %v, want ErrSchema", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "99") || !strings.Contains(msg, fmt.Sprint(SchemaVersion)) {
		t.Errorf("error %q should name both versions (99 and %d)", msg, SchemaVersion)
	}
	assertUnlocked(t, dir)
}

func TestOpenNotAStore(t *testing.T) {
	t.Parallel()
	for name, fill := range map[string]func(tx *bolt.Tx) error{
		"unrelated buckets": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("users"))
			if err != nil {
				return err
			}
			return b.Put([]byte("alice"), []byte("x"))
		},
		"meta without schema": func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket(bucketMeta)
			return err
		},
		"short schema value": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put(keySchema, []byte{1})
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeBolt(t, dir, fill)
			s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrSchema) {
				t.Errorf("err = %v, want ErrSchema", err)
			}
			assertUnlocked(t, dir)
		})
	}
}

func TestOpenEmptyBoltFileInitialises(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeBolt(t, dir, func(*bolt.Tx) error { return nil })
	s := openStore(t, dir, Options{})
	mustAccept(t, s, verified(newClock(), "ana@example.org"))
}

func TestOpenTwiceIsLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openStore(t, dir, Options{})
	// The second Open gives up when bbolt's wait for the lock times out
	// (ErrLocked comes from nothing else). The bound below only catches a
	// wait that never ends, as bbolt's without a timeout would.
	done := make(chan error, 1)
	go func() {
		s2, err := Open(dir, Options{LockTimeout: 150 * time.Millisecond})
		if err == nil {
			s2.Close()
		}
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("second Open still waiting for the lock after a minute, with LockTimeout 150ms")
	}
	if err == nil {
		t.Fatal("second Open of the same dir succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked") {
		t.Errorf("err = %q, want ErrLocked, saying the store is locked", err)
	}
}

func TestCloseThenWrite(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Accept(context.Background(), verified(clk, "ana@example.org")); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after Close: %v, want ErrClosed", err)
	}
	if err := s.Reject(context.Background(), Rejection{From: "x@y"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Reject after Close: %v, want ErrClosed", err)
	}
	// The lock is gone.
	openStore(t, dir, Options{})
}

// Writes racing with Close either fail with ErrClosed or are durable.
func TestCloseWhileWriting(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 30
	ids := make([]string, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			res, err := s.Accept(context.Background(), verified(clk, fmt.Sprintf("w%d@example.org", i)))
			ids[i], errs[i] = res.ID, err
		})
	}
	// Close once some writes went through, while others are still queued.
	waitFor(t, "a first commit", func() bool { c, _ := s.CommitStats(); return c > 0 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	s = openStore(t, dir, Options{Now: clk.Now})
	ok := 0
	for i := range writers {
		switch {
		case errs[i] == nil:
			ok++
			if l, err := s.Letter(ids[i]); err != nil || l.From != fmt.Sprintf("w%d@example.org", i) {
				t.Errorf("writer %d got %s, after reopen: %+v, %v", i, ids[i], l, err)
			}
		case !errors.Is(errs[i], ErrClosed):
			t.Errorf("writer %d: %v, want nil or ErrClosed", i, errs[i])
		}
	}
	if st := mustStats(t, s); st.Counted != uint64(ok) {
		t.Errorf("counted = %d, but %d writers were told their letter is stored", st.Counted, ok)
	}
}

func TestGroupCommitDurable(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 50, 20
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				res, err := s.Accept(context.Background(), verified(clk, fmt.Sprintf("g%d-%d@example.org", g, i)))
				if err != nil {
					t.Errorf("Accept g%d-%d: %v", g, i, err)
					return
				}
				if res.Duplicate || res.ID == "" {
					t.Errorf("Accept g%d-%d = %+v", g, i, res)
					return
				}
				ids[g] = append(ids[g], res.ID)
			}
		})
	}
	wg.Wait()
	commits, writes := s.CommitStats()
	t.Logf("%d writes in %d commits (%.1f letters/commit)", writes, commits, float64(writes)/float64(max(commits, 1)))
	if writes != goroutines*each {
		t.Errorf("CommitStats writes = %d, want %d", writes, goroutines*each)
	}
	if commits == 0 || commits >= writes {
		t.Errorf("CommitStats = %d commits for %d writes: letters do not share commits", commits, writes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{Now: clk.Now})
	seen := map[string]bool{}
	for g := range goroutines {
		if len(ids[g]) != each {
			t.Fatalf("goroutine %d got %d IDs", g, len(ids[g]))
		}
		for i, id := range ids[g] {
			if seen[id] {
				t.Errorf("ID %s handed out twice", id)
			}
			seen[id] = true
			l, err := s.Letter(id)
			if err != nil {
				t.Errorf("letter %s lost after reopen: %v", id, err)
				continue
			}
			if want := fmt.Sprintf("g%d-%d@example.org", g, i); l.From != want || l.State != StatePending {
				t.Errorf("letter %s = %s %s, want %s pending", id, l.From, l.State, want)
			}
		}
	}
	st := mustStats(t, s)
	if st.Counted != goroutines*each || st.Pending != goroutines*each {
		t.Errorf("Stats after reopen = %+v", st)
	}
	if n := len(eventsOfKind(t, s, EventAccepted)); n != goroutines*each {
		t.Errorf("%d accepted events, want %d", n, goroutines*each)
	}
}

// One failing write in a group must not take the others down with it.
func TestGroupCommitFailureIsolated(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	release := holdLoop(t, s)

	type result struct {
		res Accepted
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		res, err := s.Accept(context.Background(), verified(clk, "ana@example.org"))
		accepted <- result{res, err}
	}()
	waitFor(t, "the Accept to queue", func() bool { return len(s.ops) == 1 })
	failed := failingWrite(s)
	waitFor(t, "the failing write to queue", func() bool { return len(s.ops) == 2 })
	commitsBefore, _ := s.CommitStats()
	release()

	r := <-accepted
	if r.err != nil || r.res.ID != "L00000001" {
		t.Fatalf("Accept grouped with a failing write = %+v, %v", r.res, r.err)
	}
	if err := <-failed; !errors.Is(err, errInjected) {
		t.Errorf("failing write: %v, want its own error", err)
	}
	if commits, _ := s.CommitStats(); commits <= commitsBefore {
		t.Errorf("no commit counted for the retried Accept")
	}
	if st := mustStats(t, s); st.Counted != 1 {
		t.Errorf("Stats = %+v", st)
	}
	if evs := allEvents(t, s); len(evs) != 1 || evs[0].Letter != "L00000001" || evs[0].Seq != 1 {
		t.Errorf("journal = %+v, want one accepted event", evs)
	}
}

// Two letters from one sender in the same group: the second sees the
// first's dedup key.
func TestGroupCommitDedupWithinGroup(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	release := holdLoop(t, s)
	results := make(chan Accepted, 2)
	for i := range 2 {
		go func() {
			res, err := s.Accept(context.Background(), verified(clk, "ana@example.org"))
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
		waitFor(t, "the Accept to queue", func() bool { return len(s.ops) == i+1 })
	}
	release()
	a, b := <-results, <-results
	if a.Duplicate == b.Duplicate {
		t.Fatalf("results %+v, %+v: want exactly one duplicate", a, b)
	}
	if st := mustStats(t, s); st.Counted != 1 || st.Duplicates != 1 {
		t.Errorf("Stats = %+v", st)
	}
}
