package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/petitiond/petitiond/store"
)

// Purger removes letter bodies once their batch reached every recipient and
// store.retention has passed. It reads the store's purge index, so a
// restart resumes it.
type Purger struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
}

// NewPurger makes a purger.
func NewPurger(st *store.Store, log *slog.Logger, now func() time.Time) *Purger {
	if now == nil {
		now = time.Now
	}
	return &Purger{store: st, log: log, now: now}
}

// Run purges until ctx ends. New purges are scheduled by deliveries, which
// it learns of from the store's event feed.
func (p *Purger) Run(ctx context.Context) {
	sub := p.store.Subscribe()
	defer func() { sub.Close() }()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(p.purgeDue(ctx))
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
				break wait
			case e, ok := <-sub.C:
				if !ok {
					sub = p.store.Subscribe()
					break wait
				}
				if e.Event == store.EventDelivered {
					break wait
				}
			}
		}
	}
}

func (p *Purger) purgeDue(ctx context.Context) time.Duration {
	const idle = time.Hour
	due, next, err := p.store.DuePurges(p.now())
	if err != nil {
		p.log.Error("reading the purge schedule failed", "err", err)
		return time.Minute
	}
	for _, id := range due {
		if err := p.store.Purge(ctx, id); err != nil {
			p.log.Error("purging a batch's letters failed; will retry", "batch", id, "err", err)
			return time.Minute
		}
	}
	if next.IsZero() {
		return idle
	}
	return min(max(next.Sub(p.now()), time.Millisecond), idle)
}
