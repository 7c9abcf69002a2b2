package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The queue of mail to supporters (SPEC 11): confirmation requests and
// receipts, each one message to one address, retried like a batch's copy.
// A message is kept until it is delivered or failed; then its record and
// bytes go (the journal's events say what happened), so the queue holds a
// supporter's address only while it has something to send them.
var (
	// bucketMail: mail ID → OutMail.
	bucketMail = []byte("supporter_mail")
	// bucketMailMsg: mail ID → the message.
	bucketMailMsg = []byte("supporter_mail_msg")
	// bucketMailQueue: mailQueueKey(next attempt, ID) → nil.
	bucketMailQueue = []byte("supporter_mail_queue")
	// bucketMailLast: lastMailKey(purpose, dedup key) → when the last
	// message of that purpose was queued for that address.
	bucketMailLast = []byte("supporter_mail_last")
)

// MailPurpose is why petitiond writes to a supporter.
type MailPurpose string

// Purposes of mail to supporters.
const (
	MailConfirm MailPurpose = "confirm"
	MailReceipt MailPurpose = "receipt"
)

// text names the purpose in events.
func (p MailPurpose) text() string {
	if p == MailConfirm {
		return "confirmation request"
	}
	return string(p)
}

// OutMail is one message to a supporter waiting for delivery.
type OutMail struct {
	ID      uint64      `json:"id"`
	Purpose MailPurpose `json:"purpose"`
	// Letter is the letter it is about.
	Letter string `json:"letter"`
	// To is the supporter's address, the envelope recipient.
	To       string `json:"to"`
	DedupKey []byte `json:"dedup_key,omitempty"`
	CopyState
}

func mailQueueKey(at time.Time, id uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, uint64(at.UnixNano()))
	binary.BigEndian.PutUint64(k[8:], id)
	return k
}

func lastMailKey(p MailPurpose, dedupKey []byte) []byte {
	return append([]byte(string(p)+"\x00"), dedupKey...)
}

// lastMail is when the last message of purpose p was queued for the
// supporter with dedupKey; zero when none was.
func lastMail(tx *bolt.Tx, p MailPurpose, dedupKey []byte) time.Time {
	v := tx.Bucket(bucketMailLast).Get(lastMailKey(p, dedupKey))
	if len(v) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
}

func putMail(tx *bolt.Tx, m *OutMail) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode mail %d: %w", m.ID, err)
	}
	return tx.Bucket(bucketMail).Put(u64(m.ID), data)
}

func getMail(tx *bolt.Tx, id uint64) (*OutMail, error) {
	v := tx.Bucket(bucketMail).Get(u64(id))
	if v == nil {
		return nil, fmt.Errorf("mail %d to a supporter: %w", id, ErrNotFound)
	}
	var m OutMail
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("decode mail %d: %w", id, err)
	}
	return &m, nil
}

// enqueueMail gives m an ID and queues it with its message, due now, and
// records when the address got mail of this purpose.
func enqueueMail(tx *bolt.Tx, m *OutMail, msg []byte, now time.Time) error {
	if len(msg) == 0 {
		return fmt.Errorf("mail to a supporter about %s has no message", m.Letter)
	}
	id, err := tx.Bucket(bucketMail).NextSequence()
	if err != nil {
		return err
	}
	m.ID = id
	m.CopyState = CopyState{State: DeliveryQueued, NextAttempt: now, Since: now}
	if err := putMail(tx, m); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMailMsg).Put(u64(id), msg); err != nil {
		return err
	}
	if err := tx.Bucket(bucketMailQueue).Put(mailQueueKey(now, id), nil); err != nil {
		return err
	}
	if len(m.DedupKey) == 0 {
		return nil
	}
	return tx.Bucket(bucketMailLast).Put(lastMailKey(m.Purpose, m.DedupKey), u64(uint64(now.UnixNano())))
}

// removeMail deletes a message, its record and its queue entry.
func removeMail(tx *bolt.Tx, m *OutMail) error {
	if m.waiting() {
		if err := tx.Bucket(bucketMailQueue).Delete(mailQueueKey(m.NextAttempt, m.ID)); err != nil {
			return err
		}
	}
	return dropMail(tx, m.ID)
}

// dropMail deletes a message and its record.
func dropMail(tx *bolt.Tx, id uint64) error {
	if err := tx.Bucket(bucketMailMsg).Delete(u64(id)); err != nil {
		return err
	}
	return tx.Bucket(bucketMail).Delete(u64(id))
}

// DueMail returns up to limit messages to supporters whose next attempt is
// at or before now, earliest first, and the time of the next one after
// those (zero if none).
func (s *Store) DueMail(now time.Time, limit int) (due []uint64, next time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMailQueue).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			at := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
			if at.After(now) || len(due) >= limit {
				next = at
				return nil
			}
			due = append(due, binary.BigEndian.Uint64(k[8:16]))
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: mail to supporters due: %w", err)
	}
	return due, next, nil
}

// updateMail loads message id, lets fn change it and moves its queue
// entry to match, in one transaction. fn may remove it (done true).
func (s *Store) updateMail(ctx context.Context, id uint64, fn func(tx *bolt.Tx, w *writer, m *OutMail) (done bool, err error)) (*OutMail, error) {
	var out *OutMail
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		out = nil
		m, err := getMail(tx, id)
		if err != nil {
			return err
		}
		if !m.waiting() {
			return fmt.Errorf("mail %d to a supporter is already %s: %w", id, m.State, ErrState)
		}
		q := tx.Bucket(bucketMailQueue)
		if err := q.Delete(mailQueueKey(m.NextAttempt, id)); err != nil {
			return err
		}
		done, err := fn(tx, w, m)
		if err != nil {
			return err
		}
		out = m
		if done {
			return dropMail(tx, id)
		}
		if err := q.Put(mailQueueKey(m.NextAttempt, id), nil); err != nil {
			return err
		}
		return putMail(tx, m)
	})
	return out, err
}

// StartMailAttempt records an attempt before dialing, as StartAttempt
// does for batch copies, and returns the message's record.
func (s *Store) StartMailAttempt(ctx context.Context, id uint64, retryAt func(attempts int) time.Time) (*OutMail, error) {
	m, err := s.updateMail(ctx, id, func(_ *bolt.Tx, _ *writer, m *OutMail) (bool, error) {
		m.Attempts++
		m.NextAttempt = retryAt(m.Attempts).UTC()
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: start an attempt of mail %d: %w", id, err)
	}
	return m, nil
}

// MailMessage returns a copy of a queued message to a supporter.
func (s *Store) MailMessage(id uint64) ([]byte, error) {
	var msg []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMailMsg).Get(u64(id))
		if v == nil {
			return fmt.Errorf("message of mail %d: %w", id, ErrNotFound)
		}
		msg = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return msg, nil
}

// mailEvent is an event about one message to a supporter; the supporter's
// address is its sender, so erasure and retention find it.
func mailEvent(kind EventKind, m *OutMail, reason string) Event {
	return Event{Event: kind, Letter: m.Letter, Sender: m.To, Reason: m.Purpose.text() + " to the sender: " + reason}
}

// MailDelivered records that the supporter's mail host (or the Maildir)
// took the message; it leaves the queue and the store.
func (s *Store) MailDelivered(ctx context.Context, id uint64, detail string) error {
	_, err := s.updateMail(ctx, id, func(_ *bolt.Tx, w *writer, m *OutMail) (bool, error) {
		return true, w.event(mailEvent(EventDelivered, m, detail))
	})
	if err != nil {
		return fmt.Errorf("store: mark mail %d delivered: %w", id, err)
	}
	return nil
}

// DeferMail records a temporary failure and when to try next.
func (s *Store) DeferMail(ctx context.Context, id uint64, next time.Time, reason string) error {
	_, err := s.updateMail(ctx, id, func(_ *bolt.Tx, w *writer, m *OutMail) (bool, error) {
		m.State, m.LastError, m.NextAttempt = DeliveryDeferred, reason, next.UTC()
		return false, w.event(mailEvent(EventDeferred, m,
			fmt.Sprintf("attempt %d: %s; next try %s", m.Attempts, reason, m.NextAttempt.Format(time.RFC3339))))
	})
	if err != nil {
		return fmt.Errorf("store: defer mail %d: %w", id, err)
	}
	return nil
}

// FailMail records a permanent failure: the message leaves the store. A
// confirmation request that cannot be delivered ends: its letters are held
// as unconfirmed.
func (s *Store) FailMail(ctx context.Context, id uint64, reason string) error {
	_, err := s.updateMail(ctx, id, func(tx *bolt.Tx, w *writer, m *OutMail) (bool, error) {
		if err := w.event(mailEvent(EventFailed, m, reason)); err != nil {
			return false, err
		}
		if m.Purpose != MailConfirm {
			return true, nil
		}
		r, err := getConfirm(tx, m.Letter)
		if err != nil || r == nil || r.Mail != m.ID {
			return true, err // answered or expired meanwhile
		}
		letters, err := heldForConfirmation(tx, r.DedupKey)
		if err != nil {
			return false, err
		}
		if err := addU64(tx.Bucket(bucketMeta), ctrConfirmUndeliverable, 1); err != nil {
			return false, err
		}
		return true, endConfirm(tx, w, r, letters, "the confirmation request could not be delivered: "+reason)
	})
	if err != nil {
		return fmt.Errorf("store: fail mail %d: %w", id, err)
	}
	return nil
}
