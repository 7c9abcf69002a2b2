package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/petitiond/petitiond/store"
)

// CloserConfig says when a batch closes and what goes on its envelope.
type CloserConfig struct {
	MaxLetters   int
	MaxWait      time.Duration
	CampaignName string
	From         string
	Recipients   []string
	Signer       *Signer // nil: unsigned
}

// Closer is the one scheduler that closes batches (SPEC 7): when
// max_letters counted letters wait, or the longest-waiting one has waited
// max_wait since it became pending, at most one batch per max_wait for the
// time rule alone. It reads the pending queue from the store, so a restart
// resumes where it was.
//
// Closing is two-phase, so the store's writer never waits for a message to
// be built: a snapshot of the oldest pending letters (store.NextBatch), the
// message built and signed here, then one commit (store.CloseBatch) that
// holds only if the snapshot still does. A letter the builder cannot take
// is held as unbatchable instead of blocking every later batch.
type Closer struct {
	cfg   CloserConfig
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
	// build makes the message of a batch; Build, except in tests that
	// need a builder that fails on a given letter.
	build func(Spec) ([]byte, error)
}

// NewCloser makes a closer; now nil means time.Now, log nil discards.
func NewCloser(cfg CloserConfig, st *store.Store, log *slog.Logger, now func() time.Time) *Closer {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Closer{cfg: cfg, store: st, log: log, now: now, build: Build}
}

// retryAfterError is how long the closer waits after a store or build
// error before it tries again.
const retryAfterError = 5 * time.Second

// Run closes batches until ctx ends. It reads the pending queue, then waits
// on the store's feed for a letter that joins the queue, or for the time the
// oldest one is due. It returns an error only if it can no longer follow the
// store.
func (c *Closer) Run(ctx context.Context) error {
	feed, err := c.store.FollowNew()
	if err != nil {
		return err
	}
	defer feed.Close()
	return feed.Loop(ctx, []store.EventKind{store.EventAccepted, store.EventReleased, store.EventResumed},
		func() time.Duration { return c.closeDue(ctx) })
}

// closeDue closes every batch that is due and says how long to sleep.
func (c *Closer) closeDue(ctx context.Context) time.Duration {
	const idle = time.Minute
	for ctx.Err() == nil {
		if pause, err := c.store.Paused(); err == nil && pause.Paused {
			return idle // no batch closes while paused; resuming wakes the closer
		}
		p, err := c.store.Pending()
		if err != nil {
			c.log.Error("reading the pending queue failed; will retry", "err", err)
			return retryAfterError
		}
		rule, wait := closeRule(p, c.now(), c.cfg.MaxLetters, c.cfg.MaxWait)
		if rule == "" {
			return min(max(wait, time.Millisecond), idle)
		}
		if err := c.closeOne(ctx, rule); err != nil {
			if ctx.Err() == nil {
				c.log.Error("closing a batch failed; will retry", "err", err)
			}
			return retryAfterError
		}
	}
	return idle
}

// closeRule applies SPEC 7 to what waits: the rule a batch closes by now,
// or "" and how long until one is due (an hour when nothing waits: a new
// letter wakes the closer anyway).
func closeRule(p store.PendingState, now time.Time, maxLetters int, maxWait time.Duration) (store.CloseRule, time.Duration) {
	if p.Letters == 0 {
		return "", time.Hour
	}
	if p.Letters >= maxLetters {
		return store.CloseFull, 0
	}
	due := p.Oldest.Add(maxWait)
	// One batch per max_wait for the time rule: count from the last one
	// (unless the clock was set back past it).
	if last := p.LastWaitClose; !last.IsZero() && !last.After(now) && last.Add(maxWait).After(due) {
		due = last.Add(maxWait)
	}
	if wait := due.Sub(now); wait > 0 {
		return "", wait
	}
	return store.CloseWait, 0
}

// maxConflicts bounds how often one close is rebuilt because the pending
// queue changed under it; after that it waits like any other error.
const maxConflicts = 3

// closeOne closes the next batch: snapshot, build and sign, commit.
func (c *Closer) closeOne(ctx context.Context, rule store.CloseRule) error {
	for conflicts := 0; ; {
		pb, err := c.store.NextBatch(c.cfg.MaxLetters)
		if err != nil || pb == nil {
			return err
		}
		created := c.now().UTC()
		spec := c.spec(pb, created)
		msg, err := c.buildSigned(spec)
		if err != nil {
			held, herr := c.holdUnbatchable(ctx, spec)
			if herr != nil {
				return herr
			}
			if held == 0 {
				return err
			}
			continue // build what is left
		}
		nb := store.NewBatch{Number: pb.Number, RunningTotal: pb.RunningTotal, Created: created,
			MessageID: spec.MessageID, Message: msg, Recipients: c.cfg.Recipients, Rule: rule}
		for _, l := range pb.Letters {
			nb.LetterIDs = append(nb.LetterIDs, l.ID)
		}
		_, err = c.store.CloseBatch(ctx, nb)
		if errors.Is(err, store.ErrConflict) && conflicts < maxConflicts {
			conflicts++
			c.log.Debug("the pending queue changed while a batch was built; building it again", "batch", pb.Number, "err", err)
			continue
		}
		return err
	}
}

// spec is the builder's input for a snapshot.
func (c *Closer) spec(pb *store.PendingBatch, created time.Time) Spec {
	spec := Spec{
		Number: pb.Number, CampaignName: c.cfg.CampaignName, From: c.cfg.From, Recipients: c.cfg.Recipients,
		MessageID: NewMessageID(pb.Number, c.cfg.From, created), Date: created, RunningTotal: pb.RunningTotal,
	}
	for _, l := range pb.Letters {
		bl := Letter{ID: l.ID, Received: l.Received, Name: l.Name, Address: l.From, Raw: l.Body,
			Verified: string(l.Verdict.Kind)}
		switch l.Verdict.Kind {
		case store.VerdictDKIM:
			bl.DKIMDomain = l.Verdict.Domain
		case store.VerdictSPF:
			bl.SPFDomain = l.Verdict.Domain
		}
		spec.Letters = append(spec.Letters, bl)
	}
	return spec
}

// buildSigned builds the message and signs it when [dkim] is set.
func (c *Closer) buildSigned(spec Spec) ([]byte, error) {
	msg, err := c.safeBuild(spec)
	if err != nil {
		return nil, err
	}
	if c.cfg.Signer != nil {
		if msg, err = c.cfg.Signer.Sign(msg); err != nil {
			return nil, fmt.Errorf("sign batch %d: %w", spec.Number, err)
		}
	}
	return msg, nil
}

// safeBuild runs the builder, turning a panic (a hostile letter the parser
// chokes on) into an error, so one letter cannot stop the daemon.
func (c *Closer) safeBuild(spec Spec) (msg []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("batch %d: builder panicked: %v", spec.Number, r)
		}
	}()
	return c.build(spec)
}

// holdUnbatchable finds the letters the builder fails on, each built alone
// in a batch of its own, and holds them as unbatchable; it returns how
// many. When a batch of a plain control letter fails too, the fault is not
// in the letters (the campaign's From, say), and none is held.
func (c *Closer) holdUnbatchable(ctx context.Context, spec Spec) (int, error) {
	alone := func(l Letter) error {
		one := spec
		one.Letters, one.RunningTotal = []Letter{l}, 1
		_, err := c.safeBuild(one)
		return err
	}
	control := Letter{ID: "L00000000", Received: spec.Date, Address: spec.From,
		Raw: []byte("From: <" + spec.From + ">\r\nSubject: control\r\n\r\ncontrol\r\n")}
	if err := alone(control); err != nil {
		return 0, nil
	}
	held := 0
	for _, l := range spec.Letters {
		err := alone(l)
		if err == nil {
			continue
		}
		if herr := c.store.HoldUnbatchable(ctx, l.ID, err.Error()); herr != nil {
			return held, herr
		}
		c.log.Warn("letter held: the batch builder cannot take it", "letter", l.ID, "batch", spec.Number, "err", err)
		held++
	}
	return held, nil
}
