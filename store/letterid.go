package store

import (
	"fmt"
	"strconv"
	"strings"
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

// next is the ID after both the last one handed out and stored, the
// file's sequence.
func (ids *letterIDs) next(stored uint64) string {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	ids.last = max(ids.last, stored) + 1
	return formatLetterID(ids.last)
}

// ReserveLetterID returns the next letter ID, for NewLetter.ID.
func (s *Store) ReserveLetterID() (string, error) {
	var stored uint64
	err := s.view(func(tx *bolt.Tx) error {
		stored = getU64(tx.Bucket(bucketMeta), keyLetterSeq)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: reserve a letter ID: %w", err)
	}
	return s.ids.next(stored), nil
}

func formatLetterID(n uint64) string { return fmt.Sprintf("L%08X", n) }

// parseLetterID is the number in an ID formatLetterID made.
func parseLetterID(id string) (uint64, error) {
	digits, ok := strings.CutPrefix(id, "L")
	if !ok || len(digits) < 8 {
		return 0, fmt.Errorf("%q is not a letter ID", id)
	}
	n, err := strconv.ParseUint(digits, 16, 64)
	if err != nil || n == 0 || formatLetterID(n) != id {
		return 0, fmt.Errorf("%q is not a letter ID", id)
	}
	return n, nil
}

// useLetterID records in tx that id is taken: the file's sequence moves up
// to it, so the next start counts on from there. An ID already given to a
// stored letter is refused, never overwritten.
func useLetterID(tx *bolt.Tx, id string) error {
	n, err := parseLetterID(id)
	if err != nil {
		return err
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
