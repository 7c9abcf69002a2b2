package store

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A secondary MX (SPEC 12) keeps each letter it accepted until the primary
// has it: a letter record in state forwarding ("S…" ID), its body, and an
// entry in the forwarding queue, bucketForwardDue, keyed by the next
// attempt. It counts nothing: no dedup key is set, no counter of SPEC 9
// moves but held, and nothing goes into the pending queue. Once the
// primary answered 250 the letter is deleted; when it answered 5xx (or
// forwarding gave up) the letter is held for an admin with reason
// forward_failed, which `held show` reads and `held release` sends again.

// StateForwarding is a letter a secondary keeps until the primary has it.
const StateForwarding LetterState = "forwarding"

// HeldForwardFailed is a letter the primary refused (5xx), or that could
// not be forwarded within delivery.give_up_after: it waits on the
// secondary for an admin.
const HeldForwardFailed HeldReason = "forward_failed"

// EventQueued is a letter a secondary stored to forward to the primary
// (or put back in its queue at an admin's release).
const EventQueued EventKind = "queued"

var (
	// bucketForwardDue: forwardKey(next attempt, id) → nil.
	bucketForwardDue = []byte("forward_due")

	ctrForwardWaiting = []byte("n_forward_waiting")
	ctrForwarded      = []byte("n_forwarded")
)

// Forward is the envelope and delivery state of a letter on a secondary,
// kept in its record while it waits (and while it is held, so an admin's
// release can send it again).
type Forward struct {
	// MailFrom is the sender's MAIL FROM, "" for the null sender; it goes
	// to the primary unchanged.
	MailFrom string `json:"mail_from"`
	// Rcpt is the recipient the primary gets it for: the first the
	// sender named.
	Rcpt        string    `json:"rcpt"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Since starts the give-up clock: when the letter arrived, or an
	// admin released it.
	Since time.Time `json:"since"`
}

// ForwardCounts are a secondary's letters waiting to be forwarded and
// forwarded so far.
type ForwardCounts struct {
	Waiting   uint64 `json:"waiting"`
	Forwarded uint64 `json:"forwarded"`
}

// forwardKey orders the forwarding queue by next attempt, then ID.
func forwardKey(at time.Time, id string) []byte {
	return pendingKey(at, id)
}

// QueueForward stores a letter on a secondary, durably, before its 250:
// record, body, envelope and queue entry in one transaction with a queued
// event. nl.ID is an ID from ReserveForwardID ("" reserves one); nl.Hold
// and the dedup key are not used: the primary decides. The letter is found
// by its sender like any other (lookup, erase), through the sender index.
func (s *Store) QueueForward(ctx context.Context, nl NewLetter, mailFrom, rcpt string) (string, error) {
	if nl.Received.IsZero() {
		nl.Received = s.now()
	}
	var key []byte
	if nl.DedupAddress != "" {
		key = s.DedupKey(nl.DedupAddress)
	}
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		meta := tx.Bucket(bucketMeta)
		if nl.ID == "" {
			// Kept if this runs again after a failed group commit.
			nl.ID = formatID(forwardPrefix, s.ids.next(getU64(meta, keyLetterSeq)))
		}
		if err := useLetterID(tx, nl.ID, forwardPrefix); err != nil {
			return err
		}
		received := nl.Received.UTC()
		l := Letter{
			ID: nl.ID, Received: received, From: nl.From, Name: nl.Name, RemoteIP: nl.RemoteIP,
			State: StateForwarding, Verdict: nl.Verdict, Size: len(nl.Body), DedupKey: key,
			Forward: &Forward{MailFrom: mailFrom, Rcpt: rcpt, NextAttempt: received, Since: received},
		}
		if err := tx.Bucket(bucketBodies).Put([]byte(l.ID), nl.Body); err != nil {
			return fmt.Errorf("put body: %w", err)
		}
		if err := tx.Bucket(bucketForwardDue).Put(forwardKey(received, l.ID), nil); err != nil {
			return fmt.Errorf("queue letter %s: %w", l.ID, err)
		}
		if err := putLetter(tx, &l); err != nil {
			return err
		}
		if err := indexSender(tx, key, l.ID); err != nil {
			return err
		}
		if err := addU64(meta, ctrForwardWaiting, 1); err != nil {
			return err
		}
		reason := "to forward to the primary; " + verdictReason(nl.Verdict)
		if nl.Hold == HeldPostmaster {
			reason = "to forward to the primary; mail for " + rcpt
		}
		return w.event(Event{Event: EventQueued, Letter: l.ID, Sender: nl.From, IP: nl.RemoteIP,
			Session: nl.Session, Reason: reason})
	})
	if err != nil {
		return "", fmt.Errorf("store: queue letter from %s for the primary: %w", nl.From, err)
	}
	return nl.ID, nil
}

// DueForwards returns up to limit letters whose next attempt is at or
// before now, earliest first, and the time of the next one after those
// (zero when none waits).
func (s *Store) DueForwards(now time.Time, limit int) (due []string, next time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketForwardDue).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if at := pendingSince(k); at.After(now) || len(due) >= limit {
				next = at
				return nil
			}
			due = append(due, string(k[8:]))
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: letters due to forward: %w", err)
	}
	return due, next, nil
}

// updateForward loads a letter waiting to be forwarded, takes it out of
// the queue, lets fn change it (fn puts it back with requeue), and saves
// it, in one transaction. A letter no longer waiting (forwarded, held,
// erased) is ErrState; one gone is ErrNotFound.
func (s *Store) updateForward(ctx context.Context, id string, fn func(tx *bolt.Tx, w *writer, l *Letter) error) (*Letter, error) {
	var out *Letter
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		out = nil
		l, err := getLetter(tx, id)
		if err != nil {
			return err
		}
		if l.State != StateForwarding || l.Forward == nil {
			return fmt.Errorf("letter %s is %s, not waiting to be forwarded: %w", id, l.State, ErrState)
		}
		if err := tx.Bucket(bucketForwardDue).Delete(forwardKey(l.Forward.NextAttempt, id)); err != nil {
			return err
		}
		if err := fn(tx, w, l); err != nil {
			return err
		}
		out = l
		return nil
	})
	return out, err
}

// requeue puts a waiting letter back in the forwarding queue at its next
// attempt and saves it.
func requeue(tx *bolt.Tx, l *Letter) error {
	if err := tx.Bucket(bucketForwardDue).Put(forwardKey(l.Forward.NextAttempt, l.ID), nil); err != nil {
		return err
	}
	return putLetter(tx, l)
}

// StartForward records an attempt before dialing the primary: attempts+1
// and the next attempt moved to retryAt(attempts), so a crash while
// forwarding retries after a backoff. It returns the letter as it now is.
func (s *Store) StartForward(ctx context.Context, id string, retryAt func(attempts int) time.Time) (*Letter, error) {
	l, err := s.updateForward(ctx, id, func(tx *bolt.Tx, _ *writer, l *Letter) error {
		l.Forward.Attempts++
		l.Forward.NextAttempt = retryAt(l.Forward.Attempts).UTC()
		return requeue(tx, l)
	})
	if err != nil {
		return nil, fmt.Errorf("store: start forwarding %s: %w", id, err)
	}
	return l, nil
}

// Forwarded records that the primary answered 250 (detail is its reply):
// the letter, its body and its index entries are deleted, with a
// forwarded event. The primary now has it and counts it, once.
func (s *Store) Forwarded(ctx context.Context, id, detail string) error {
	failpoint("forwarded")
	_, err := s.updateForward(ctx, id, func(tx *bolt.Tx, w *writer, l *Letter) error {
		for _, b := range [][]byte{bucketLetters, bucketBodies} {
			if err := tx.Bucket(b).Delete([]byte(id)); err != nil {
				return err
			}
		}
		if len(l.DedupKey) > 0 {
			if err := tx.Bucket(bucketSenders).Delete(senderKey(l.DedupKey, id)); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := addU64(meta, ctrForwardWaiting, -1); err != nil {
			return err
		}
		if err := addU64(meta, ctrForwarded, 1); err != nil {
			return err
		}
		return w.event(Event{Event: EventForwarded, Letter: id, Sender: l.From, IP: l.RemoteIP, Reason: detail})
	})
	if err != nil {
		return fmt.Errorf("store: mark %s forwarded: %w", id, err)
	}
	return nil
}

// DeferForward records a temporary failure and when to try next.
func (s *Store) DeferForward(ctx context.Context, id string, next time.Time, reason string) error {
	_, err := s.updateForward(ctx, id, func(tx *bolt.Tx, w *writer, l *Letter) error {
		l.Forward.NextAttempt, l.Forward.LastError = next.UTC(), reason
		if err := requeue(tx, l); err != nil {
			return err
		}
		return w.event(Event{Event: EventDeferred, Letter: id, Sender: l.From, IP: l.RemoteIP,
			Reason: fmt.Sprintf("forwarding attempt %d: %s; next try %s", l.Forward.Attempts, reason,
				l.Forward.NextAttempt.Format(time.RFC3339))})
	})
	if err != nil {
		return fmt.Errorf("store: defer forwarding %s: %w", id, err)
	}
	return nil
}

// FailForward holds a letter the primary refused, or that forwarding gave
// up on, for an admin (reason forward_failed), with a failed event: it is
// never lost, and `held release` sends it again.
func (s *Store) FailForward(ctx context.Context, id, reason string) error {
	_, err := s.updateForward(ctx, id, func(tx *bolt.Tx, w *writer, l *Letter) error {
		l.State, l.HeldReason = StateHeld, HeldForwardFailed
		l.Forward.NextAttempt, l.Forward.LastError = time.Time{}, reason
		if err := tx.Bucket(bucketHeld).Put([]byte(id), nil); err != nil {
			return err
		}
		if err := putLetter(tx, l); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := addU64(meta, ctrForwardWaiting, -1); err != nil {
			return err
		}
		if err := addU64(meta, ctrHeld, 1); err != nil {
			return err
		}
		return w.event(Event{Event: EventFailed, Letter: id, Sender: l.From, IP: l.RemoteIP,
			Reason: reason + "; held for an admin (petitiond held show " + id + ")"})
	})
	if err != nil {
		return fmt.Errorf("store: hold %s after forwarding failed: %w", id, err)
	}
	return nil
}

// releaseForward puts a letter held as forward_failed back in the
// forwarding queue, due now, with a fresh give-up clock: an admin's
// release on a secondary sends the letter again, it never counts it.
func (s *Store) releaseForward(tx *bolt.Tx, w *writer, l *Letter) error {
	if l.Forward == nil {
		return fmt.Errorf("letter %s has no envelope to forward it with: %w", l.ID, ErrState)
	}
	now := s.now().UTC()
	l.State, l.HeldReason = StateForwarding, ""
	last := l.Forward.LastError
	l.Forward.Attempts, l.Forward.NextAttempt, l.Forward.Since, l.Forward.LastError = 0, now, now, ""
	if err := tx.Bucket(bucketHeld).Delete([]byte(l.ID)); err != nil {
		return err
	}
	if err := requeue(tx, l); err != nil {
		return err
	}
	meta := tx.Bucket(bucketMeta)
	if err := addU64(meta, ctrHeld, -1); err != nil {
		return err
	}
	if err := addU64(meta, ctrForwardWaiting, 1); err != nil {
		return err
	}
	return w.event(Event{Event: EventQueued, Letter: l.ID, Sender: l.From, IP: l.RemoteIP,
		Reason: "released by an admin: forwarded to the primary again (after: " + last + ")"})
}

// unqueueForward takes a letter out of the forwarding queue when its
// supporter is erased: it is never forwarded.
func unqueueForward(tx *bolt.Tx, l *Letter) error {
	if l.Forward == nil {
		return nil
	}
	if err := tx.Bucket(bucketForwardDue).Delete(forwardKey(l.Forward.NextAttempt, l.ID)); err != nil {
		return err
	}
	return addU64(tx.Bucket(bucketMeta), ctrForwardWaiting, -1)
}

// forwardCounts reads a secondary's counters for Stats.
func forwardCounts(meta *bolt.Bucket) ForwardCounts {
	return ForwardCounts{Waiting: getU64(meta, ctrForwardWaiting), Forwarded: getU64(meta, ctrForwarded)}
}
