package batch

import (
	"context"
	"log/slog"
	"time"

	"github.com/petitiond/petitiond/store"
)

// Purger removes what the store keeps only for a while: letter bodies once
// their batch reached every recipient and store.retention has passed, the
// sender and IP of journal events older than that (forget.go), and held
// letters nobody decided on within store.held_retention; then it wipes the
// store file's free pages of them. It reads the store's purge index, held
// queue and journal, so a restart resumes it.
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

// Run purges until ctx ends. It reads the purge index and the held queue,
// then waits on the store's feed for a delivery (the last copy of a batch
// schedules its purge) or a held letter (it may be the next to expire), or
// for the next purge's time. It returns an error only if it can no longer
// follow the store.
func (p *Purger) Run(ctx context.Context) error {
	feed, err := p.store.FollowNew()
	if err != nil {
		return err
	}
	defer feed.Close()
	return feed.Loop(ctx, []store.EventKind{store.EventDelivered, store.EventHeld}, func() time.Duration {
		return min(p.purgeDue(ctx), p.forgetDue(ctx))
	})
}

func (p *Purger) purgeDue(ctx context.Context) time.Duration {
	const idle = time.Hour
	now := p.now()
	due, next, err := p.store.DuePurges(now)
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
	for {
		n, heldNext, err := p.store.ExpireHeld(ctx, now)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Error("purging expired held letters failed; will retry", "err", err)
			}
			return time.Minute
		}
		if n > 0 {
			p.log.Info("held letters purged after store.held_retention", "letters", n)
		}
		if heldNext.IsZero() || heldNext.After(now) {
			if !heldNext.IsZero() && (next.IsZero() || heldNext.Before(next)) {
				next = heldNext
			}
			break
		}
	}
	if next.IsZero() {
		return idle
	}
	return min(max(next.Sub(p.now()), time.Millisecond), idle)
}
