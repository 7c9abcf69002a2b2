package admin

import (
	"context"
	"time"

	"github.com/petitiond/petitiond/store"
)

// feedPage is how many journal events one catch-up read takes.
const feedPage = 1000

// feed yields the journal's events after a sequence number, in order, with
// no gap and no repeat. It subscribes before it reads the journal, so an
// event committed meanwhile is in one or both (and repeats are skipped by
// sequence number); when the store drops a subscriber that fell behind, the
// feed subscribes again and catches up from the journal.
type feed struct {
	st       *store.Store
	after    uint64
	sub      *store.Subscription
	backlog  []store.Event
	caughtUp bool
}

func newFeed(st *store.Store, after uint64) *feed {
	return &feed{st: st, after: after, sub: st.Subscribe()}
}

func (f *feed) close() { f.sub.Close() }

// next waits for the next event. It returns ok=false (and no error) when
// tick fires first, so a caller can do periodic work such as a heartbeat;
// tick may be nil.
func (f *feed) next(ctx context.Context, tick <-chan time.Time) (e store.Event, ok bool, err error) {
	for {
		if len(f.backlog) == 0 && !f.caughtUp {
			page, err := f.st.Events(f.after, feedPage)
			if err != nil {
				return store.Event{}, false, err
			}
			f.backlog = page
			f.caughtUp = len(page) < feedPage
		}
		if len(f.backlog) > 0 {
			e, f.backlog = f.backlog[0], f.backlog[1:]
			f.after = e.Seq
			return e, true, nil
		}
		select {
		case <-ctx.Done():
			return store.Event{}, false, ctx.Err()
		case <-tick:
			return store.Event{}, false, nil
		case e, open := <-f.sub.C:
			if !open {
				// Dropped for falling behind (or the store closed): follow
				// again and read what was missed from the journal.
				f.sub.Close()
				f.sub = f.st.Subscribe()
				f.caughtUp = false
				continue
			}
			if e.Seq <= f.after {
				continue
			}
			f.after = e.Seq
			return e, true, nil
		}
	}
}

// ready reports whether next would return an event without waiting, so a
// writer can flush once per burst rather than once per event.
func (f *feed) ready() bool {
	return len(f.backlog) > 0 || !f.caughtUp || len(f.sub.C) > 0
}
