package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bbolt never overwrites a page in place: a changed page is written
// elsewhere and the old one joins the freelist with its bytes intact, so an
// erased address or a purged body stays readable in the file until the page
// happens to be reused. A wipe writes zeros over every free page (and over
// the file's tail past the last page in use), so that what a supporter asked
// to erase, or what retention removed, is gone from the file itself.
//
// It was chosen over compacting into a new file and renaming it over the old
// one: zeroing costs what was freed rather than the whole store, needs no
// second copy of the file on disk, and the daemon keeps its one *bolt.DB, so
// readers never switch files. Writing to a free page is what bbolt itself
// does when it reuses one, so it is safe under the same rule: only while
// holding the writer lock, and only for pages no reader can still see.
//
// A transaction that removes personal data bumps keyWipeWanted; a wipe that
// covered it records keyWipeDone. Open wipes when they differ, so a crash
// between an erasure and its wipe is finished at the next start, before the
// store serves.

var (
	keyWipeWanted = []byte("wipe_wanted")
	keyWipeDone   = []byte("wipe_done")
)

// wipeChunkPages is how many pages one step of a wipe visits while it holds
// the writer lock (4 MiB of 4 KiB pages): letters wait for their commit
// only that long, however large the file.
const wipeChunkPages = 1024

// wipeReaderPoll is how often a wipe looks again for a reader that started
// outside Store.view to finish.
const wipeReaderPoll = 10 * time.Millisecond

// wipeState is the store's share of wiping.
type wipeState struct {
	// readers is held shared by every read transaction (Store.view) and
	// alone by a wipe step for the moment it takes to see that no read
	// transaction is open: only then is every page on the freelist
	// unreachable by any reader.
	readers sync.RWMutex
	// mu lets one wipe run at a time.
	mu sync.Mutex
}

// markWipe records, in a transaction that removes personal data, that free
// pages must be wiped before that data is gone from the file.
func markWipe(tx *bolt.Tx) error {
	return addU64(tx.Bucket(bucketMeta), keyWipeWanted, 1)
}

// WipeStats says what a wipe did.
type WipeStats struct {
	// Pages is how many free pages (and pages past the end) it looked at.
	Pages int
	// Zeroed is how many of them held bytes and were overwritten.
	Zeroed int
}

// Wipe zeroes the store file's free pages if a removal of personal data
// (an erasure, a purge after retention, events forgetting their sender) is
// not yet wiped, and returns once the zeros are on disk. Letters keep being
// accepted meanwhile: the wipe takes the writer lock one chunk of pages at a
// time.
func (s *Store) Wipe(ctx context.Context) (WipeStats, error) {
	s.wipe.mu.Lock()
	defer s.wipe.mu.Unlock()
	var total WipeStats
	target, done, err := s.wipeGenerations()
	if err != nil {
		return total, err
	}
	// Removals committed while a pass runs may have freed pages it already
	// passed: another pass covers them.
	for done < target {
		st, covered, err := s.wipePass(ctx)
		total.Pages += st.Pages
		total.Zeroed += st.Zeroed
		if err != nil {
			return total, fmt.Errorf("store: wipe free pages: %w", err)
		}
		done = covered
	}
	return total, nil
}

// wipeRemoved wipes, after a committed removal (what names it), the free
// pages it left, even if the caller stopped waiting: the removal is done,
// and Close still stops the wipe (the purger or the next Open finishes it).
func (s *Store) wipeRemoved(ctx context.Context, what string) error {
	if _, err := s.Wipe(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("store: %s: done, but %w", what, err)
	}
	return nil
}

// wipeIfDue finishes, at Open, a wipe that a crash interrupted.
func (s *Store) wipeIfDue() error {
	_, err := s.Wipe(context.Background())
	return err
}

// wipeGenerations reads how many removals asked for a wipe, and how many a
// finished wipe covered.
func (s *Store) wipeGenerations() (wanted, done uint64, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		wanted, done = getU64(meta, keyWipeWanted), getU64(meta, keyWipeDone)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: read the wipe marks: %w", err)
	}
	return wanted, done, nil
}

// wipePass zeroes every page that is free, chunk by chunk, and records the
// removals it covered: those committed before its first chunk began.
func (s *Store) wipePass(ctx context.Context) (WipeStats, uint64, error) {
	var st WipeStats
	f, err := os.OpenFile(s.db.Path(), os.O_RDWR, 0)
	if err != nil {
		return st, 0, err
	}
	defer f.Close()
	w := &wiper{s: s, f: f, pageSize: s.db.Info().PageSize, from: 2} // pages 0 and 1 are the meta pages
	for first := true; ; first = false {
		select {
		case <-s.stop:
			return w.stats, 0, ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return w.stats, 0, err
		}
		last, err := w.chunk(ctx, first)
		if err != nil || last {
			return w.stats, w.covers, err
		}
	}
}

// wiper is one pass over the file.
type wiper struct {
	s        *Store
	f        *os.File
	pageSize int
	from     int    // the next page to look at
	covers   uint64 // the wipe generation read by the first chunk
	stats    WipeStats
	buf      []byte
}

// chunk wipes the free pages among the next wipeChunkPages, holding the
// writer lock. The last chunk syncs the file and commits the generation the
// pass covered; the others roll back, having changed nothing bbolt knows of.
func (w *wiper) chunk(ctx context.Context, first bool) (last bool, err error) {
	tx, err := w.s.db.Begin(true)
	if err != nil {
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return false, ErrClosed
		}
		return false, err
	}
	defer func() {
		if !last || err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := w.s.noReaders(ctx); err != nil {
		return false, err
	}
	if first {
		w.covers = getU64(tx.Bucket(bucketMeta), keyWipeWanted)
		failpoint("wipe")
	}
	inUse := int(tx.Size()) / w.pageSize // pages below this are the tree and the freelist
	fi, err := w.f.Stat()
	if err != nil {
		return false, err
	}
	end := max(inUse, int(fi.Size())/w.pageSize)
	to := min(w.from+wipeChunkPages, end)
	run := -1 // first page of the current run of free pages
	for id := w.from; id <= to; id++ {
		free := false
		if id < to {
			free = id >= inUse
			if !free {
				info, err := tx.Page(id)
				if err != nil {
					return false, err
				}
				free = info != nil && info.Type == "free"
			}
		}
		switch {
		case free && run < 0:
			run = id
		case !free && run >= 0:
			if err := w.zero(run, id); err != nil {
				return false, err
			}
			run = -1
		}
	}
	w.from = to
	if to < end {
		return false, nil
	}
	// The zeros reach the disk before the mark that says they did.
	if err := w.f.Sync(); err != nil {
		return true, err
	}
	if err := tx.Bucket(bucketMeta).Put(keyWipeDone, u64(w.covers)); err != nil {
		return true, err
	}
	return true, tx.Commit()
}

// zero overwrites pages [from, to) with zeros where they are not zero
// already, so a second wipe of the same free pages writes nothing.
func (w *wiper) zero(from, to int) error {
	const maxRun = 256 // pages read at once
	for from < to {
		n := min(to-from, maxRun)
		size := n * w.pageSize
		if cap(w.buf) < size {
			w.buf = make([]byte, maxRun*w.pageSize)
		}
		buf := w.buf[:size]
		off := int64(from) * int64(w.pageSize)
		if _, err := w.f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("read pages %d-%d: %w", from, from+n-1, err)
		}
		w.stats.Pages += n
		for p := 0; p < n; p++ {
			page := buf[p*w.pageSize : (p+1)*w.pageSize]
			if allZero(page) {
				continue
			}
			clear(page)
			if _, err := w.f.WriteAt(page, off+int64(p*w.pageSize)); err != nil {
				return fmt.Errorf("zero page %d: %w", from+p, err)
			}
			w.stats.Zeroed++
		}
		from += n
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// noReaders returns once no read transaction is open. Called with the
// writer lock held, right after it was taken: bbolt keeps a page freed
// while an older reader was open "pending" (on the freelist, but maybe
// still read), and releases it when a writer begins with none open; a page
// freed before this writer began is then either released or, since every
// reader still open started on the current tree, no longer read by anyone.
// Reads through Store.view are held back for the moment it takes to look.
func (s *Store) noReaders(ctx context.Context) error {
	for {
		s.wipe.readers.Lock()
		open := s.db.Stats().OpenTxN
		s.wipe.readers.Unlock()
		if open == 0 {
			return nil
		}
		// A read transaction begun outside Store.view: wait for it.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return ErrClosed
		case <-time.After(wipeReaderPoll):
		}
	}
}
