package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/petitiond/petitiond/store"
)

// Purger removes letter bodies once their batch reached every recipient and
// store.retention has passed, and the sender and IP of journal events older
// than that (forget.go), then wipes the store file's free pages of them. It
// reads the store's purge index and journal, so a restart resumes it.
type Purger struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
}

// NewPurger makes a purger; now nil means time.Now, log nil discards.
func NewPurger(st *store.Store, log *slog.Logger, now func() time.Time) *Purger {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Purger{store: st, log: log, now: now}
}

// Run purges until ctx ends. It reads the purge index, then waits on the
// store's feed for a delivery (the last copy of a batch schedules its
// purge), or for the next purge's time. It returns an error only if it can
// no longer follow the store.
func (p *Purger) Run(ctx context.Context) error {
	feed, err := p.store.FollowNew()
	if err != nil {
		return err
	}
	defer feed.Close()
	return feed.Loop(ctx, []store.EventKind{store.EventDelivered}, func() time.Duration {
		return min(p.purgeDue(ctx), p.forgetDue(ctx))
	})
}

func (p *Purger) purgeDue(ctx context.Context) time.Duration {
	const idle = time.Hour
	due, next, err := p.store.DuePurges(p.now())
	if err != nil {
		p.log.Error("reading the purge schedule failed; will retry", "err", err)
		return time.Minute
	}
	for _, id := range due {
		if err := p.store.Purge(ctx, id); err != nil {
			if ctx.Err() == nil {
				p.log.Error("purging a batch's letters failed; will retry", "batch", id, "err", err)
			}
			return time.Minute
		}
	}
	if next.IsZero() {
		return idle
	}
	return min(max(next.Sub(p.now()), time.Millisecond), idle)
}
