package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// event appends e to the journal in the writer's transaction; followers get
// it only after the commit.
func (w *writer) event(e Event) error {
	b := w.tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("store: event sequence: %w", err)
	}
	e.Seq = seq
	if e.Time.IsZero() {
		e.Time = w.s.now().UTC()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("store: encode event: %w", err)
	}
	if err := b.Put(u64(seq), data); err != nil {
		return fmt.Errorf("store: put event %d: %w", seq, err)
	}
	// Keep the journal bounded: drop what fell off the end (usually one
	// event; more after a restart with a smaller bound). This asks for no
	// wipe: once the journal is full that would be at every letter, and
	// the purger would zero the whole file at each wake. A dropped event's
	// sender stays in a free page until a later write reuses the page or
	// the next wipe (after any purge, expiry, drop or erasure) zeroes it.
	if seq > w.s.journalMax {
		c := b.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq-w.s.journalMax; k, _ = c.First() {
			if err := b.Delete(k); err != nil {
				return fmt.Errorf("store: trim journal: %w", err)
			}
		}
	}
	w.events = append(w.events, e)
	return nil
}

// Events returns up to limit journal events with Seq > after, oldest first.
func (s *Store) Events(after uint64, limit int) ([]Event, error) {
	var out []Event
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: decode event %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// LastEvents returns the last n journal events, oldest first.
func (s *Store) LastEvents(n int) ([]Event, error) {
	var out []Event
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: decode event %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, e)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// LastSeq is the sequence number of the last event committed (0 for none):
// Follow(LastSeq()) yields only events still to come.
func (s *Store) LastSeq() (uint64, error) {
	var seq uint64
	err := s.view(func(tx *bolt.Tx) error {
		seq = tx.Bucket(bucketEvents).Sequence()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: journal end: %w", err)
	}
	return seq, nil
}
