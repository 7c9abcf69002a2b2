// Package forward is a secondary MX's one job (SPEC 12): it sends the
// letters the SMTP front end stored ("S…" IDs) to the primary over SMTP,
// unchanged, through relay/deliver, and has the store delete each once the
// primary answered 250. It counts nothing and batches nothing: the primary
// does, once, whatever reached it (a letter sent again after a crash is a
// duplicate there).
//
// Like the delivery scheduler it is one loop driven by an index in the
// store (the letters' next attempts), with a few workers; every attempt is
// recorded before dialing, so a crash cannot cause a retry storm and a
// restart resumes from the store.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/petitiond/petitiond/relay/deliver"
	"github.com/petitiond/petitiond/store"
)

// Options configure a Forwarder.
type Options struct {
	// Policy is the retry policy of [delivery]: retry_min doubling up to
	// retry_max, held for an admin after give_up_after.
	Policy deliver.Policy
	// Workers is how many letters go to the primary at once; 0 means 4.
	Workers int
	Logger  *slog.Logger
	// Now is the clock of every retry time; nil means time.Now.
	Now func() time.Time
}

// Forwarder forwards a secondary's letters to its primary.
type Forwarder struct {
	store       *store.Store
	transport   deliver.Transport
	policy      deliver.Policy
	minAttempts int
	workers     int
	log         *slog.Logger
	now         func() time.Time
}

// New makes a forwarder that sends through tr (an SMTP transport whose
// smarthost is [secondary] primary).
func New(st *store.Store, tr deliver.Transport, opt Options) *Forwarder {
	f := &Forwarder{store: st, transport: tr, policy: opt.Policy, minAttempts: opt.Policy.MinAttempts(),
		workers: opt.Workers, log: opt.Logger, now: opt.Now}
	if f.workers <= 0 {
		f.workers = 4
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	return f
}

// idle is how long the loop sleeps with nothing due: a new letter, a
// release or a resume wakes it before.
const idle = time.Minute

// Run forwards until ctx ends, then waits for the attempts in flight;
// those run under abort, which the caller cancels to abandon them (their
// letters stay queued for the next start). It returns an error only if it
// can no longer follow the store.
func (f *Forwarder) Run(ctx, abort context.Context) error {
	workers := deliver.NewDispatcher[string](f.workers)
	defer workers.Wait()
	feed, err := f.store.FollowNew()
	if err != nil {
		return err
	}
	defer feed.Close()
	// Letters queued (stored, or released by an admin), or the daemon
	// resumed after a pause.
	return feed.Loop(ctx, []store.EventKind{store.EventQueued, store.EventResumed},
		func() time.Duration { return f.dispatch(abort, workers, feed.Wake) })
}

// dispatch starts every due letter a worker is free for and says how long
// to sleep until the next one; a worker calls free when it is free again.
func (f *Forwarder) dispatch(abort context.Context, workers *deliver.Dispatcher[string], free func()) time.Duration {
	if pause, err := f.store.Paused(); err == nil && pause.Paused {
		return idle // nothing is sent while paused; resuming wakes the loop
	}
	due, next, err := f.store.DueForwards(f.now(), 2*f.workers+workers.Running())
	if err != nil {
		f.log.Error("reading the forwarding queue failed", "err", err)
		return 5 * time.Second
	}
	if !workers.Start(due, func(id string) { f.attempt(abort, id) }, free) {
		return idle // every worker busy: a finishing one wakes the loop
	}
	if next.IsZero() {
		return idle
	}
	return min(max(next.Sub(f.now()), time.Millisecond), idle)
}

// attempt sends one letter to the primary once.
func (f *Forwarder) attempt(ctx context.Context, id string) {
	// Record the attempt before dialing: the retry time if we crash now.
	l, err := f.store.StartForward(ctx, id, func(attempts int) time.Time {
		return f.now().Add(f.policy.Backoff(attempts))
	})
	if err != nil {
		if !errors.Is(err, store.ErrState) && !errors.Is(err, store.ErrNotFound) {
			f.log.Error("recording a forwarding attempt failed", "letter", id, "err", err)
		}
		return
	}
	body, err := f.store.Body(id)
	if err != nil {
		f.log.Error("reading a letter to forward failed", "letter", id, "err", err)
		return
	}
	rc, err := f.transport.Deliver(ctx, l.Forward.MailFrom, l.Forward.Rcpt, body)
	if err != nil && ctx.Err() != nil {
		f.log.Info("forwarding abandoned at shutdown; will retry", "letter", id)
		return
	}
	f.finish(l, rc, err)
}

// finish records an attempt's outcome with a fresh context, so that it is
// recorded even while shutting down: the primary's 250 deletes the letter;
// its 5xx holds it for an admin; any other failure is retried, and held
// once give_up_after has passed with the attempts it implies.
func (f *Forwarder) finish(l *store.Letter, rc deliver.Receipt, err error) {
	ctx := context.Background()
	fw := l.Forward
	var werr error
	switch {
	case err == nil:
		werr = f.store.Forwarded(ctx, l.ID, rc.String())
	case deliver.IsPermanent(err):
		werr = f.store.FailForward(ctx, l.ID, "the primary refused it: "+err.Error())
	case fw.Attempts >= f.minAttempts && f.now().Sub(fw.Since) >= f.policy.GiveUpAfter:
		werr = f.store.FailForward(ctx, l.ID, fmt.Sprintf("gave up after %s and %d attempts: %v",
			f.policy.GiveUpAfter, fw.Attempts, err))
	default:
		werr = f.store.DeferForward(ctx, l.ID, f.now().Add(f.policy.Backoff(fw.Attempts)), err.Error())
	}
	if werr != nil {
		f.log.Error("recording a forwarding outcome failed; the letter will be sent again", "letter", l.ID, "err", werr)
	}
}
