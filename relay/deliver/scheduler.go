package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/petitiond/petitiond/store"
)

// Policy is the retry policy (RFC 5321 4.5.4.1): the first retry after Min,
// doubling up to Max, and failed once GiveUpAfter has passed and the
// attempts that many retries make were made (MinAttempts).
type Policy struct {
	Min, Max, GiveUpAfter time.Duration
}

// Backoff is the wait after the n-th attempt (n >= 1), with ±10% jitter so
// copies deferred together do not retry in lockstep.
func (p Policy) Backoff(n int) time.Duration {
	d := p.wait(n)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

// wait is the wait after the n-th attempt before jitter.
func (p Policy) wait(n int) time.Duration {
	d := p.Min
	for i := 1; i < n && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// MinAttempts is how many attempts the policy makes before GiveUpAfter has
// passed, every wait at its longest (+10%): the attempt that first finds
// GiveUpAfter gone. A copy is never given up before it had them, so a
// clock that jumps forward cannot fail it early. On a steady clock they
// are there by then, unless the attempts themselves took long (a host
// that never answers): the give-up then comes later by about that time.
func (p Policy) MinAttempts() int {
	if p.Min <= 0 || p.Max <= 0 {
		return 1
	}
	longest := func(d time.Duration) time.Duration { return d + d/10 }
	n, at := 1, time.Duration(0) // attempt n starts at
	for at < p.GiveUpAfter {
		w := p.wait(n)
		if w >= p.Max {
			// Every wait from here is Max: count them at once.
			step := longest(w)
			return n + int((p.GiveUpAfter-at+step-1)/step)
		}
		at += longest(w)
		n++
	}
	return n
}

// Scheduler is the one delivery scheduler, for every message petitiond
// sends: batch copies and the mail to supporters. It reads due messages
// from the store's next-attempt indexes and hands them to a small worker
// pool, then waits on the store's feed for a closed batch, new mail to a
// supporter or an admin's requeue, or for the next message's time. Every
// attempt is recorded before dialing, so a crash cannot cause a retry
// storm and a restart resumes from the store.
type Scheduler struct {
	store       *store.Store
	transport   Transport
	supporters  Transport
	from        string
	policy      Policy
	minAttempts int // policy.MinAttempts()
	workers     int
	log         *slog.Logger
	now         func() time.Time
}

// mailID names a message to a supporter among the messages in flight.
type mailID uint64

// SchedulerOptions configure a Scheduler.
type SchedulerOptions struct {
	From string // envelope sender of batches: campaign.from, never a supporter
	// Supporters delivers the mail to supporters (SPEC 11), with the null
	// envelope sender; nil means the batches' transport.
	Supporters Transport
	Policy     Policy
	Workers    int // default 4
	Logger     *slog.Logger
	// Now is the clock every retry time and age is measured with; the
	// daemon passes one that system clock steps do not move (monoclock).
	Now func() time.Time
}

// NewScheduler makes a scheduler; zero options mean 4 workers, time.Now
// and no log.
func NewScheduler(st *store.Store, tr Transport, opt SchedulerOptions) *Scheduler {
	s := &Scheduler{store: st, transport: tr, supporters: opt.Supporters, from: opt.From, policy: opt.Policy,
		minAttempts: opt.Policy.MinAttempts(), workers: opt.Workers, log: opt.Logger, now: opt.Now}
	if s.supporters == nil {
		s.supporters = tr
	}
	if s.workers <= 0 {
		s.workers = 4
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Run delivers until ctx ends, then waits for the attempts in flight; those
// run under abort, which the caller cancels to abandon them (their copies
// stay queued for the next start). It returns an error only if it can no
// longer follow the store.
func (s *Scheduler) Run(ctx, abort context.Context) error {
	// Keys: a store.DeliveryRef (a batch copy) or a mailID.
	workers := NewDispatcher[any](s.workers)
	defer workers.Wait()
	feed, err := s.store.FollowNew()
	if err != nil {
		return err
	}
	defer feed.Close()
	// New messages in the queues: a batch closed, a copy too big for its
	// recipient went in parts, an admin put failed or deferred copies
	// back, a confirmation request or a receipt was queued, or the daemon
	// resumed after a pause.
	return feed.Loop(ctx, []store.EventKind{store.EventBatched, store.EventSplit, store.EventRequeued, store.EventResumed,
		store.EventConfirmSent, store.EventReceiptSent},
		func() time.Duration { return s.dispatch(abort, workers, feed.Wake) })
}

// dueJobs reads both queues: up to limit batch copies, then up to limit
// messages to supporters, and the time of the next one due after them.
func (s *Scheduler) dueJobs(limit int) ([]any, time.Time, error) {
	now := s.now()
	refs, next, err := s.store.Due(now, limit)
	if err != nil {
		return nil, time.Time{}, err
	}
	mails, nextMail, err := s.store.DueMail(now, limit)
	if err != nil {
		return nil, time.Time{}, err
	}
	jobs := make([]any, 0, len(refs)+len(mails))
	for _, ref := range refs {
		jobs = append(jobs, ref)
	}
	for _, id := range mails {
		jobs = append(jobs, mailID(id))
	}
	if next.IsZero() || (!nextMail.IsZero() && nextMail.Before(next)) {
		next = nextMail
	}
	return jobs, next, nil
}

// dispatch starts every due message a worker is free for and says how
// long to sleep until the next one; a worker calls free when it is free
// again.
func (s *Scheduler) dispatch(abort context.Context, workers *Dispatcher[any], free func()) time.Duration {
	const idle = time.Minute
	if pause, err := s.store.Paused(); err == nil && pause.Paused {
		// Nothing is sent while paused; resuming wakes the scheduler.
		s.log.Debug("delivery paused: nothing is sent until an admin resumes")
		return idle
	}
	due, next, err := s.dueJobs(2*s.workers + workers.Running())
	if err != nil {
		s.log.Error("reading the delivery queue failed", "err", err)
		return 5 * time.Second
	}
	run := func(key any) {
		switch k := key.(type) {
		case store.DeliveryRef:
			s.attempt(abort, k)
		case mailID:
			s.attemptMail(abort, uint64(k))
		}
	}
	if !workers.Start(due, run, free) {
		return idle // all workers busy: a finishing worker wakes us
	}
	if next.IsZero() {
		return idle
	}
	return min(max(next.Sub(s.now()), time.Millisecond), idle)
}

// retryAt is when a message whose attempts-th attempt starts now is tried
// again, should that attempt never report (a crash).
func (s *Scheduler) retryAt(attempts int) time.Time {
	return s.now().Add(s.policy.Backoff(attempts))
}

// attempt makes one delivery attempt of one copy (a whole batch's, or a
// part's).
func (s *Scheduler) attempt(ctx context.Context, ref store.DeliveryRef) {
	// Record the attempt before dialing (the retry time if we crash now).
	b, err := s.store.StartAttempt(ctx, ref, s.retryAt)
	if err != nil {
		if !errors.Is(err, store.ErrState) {
			s.log.Error("recording a delivery attempt failed", "batch", ref.Batch, "err", err)
		}
		return
	}
	c, err := b.Copy(ref)
	if err != nil {
		s.log.Error("reading a delivery attempt failed", "batch", ref.Batch, "err", err)
		return
	}
	msg, err := s.store.DeliveryMessage(ref)
	if err != nil {
		s.finish(ref, c, 0, Receipt{}, &Error{Permanent: true, Msg: "batch message missing: " + err.Error()})
		return
	}
	rc, err := s.transport.Deliver(ctx, s.from, c.Address, msg)
	if err != nil && ctx.Err() != nil {
		// Shutting down: leave the copy queued; it is retried at start.
		s.log.Info("delivery abandoned at shutdown; will retry", "batch", b.ID, "recipient", c.Address)
		return
	}
	s.finish(ref, c, int64(len(msg)), rc, err)
}

// finish records the attempt's outcome: the receipt of a delivery; a
// message too big for the recipient set aside to be split (or, with one
// letter, failed); a permanent failure; a temporary one deferred, or given
// up once give_up_after has passed and the attempts it implies were made.
// The store writes use a fresh context: the outcome must be recorded even
// while shutting down.
func (s *Scheduler) finish(ref store.DeliveryRef, c store.Copy, size int64, rc Receipt, err error) {
	ctx := context.Background()
	now := s.now()
	kind := failureKind(KindOf(err))
	var werr error
	switch {
	case err == nil:
		werr = s.store.MarkDelivered(ctx, ref, rc.String())
	case kind == store.FailureTooBig && len(c.LetterIDs) > 1:
		tb := store.TooBig{Size: size, Reason: err.Error()}
		var de *Error
		if errors.As(err, &de) {
			tb.Limit = de.SizeLimit
		}
		werr = s.store.SplitTooBig(ctx, ref, tb)
	case kind == store.FailureTooBig:
		werr = s.store.FailAs(ctx, ref, kind, fmt.Sprintf(
			"letter %s alone makes a message of %d bytes, larger than the recipient's server accepts: %v", strings.Join(c.LetterIDs, ""), size, err))
	case IsPermanent(err):
		werr = s.store.FailAs(ctx, ref, kind, err.Error())
	case s.givesUp(c.CopyState, now):
		werr = s.store.FailAs(ctx, ref, kind, s.gaveUp(c.Attempts, err))
	default:
		werr = s.store.DeferAs(ctx, ref, now.Add(s.policy.Backoff(c.Attempts)), kind, err.Error())
	}
	if werr != nil {
		s.log.Error("recording a delivery outcome failed; the copy will be retried", "batch", ref.Batch,
			"recipient", c.Address, "err", werr)
	}
}

// givesUp reports whether a temporary failure of the message in state c
// is the last: give_up_after has passed and the attempts it implies were
// made.
func (s *Scheduler) givesUp(c store.CopyState, now time.Time) bool {
	return c.Attempts >= s.minAttempts && now.Sub(c.Since) >= s.policy.GiveUpAfter
}

// gaveUp is the failure's reason when the scheduler gives up.
func (s *Scheduler) gaveUp(attempts int, err error) string {
	return fmt.Sprintf("gave up after %s and %d attempts: %v", s.policy.GiveUpAfter, attempts, err)
}

// attemptMail makes one delivery attempt of one message to a supporter,
// with the null envelope sender (RFC 3834: nothing bounces back to it).
func (s *Scheduler) attemptMail(ctx context.Context, id uint64) {
	m, err := s.store.StartMailAttempt(ctx, id, s.retryAt)
	if err != nil {
		if !errors.Is(err, store.ErrState) && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("recording a delivery attempt failed", "mail", id, "err", err)
		}
		return
	}
	msg, err := s.store.MailMessage(id)
	if err != nil {
		s.finishMail(m, Receipt{}, &Error{Permanent: true, Msg: "message missing: " + err.Error()})
		return
	}
	rc, err := s.supporters.Deliver(ctx, "", m.To, msg)
	if err != nil && ctx.Err() != nil {
		s.log.Info("delivery abandoned at shutdown; will retry", "mail", id, "letter", m.Letter)
		return
	}
	s.finishMail(m, rc, err)
}

// finishMail records the outcome of an attempt of a message to a
// supporter as finish does for a batch copy; one too big for the
// supporter's host fails like any permanent failure.
func (s *Scheduler) finishMail(m *store.OutMail, rc Receipt, err error) {
	ctx := context.Background()
	now := s.now()
	var werr error
	switch {
	case err == nil:
		werr = s.store.MailDelivered(ctx, m.ID, rc.String())
	case IsPermanent(err):
		werr = s.store.FailMail(ctx, m.ID, err.Error())
	case s.givesUp(m.CopyState, now):
		werr = s.store.FailMail(ctx, m.ID, s.gaveUp(m.Attempts, err))
	default:
		werr = s.store.DeferMail(ctx, m.ID, now.Add(s.policy.Backoff(m.Attempts)), err.Error())
	}
	if werr != nil {
		s.log.Error("recording a delivery outcome failed; the message will be retried", "mail", m.ID,
			"letter", m.Letter, "err", werr)
	}
}

// failureKind is the store's word for a Kind.
func failureKind(k Kind) store.FailureKind {
	switch k {
	case KindNo8BitMIME:
		return store.FailureNo8BitMIME
	case KindTooBig:
		return store.FailureTooBig
	}
	return store.FailureOther
}
