package store

// What an admin does to the store beyond one letter or one batch: the
// emergency pause, reading a held message, deciding on many held letters at
// once, and trying every deferred copy now.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// keyPause holds the pause (JSON of Pause) while the daemon is paused; it is
// absent otherwise.
var keyPause = []byte("pause")

// Pause is the emergency hold (SPEC 2): while paused, letters are still
// accepted, counted and stored, but no batch closes and nothing is sent. It
// is kept in the store, so it survives a restart.
type Pause struct {
	Paused bool      `json:"paused"`
	Since  time.Time `json:"since,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// Paused reports whether the daemon is paused, since when and why.
func (s *Store) Paused() (Pause, error) {
	var p Pause
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		p, err = getPause(tx)
		return err
	})
	if err != nil {
		return Pause{}, fmt.Errorf("store: read the pause: %w", err)
	}
	return p, nil
}

func getPause(tx *bolt.Tx) (Pause, error) {
	v := tx.Bucket(bucketMeta).Get(keyPause)
	if v == nil {
		return Pause{}, nil
	}
	var p Pause
	if err := json.Unmarshal(v, &p); err != nil {
		return Pause{}, fmt.Errorf("decode the pause: %w", err)
	}
	p.Paused = true
	return p, nil
}

// SetPause pauses (paused true, with the admin's reason, which may be
// empty) or resumes the daemon, with the event paused or resumed. Asking
// for the state it is already in changes nothing and records no event:
// changed says which happened. It returns the pause as it now is.
func (s *Store) SetPause(ctx context.Context, paused bool, reason string) (p Pause, changed bool, err error) {
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		changed = false
		cur, err := getPause(tx)
		if err != nil {
			return err
		}
		p = cur
		if cur.Paused == paused {
			return nil
		}
		meta := tx.Bucket(bucketMeta)
		changed = true
		if !paused {
			p = Pause{}
			if err := meta.Delete(keyPause); err != nil {
				return err
			}
			return w.event(Event{Event: EventResumed, Reason: "paused since " + cur.Since.Format(time.RFC3339)})
		}
		p = Pause{Paused: true, Since: s.now().UTC(), Reason: reason}
		data, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode the pause: %w", err)
		}
		if err := meta.Put(keyPause, data); err != nil {
			return err
		}
		if reason == "" {
			reason = "paused by an admin"
		}
		return w.event(Event{Event: EventPaused, Reason: reason})
	})
	if err != nil {
		return Pause{}, false, fmt.Errorf("store: set pause %v: %w", paused, err)
	}
	return p, changed, nil
}

// HeldMessage returns a copy of a held letter's bytes exactly as received:
// ErrNotFound when there is no such letter, ErrState when it is not held.
func (s *Store) HeldMessage(id string) ([]byte, error) {
	var body []byte
	err := s.view(func(tx *bolt.Tx) error {
		l, err := getLetter(tx, id)
		if err != nil {
			return err
		}
		if l.State != StateHeld {
			return fmt.Errorf("letter %s is %s, not held: %w", id, l.State, ErrState)
		}
		v := tx.Bucket(bucketBodies).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("message of held letter %s: %w", id, ErrNotFound)
		}
		body = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return body, nil
}

// HeldHead is a held letter with the first bytes of its message, enough for
// a listing to show its headers without copying whole bodies.
type HeldHead struct {
	Letter
	Head []byte
}

// HeldHeads lists the held letters, oldest first, each with at most the
// first n bytes of its message.
func (s *Store) HeldHeads(n int) ([]HeldHead, error) {
	var out []HeldHead
	err := s.view(func(tx *bolt.Tx) error {
		bodies := tx.Bucket(bucketBodies)
		return tx.Bucket(bucketHeld).ForEach(func(k, _ []byte) error {
			l, err := getLetter(tx, string(k))
			if err != nil {
				return err
			}
			body := bodies.Get(k)
			out = append(out, HeldHead{Letter: *l, Head: bytes.Clone(body[:min(n, len(body))])})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list held: %w", err)
	}
	return out, nil
}

// HeldCounts counts the held letters by reason.
func (s *Store) HeldCounts() (map[HeldReason]int, error) {
	out := map[HeldReason]int{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHeld).ForEach(func(k, _ []byte) error {
			l, err := getLetter(tx, string(k))
			if err != nil {
				return err
			}
			out[l.HeldReason]++
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: count held: %w", err)
	}
	return out, nil
}

// Decision is what an admin's decision did to one held letter.
type Decision struct {
	ID string
	// Event is the event it made: released, duplicate (released, but its
	// sender was counted meanwhile) or dropped; empty when Err is set.
	Event EventKind
	// Err says why the decision could not be carried out for this letter
	// (ErrNotFound, ErrState, or the store failing); with Event set, the
	// decision was carried out but wiping the free pages of what it
	// removed failed (the purger and the next Open finish that).
	Err error
}

// decideAtOnce bounds how many decisions of one ReleaseMany or DropMany wait
// for the commit loop together: they share its fsyncs.
const decideAtOnce = 32

// ReleaseMany releases each of ids as Release does, and returns one
// Decision per ID in the same order. A letter that cannot be released does
// not stop the others. One wipe at the end covers every body removed.
func (s *Store) ReleaseMany(ctx context.Context, ids []string) []Decision {
	out := s.decideMany(ctx, ids, func(id string) (EventKind, error) {
		dup, err := s.release(ctx, id)
		if dup {
			return EventDuplicate, err
		}
		return EventReleased, err
	})
	s.wipeDecided(ctx, out, EventDuplicate)
	return out
}

// DropMany drops each of ids as Drop does, one Decision per ID in order,
// with one wipe at the end.
func (s *Store) DropMany(ctx context.Context, ids []string) []Decision {
	out := s.decideMany(ctx, ids, func(id string) (EventKind, error) {
		return EventDropped, s.drop(ctx, id)
	})
	s.wipeDecided(ctx, out, EventDropped)
	return out
}

// wipeDecided wipes the free pages after the decisions that removed a body
// (those that made event removed); if the wipe fails, they say so.
func (s *Store) wipeDecided(ctx context.Context, out []Decision, removed EventKind) {
	if !slices.ContainsFunc(out, func(d Decision) bool { return d.Event == removed }) {
		return
	}
	err := s.wipeRemoved(ctx, string(removed))
	if err == nil {
		return
	}
	for i := range out {
		if out[i].Event == removed {
			out[i].Err = err
		}
	}
}

// decideMany runs decide for every ID, a few at a time so the writes share
// group commits: one fsync for many letters rather than one each.
func (s *Store) decideMany(ctx context.Context, ids []string, decide func(id string) (EventKind, error)) []Decision {
	out := make([]Decision, len(ids))
	sem := make(chan struct{}, decideAtOnce)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			kind, err := decide(id)
			out[i] = Decision{ID: id, Event: kind, Err: err}
			if err != nil {
				out[i].Event = ""
			}
		}()
	}
	wg.Wait()
	return out
}

// Flush moves the next attempt of every deferred copy to now, like Postfix's
// postqueue -f, with a requeued event each, so the delivery scheduler tries
// them at once. The give-up clock and the attempt count stay as they were.
// It returns how many copies it moved.
func (s *Store) Flush(ctx context.Context) (int, error) {
	var n int
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		n = 0
		now := s.now().UTC()
		q := tx.Bucket(bucketQueue)
		var later [][]byte
		c := q.Cursor()
		for k, _ := c.Seek(queueKey(now.Add(time.Nanosecond), DeliveryRef{})); k != nil; k, _ = c.Next() {
			later = append(later, bytes.Clone(k))
		}
		batches := map[uint64]*Batch{}
		for _, k := range later {
			ref := queueRef(k)
			b := batches[ref.Batch]
			if b == nil {
				var err error
				if b, err = getBatch(tx, ref.Batch); err != nil {
					return err
				}
				batches[ref.Batch] = b
			}
			d, p, cs, _, err := b.target(ref)
			if err != nil {
				return fmt.Errorf("queue names a copy that does not exist: %w", err)
			}
			if cs.State != DeliveryDeferred {
				// A copy being tried right now: its attempt decides.
				continue
			}
			if err := q.Delete(k); err != nil {
				return err
			}
			cs.NextAttempt = now
			if err := q.Put(queueKey(now, ref), nil); err != nil {
				return err
			}
			if err := w.event(copyEvent(EventRequeued, b, d, p,
				fmt.Sprintf("flushed by an admin: try now (attempt %d was deferred: %s)", cs.Attempts, cs.LastError))); err != nil {
				return err
			}
			n++
		}
		for _, b := range batches {
			if err := putBatch(tx, b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: flush the delivery queue: %w", err)
	}
	return n, nil
}
