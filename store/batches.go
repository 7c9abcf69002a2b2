package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

var ctrBatched = []byte("n_batched") // letters in batches so far

// BatchLetter is a pending letter with a copy of its body, for the builder.
type BatchLetter struct {
	Letter
	Body []byte
}

// PendingBatch is a snapshot of what the next batch would hold: closing a
// batch is read (NextBatch), build and sign outside the store, commit
// (CloseBatch), so that no write, no letter's 250 among them, waits for a
// batch to be built.
type PendingBatch struct {
	// Number is the number the batch gets if it closes next.
	Number uint64
	// RunningTotal is how many letters will have been batched, these
	// included.
	RunningTotal uint64
	// Letters are the oldest pending letters, oldest first.
	Letters []BatchLetter
}

// NextBatch returns up to max of the letters that have waited longest, with
// copies of their bodies, or nil when none waits. It only reads.
func (s *Store) NextBatch(max int) (*PendingBatch, error) {
	return s.NextBatchWithin(max, 0)
}

// NextBatchWithin is NextBatch taking only as many letters as have
// maxBytes of bodies between them (the oldest always), since a batch
// message carries every letter whole: what is over cannot fit a message of
// maxBytes, and is not read. maxBytes 0 means no bound.
func (s *Store) NextBatchWithin(max int, maxBytes int64) (*PendingBatch, error) {
	var pb *PendingBatch
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var letters []BatchLetter
		var size int64
		c := tx.Bucket(bucketPending).Cursor()
		for k, _ := c.First(); k != nil && len(letters) < max; k, _ = c.Next() {
			id := string(k[8:])
			l, err := getLetter(tx, id)
			if err != nil {
				return err
			}
			if size += int64(l.Size); maxBytes > 0 && size > maxBytes && len(letters) > 0 {
				break
			}
			body := tx.Bucket(bucketBodies).Get([]byte(id))
			if body == nil {
				return fmt.Errorf("body of pending letter %s: %w", id, ErrNotFound)
			}
			letters = append(letters, BatchLetter{Letter: *l, Body: bytes.Clone(body)})
		}
		if len(letters) == 0 {
			return nil
		}
		pb = &PendingBatch{
			Number:       getU64(meta, ctrBatches) + 1,
			RunningTotal: getU64(meta, ctrBatched) + uint64(len(letters)),
			Letters:      letters,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read the next batch: %w", err)
	}
	return pb, nil
}

// PendingOver reports whether the bodies of the (up to) max letters that
// have waited longest come to more than maxBytes: then they cannot all go
// in one batch message of maxBytes. When no more than max letters wait, as
// whenever the closer asks, their sum is kept; otherwise it reads letter
// records, not bodies, and stops as soon as it knows.
func (s *Store) PendingOver(max int, maxBytes int64) (bool, error) {
	over := false
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if getU64(meta, ctrPending) <= uint64(max) {
			over = int64(getU64(meta, ctrPendingBytes)) > maxBytes
			return nil
		}
		var size int64
		n := 0
		c := tx.Bucket(bucketPending).Cursor()
		for k, _ := c.First(); k != nil && n < max; k, _ = c.Next() {
			l, err := getLetter(tx, string(k[8:]))
			if err != nil {
				return err
			}
			n++
			if size += int64(l.Size); size > maxBytes {
				over = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: size of the pending letters: %w", err)
	}
	return over, nil
}

// NewBatch is a batch built from a PendingBatch, ready to commit.
type NewBatch struct {
	Number       uint64
	RunningTotal uint64
	LetterIDs    []string
	// Created is when the batch closed, as its message's Date says.
	Created   time.Time
	MessageID string
	// Message is the one message every recipient gets, byte for byte.
	Message    []byte
	Recipients []string
	Rule       CloseRule
}

// CloseBatch commits a built batch: its message is written and synced to a
// file of its own first (outside the shared commit, which letters wait
// for), then one transaction records the batch, a queued delivery per
// recipient and the letters' new state. It fails with ErrConflict unless
// every letter is still pending and the batch still gets nb.Number with
// nb.RunningTotal; then build it again from a fresh NextBatch.
func (s *Store) CloseBatch(ctx context.Context, nb NewBatch) (*Batch, error) {
	if len(nb.LetterIDs) == 0 || len(nb.Recipients) == 0 {
		return nil, fmt.Errorf("store: close batch %d: it needs letters and recipients", nb.Number)
	}
	created := nb.Created.UTC()
	if created.IsZero() {
		created = s.now().UTC()
	}
	file, err := s.writeMessage(strconv.FormatUint(nb.Number, 10), nb.Message)
	if err != nil {
		return nil, err
	}
	var out *Batch
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		out = nil
		meta := tx.Bucket(bucketMeta)
		if next := getU64(meta, ctrBatches) + 1; next != nb.Number {
			return fmt.Errorf("built as batch %d, but the next is %d: %w", nb.Number, next, ErrConflict)
		}
		if total := getU64(meta, ctrBatched) + uint64(len(nb.LetterIDs)); total != nb.RunningTotal {
			return fmt.Errorf("built with running total %d, but it is %d: %w", nb.RunningTotal, total, ErrConflict)
		}
		pending := tx.Bucket(bucketPending)
		var bytes int64
		for _, id := range nb.LetterIDs {
			l, err := getLetter(tx, id)
			if err != nil {
				return err
			}
			if l.State != StatePending {
				return fmt.Errorf("letter %s is %s, no longer pending: %w", id, l.State, ErrConflict)
			}
			if err := pending.Delete(pendingKey(l.PendingSince, id)); err != nil {
				return err
			}
			bytes += int64(l.Size)
			l.State, l.Batch, l.PendingSince = StateBatched, nb.Number, time.Time{}
			if err := putLetter(tx, l); err != nil {
				return err
			}
		}
		b := &Batch{ID: nb.Number, Created: created, MessageID: nb.MessageID, Rule: nb.Rule, File: file,
			LetterIDs: append([]string(nil), nb.LetterIDs...), RunningTotal: nb.RunningTotal}
		for i, r := range nb.Recipients {
			b.Recipients = append(b.Recipients, Delivery{Address: r,
				CopyState: CopyState{State: DeliveryQueued, NextAttempt: created, Since: created}})
			if err := tx.Bucket(bucketQueue).Put(queueKey(created, DeliveryRef{Batch: nb.Number, Index: i}), nil); err != nil {
				return err
			}
		}
		if err := putBatch(tx, b); err != nil {
			return err
		}
		n := int64(len(nb.LetterIDs))
		for _, kv := range []struct {
			key   []byte
			delta int64
		}{{ctrBatches, 1}, {ctrBatched, n}, {ctrPending, -n}, {ctrPendingBytes, -bytes}} {
			if err := addU64(meta, kv.key, kv.delta); err != nil {
				return err
			}
		}
		if nb.Rule == CloseWait {
			if err := meta.Put(keyLastWaitClose, u64(uint64(created.UnixNano()))); err != nil {
				return err
			}
		}
		out = b
		return w.event(Event{Event: EventBatched, Batch: nb.Number,
			Reason: fmt.Sprintf("%d letters, %s", n, nb.MessageID)})
	})
	if err != nil {
		// No batch names the file: remove it (Open sweeps it otherwise).
		_ = s.removeMessage(file)
		return nil, fmt.Errorf("store: close batch %d: %w", nb.Number, err)
	}
	return out, nil
}

// queueKey orders the delivery queue by next attempt. A part's key is two
// bytes longer than a whole copy's, which keeps the keys stores already
// hold valid.
func queueKey(at time.Time, ref DeliveryRef) []byte {
	n := 18
	if ref.Part > 0 {
		n = 20
	}
	k := make([]byte, n)
	binary.BigEndian.PutUint64(k[0:], uint64(at.UnixNano()))
	binary.BigEndian.PutUint64(k[8:], ref.Batch)
	binary.BigEndian.PutUint16(k[16:], uint16(ref.Index))
	if ref.Part > 0 {
		binary.BigEndian.PutUint16(k[18:], uint16(ref.Part))
	}
	return k
}

// queueRef reads the copy back out of a queueKey.
func queueRef(k []byte) DeliveryRef {
	ref := DeliveryRef{Batch: binary.BigEndian.Uint64(k[8:16]), Index: int(binary.BigEndian.Uint16(k[16:18]))}
	if len(k) >= 20 {
		ref.Part = int(binary.BigEndian.Uint16(k[18:20]))
	}
	return ref
}

func putBatch(tx *bolt.Tx, b *Batch) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode batch %d: %w", b.ID, err)
	}
	if err := tx.Bucket(bucketBatches).Put(u64(b.ID), data); err != nil {
		return fmt.Errorf("put batch %d: %w", b.ID, err)
	}
	return nil
}

func getBatch(tx *bolt.Tx, id uint64) (*Batch, error) {
	v := tx.Bucket(bucketBatches).Get(u64(id))
	if v == nil {
		return nil, fmt.Errorf("batch %d: %w", id, ErrNotFound)
	}
	var b Batch
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, fmt.Errorf("decode batch %d: %w", id, err)
	}
	return &b, nil
}

// Batch returns batch id's record (ErrNotFound if there is none).
func (s *Store) Batch(id uint64) (*Batch, error) {
	var b *Batch
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		b, err = getBatch(tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return b, nil
}

// Batches lists all batches, oldest first.
func (s *Store) Batches() ([]Batch, error) {
	var out []Batch
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBatches).ForEach(func(_, v []byte) error {
			var b Batch
			if err := json.Unmarshal(v, &b); err != nil {
				return err
			}
			out = append(out, b)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list batches: %w", err)
	}
	return out, nil
}

// BatchMessage returns the batch's message, as delivered.
func (s *Store) BatchMessage(id uint64) ([]byte, error) {
	gone := fmt.Errorf("message of batch %d (purged after retention, or no such batch): %w", id, ErrNotFound)
	var msg []byte
	var file string
	err := s.view(func(tx *bolt.Tx) error {
		b, err := getBatch(tx, id)
		if err == nil && b.Erased {
			return fmt.Errorf("message of batch %d was erased: a supporter in it asked to be erased: %w", id, ErrNotFound)
		}
		if err != nil || b.Purged {
			return gone
		}
		if file = b.File; file != "" {
			return nil
		}
		v := tx.Bucket(bucketBatchMsg).Get(u64(id))
		if v == nil {
			return gone
		}
		msg = bytes.Clone(v)
		return nil
	})
	if err == nil && file != "" {
		if msg, err = s.readMessage(file); errors.Is(err, ErrNotFound) {
			err = gone
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return msg, nil
}

// DeliveryRef names one message to one recipient: the recipient's copy of
// a batch (Part 0), or one part of it (Part N: Parts[N-1]).
type DeliveryRef struct {
	Batch uint64
	Index int
	Part  int
}

// Due returns up to limit deliveries whose next attempt is at or before now,
// earliest first, and the time of the next one after those (zero if none).
func (s *Store) Due(now time.Time, limit int) (due []DeliveryRef, next time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketQueue).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			at := time.Unix(0, int64(binary.BigEndian.Uint64(k[0:8])))
			if at.After(now) || len(due) >= limit {
				next = at
				return nil
			}
			due = append(due, queueRef(k))
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: due deliveries: %w", err)
	}
	return due, next, nil
}

// Copy is one message to one recipient, as the delivery scheduler needs it.
type Copy struct {
	Address string
	CopyState
	// Part is the part, nil for the whole batch.
	Part *Part
	// LetterIDs are the letters the message carries.
	LetterIDs []string
}

// Copy returns the message ref names.
func (b *Batch) Copy(ref DeliveryRef) (Copy, error) {
	d, p, c, letters, err := b.target(ref)
	if err != nil {
		return Copy{}, err
	}
	out := Copy{Address: d.Address, CopyState: *c, LetterIDs: letters}
	if p != nil {
		pc := *p
		out.Part = &pc
	}
	return out, nil
}

// target finds the message ref names: the recipient's delivery, the part
// (nil for the whole copy), the message's state and the letters it
// carries.
func (b *Batch) target(ref DeliveryRef) (*Delivery, *Part, *CopyState, []string, error) {
	if ref.Index < 0 || ref.Index >= len(b.Recipients) {
		return nil, nil, nil, nil, fmt.Errorf("batch %d has no recipient %d: %w", b.ID, ref.Index, ErrNotFound)
	}
	d := &b.Recipients[ref.Index]
	if ref.Part == 0 {
		return d, nil, &d.CopyState, b.LetterIDs, nil
	}
	if ref.Part < 0 || ref.Part > len(d.Parts) {
		return nil, nil, nil, nil, fmt.Errorf("batch %d to %s has no part %d: %w", b.ID, d.Address, ref.Part, ErrNotFound)
	}
	p := &d.Parts[ref.Part-1]
	return d, p, &p.CopyState, p.LetterIDs, nil
}

// Files names every message file of the batch: its message and its parts'.
func (b *Batch) Files() []string {
	var out []string
	if b.File != "" {
		out = append(out, b.File)
	}
	for _, d := range b.Recipients {
		for _, p := range d.Parts {
			if p.File != "" {
				out = append(out, p.File)
			}
		}
	}
	return out
}

// open reports whether a message still waits for delivery; only those may
// change state, so a late outcome cannot undo a delivery, and a message set
// aside to be split is never sent whole.
func open(addr string, c *CopyState) error {
	if !c.waiting() {
		what := string(c.State)
		if c.TooBig != nil {
			what = "set aside to be split"
		}
		return fmt.Errorf("copy to %s is already %s: %w", addr, what, ErrState)
	}
	return nil
}

// copyEvent is an event about one message to one recipient; a part's
// reason says which part.
func copyEvent(kind EventKind, b *Batch, d *Delivery, p *Part, reason string) Event {
	if p != nil {
		reason = fmt.Sprintf("part %d of %d: %s", p.N, p.Of, reason)
	}
	return Event{Event: kind, Batch: b.ID, Recipient: d.Address, Reason: reason}
}

// updateDelivery loads the message ref names, lets fn change it, moves its
// queue entry to match, sums a split copy's state up again, and saves the
// batch, all in one transaction.
func (s *Store) updateDelivery(ctx context.Context, ref DeliveryRef, fn func(b *Batch, d *Delivery, p *Part, c *CopyState, w *writer) error) (*Batch, error) {
	var out *Batch
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		b, err := getBatch(tx, ref.Batch)
		if err != nil {
			return err
		}
		d, p, c, _, err := b.target(ref)
		if err != nil {
			return err
		}
		q := tx.Bucket(bucketQueue)
		if c.waiting() {
			if err := q.Delete(queueKey(c.NextAttempt, ref)); err != nil {
				return err
			}
		}
		if err := fn(b, d, p, c, w); err != nil {
			return err
		}
		if c.waiting() {
			if err := q.Put(queueKey(c.NextAttempt, ref), nil); err != nil {
				return err
			}
		}
		d.settle(s.now().UTC())
		if err := s.schedulePurge(tx, b); err != nil {
			return err
		}
		out = b
		return putBatch(tx, b)
	})
	return out, err
}

// schedulePurge sets when a batch's bodies go, once every copy is
// delivered.
func (s *Store) schedulePurge(tx *bolt.Tx, b *Batch) error {
	if !b.Complete() || b.Purged || !b.PurgeAt.IsZero() {
		return nil
	}
	b.PurgeAt = s.now().UTC().Add(s.retention)
	return tx.Bucket(bucketPurge).Put(purgeKey(b.PurgeAt, b.ID), nil)
}

// StartAttempt records an attempt before dialing: attempts+1 and the next
// attempt moved to retryAt(attempts), so a crash mid-delivery retries after
// a backoff instead of storming. It returns the batch as it now is.
func (s *Store) StartAttempt(ctx context.Context, ref DeliveryRef, retryAt func(attempts int) time.Time) (*Batch, error) {
	b, err := s.updateDelivery(ctx, ref, func(b *Batch, d *Delivery, p *Part, c *CopyState, w *writer) error {
		if err := open(d.Address, c); err != nil {
			return err
		}
		c.Attempts++
		c.NextAttempt = retryAt(c.Attempts).UTC()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: start attempt: %w", err)
	}
	return b, nil
}

// MarkDelivered records that the recipient's host accepted the message;
// detail (its reply, or the file written) goes in the event.
func (s *Store) MarkDelivered(ctx context.Context, ref DeliveryRef, detail string) error {
	_, err := s.updateDelivery(ctx, ref, func(b *Batch, d *Delivery, p *Part, c *CopyState, w *writer) error {
		if err := open(d.Address, c); err != nil {
			return err
		}
		c.State, c.LastError, c.ErrorKind, c.Done, c.NextAttempt = DeliveryDelivered, "", FailureOther, s.now().UTC(), time.Time{}
		return w.event(copyEvent(EventDelivered, b, d, p, detail))
	})
	if err != nil {
		return fmt.Errorf("store: mark delivered: %w", err)
	}
	return nil
}

// Defer records a temporary failure and when to try next.
func (s *Store) Defer(ctx context.Context, ref DeliveryRef, next time.Time, reason string) error {
	return s.DeferAs(ctx, ref, next, FailureOther, reason)
}

// DeferAs is Defer for a failure of a known kind.
func (s *Store) DeferAs(ctx context.Context, ref DeliveryRef, next time.Time, kind FailureKind, reason string) error {
	_, err := s.updateDelivery(ctx, ref, func(b *Batch, d *Delivery, p *Part, c *CopyState, w *writer) error {
		if err := open(d.Address, c); err != nil {
			return err
		}
		c.State, c.LastError, c.ErrorKind, c.NextAttempt = DeliveryDeferred, reason, kind, next.UTC()
		return w.event(copyEvent(EventDeferred, b, d, p,
			fmt.Sprintf("attempt %d: %s; next try %s", c.Attempts, reason, c.NextAttempt.Format(time.RFC3339))))
	})
	if err != nil {
		return fmt.Errorf("store: defer delivery: %w", err)
	}
	return nil
}

// Fail records a permanent failure; only an admin's Retry brings it back.
func (s *Store) Fail(ctx context.Context, ref DeliveryRef, reason string) error {
	return s.FailAs(ctx, ref, FailureOther, reason)
}

// FailAs is Fail for a failure of a known kind.
func (s *Store) FailAs(ctx context.Context, ref DeliveryRef, kind FailureKind, reason string) error {
	_, err := s.updateDelivery(ctx, ref, func(b *Batch, d *Delivery, p *Part, c *CopyState, w *writer) error {
		if err := open(d.Address, c); err != nil {
			return err
		}
		c.State, c.LastError, c.ErrorKind, c.Done, c.NextAttempt = DeliveryFailed, reason, kind, s.now().UTC(), time.Time{}
		return w.event(copyEvent(EventFailed, b, d, p, reason))
	})
	if err != nil {
		return fmt.Errorf("store: fail delivery: %w", err)
	}
	return nil
}

// Retry puts a batch's failed copies back in the queue, now, with a fresh
// give-up clock: a whole copy, or the failed parts of a split one. It
// returns how many recipients' copies it requeued.
func (s *Store) Retry(ctx context.Context, batch uint64) (int, error) {
	var n int
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		n = 0
		b, err := getBatch(tx, batch)
		if err != nil {
			return err
		}
		if b.Purged {
			return fmt.Errorf("batch %d was purged after retention: %w", batch, ErrState)
		}
		if b.Erased {
			return fmt.Errorf("batch %d's message was erased at a supporter's request: %w", batch, ErrState)
		}
		now := s.now().UTC()
		requeue := func(d *Delivery, p *Part, c *CopyState, ref DeliveryRef) error {
			reason := "after: " + c.LastError
			// A fresh start: attempts and the give-up clock from zero.
			c.State, c.NextAttempt, c.Since, c.Done, c.Attempts = DeliveryQueued, now, now, time.Time{}, 0
			if err := tx.Bucket(bucketQueue).Put(queueKey(now, ref), nil); err != nil {
				return err
			}
			return w.event(copyEvent(EventRequeued, b, d, p, reason))
		}
		for i := range b.Recipients {
			d := &b.Recipients[i]
			if d.State != DeliveryFailed {
				continue
			}
			if d.TooBig == nil {
				if err := requeue(d, nil, &d.CopyState, DeliveryRef{Batch: batch, Index: i}); err != nil {
					return err
				}
				n++
				continue
			}
			requeued := false
			for j := range d.Parts {
				p := &d.Parts[j]
				if p.State != DeliveryFailed {
					continue
				}
				if err := requeue(d, p, &p.CopyState, DeliveryRef{Batch: batch, Index: i, Part: j + 1}); err != nil {
					return err
				}
				requeued = true
			}
			if requeued {
				n++
				d.settle(now)
			}
		}
		if n == 0 {
			return fmt.Errorf("batch %d has no failed copy: %w", batch, ErrState)
		}
		return putBatch(tx, b)
	})
	if err != nil {
		return 0, fmt.Errorf("store: retry batch %d: %w", batch, err)
	}
	return n, nil
}

func purgeKey(at time.Time, batch uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k[0:], uint64(at.UnixNano()))
	binary.BigEndian.PutUint64(k[8:], batch)
	return k
}

// DuePurges returns batches whose retention ended at or before now, and the
// time of the next purge (zero if none).
func (s *Store) DuePurges(now time.Time) (due []uint64, next time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPurge).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			at := time.Unix(0, int64(binary.BigEndian.Uint64(k[0:8])))
			if at.After(now) {
				next = at
				return nil
			}
			due = append(due, binary.BigEndian.Uint64(k[8:16]))
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: due purges: %w", err)
	}
	return due, next, nil
}

// Purge removes a delivered batch's letter bodies and messages (its own
// and its parts'); the batch record, letter records, counts and dedup keys
// stay. The messages' files go first, so no crash can leave one past its
// retention.
func (s *Store) Purge(ctx context.Context, batch uint64) error {
	b, err := s.Batch(batch)
	if err != nil {
		return fmt.Errorf("store: purge batch %d: %w", batch, err)
	}
	if !b.Purged && b.Complete() {
		for _, f := range b.Files() {
			if err := s.removeMessage(f); err != nil {
				return fmt.Errorf("store: purge batch %d: %w", batch, err)
			}
		}
	}
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		b, err := getBatch(tx, batch)
		if err != nil {
			return err
		}
		if b.Purged {
			return nil
		}
		if !b.Complete() {
			return fmt.Errorf("batch %d is not delivered to every recipient: %w", batch, ErrState)
		}
		if !b.PurgeAt.IsZero() {
			if err := tx.Bucket(bucketPurge).Delete(purgeKey(b.PurgeAt, batch)); err != nil {
				return err
			}
		}
		for _, id := range b.LetterIDs {
			l, err := getLetter(tx, id)
			if err != nil {
				return err
			}
			l.Purged = true
			if err := putLetter(tx, l); err != nil {
				return err
			}
			if err := tx.Bucket(bucketBodies).Delete([]byte(id)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketBatchMsg).Delete(u64(batch)); err != nil {
			return err
		}
		b.Purged = true
		if err := putBatch(tx, b); err != nil {
			return err
		}
		if err := markWipe(tx); err != nil {
			return err
		}
		return w.event(Event{Event: EventPurged, Batch: batch,
			Reason: fmt.Sprintf("%d letter bodies removed after retention", len(b.LetterIDs))})
	})
	if err != nil {
		return fmt.Errorf("store: purge batch %d: %w", batch, err)
	}
	return nil
}
