package store

import (
	"fmt"
	"strconv"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// letterIDs hands out letter IDs before their letters are stored, so the
// SMTP front end can name a letter in its Received: header, which is part
// of what Accept stores. It counts in memory past both the IDs it handed
// out and the highest ID the file records (read at each reservation, so
// whatever moved the file's sequence, a prefill or a restore, is never
// counted under); Accept records the highest ID it stores. An ID reserved
// but never stored (a letter refused, or a duplicate of a counted sender)
// leaves a gap in the numbers, which is harmless: IDs only need to be
// unique and grow in arrival order.
type letterIDs struct {
	mu   sync.Mutex
	last uint64
}

// next is the number after both the last one handed out and stored, the
// file's sequence.
func (ids *letterIDs) next(stored uint64) uint64 {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	ids.last = max(ids.last, stored) + 1
	return ids.last
}

// The first letter of an ID says which role stored the letter: "L" for a
// letter counted (or held) here, "S" for one a secondary MX keeps until it
// has forwarded it to the primary (SPEC 12). Both count on one sequence,
// so a store that changes role never hands out a number twice.
const (
	letterPrefix  = 'L'
	forwardPrefix = 'S'
)

// ReserveLetterID returns the next letter ID, for NewLetter.ID.
func (s *Store) ReserveLetterID() (string, error) { return s.reserveID(letterPrefix) }

// ReserveForwardID returns the next ID of a letter to forward to the
// primary ("S…"), for QueueForward.
func (s *Store) ReserveForwardID() (string, error) { return s.reserveID(forwardPrefix) }

func (s *Store) reserveID(prefix byte) (string, error) {
	var stored uint64
	err := s.view(func(tx *bolt.Tx) error {
		stored = getU64(tx.Bucket(bucketMeta), keyLetterSeq)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: reserve a letter ID: %w", err)
	}
	return formatID(prefix, s.ids.next(stored)), nil
}

func formatLetterID(n uint64) string { return formatID(letterPrefix, n) }

func formatID(prefix byte, n uint64) string { return fmt.Sprintf("%c%08X", prefix, n) }

// parseLetterID is the number in an ID formatID made, of either role.
func parseLetterID(id string) (uint64, error) {
	if id == "" || (id[0] != letterPrefix && id[0] != forwardPrefix) || len(id) < 9 {
		return 0, fmt.Errorf("%q is not a letter ID", id)
	}
	n, err := strconv.ParseUint(id[1:], 16, 64)
	if err != nil || n == 0 || formatID(id[0], n) != id {
		return 0, fmt.Errorf("%q is not a letter ID", id)
	}
	return n, nil
}

// useLetterID records in tx that id, an ID of the role prefix names, is
// taken: the file's sequence moves up to it, so the next start counts on
// from there. An ID already given to a stored letter is refused, never
// overwritten.
func useLetterID(tx *bolt.Tx, id string, prefix byte) error {
	n, err := parseLetterID(id)
	if err != nil {
		return err
	}
	if id[0] != prefix {
		return fmt.Errorf("%q is not an ID of a letter stored this way (they start with %c)", id, prefix)
	}
	if tx.Bucket(bucketLetters).Get([]byte(id)) != nil {
		return fmt.Errorf("letter ID %s is already taken", id)
	}
	meta := tx.Bucket(bucketMeta)
	if n <= getU64(meta, keyLetterSeq) {
		return nil
	}
	if err := meta.Put(keyLetterSeq, u64(n)); err != nil {
		return fmt.Errorf("record letter ID %s: %w", id, err)
	}
	return nil
}
