package store

import (
	"context"
	"sync"
	"time"
)

// subscriptionBuffer is how many events a follower may fall behind before
// the store drops it; the follower then catches up from the journal.
const subscriptionBuffer = 4096

// feedPage is how many journal events one catch-up read takes.
const feedPage = 1000

// subscription is the live half of a Feed: the commit loop sends it each
// committed event without ever waiting.
type subscription struct {
	ch   chan Event
	once sync.Once
}

func (sub *subscription) close() { sub.once.Do(func() { close(sub.ch) }) }

func (s *Store) subscribe() (*subscription, error) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	if s.subsDone {
		return nil, s.endErr()
	}
	sub := &subscription{ch: make(chan Event, subscriptionBuffer)}
	s.subs[sub] = struct{}{}
	return sub, nil
}

func (s *Store) feedsClosed() bool {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	return s.subsDone
}

func (s *Store) unsubscribe(sub *subscription) {
	s.subsMu.Lock()
	delete(s.subs, sub)
	s.subsMu.Unlock()
	sub.close()
}

// publish hands committed events to every follower. A follower whose buffer
// is full is dropped (its channel closed) rather than waited for.
func (s *Store) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for sub := range s.subs {
		for _, e := range events {
			select {
			case sub.ch <- e:
				continue
			default:
			}
			delete(s.subs, sub)
			sub.close()
			break
		}
	}
}

// closeSubs ends every subscription once the commit loop has stopped: a
// follower reads what it was sent, then learns that the store closed.
func (s *Store) closeSubs() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	s.subsDone = true
	for sub := range s.subs {
		sub.close()
	}
	s.subs = map[*subscription]struct{}{}
}

// Feed yields the journal's events after a sequence number, in commit
// order, each once. It is the one way to follow the store: every part that
// reacts to changes reads its index, then waits on a feed.
//
// A feed subscribes before it reads the journal, so an event committed
// meanwhile is in one or both (repeats are skipped by sequence number); when
// the store drops it for falling behind, it subscribes again and catches up
// from the journal. It misses events only if it falls further behind than
// the journal keeps (Options.JournalMax). A Feed is for one goroutine.
type Feed struct {
	st       *Store
	after    uint64
	sub      *subscription // nil once the store closed
	backlog  []Event
	caughtUp bool
	wake     chan time.Time // Wake; Loop's timer
}

// Follow returns a feed of the events after seq after. Follow(0) starts at
// the oldest event the journal keeps; Follow(LastSeq()) at the next one.
func (s *Store) Follow(after uint64) *Feed {
	f := &Feed{st: s, after: after, wake: make(chan time.Time, 1)}
	f.sub, _ = s.subscribe() // nil on a closed store: Next says ErrClosed
	return f
}

// FollowNew returns a feed of the events committed from now on: a consumer
// that follows before it reads its index misses no change to it.
func (s *Store) FollowNew() (*Feed, error) {
	end, err := s.LastSeq()
	if err != nil {
		return nil, err
	}
	return s.Follow(end), nil
}

// Close ends the feed; the store forgets it.
func (f *Feed) Close() {
	if f.sub != nil {
		f.st.unsubscribe(f.sub)
		f.sub = nil
	}
	f.backlog, f.caughtUp = nil, true
}

// After is the sequence number of the last event the feed returned (or the
// one it started after).
func (f *Feed) After() uint64 { return f.after }

// Next waits for the next event. It returns ErrClosed once the store closed
// and every event committed before was returned, or ctx's error.
func (f *Feed) Next(ctx context.Context) (Event, error) {
	e, _, err := f.NextOr(ctx, nil)
	return e, err
}

// NextOr waits for the next event or for wake, whichever comes first: ok is
// false (and err nil) when wake fired. Pass a timer's channel to be woken at
// a time (a consumer that re-reads an index when its next deadline comes),
// or nil to wait for an event only.
func (f *Feed) NextOr(ctx context.Context, wake <-chan time.Time) (e Event, ok bool, err error) {
	for {
		if err := f.poll(); err != nil {
			return Event{}, false, err
		}
		if len(f.backlog) > 0 {
			e, f.backlog = f.backlog[0], f.backlog[1:]
			f.after = e.Seq
			return e, true, nil
		}
		select {
		case <-ctx.Done():
			return Event{}, false, ctx.Err()
		case <-wake:
			return Event{}, false, nil
		case e, open := <-f.sub.ch:
			f.take(e, open)
		}
	}
}

// Ready reports whether Next would return without waiting (an event, or
// the error that ends the feed), so a consumer can act once per burst
// rather than once per event.
func (f *Feed) Ready() bool {
	return f.poll() != nil || len(f.backlog) > 0
}

// poll moves into the backlog what can be had without waiting: the journal
// while catching up, else what the subscription holds.
func (f *Feed) poll() error {
	for len(f.backlog) == 0 {
		if !f.caughtUp {
			page, err := f.st.Events(f.after, feedPage)
			if err != nil {
				if f.st.feedsClosed() {
					// The store closed under the catch-up read.
					return f.st.endErr()
				}
				return err
			}
			f.backlog, f.caughtUp = page, len(page) < feedPage
			continue
		}
		if f.sub == nil {
			return f.st.endErr()
		}
		select {
		case e, open := <-f.sub.ch:
			f.take(e, open)
		default:
			return nil
		}
	}
	return nil
}

// take handles one receive from the subscription while the backlog is
// empty.
func (f *Feed) take(e Event, open bool) {
	if !open {
		// Dropped for falling behind, or the store closed: follow again
		// (if it is open) and read what was missed from the journal.
		f.st.unsubscribe(f.sub)
		f.sub, _ = f.st.subscribe()
		f.caughtUp = false
		return
	}
	if e.Seq > f.after {
		f.backlog = append(f.backlog, e)
	}
}

// Drain takes every event that is ready, without waiting: a consumer that
// re-reads its index once per burst of events skips the rest of the burst.
func (f *Feed) Drain(ctx context.Context) error {
	for f.Ready() {
		if _, err := f.Next(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Loop is the life of a consumer that keeps an index in the store: step
// reads the index, does what is due and says how long until something is
// due again; Loop then waits for an event of one of kinds (any, when kinds
// is empty), for that time or for Wake, and calls step again, once per
// burst of events. It returns nil when ctx ends, else the error that ended
// the feed (ErrClosed once the store closed).
func (f *Feed) Loop(ctx context.Context, kinds []EventKind, step func() time.Duration) error {
	timer := time.AfterFunc(time.Hour, f.Wake)
	defer timer.Stop()
	for {
		timer.Reset(step())
		for {
			e, ok, err := f.NextOr(ctx, f.wake)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if !ok || e.Is(kinds...) {
				break
			}
		}
		_ = f.Drain(ctx) // an error shows on the next wait
	}
}

// Wake makes a Loop call its step now. It may be called from any
// goroutine (a worker that finished and is free again).
func (f *Feed) Wake() {
	select {
	case f.wake <- time.Time{}:
	default:
	}
}

// Is reports whether the event is of one of the kinds (any, when none are
// given).
func (e Event) Is(kinds ...EventKind) bool {
	if len(kinds) == 0 {
		return true
	}
	for _, k := range kinds {
		if e.Event == k {
			return true
		}
	}
	return false
}
