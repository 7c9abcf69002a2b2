package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Held letters cannot fill the disk (issue 9, point 4): the same letter
// held again is not stored twice, and a held letter nobody decided on goes
// after store.held_retention. So does the record of an unverified letter
// from a sender already counted (policy relay), which is kept whole like a
// counted letter (see Accept) but never batched, so nothing else would
// ever remove its body.
var (
	// bucketHeldDedup: heldKey → the ID of the held letter with that key.
	bucketHeldDedup = []byte("held_dedup")
	// bucketHeldSince: pendingKey(received, id) → the letter's heldKey
	// (nil for a duplicate's record): the expiry queue, oldest first.
	bucketHeldSince = []byte("held_since")
)

// heldExpireBatch bounds the letters one ExpireHeld purges in a commit.
const heldExpireBatch = 256

// heldKey names a held letter by who sent it and what it says: the HMAC,
// under the store's secret, of the hold reason, the sender's dedup key (the
// From address for postmaster mail, which has none) and the SHA-256 of the
// body. The body is what follows the header, so a resend with a new
// Message-ID or Date is the same letter. Like the dedup index, it holds no
// readable address.
func (s *Store) heldKey(reason HeldReason, dedupKey []byte, from string, msg []byte) []byte {
	body := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		body = msg[i+4:]
	} else if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		body = msg[i+2:]
	}
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("held\x00" + string(reason) + "\x00"))
	if dedupKey != nil {
		m.Write(dedupKey)
	} else {
		m.Write([]byte(strings.ToLower(from)))
	}
	m.Write(sum[:])
	return m.Sum(nil)
}

// hold stores l, from nl, as a held letter, or, when the same letter is
// held already, as a repeat: a record in state duplicate without a body,
// under its own ID like any stored letter, so the reply (250 with a new
// ID) does not tell a sender who proved nothing that this letter was sent
// before. Both go in the expiry queue. ev is the letter's event.
func (s *Store) hold(tx *bolt.Tx, l *Letter, ev *Event, nl *NewLetter) error {
	meta := tx.Bucket(bucketMeta)
	key := s.heldKey(nl.Hold, l.DedupKey, nl.From, nl.Body)
	if first := tx.Bucket(bucketHeldDedup).Get(key); first != nil {
		if prev, err := getLetter(tx, string(first)); err == nil && prev.State == StateHeld {
			l.State = StateDuplicate
			ev.Event, ev.Reason, ev.DuplicateOf = EventDuplicate, "the same letter is held already as "+prev.ID, DuplicateOfHeld
			if err := addU64(meta, ctrDuplicates, 1); err != nil {
				return err
			}
			return queueExpiry(tx, l)
		}
	}
	l.State, l.HeldReason = StateHeld, nl.Hold
	ev.Event, ev.Reason = EventHeld, heldReason(*nl)
	id := []byte(l.ID)
	for _, kv := range []struct{ bucket, key, val []byte }{
		{bucketHeld, id, nil},
		{bucketBodies, id, nl.Body},
		{bucketHeldDedup, key, id},
		{bucketHeldSince, pendingKey(l.Received, l.ID), key},
	} {
		if err := tx.Bucket(kv.bucket).Put(kv.key, kv.val); err != nil {
			return err
		}
	}
	return addU64(meta, ctrHeld, 1)
}

// queueExpiry puts a letter record that is never batched in the expiry
// queue, so it goes after store.held_retention.
func queueExpiry(tx *bolt.Tx, l *Letter) error {
	return tx.Bucket(bucketHeldSince).Put(pendingKey(l.Received, l.ID), nil)
}

// unindexHeld takes a held letter out of the dedup and expiry indexes, when
// an admin releases or drops it (or it expires). A letter held as
// unbatchable was never in them.
func unindexHeld(tx *bolt.Tx, l *Letter) error {
	since := tx.Bucket(bucketHeldSince)
	k := pendingKey(l.Received, l.ID)
	if key := since.Get(k); key != nil {
		dedup := tx.Bucket(bucketHeldDedup)
		if string(dedup.Get(key)) == l.ID {
			if err := dedup.Delete(key); err != nil {
				return err
			}
		}
	}
	return since.Delete(k)
}

// ExpireHeld purges held letters received store.held_retention or longer
// before now, with their bodies, the records of their repeats, and those of
// unverified letters from senders counted already (with their bodies), each
// with a purged event; a letter held as unbatchable (counted already) never
// expires. It purges at most a few hundred per call and returns how many,
// and when the next one is due (zero when none waits; not after now when
// more are due already). Call Wipe afterwards, so the purged bytes leave
// the file too.
func (s *Store) ExpireHeld(ctx context.Context, now time.Time) (purged int, next time.Time, err error) {
	cutoff := now.Add(-s.heldRetain)
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		purged, next = 0, time.Time{}
		c := tx.Bucket(bucketHeldSince).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.First() {
			received := pendingSince(k)
			if received.After(cutoff) || purged == heldExpireBatch {
				next = received.Add(s.heldRetain)
				return nil
			}
			n, err := s.expireHeld(tx, w, string(k[8:]))
			if err != nil {
				return err
			}
			purged += n
			if err := tx.Bucket(bucketHeldSince).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("store: expire held letters: %w", err)
	}
	return purged, next, nil
}

// expireHeld purges one letter of the expiry queue; an entry whose letter
// was released, dropped or erased meanwhile only leaves the queue.
func (s *Store) expireHeld(tx *bolt.Tx, w *writer, id string) (int, error) {
	l, err := getLetter(tx, id)
	if err != nil || (l.State != StateHeld && l.State != StateDuplicate) || l.HeldReason == HeldUnbatchable {
		return 0, nil
	}
	ev := Event{Event: EventPurged, Letter: id, Sender: l.From, IP: l.RemoteIP}
	bodies := tx.Bucket(bucketBodies)
	switch {
	case l.State == StateHeld:
		if err := unindexHeld(tx, l); err != nil {
			return 0, err
		}
		if err := tx.Bucket(bucketHeld).Delete([]byte(id)); err != nil {
			return 0, err
		}
		if err := addU64(tx.Bucket(bucketMeta), ctrHeld, -1); err != nil {
			return 0, err
		}
		ev.Reason = fmt.Sprintf("held (%s) for %s without an admin's decision (store.held_retention)", l.HeldReason, s.heldRetain)
	case bodies.Get([]byte(id)) != nil:
		ev.Reason = fmt.Sprintf("unverified letter from a sender already counted, kept whole for %s (store.held_retention)", s.heldRetain)
	default:
		ev.Reason = fmt.Sprintf("record of a repeat of a held letter, after %s (store.held_retention)", s.heldRetain)
	}
	for _, b := range [][]byte{bucketBodies, bucketLetters} {
		if err := tx.Bucket(b).Delete([]byte(id)); err != nil {
			return 0, err
		}
	}
	if err := markWipe(tx); err != nil {
		return 0, err
	}
	return 1, w.event(ev)
}

// FreeBytes is the free space on the store directory's file system that
// petitiond may still write: the front end stops taking letters (452 4.3.1)
// and /healthz fails below store.min_free_bytes, before the disk is full.
func (s *Store) FreeBytes() (uint64, error) {
	n, err := freeBytes(s.dir)
	if err != nil {
		return 0, fmt.Errorf("store: free space of %s: %w", s.dir, err)
	}
	return n, nil
}
