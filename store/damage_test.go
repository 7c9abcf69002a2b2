package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/petitiond/petitiond/internal/damage"
)

// storeWithLetters makes a store with counted and held letters and a
// closed batch, closes it, and returns its directory and the last letter
// ID it answered.
func storeWithLetters(t *testing.T) (dir, last string) {
	t.Helper()
	dir = t.TempDir()
	clk := newClock()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		nl := verified(clk, fmt.Sprintf("s%d@example.org", i))
		if i%3 == 0 {
			nl = unverified(clk, fmt.Sprintf("h%d@example.org", i), HeldUnverified)
		}
		last = mustAccept(t, s, nl).ID
		if i == 15 {
			if _, err := closeNext(context.Background(), s, 100, []string{"familias@ofapp.example"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, last
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestOpenRefusesDamagedFile: every kind of damage is a clear error that
// names the file and says to restore the backup; the file is left as it
// was (no new secret, no new store); the lock is released.
func TestOpenRefusesDamagedFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(path string) error
		want   error
		say    string
	}{
		{"empty", damage.Empty, ErrDamaged, "empty"},
		{"half", damage.Half, ErrDamaged, "cut short"},
		{"flipped meta page", damage.FlipNewestMeta, ErrRollback, "rolled back"},
		{"flipped data page", damage.FlipRootPage, ErrDamaged, "damaged"},
		// bbolt pages carry no checksums: a flip in a letter's bytes or
		// in unused space leaves the structure sound and shows nowhere.
		// 512 flips in a file of about 25 pages hit its structure
		// whatever the layout (which varies with the dedup secret and
		// bbolt's choice of free pages), so the outcome is the same at
		// every run.
		{"random flips", func(p string) error { return damage.FlipRandom(p, 20191018, 512) }, ErrDamaged, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, _ := storeWithLetters(t)
			path := filepath.Join(dir, FileName)
			if err := tc.damage(path); err != nil {
				t.Fatal(err)
			}
			before, markBefore := fileSum(t, path), fileSum(t, filepath.Join(dir, MarkName))
			s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
			if err == nil {
				s.Close()
				t.Fatal("Open of a damaged store succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			msg := err.Error()
			for _, want := range []string{path, tc.say, "restore"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not say %q: %s", want, msg)
				}
			}
			if fileSum(t, path) != before {
				t.Error("the failed Open changed the store file")
			}
			if fileSum(t, filepath.Join(dir, MarkName)) != markBefore {
				t.Error("the failed Open changed the mark")
			}
			// The failed Open let go of the file: another says the same
			// again, not that the store is locked.
			if _, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond}); errors.Is(err, ErrLocked) {
				t.Errorf("file still locked after a failed Open: %v", err)
			}
		})
	}
}

// TestRollbackAccepted: a rolled-back file (a damaged newest meta page, or
// an older copy) opens only with AcceptRollback, and then hands out no
// letter ID, event number or batch number a second time.
func TestRollbackAccepted(t *testing.T) {
	t.Parallel()
	dir, last := storeWithLetters(t)
	path := filepath.Join(dir, FileName)
	if err := damage.FlipNewestMeta(path); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	s := openStore(t, dir, Options{Now: clk.Now, AcceptRollback: true})
	rb := s.RolledBack()
	if rb == nil {
		t.Fatal("RolledBack() = nil after a rollback")
	}
	if rb.Marked.LetterID() != last || rb.File.Letters != rb.Marked.Letters-1 {
		t.Errorf("RolledBack() = %+v, want the file one letter behind %s", rb, last)
	}
	if _, err := s.Letter(last); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the lost letter %s is still there (%v): the test damaged nothing", last, err)
	}
	id := mustAccept(t, s, verified(clk, "next@example.org")).ID
	if id <= last {
		t.Errorf("next letter got %s, want an ID after %s", id, last)
	}
	evs := allEvents(t, s)
	if got := evs[len(evs)-1].Seq; got <= rb.Marked.Events {
		t.Errorf("next event has seq %d, want after %d", got, rb.Marked.Events)
	}
	s.Close()
	// Accepted once: the next start is an ordinary one.
	s = openStore(t, dir, Options{})
	if s.RolledBack() != nil {
		t.Error("a second Open reports the rollback again")
	}
}

// TestRollbackFromOlderCopy: an older copy of the file put in place is a
// rollback too.
func TestRollbackFromOlderCopy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := newClock()
	s := openStore(t, dir, Options{Now: clk.Now})
	mustAccept(t, s, verified(clk, "ana@example.org"))
	s.Close()
	path := filepath.Join(dir, FileName)
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Now: clk.Now})
	mustAccept(t, s, verified(clk, "bea@example.org"))
	s.Close()
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), "L00000002") {
		t.Fatalf("Open of an older copy: %v, want ErrRollback naming L00000002", err)
	}
}

// TestOpenRefusesStrangeStore: a missing file where the mark shows a store
// lived, a file of another store, and a damaged mark are refused.
func TestOpenRefusesStrangeStore(t *testing.T) {
	t.Parallel()
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		dir, last := storeWithLetters(t)
		os.Remove(filepath.Join(dir, FileName))
		_, err := Open(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), last) {
			t.Fatalf("Open without the file: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
			t.Error("Open made a new store file")
		}
	})
	t.Run("another store", func(t *testing.T) {
		t.Parallel()
		dir, _ := storeWithLetters(t)
		other := t.TempDir()
		s := openStore(t, other, Options{})
		s.Close()
		if err := os.Rename(filepath.Join(other, FileName), filepath.Join(dir, FileName)); err != nil {
			t.Fatal(err)
		}
		_, err := Open(dir, Options{AcceptRollback: true})
		if err == nil || !strings.Contains(err.Error(), "secret") {
			t.Fatalf("Open of another store's file: %v", err)
		}
	})
	t.Run("damaged mark", func(t *testing.T) {
		t.Parallel()
		dir, _ := storeWithLetters(t)
		mp := filepath.Join(dir, MarkName)
		b, _ := os.ReadFile(mp)
		b[len(markMagic)+10] ^= 1
		os.WriteFile(mp, b, 0o600)
		_, err := Open(dir, Options{})
		if !errors.Is(err, errMarkDamaged) {
			t.Fatalf("Open with a damaged mark: %v", err)
		}
	})
}

// TestMarkFollowsCommits: the mark records each commit's letter, event and
// batch numbers, so it never lags a running store by more than the last
// commit.
func TestMarkFollowsCommits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := newClock()
	s := openStore(t, dir, Options{Now: clk.Now})
	id := mustAccept(t, s, verified(clk, "ana@example.org")).ID
	if _, err := closeNext(context.Background(), s, 10, []string{"familias@ofapp.example"}); err != nil {
		t.Fatal(err)
	}
	m, err := readMark(dir)
	if err != nil || m == nil {
		t.Fatalf("readMark: %v %v", m, err)
	}
	seq, _ := s.LastSeq()
	want := Position{Letters: 1, Events: seq, Batches: 1}
	if m.pos != want || m.pos.LetterID() != id {
		t.Errorf("mark = %+v, want %+v (%s)", m.pos, want, id)
	}
	if m.secretTag != secretTag(s.secret) || strings.Contains(string(m.encode()), fmt.Sprintf("%x", s.secret)) {
		t.Error("mark's secret tag is wrong or shows the secret")
	}
}

// rootPageOf returns the page of a top-level bucket, read with bbolt while
// the store is closed.
func rootPageOf(t *testing.T, dir string, bucket []byte) uint64 {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var root uint64
	db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(bucket).Root())
		return nil
	})
	if root == 0 {
		t.Fatalf("bucket %s is inline: no page of its own to damage", bucket)
	}
	return root
}

// TestDamageWhileRunning: a page damaged under a running store makes reads
// and writes fail with ErrDamaged, never a panic; feeds end with that error
// (so the daemon's parts stop and it exits), and the store still closes.
func TestDamageWhileRunning(t *testing.T) {
	t.Parallel()
	dir, last := storeWithLetters(t)
	page := rootPageOf(t, dir, bucketLetters)
	clk := newClock()
	s, err := Open(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	feed, err := s.FollowNew()
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	// bbolt maps the file shared: the damage shows at once.
	if err := damage.FlipPage(filepath.Join(dir, FileName), page); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Letter(last); !errors.Is(err, ErrDamaged) {
		t.Errorf("read of a damaged page: %v, want ErrDamaged", err)
	}
	_, err = s.Accept(context.Background(), verified(clk, "late@example.org"))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "restore") {
		t.Errorf("write after the damage: %v, want ErrDamaged with advice", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := feed.Next(ctx); !errors.Is(err, ErrDamaged) {
		t.Errorf("feed after the damage: %v, want ErrDamaged", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestMarkRoundTrip: the mark's bytes decode to what was encoded, and any
// flipped bit is caught.
func TestMarkRoundTrip(t *testing.T) {
	t.Parallel()
	m := mark{secretTag: "0123456789abcdef", pos: Position{Letters: 42, Events: 1 << 40, Batches: 3}}
	b := m.encode()
	got, err := decodeMark(b)
	if err != nil || got != m {
		t.Fatalf("decode(encode(m)) = %+v, %v", got, err)
	}
	if len(mark{secretTag: "fedcba9876543210"}.encode()) != len(b) {
		t.Error("mark encoding is not fixed width")
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x04
		if got, err := decodeMark(c); err == nil && got != m {
			t.Errorf("flip at byte %d decoded to %+v without an error", i, got)
		}
	}
}
