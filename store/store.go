// Package store owns petitiond's durable state: one bbolt file with the
// letters, the dedup index, batches, the delivery queue and the event
// journal. Every state change is one transaction that also appends its
// event; writes from concurrent sessions share fsyncs through a commit loop.
package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/petitiond/petitiond/safeio"
)

// SchemaVersion is the layout this code reads and writes. Version 1 kept
// the pending queue by letter ID; version 2 keys it by when each letter
// became pending. Version 3 adds indexes that every write must keep: the
// sender index (index.go) and the held letters' expiry queue (held.go).
// A petitiond that knows only version 2 would store letters they miss,
// which an erasure would then not find, so it must refuse a version 3
// file (it refuses any version it does not know); Open converts older
// files (convertV2).
const SchemaVersion = 3

// readableSchema reports whether this code opens a file of version v,
// converting it if it is older.
func readableSchema(v uint64) bool { return v >= 1 && v <= SchemaVersion }

// FileName is the bbolt file inside the store directory.
const FileName = "petitiond.db"

// initialMmapSize is the address space the file is mapped into at Open.
// bbolt remaps when the file outgrows its mapping, and a remap waits for
// every read transaction to end: with room to grow, a long read (a backup)
// never holds up the writes that answer letters. Only address space: pages
// are read in as used. 32-bit builds keep bbolt's default.
const initialMmapSize = (1 << 30) * (strconv.IntSize / 64)

var (
	bucketMeta     = []byte("meta")
	bucketLetters  = []byte("letters")
	bucketBodies   = []byte("bodies")
	bucketDedup    = []byte("dedup")
	bucketPending  = []byte("pending_since") // pendingKey(since, id) → nil
	bucketHeld     = []byte("held")
	bucketBatches  = []byte("batches")
	bucketBatchMsg = []byte("batchmsg")
	bucketQueue    = []byte("queue")
	bucketPurge    = []byte("purge")
	bucketEvents   = []byte("events")
	allBuckets     = append([][]byte{bucketMeta, bucketLetters, bucketBodies, bucketDedup, bucketPending,
		bucketHeld, bucketBatches, bucketBatchMsg, bucketQueue, bucketPurge, bucketEvents,
		bucketHeldDedup, bucketHeldSince, bucketSenders, bucketForwardDue}, supporterBuckets...)

	keySchema    = []byte("schema")
	keySecret    = []byte("secret")
	keyLetterSeq = []byte("letter_seq")
	// keyLastWaitClose is when the last batch closed for the time rule.
	keyLastWaitClose = []byte("last_wait_close")

	// bucketPendingV1 is version 1's pending queue, keyed by letter ID.
	bucketPendingV1 = []byte("pending")
)

// Counter keys in the meta bucket.
var (
	ctrCounted    = []byte("n_counted")
	ctrDuplicates = []byte("n_duplicates")
	ctrHeld       = []byte("n_held")
	ctrRejected   = []byte("n_rejected")
	ctrBatches    = []byte("n_batches")
	ctrPending    = []byte("n_pending")
	// ctrPendingBytes is the sum of the pending letters' sizes, so the
	// batch closer learns whether they fit one message without reading
	// every pending letter's record after each new letter.
	ctrPendingBytes = []byte("n_pending_bytes")
)

// Errors callers can test for.
var (
	ErrNotFound = errors.New("not found")
	ErrSchema   = errors.New("unknown store schema version")
	ErrClosed   = errors.New("store closed")
	ErrState    = errors.New("not allowed in this state")
	ErrLocked   = errors.New("store is locked by another process")
	// ErrConflict is a batch that can no longer close as built: one of its
	// letters left the pending queue, or another batch took its number.
	// Build it again from a fresh snapshot.
	ErrConflict = errors.New("batch no longer matches the pending queue")
)

// Options tunes a store; the zero value is usable.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// JournalMax bounds the event journal; 0 means 100000 events.
	JournalMax uint64
	// MaxGroup caps how many writes share one commit; 0 means 256.
	MaxGroup int
	// LockTimeout is how long Open waits for the file lock; 0 means 2s.
	LockTimeout time.Duration
	// Retention is how long letter bodies stay after their batch reached
	// every recipient; 0 means 720h.
	Retention time.Duration
	// HeldRetention is how long a held letter waits for an admin before it
	// is purged; 0 means 720h.
	HeldRetention time.Duration
	// Receipts has every newly counted verified letter owed a receipt
	// ([receipts] enabled, SPEC 11).
	Receipts bool
	// AcceptRollback accepts a store file older than its mark (a backup
	// restored on purpose): its letter, event and batch numbers move past
	// the highest ever handed out, and Open goes on. Without it such a file
	// is refused with ErrRollback.
	AcceptRollback bool
}

// Store is an open store. Safe for concurrent use.
type Store struct {
	db         *bolt.DB
	msgDir     string // batch messages (messages.go)
	now        func() time.Time
	journalMax uint64
	maxGroup   int
	secret     []byte
	retention  time.Duration
	heldRetain time.Duration
	dir        string
	receipts   bool // Options.Receipts

	// The mark (mark.go): its file, what it says (the commit loop's), and
	// the last failure to update it.
	markFile  *os.File
	marked    Position
	secretTag string
	markErr   atomic.Pointer[error]
	// rollback is what AcceptRollback moved; nil when nothing.
	rollback *Rollback

	failMu  sync.Mutex
	failErr error // set once a damaged page was found while running

	ops     chan *op
	stop    chan struct{}
	stopped chan struct{}
	closeMu sync.RWMutex
	closed  bool

	commits   atomic.Uint64 // commits done by the group-commit loop
	commitOps atomic.Uint64 // writes carried by those commits
	subsMu    sync.Mutex
	subs      map[*subscription]struct{}
	subsDone  bool // the store closed: no new subscription

	wipe wipeState // zeroing of free pages (wipe.go)
	ids  letterIDs
}

// Rollback is what Options.AcceptRollback moved at Open.
type Rollback struct {
	// File is where the store file ended; Marked is how far petitiond had
	// come (its mark). Numbers continue after Marked.
	File, Marked Position
}

// Open opens the store in dir, creating it only when its file does not
// exist. The directory is created 0700 because the store holds who signed.
//
// A file that exists is never started afresh: an empty or unreadable file,
// one that fails the consistency check (check.go), or one older than the
// store's mark (mark.go) is an error that names the file and says what to
// do, and Open writes nothing to it.
func Open(dir string, opt Options) (*Store, error) {
	created, err := mkdirAll(dir)
	if err != nil {
		return nil, err
	}
	timeout := opt.LockTimeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	path := filepath.Join(dir, FileName)
	mk, err := readMark(dir)
	if err != nil {
		// A damaged mark vouches for nothing: accepting the file as it is
		// writes a new one.
		if !opt.AcceptRollback || !errors.Is(err, errMarkDamaged) {
			return nil, err
		}
		mk = nil
	}
	_, statErr := os.Stat(path)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	if fresh && mk != nil {
		return nil, fmt.Errorf("store: %s is missing, but %s shows that a store which answered letters up to %s "+
			"lived here. Restore the latest backup into %s (README, Backup and restore); to start a new, empty "+
			"store on purpose, move the whole directory away first", path, filepath.Join(dir, MarkName),
			mk.pos.LetterID(), dir)
	}
	db, err := openBolt(path, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: initialMmapSize})
	if err != nil {
		return nil, err
	}
	if !fresh {
		if err := checkFile(db, path); err != nil {
			db.Close()
			return nil, err
		}
	}
	s := &Store{
		db:         db,
		dir:        dir,
		now:        opt.Now,
		journalMax: opt.JournalMax,
		maxGroup:   opt.MaxGroup,
		retention:  opt.Retention,
		heldRetain: opt.HeldRetention,
		receipts:   opt.Receipts,
		ops:        make(chan *op, 1024),
		stop:       make(chan struct{}),
		stopped:    make(chan struct{}),
		subs:       map[*subscription]struct{}{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.journalMax == 0 {
		s.journalMax = 100000
	}
	if s.retention == 0 {
		s.retention = 720 * time.Hour
	}
	if s.heldRetain == 0 {
		s.heldRetain = 720 * time.Hour
	}
	if s.maxGroup == 0 {
		s.maxGroup = 256
	}
	if err := s.init(path, mk, opt.AcceptRollback); err != nil {
		db.Close()
		return nil, err
	}
	if s.markFile, err = writeMarkFile(dir, mark{secretTag: s.secretTag, pos: s.marked}); err != nil {
		db.Close()
		return nil, err
	}
	s.msgDir = filepath.Join(dir, messageDir)
	if err := safeio.MkdirAll(s.msgDir, 0o700); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("store: create %s: %w", s.msgDir, err)
	}
	if err := s.sweepLeftovers(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.wipeIfDue(); err != nil {
		db.Close()
		return nil, err
	}
	// bbolt fsyncs the file but not the directory entry that names it: sync
	// the directory once (and the parents of directories just made), so a
	// power cut right after the first start cannot lose the whole file with
	// the letters already answered 250.
	for _, d := range append([]string{dir}, created...) {
		if err := safeio.SyncDir(d); err != nil {
			s.closeFiles()
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	go s.commitLoop()
	return s, nil
}

// init creates the buckets and the secret on first start, checks the
// schema version on every start, converts a version 1 file, and compares
// the file with its mark mk (nil when there is none).
func (s *Store) init(path string, mk *mark, acceptRollback bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		version := uint64(SchemaVersion) // a new file
		if meta != nil {
			v := meta.Get(keySchema)
			version = 0
			if len(v) == 8 {
				version = binary.BigEndian.Uint64(v)
			}
			if !readableSchema(version) {
				got := "none"
				if len(v) == 8 {
					got = fmt.Sprint(version)
				}
				return fmt.Errorf("store: %s has schema version %s, this petitiond reads version %d: %w",
					path, got, SchemaVersion, ErrSchema)
			}
		} else if hasAnyBucket(tx) {
			return fmt.Errorf("store: %s is not a petitiond store (no meta bucket): %w", path, ErrSchema)
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: create bucket %s: %w", name, err)
			}
		}
		if version == 1 {
			if err := migrateV1(tx); err != nil {
				return fmt.Errorf("store: %s: convert schema version 1 to %d: %w", path, SchemaVersion, err)
			}
		}
		if version < 3 {
			if err := convertV2(tx); err != nil {
				return fmt.Errorf("store: %s: convert schema version %d to %d: %w", path, version, SchemaVersion, err)
			}
		}
		meta = tx.Bucket(bucketMeta)
		if err := meta.Put(keySchema, u64(SchemaVersion)); err != nil {
			return err
		}
		if err := sumPendingBytes(tx); err != nil {
			return fmt.Errorf("store: %s: add up the pending letters: %w", path, err)
		}
		if sec := meta.Get(keySecret); sec != nil {
			s.secret = append([]byte(nil), sec...)
		} else {
			s.secret = make([]byte, 32)
			if _, err := rand.Read(s.secret); err != nil {
				return fmt.Errorf("store: make dedup secret: %w", err)
			}
			if err := meta.Put(keySecret, s.secret); err != nil {
				return err
			}
		}
		s.secretTag = secretTag(s.secret)
		s.marked = position(tx)
		if mk == nil {
			return nil
		}
		markPath := filepath.Join(filepath.Dir(path), MarkName)
		if mk.secretTag != s.secretTag {
			return fmt.Errorf("store: %s is not the store this directory held: its dedup secret is not the one "+
				"recorded in %s, so every supporter would be counted again. Put this store's own file back (its "+
				"latest backup); to start a new, empty store on purpose, move the whole directory away first",
				path, markPath)
		}
		if !s.marked.behind(mk.pos) {
			return nil
		}
		if !acceptRollback {
			return rollbackError(path, markPath, s.marked, mk.pos)
		}
		to := maxPosition(s.marked, mk.pos)
		if err := advance(tx, to); err != nil {
			return fmt.Errorf("store: %s: move past the numbers already handed out: %w", path, err)
		}
		s.rollback = &Rollback{File: s.marked, Marked: mk.pos}
		s.marked = to
		return nil
	})
}

// RolledBack says what Options.AcceptRollback moved at Open: nil when the
// file was not behind its mark.
func (s *Store) RolledBack() *Rollback { return s.rollback }

// closeFiles closes what Open opened, when it fails after the mark.
func (s *Store) closeFiles() {
	s.markFile.Close()
	s.db.Close()
}

// migrateV1 re-keys version 1's pending queue by pending time. Version 1
// did not record when a released letter was released, so its receipt time
// stands in: such a letter may join the next batch early, never late.
func migrateV1(tx *bolt.Tx) error {
	old := tx.Bucket(bucketPendingV1)
	if old == nil {
		return nil
	}
	err := old.ForEach(func(k, _ []byte) error {
		l, err := getLetter(tx, string(k))
		if err != nil {
			return err
		}
		l.PendingSince = l.Received
		if err := putLetter(tx, l); err != nil {
			return err
		}
		// Version 1 kept n_pending already; the bytes are added up after.
		return tx.Bucket(bucketPending).Put(pendingKey(l.PendingSince, l.ID), nil)
	})
	if err != nil {
		return err
	}
	return tx.DeleteBucket(bucketPendingV1)
}

// convertV2 brings a version 2 file to version 3: it builds the sender
// index anew, and queues for expiry every letter that version 3 would have
// queued, from the letter records. Whatever a petitiond of version 2 wrote
// last, with or without these indexes, they then hold every letter.
func convertV2(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bucketSenders); err != nil {
		return err
	}
	senders, err := tx.CreateBucket(bucketSenders)
	if err != nil {
		return err
	}
	since, bodies := tx.Bucket(bucketHeldSince), tx.Bucket(bucketBodies)
	return tx.Bucket(bucketLetters).ForEach(func(k, _ []byte) error {
		l, err := getLetter(tx, string(k))
		if err != nil {
			return err
		}
		// The counted letters' entries too, which is harmless.
		if len(l.DedupKey) > 0 {
			if err := senders.Put(senderKey(l.DedupKey, l.ID), nil); err != nil {
				return err
			}
		}
		held := l.State == StateHeld && l.HeldReason != HeldUnbatchable
		keptDuplicate := l.State == StateDuplicate && bodies.Get(k) != nil
		if q := pendingKey(l.Received, l.ID); (held || keptDuplicate) && since.Get(q) == nil {
			return queueExpiry(tx, l)
		}
		return nil
	})
}

// sweepLeftovers removes the message files no open batch names (see
// sweepMessages).
func (s *Store) sweepLeftovers() error {
	var files []string
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		files, err = liveMessageFiles(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: read the batches' message files: %w", err)
	}
	keep := make(map[string]bool, len(files))
	for _, f := range files {
		keep[f] = true
	}
	return s.sweepMessages(keep)
}

// mkdirAll makes dir 0700 with any missing parents and returns the parents
// of the directories it made, whose entries must be synced.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	parents := make([]string, 0, len(missing))
	for _, d := range missing {
		parents = append(parents, filepath.Dir(d))
	}
	return parents, nil
}

func hasAnyBucket(tx *bolt.Tx) bool {
	found := false
	_ = tx.ForEach(func([]byte, *bolt.Bucket) error { found = true; return nil })
	return found
}

// Close stops the commit loop after the writes already queued and closes the
// file.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.stop)
	<-s.stopped
	s.closeSubs()
	merr := s.markFile.Close()
	if err := s.db.Close(); err != nil {
		return err
	}
	return merr
}

// CommitStats reports how many group commits ran and how many writes they
// carried since Open: writes/commits is the letters per fsync.
func (s *Store) CommitStats() (commits, writes uint64) {
	return s.commits.Load(), s.commitOps.Load()
}

// op is one write waiting for the commit loop. fn may run more than once
// (when another write in its group fails the group is retried one by one), so
// it must only touch the transaction and reset its own outputs on entry.
type op struct {
	fn     func(tx *bolt.Tx, w *writer) error
	done   chan error
	events []Event
}

// writer collects the events a write appends, so they can be published only
// after the commit.
type writer struct {
	s      *Store
	tx     *bolt.Tx
	events []Event
}

// update runs fn in a group commit and returns once it is fsynced (or failed).
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx, w *writer) error) error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	o := &op{fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return ctx.Err()
	}
	s.closeMu.RUnlock()
	// Once queued the write may commit, so wait for the verdict even if ctx
	// ends: the caller must not believe a committed write failed.
	return <-o.done
}

// commitLoop takes whatever writes are waiting and commits them in one
// transaction: while one fsync runs, the next group gathers, so concurrent
// sessions share fsyncs without a fixed delay that would slow a lone session.
func (s *Store) commitLoop() {
	defer close(s.stopped)
	// A damaged page met while writing must come back as an error
	// (runGroup recovers), not crash the daemon: see protect.
	debug.SetPanicOnFault(true)
	group := make([]*op, 0, s.maxGroup)
	for {
		group = group[:0]
		select {
		case o := <-s.ops:
			group = append(group, o)
		case <-s.stop:
			// Drain what was queued before Close.
			for {
				select {
				case o := <-s.ops:
					s.commitGroup([]*op{o})
				default:
					return
				}
			}
		}
	gather:
		for len(group) < s.maxGroup {
			select {
			case o := <-s.ops:
				group = append(group, o)
			default:
				break gather
			}
		}
		s.commitGroup(group)
	}
}

func (s *Store) commitGroup(group []*op) {
	pos, err := s.runGroup(group)
	if err == nil {
		s.commits.Add(1)
		s.commitOps.Add(uint64(len(group)))
		s.writeMark(pos)
		// Publish here, in commit order, so followers see events in
		// journal order. Publishing never blocks (a follower that fell
		// behind is dropped and catches up from the journal), so no
		// follower, the log writer included, delays a writer's answer.
		for _, o := range group {
			s.publish(o.events)
			o.done <- nil
		}
		return
	}
	if len(group) == 1 {
		group[0].done <- err
		return
	}
	// One write failed and took the group down: retry each alone so only
	// the failing one sees its error.
	for _, o := range group {
		s.commitGroup([]*op{o})
	}
}

// runGroup commits the group's writes in one transaction and returns the
// position the store reached. A panic from bbolt (a damaged page) rolls the
// transaction back and fails the store: see fail.
func (s *Store) runGroup(group []*op) (pos Position, err error) {
	if err := s.failure(); err != nil {
		return Position{}, err
	}
	defer func() {
		if r := recover(); r != nil {
			pos, err = Position{}, s.fail(fmt.Errorf("%w: a write met a damaged page: %v", ErrDamaged, r))
		}
	}()
	err = s.db.Update(func(tx *bolt.Tx) error {
		appendOnly(tx)
		for _, o := range group {
			w := &writer{s: s, tx: tx}
			if err := o.fn(tx, w); err != nil {
				return err
			}
			o.events = w.events
		}
		pos = position(tx)
		return nil
	})
	return pos, err
}

// appendBuckets are keyed in the order records arrive (letter IDs, event
// numbers, pending times), so new keys go at the end.
var appendBuckets = [][]byte{bucketLetters, bucketBodies, bucketPending, bucketEvents}

// appendOnly fills the pages of the append-ordered buckets before splitting
// them, as bbolt advises for sequential keys: with its default half-full
// split, every page left behind is half empty, so the file holds twice the
// pages for them and a group's commit rewrites more. FillPercent lasts for
// the transaction, on the bucket it caches.
func appendOnly(tx *bolt.Tx) {
	for _, name := range appendBuckets {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = 1
		}
	}
}

// view runs fn in a read-only transaction, beside the writer. A damaged
// page met while reading fails the store, as in runGroup.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	s.wipe.readers.RLock()
	defer s.wipe.readers.RUnlock()
	err := protect(func() error { return s.db.View(fn) })
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		// A read racing Close: the same answer a write gets, so consumers
		// of the feed stop quietly instead of reporting a failure.
		return ErrClosed
	}
	if errors.Is(err, ErrDamaged) {
		return s.fail(fmt.Errorf("a read met a damaged page: %w", err))
	}
	return err
}

// fail records that the file turned out damaged while running, once: every
// later write fails with that error, and so does every feed, so each part
// of the daemon that follows the store stops, and the daemon with them,
// with the error rather than a crash. It returns the error recorded first.
func (s *Store) fail(err error) error {
	s.failMu.Lock()
	first := s.failErr == nil
	if first {
		s.failErr = fmt.Errorf("store: %s: %w. %s", filepath.Join(s.dir, FileName), err, restoreAdvice)
	}
	err = s.failErr
	s.failMu.Unlock()
	if first {
		s.closeSubs()
	}
	return err
}

// failure is the error fail recorded, or nil.
func (s *Store) failure() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return s.failErr
}

// endErr is why a feed ended: the damage fail recorded, else ErrClosed.
func (s *Store) endErr() error {
	if err := s.failure(); err != nil {
		return err
	}
	return ErrClosed
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func getU64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func addU64(b *bolt.Bucket, key []byte, delta int64) error {
	v := int64(getU64(b, key)) + delta
	if v < 0 {
		v = 0
	}
	return b.Put(key, u64(uint64(v)))
}
