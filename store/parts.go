package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A recipient's server may refuse a batch as too big. Its copy is then not
// failed: the scheduler sets it aside (SplitTooBig), the batch closer, which
// builds messages, reads what it carries (SplitSnapshot) and puts its
// letters in smaller messages, each a batch message of its own, and records
// them as the copy's parts (AddParts), which the scheduler delivers like any
// copy. A part refused as too big is split the same way. Only the refusing
// recipient's copy is split; the others go whole.

// bucketSplits holds the copies waiting to be split: splitKey(ref) → nil.
// It is made by the first split, so stores without one need no migration.
var bucketSplits = []byte("splits")

func splitKey(ref DeliveryRef) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k[0:], ref.Batch)
	binary.BigEndian.PutUint16(k[8:], uint16(ref.Index))
	binary.BigEndian.PutUint16(k[10:], uint16(ref.Part))
	return k
}

// settle sums a split copy's state up from its parts (see Delivery); a
// copy that was never split is left as it is.
func (d *Delivery) settle(now time.Time) {
	tb := d.TooBig
	if tb == nil {
		return
	}
	d.NextAttempt = time.Time{}
	if len(d.Parts) == 0 {
		// The parts are being made, or there was nothing left to send
		// (AddParts failed the copy).
		if d.State != DeliveryFailed {
			d.State, d.Done, d.ErrorKind = DeliveryDeferred, time.Time{}, FailureTooBig
			d.LastError = tb.Reason + "; its letters are being put in smaller messages"
		}
		return
	}
	live := 0
	var open, failed []*Part
	for i := range d.Parts {
		p := &d.Parts[i]
		if p.State == DeliverySplit {
			continue
		}
		live++
		switch p.State {
		case DeliveryQueued, DeliveryDeferred:
			open = append(open, p)
			if p.waiting() && (d.NextAttempt.IsZero() || p.NextAttempt.Before(d.NextAttempt)) {
				d.NextAttempt = p.NextAttempt
			}
		case DeliveryFailed:
			failed = append(failed, p)
		}
	}
	d.LastError = fmt.Sprintf("%s; its letters go in %d smaller messages", tb.Reason, live)
	switch {
	case len(open) > 0:
		d.State, d.Done, d.ErrorKind = DeliveryQueued, time.Time{}, FailureTooBig
		for _, p := range open {
			if p.State == DeliveryDeferred {
				d.State = DeliveryDeferred
				d.LastError += "; " + p.label() + ": " + p.LastError
				break
			}
		}
		return
	case len(failed) > 0:
		d.State, d.ErrorKind = DeliveryFailed, failed[0].ErrorKind
		for _, p := range failed {
			d.LastError += "; " + p.label() + " failed: " + p.LastError
		}
	default:
		d.State, d.ErrorKind, d.LastError = DeliveryDelivered, FailureOther, ""
	}
	if d.Done.IsZero() {
		d.Done = now
	}
}

// label is "part N of M", as the part's subject says.
func (p *Part) label() string { return fmt.Sprintf("part %d of %d", p.N, p.Of) }

// SplitTooBig sets aside a message the recipient's server refused as too
// big, to be split into smaller ones: it is never sent whole again, and the
// batch closer picks it up (SplitsDue). A message of one letter cannot be
// split: fail it.
func (s *Store) SplitTooBig(ctx context.Context, ref DeliveryRef, tb TooBig) error {
	_, err := s.updateDelivery(ctx, ref, func(b *Batch, d *Delivery, p *Part, c *CopyState, w *writer) error {
		if err := open(d.Address, c); err != nil {
			return err
		}
		_, _, _, letters, err := b.target(ref)
		if err != nil {
			return err
		}
		if len(letters) < 2 {
			return fmt.Errorf("a message of %d letter cannot be split: %w", len(letters), ErrState)
		}
		splits, err := w.tx.CreateBucketIfNotExists(bucketSplits)
		if err != nil {
			return err
		}
		if err := splits.Put(splitKey(ref), nil); err != nil {
			return err
		}
		tb := tb
		c.TooBig = &tb
		c.State, c.LastError, c.ErrorKind, c.NextAttempt = DeliveryDeferred, tb.Reason, FailureTooBig, time.Time{}
		return w.event(copyEvent(EventDeferred, b, d, p, tb.Reason+"; its letters will go in smaller messages"))
	})
	if err != nil {
		return fmt.Errorf("store: set aside a copy too big for its recipient: %w", err)
	}
	return nil
}

// SplitsDue returns the messages waiting to be split, oldest batch first.
func (s *Store) SplitsDue() ([]DeliveryRef, error) {
	var out []DeliveryRef
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSplits)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) == 12 {
				out = append(out, DeliveryRef{Batch: binary.BigEndian.Uint64(k[0:8]),
					Index: int(binary.BigEndian.Uint16(k[8:10])), Part: int(binary.BigEndian.Uint16(k[10:12]))})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: copies to split: %w", err)
	}
	return out, nil
}

// SplitCopy is what a message waiting to be split carries, for the builder
// of its parts.
type SplitCopy struct {
	Ref          DeliveryRef
	Address      string
	RunningTotal uint64 // the batch's, as its summary said
	// BatchLetters is how many letters the whole batch has; First is the
	// position (0-based) of Letters[0] among them.
	BatchLetters int
	First        int
	TooBig       TooBig
	// NextPart is the number the first new part gets: parts are numbered
	// on from those the copy has.
	NextPart int
	// Letters are the letters to split, in batch order, with copies of
	// their bodies; Missing are those whose bodies are gone (erased), which
	// no part can carry.
	Letters []BatchLetter
	Missing []string
}

// SplitSnapshot reads a message waiting to be split; ErrState when it no
// longer waits.
func (s *Store) SplitSnapshot(ref DeliveryRef) (*SplitCopy, error) {
	var sc *SplitCopy
	err := s.view(func(tx *bolt.Tx) error {
		b, d, _, c, letters, err := waitingSplit(tx, ref)
		if err != nil {
			return err
		}
		sc = &SplitCopy{Ref: ref, Address: d.Address, RunningTotal: b.RunningTotal,
			BatchLetters: len(b.LetterIDs), First: max(slices.Index(b.LetterIDs, letters[0]), 0),
			TooBig: *c.TooBig, NextPart: len(d.Parts) + 1}
		if sc.RunningTotal == 0 {
			sc.RunningTotal = runningTotal(tx, b.ID)
		}
		for _, id := range letters {
			l, err := getLetter(tx, id)
			if err != nil {
				return err
			}
			body := tx.Bucket(bucketBodies).Get([]byte(id))
			if body == nil {
				sc.Missing = append(sc.Missing, id)
				continue
			}
			sc.Letters = append(sc.Letters, BatchLetter{Letter: *l, Body: bytes.Clone(body)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read copy %d/%d/%d to split: %w", ref.Batch, ref.Index, ref.Part, err)
	}
	return sc, nil
}

// waitingSplit reads the message ref names (see Batch.target), which must
// wait to be split: ErrState otherwise.
func waitingSplit(tx *bolt.Tx, ref DeliveryRef) (*Batch, *Delivery, *Part, *CopyState, []string, error) {
	b, err := getBatch(tx, ref.Batch)
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	d, p, c, letters, err := b.target(ref)
	if err != nil {
		return nil, nil, nil, nil, nil, err
	}
	splits := tx.Bucket(bucketSplits)
	if c.TooBig == nil || c.State != DeliveryDeferred || splits == nil || splits.Get(splitKey(ref)) == nil {
		return nil, nil, nil, nil, nil, fmt.Errorf("copy to %s does not wait to be split: %w", d.Address, ErrState)
	}
	return b, d, p, c, letters, nil
}

// runningTotal is the letters batched up to batch id, for batches closed
// before their record kept it.
func runningTotal(tx *bolt.Tx, id uint64) uint64 {
	var n uint64
	c := tx.Bucket(bucketBatches).Cursor()
	for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= id; k, v = c.Next() {
		var b Batch
		if json.Unmarshal(v, &b) == nil {
			n += uint64(len(b.LetterIDs))
		}
	}
	return n
}

// NewPart is one part built from a SplitCopy, ready to commit.
type NewPart struct {
	N, Of     int
	MessageID string
	LetterIDs []string
	Message   []byte
}

// AddParts records the parts a message waiting to be split went in, and
// queues them for delivery now. Their messages are written and synced to
// files of their own first, as CloseBatch does. It fails with ErrConflict
// unless the message still waits, the parts are numbered on from the
// copy's, and they carry its letters in order, each once. With no parts
// (every letter's body gone) the copy fails.
func (s *Store) AddParts(ctx context.Context, ref DeliveryRef, parts []NewPart) error {
	files := make([]string, 0, len(parts))
	removeFiles := func() {
		for _, f := range files {
			_ = s.removeMessage(f)
		}
	}
	for _, np := range parts {
		f, err := s.writeMessage(fmt.Sprintf("%d-r%d-p%d", ref.Batch, ref.Index, np.N), np.Message)
		if err != nil {
			removeFiles()
			return err
		}
		files = append(files, f)
	}
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		b, d, p, c, letters, err := waitingSplit(tx, ref)
		if errors.Is(err, ErrState) {
			return fmt.Errorf("%w (%w)", ErrConflict, err)
		}
		if err != nil {
			return err
		}
		if err := checkParts(parts, len(d.Parts), letters); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSplits).Delete(splitKey(ref)); err != nil {
			return err
		}
		now := s.now().UTC()
		var ev Event
		if len(parts) == 0 {
			c.State, c.Done = DeliveryFailed, now
			c.LastError = c.TooBig.Reason + "; no letter is left to send in smaller messages (their bodies were removed)"
			ev = copyEvent(EventFailed, b, d, p, c.LastError)
		} else {
			if p != nil {
				p.State, p.Done = DeliverySplit, now
			}
			var size int64
			for i, np := range parts {
				part := Part{N: np.N, Of: np.Of, MessageID: np.MessageID, LetterIDs: slices.Clone(np.LetterIDs),
					File: files[i], Size: int64(len(np.Message)),
					CopyState: CopyState{State: DeliveryQueued, NextAttempt: now, Since: now}}
				size = max(size, part.Size)
				d.Parts = append(d.Parts, part)
				pref := DeliveryRef{Batch: ref.Batch, Index: ref.Index, Part: np.N}
				if err := tx.Bucket(bucketQueue).Put(queueKey(now, pref), nil); err != nil {
					return err
				}
			}
			// p may point into the old array: the event names the parts.
			what := "the batch's"
			if ref.Part > 0 {
				what = fmt.Sprintf("part %d's", ref.Part)
			}
			ev = Event{Event: EventSplit, Batch: b.ID, Recipient: d.Address, Reason: fmt.Sprintf(
				"%s %d letters in parts %d to %d of %d, each at most %d bytes: %s",
				what, len(letters)-countMissing(letters, parts), parts[0].N, parts[len(parts)-1].N, parts[0].Of, size, c.TooBig.Reason)}
		}
		d.settle(now)
		if err := s.schedulePurge(tx, b); err != nil {
			return err
		}
		if err := putBatch(tx, b); err != nil {
			return err
		}
		return w.event(ev)
	})
	if err != nil {
		removeFiles()
		return fmt.Errorf("store: add parts to copy %d/%d/%d: %w", ref.Batch, ref.Index, ref.Part, err)
	}
	return nil
}

// checkParts checks that parts are numbered on from have and carry letters
// in order, each at most once, and nothing else.
func checkParts(parts []NewPart, have int, letters []string) error {
	next := 0
	for i, np := range parts {
		if np.N != have+1+i || np.Of != have+len(parts) {
			return fmt.Errorf("part %d of %d, but the copy has %d parts and %d are added: %w", np.N, np.Of, have, len(parts), ErrConflict)
		}
		if len(np.LetterIDs) == 0 {
			return fmt.Errorf("part %d carries no letter: %w", np.N, ErrConflict)
		}
		for _, id := range np.LetterIDs {
			j := slices.Index(letters[next:], id)
			if j < 0 {
				return fmt.Errorf("part %d carries letter %s out of order or not of this copy: %w", np.N, id, ErrConflict)
			}
			next += j + 1
		}
	}
	return nil
}

// countMissing is how many of letters no part carries.
func countMissing(letters []string, parts []NewPart) int {
	n := len(letters)
	for _, np := range parts {
		n -= len(np.LetterIDs)
	}
	return n
}

// DeliveryMessage returns the message ref names, as delivered: the batch's
// for a whole copy, the part's own for a part.
func (s *Store) DeliveryMessage(ref DeliveryRef) ([]byte, error) {
	if ref.Part == 0 {
		return s.BatchMessage(ref.Batch)
	}
	var file string
	err := s.view(func(tx *bolt.Tx) error {
		b, err := getBatch(tx, ref.Batch)
		if err != nil {
			return err
		}
		_, p, _, _, err := b.target(ref)
		if err != nil {
			return err
		}
		if b.Purged {
			return fmt.Errorf("message of batch %d part %d (purged after retention): %w", ref.Batch, ref.Part, ErrNotFound)
		}
		file = p.File
		return nil
	})
	if err == nil {
		var msg []byte
		if msg, err = s.readMessage(file); err == nil {
			return msg, nil
		}
		err = fmt.Errorf("message of batch %d part %d: %w", ref.Batch, ref.Part, err)
	}
	return nil, fmt.Errorf("store: %w", err)
}
