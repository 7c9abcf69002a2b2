package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// event appends e to the journal in the writer's transaction; it is logged
// and sent to followers only after the commit.
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
	// event; more after a restart with a smaller bound).
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

// eventMessages says in an admin's words what each event means.
var eventMessages = map[string]string{
	EventAccepted:  "letter accepted and counted",
	EventDuplicate: "letter from a sender already counted; not counted again",
	EventHeld:      "letter held for an admin",
	EventRejected:  "letter rejected",
	EventReleased:  "held letter released by an admin and counted",
	EventDropped:   "held letter dropped by an admin",
	EventBatched:   "batch closed",
	EventDelivered: "batch copy delivered",
	EventDeferred:  "batch copy deferred; will retry",
	EventFailed:    "batch copy failed",
	EventPurged:    "letter bodies purged after retention",
}

// LogAttrs renders an event as slog attributes (no letter bodies, ever).
func (e Event) LogAttrs() []slog.Attr {
	attrs := []slog.Attr{slog.String("event", e.Event)}
	if e.Letter != "" {
		attrs = append(attrs, slog.String("letter", e.Letter))
	}
	if e.Batch != 0 {
		attrs = append(attrs, slog.Uint64("batch", e.Batch))
	}
	if e.Sender != "" {
		attrs = append(attrs, slog.String("sender", e.Sender))
	}
	if e.IP != "" {
		attrs = append(attrs, slog.String("ip", e.IP))
	}
	if e.Recipient != "" {
		attrs = append(attrs, slog.String("recipient", e.Recipient))
	}
	if e.Reason != "" {
		attrs = append(attrs, slog.String("reason", e.Reason))
	}
	return attrs
}

// Message is the log line's text for the event.
func (e Event) Message() string {
	if m, ok := eventMessages[e.Event]; ok {
		return m
	}
	return e.Event
}

func (s *Store) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	for _, e := range events {
		s.log.LogAttrs(context.Background(), slog.LevelInfo, e.Message(), e.LogAttrs()...)
	}
	s.subsMu.Lock()
	for sub := range s.subs {
		for _, e := range events {
			if !sub.send(e) {
				delete(s.subs, sub)
				break
			}
		}
	}
	s.subsMu.Unlock()
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

// Subscription delivers events as they are committed. If the follower falls
// too far behind it is closed; the follower then catches up from the journal
// with Events(lastSeq, …).
type Subscription struct {
	C   <-chan Event
	sub *subscription
	s   *Store
}

type subscription struct {
	ch   chan Event
	once sync.Once
}

func (sub *subscription) send(e Event) bool {
	select {
	case sub.ch <- e:
		return true
	default:
		sub.close()
		return false
	}
}

func (sub *subscription) close() { sub.once.Do(func() { close(sub.ch) }) }

// Subscribe follows new events.
func (s *Store) Subscribe() *Subscription {
	sub := &subscription{ch: make(chan Event, 4096)}
	s.subsMu.Lock()
	s.subs[sub] = struct{}{}
	s.subsMu.Unlock()
	return &Subscription{C: sub.ch, sub: sub, s: s}
}

// Close ends the subscription.
func (sub *Subscription) Close() {
	sub.s.subsMu.Lock()
	delete(sub.s.subs, sub.sub)
	sub.s.subsMu.Unlock()
	sub.sub.close()
}
