package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Prefill addresses are synthetic and can never be a real sender: .test is
// reserved (RFC 2606).
const (
	prefillDomain = "prefill.test"
	prefillIP     = "192.0.2.1" // TEST-NET-1 (RFC 5737)
	// prefillSize is the size recorded for each synthetic letter: a
	// typical letter, though no body is kept.
	prefillSize = 3000
	// prefillRun is how many senders are sorted at once (see Prefill): 40
	// bytes each, so at most 40 MiB.
	prefillRun = 1 << 20
	// prefillDedupFill is the page fill of the dedup index that random
	// inserts, one letter at a time, settle at (about ln 2); sorted
	// inserts would otherwise leave bbolt's default of one half.
	prefillDedupFill = 0.7
)

// keyPrefillReserved counts the letter numbers prefills have reserved. While
// it equals the letter sequence, every letter in the store is synthetic.
var keyPrefillReserved = []byte("prefill_reserved")

// errTookMail is why Prefill refuses a store.
var errTookMail = errors.New("the store has taken real letters; prefill only a new store made for a load test")

// Prefill adds n synthetic counted senders to the store, so that acceptance
// can be measured on a store as big as a campaign expects to grow, before
// the campaign starts. It is a supported operator tool, reached through
// `petitiond-load -spawn BINARY -prefill N` (README, Performance), which
// prefills the scratch store of the daemon it starts. Since every sender it
// adds is counted, it refuses a store that has taken a real letter: a
// campaign's tally must never include them.
//
// Each sender "prefill-<k>@prefill.test" (k unique in the store: taken from
// the letter numbers the prefill reserves) gets what a counted letter
// leaves behind once its batch was delivered and its body purged after
// retention: the dedup key (HMAC of the address, as Accept makes it), a
// letter record in state "batched" with Batch 0 and Purged set, and the
// counters counted and batched. No batch record is made (one batch of a
// million letters would distort the batch list), and the letters stay out of
// the pending queue, or the first batch after the prefill would take them.
// The journal gets the "accepted" events that a real run would have left in
// it (the last JournalMax ones), so later appends pay for trimming as on a
// real store. Nothing is logged or sent to followers.
//
// The writes go straight to bbolt in transactions of batchSize senders (0
// means 10000), not through the group-commit loop: one fsync per chunk
// rather than per letter is what makes a million senders take seconds. The
// senders of a run (up to 2^20) are sorted by dedup key and numbered in that
// order, so every chunk appends to the dedup index, the letters and the
// journal instead of rewriting pages all over the file: random inserts in
// big chunks would leave thousands of free pages behind, a freelist that
// every later commit pays for and that a store grown letter by letter does
// not have. Letters that arrive while Prefill runs are taken as usual
// (bbolt serialises writers); Prefill stops between chunks when ctx ends,
// and the chunks committed so far stay, complete.
func (s *Store) Prefill(ctx context.Context, n int, batchSize int) error {
	return s.prefill(ctx, n, batchSize, prefillRun)
}

// prefill is Prefill with the run length as a parameter, so tests can cover
// several runs without sorting a million keys.
func (s *Store) prefill(ctx context.Context, n, batchSize, runLen int) error {
	if n < 0 {
		return fmt.Errorf("store: prefill: negative count %d", n)
	}
	if batchSize <= 0 {
		batchSize = 10000
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	// The event sequence the whole prefill ends at, to know which events
	// survive trimming; read once, since only the prefill adds events
	// meanwhile (other writers' events just shift the window a little).
	var lastEvent uint64
	if err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if seq, reserved := getU64(meta, keyLetterSeq), getU64(meta, keyPrefillReserved); seq != reserved {
			return fmt.Errorf("%w (%d letter numbers used, %d of them by prefills)", errTookMail, seq, reserved)
		}
		lastEvent = tx.Bucket(bucketEvents).Sequence() + uint64(n)
		return nil
	}); err != nil {
		return fmt.Errorf("store: prefill: %w", err)
	}
	for done := 0; done < n; {
		k, err := s.prefillRun(ctx, min(runLen, n-done), batchSize, lastEvent)
		done += k
		if err != nil {
			return fmt.Errorf("store: prefill stopped after %d of %d senders: %w", done, n, err)
		}
	}
	return nil
}

// prefillEntry is one synthetic sender: its dedup key and its number in the
// run, which names its address.
type prefillEntry struct {
	key [32]byte
	n   uint32
}

// prefillRun adds n senders, sorted by dedup key, and returns how many it
// committed.
func (s *Store) prefillRun(ctx context.Context, n, batchSize int, lastEvent uint64) (int, error) {
	// Reserve the letter numbers first, so letters accepted meanwhile take
	// others; a cancelled run leaves a gap in the numbers, which is harmless.
	var base uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		base = getU64(meta, keyLetterSeq)
		if err := meta.Put(keyLetterSeq, u64(base+uint64(n))); err != nil {
			return err
		}
		return addU64(meta, keyPrefillReserved, int64(n))
	})
	if err != nil {
		return 0, fmt.Errorf("reserve letter numbers: %w", err)
	}
	entries := make([]prefillEntry, n)
	for i := range entries {
		copy(entries[i].key[:], s.DedupKey(prefillAddr(base, uint32(i))))
		entries[i].n = uint32(i)
	}
	slices.SortFunc(entries, func(a, b prefillEntry) int { return bytes.Compare(a.key[:], b.key[:]) })
	for done := 0; done < n; {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		chunk := entries[done:min(done+batchSize, n)]
		err := s.db.Update(func(tx *bolt.Tx) error {
			return s.prefillChunk(tx, base, done, chunk, lastEvent)
		})
		if err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return n, nil
}

// prefillAddr is the address of sender i of the run whose letter numbers
// start after base.
func prefillAddr(base uint64, i uint32) string {
	return "prefill-" + strconv.FormatUint(base+1+uint64(i), 10) + "@" + prefillDomain
}

// prefillChunk adds a chunk of senders of the run whose letter numbers start
// after base, in one transaction. The chunk starts at offset in the run's key
// order, and its letter numbers follow that order.
func (s *Store) prefillChunk(tx *bolt.Tx, base uint64, offset int, chunk []prefillEntry, lastEvent uint64) error {
	meta := tx.Bucket(bucketMeta)
	dedup := tx.Bucket(bucketDedup)
	dedup.FillPercent = prefillDedupFill
	events := tx.Bucket(bucketEvents)
	now := s.now().UTC()
	evSeq := events.Sequence()
	verdict := Verdict{Kind: VerdictDKIM, Domain: prefillDomain, Selector: "prefill", Reason: "pass"}
	keepFrom := uint64(1) // the first event seq the journal bound keeps
	if lastEvent > s.journalMax {
		keepFrom = lastEvent - s.journalMax + 1
	}
	for j, e := range chunk {
		evSeq++
		id := fmt.Sprintf("L%08X", base+1+uint64(offset+j))
		addr := prefillAddr(base, e.n)
		key := e.key[:]
		if dedup.Get(key) != nil {
			// Only if letter numbers were reused by hand: refuse rather
			// than count one sender twice.
			return fmt.Errorf("synthetic sender %s is already counted", addr)
		}
		if err := dedup.Put(key, []byte(id)); err != nil {
			return fmt.Errorf("put dedup key: %w", err)
		}
		l := Letter{
			ID: id, Received: now, From: addr, RemoteIP: prefillIP, State: StateBatched,
			Verdict: verdict, Size: prefillSize, Purged: true, DedupKey: bytes.Clone(key),
		}
		if err := putLetter(tx, &l); err != nil {
			return err
		}
		if evSeq >= keepFrom {
			data, err := json.Marshal(Event{Seq: evSeq, Time: now, Event: EventAccepted, Letter: id,
				Sender: addr, IP: prefillIP, Reason: verdictReason(verdict)})
			if err != nil {
				return fmt.Errorf("encode event: %w", err)
			}
			if err := events.Put(u64(evSeq), data); err != nil {
				return fmt.Errorf("put event %d: %w", evSeq, err)
			}
		}
	}
	if err := addU64(meta, ctrCounted, int64(len(chunk))); err != nil {
		return err
	}
	if err := addU64(meta, ctrBatched, int64(len(chunk))); err != nil {
		return err
	}
	if err := events.SetSequence(evSeq); err != nil {
		return fmt.Errorf("set event sequence: %w", err)
	}
	return s.trimJournal(events, evSeq)
}

// trimJournal drops the events before the journal bound, as appending them
// one at a time would have (only events from before the prefill can be
// there).
func (s *Store) trimJournal(b *bolt.Bucket, last uint64) error {
	if last <= s.journalMax {
		return nil
	}
	limit := u64(last - s.journalMax)
	c := b.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k, limit) <= 0; k, _ = c.First() {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("trim journal: %w", err)
		}
	}
	return nil
}
