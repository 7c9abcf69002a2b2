package store

import (
	"bytes"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Reads for the organisers' pages: a batch's letters, and every letter in
// pages of a few hundred. Each call is one short read transaction, so a
// page that walks the whole store never holds one open for long (a long
// read transaction would block the file's growth, and so the letters'
// 250s, while it lasts).

// LettersByID returns the records of the letters ids, in that order, with
// copies of their bodies when bodies is set (nil for a body purged after
// retention or erased). An ID without a record is ErrNotFound.
func (s *Store) LettersByID(ids []string, bodies bool) ([]BatchLetter, error) {
	out := make([]BatchLetter, 0, len(ids))
	err := s.view(func(tx *bolt.Tx) error {
		for _, id := range ids {
			l, err := getLetter(tx, id)
			if err != nil {
				return err
			}
			bl := BatchLetter{Letter: *l}
			if bodies {
				bl.Body = bytes.Clone(tx.Bucket(bucketBodies).Get([]byte(id)))
			}
			out = append(out, bl)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read letters: %w", err)
	}
	return out, nil
}

// LetterScan says which letters ScanLetters returns.
type LetterScan struct {
	// After: only letters whose ID comes after this one ("" for from the
	// first); with Backward, before it ("" for from the last).
	After    string
	Backward bool
	// Limit is the most letters returned; at most 1000 (and 1000 when 0).
	Limit int
	// Bodies asks for copies of the bodies too.
	Bodies bool
}

// maxScan bounds one ScanLetters call.
const maxScan = 1000

// ScanLetters returns letters of every state in ID order (the order they
// arrived), or newest first with Backward: the next page after sc.After.
// Fewer than sc.Limit means there are no more.
func (s *Store) ScanLetters(sc LetterScan) ([]BatchLetter, error) {
	limit := sc.Limit
	if limit <= 0 || limit > maxScan {
		limit = maxScan
	}
	var out []BatchLetter
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLetters).Cursor()
		bodies := tx.Bucket(bucketBodies)
		var k, v []byte
		switch {
		case sc.After == "" && !sc.Backward:
			k, v = c.First()
		case sc.After == "":
			k, v = c.Last()
		case !sc.Backward:
			if k, v = c.Seek([]byte(sc.After)); k != nil && string(k) == sc.After {
				k, v = c.Next()
			}
		default:
			// Seek lands on the first key at or after After: the one
			// before it is the first to return.
			if k, _ = c.Seek([]byte(sc.After)); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && len(out) < limit; k, v = step(c, sc.Backward) {
			var bl BatchLetter
			if err := decodeLetter(k, v, &bl.Letter); err != nil {
				return err
			}
			if sc.Bodies {
				bl.Body = bytes.Clone(bodies.Get(k))
			}
			out = append(out, bl)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: scan letters: %w", err)
	}
	return out, nil
}

func step(c *bolt.Cursor, backward bool) ([]byte, []byte) {
	if backward {
		return c.Prev()
	}
	return c.Next()
}

func decodeLetter(k, v []byte, l *Letter) error {
	if err := json.Unmarshal(v, l); err != nil {
		return fmt.Errorf("decode letter %s: %w", k, err)
	}
	return nil
}
