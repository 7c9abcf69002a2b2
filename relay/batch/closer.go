package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/petitiond/petitiond/store"
)

// CloserConfig says when a batch closes, what goes on its envelope and
// how its message reads.
type CloserConfig struct {
	MaxLetters int
	MaxWait    time.Duration
	// MaxBytes bounds a batch's message (batch.max_bytes); 0 means no
	// bound.
	MaxBytes     int64
	CampaignName string
	From         string
	Recipients   []string
	Signer       *Signer // nil: unsigned
	// Language and Location are campaign.language and campaign.timezone:
	// the words and the times of the subject and the summary.
	Language string
	Location *time.Location
}

// Closer is the one scheduler that closes batches (SPEC 7): when
// max_letters counted letters wait, or the longest-waiting one has waited
// max_wait since it became pending, at most one batch per max_wait for the
// time rule alone, or before the message would grow past max_bytes. It
// reads the pending queue from the store, so a restart resumes where it
// was.
//
// Closing is two-phase, so the store's writer never waits for a message to
// be built: a snapshot of the oldest pending letters (store.NextBatch), the
// message built and signed here, then one commit (store.CloseBatch) that
// holds only if the snapshot still does. A letter the builder cannot take
// is held as unbatchable instead of blocking every later batch.
//
// The closer also builds the parts of a recipient's copy that its server
// refused as too big (store.SplitTooBig): smaller batch messages for that
// recipient alone, each with its own Message-ID and "part N of M".
type Closer struct {
	cfg   CloserConfig
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
	// build makes the message of a batch; Build, paced, except in tests that
	// need a builder that fails on a given letter.
	build func(Spec) ([]byte, error)
	// scratch is the working space of every build: one at a time, on the
	// closer's goroutine.
	scratch scratch
}

// NewCloser makes a closer; now nil means time.Now, log nil discards.
func NewCloser(cfg CloserConfig, st *store.Store, log *slog.Logger, now func() time.Time) *Closer {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Closer{cfg: cfg, store: st, log: log, now: now}
	c.build = func(s Spec) ([]byte, error) { return buildPaced(s, &c.scratch) }
	return c
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
	// A letter joins the queue (accepted, released, confirmed), a copy is
	// set aside to be split (deferred), or an admin ends a pause (resumed).
	return feed.Loop(ctx, []store.EventKind{store.EventAccepted, store.EventReleased, store.EventConfirmed, store.EventDeferred, store.EventResumed},
		func() time.Duration { return c.closeDue(ctx) })
}

// closeDue closes every batch that is due, splits every copy waiting for
// it, and says how long to sleep. Neither waits for the other to succeed.
func (c *Closer) closeDue(ctx context.Context) time.Duration {
	wait := c.closeBatches(ctx)
	if err := c.splitDue(ctx); err != nil {
		if ctx.Err() == nil {
			c.log.Error("putting a copy too big for its recipient in parts failed; will retry", "err", err)
		}
		wait = min(wait, retryAfterError)
	}
	return wait
}

// closeBatches closes every batch that is due and says how long until the
// next one is.
func (c *Closer) closeBatches(ctx context.Context) time.Duration {
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
		if rule == "" && c.cfg.MaxBytes > 0 && p.Letters > 1 {
			over, err := c.store.PendingOver(c.cfg.MaxLetters, c.cfg.MaxBytes)
			if err != nil {
				c.log.Error("reading the pending queue failed; will retry", "err", err)
				return retryAfterError
			}
			if over {
				rule = store.CloseSize
			}
		}
		if rule == "" {
			return min(max(wait, time.Millisecond), idle)
		}
		if err := c.closeOne(ctx, rule, p.Letters); err != nil {
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

// closeOne closes the next batch: snapshot, build and sign, commit. A
// batch that takes fewer letters than wait (up to max_letters) because
// more would not fit in max_bytes closes by the size rule, whatever woke
// the closer: the letters left wait for the next batch, not for another
// max_wait.
func (c *Closer) closeOne(ctx context.Context, rule store.CloseRule, pending int) error {
	for conflicts := 0; ; {
		pb, err := c.store.NextBatchWithin(c.cfg.MaxLetters, c.cfg.MaxBytes)
		if err != nil || pb == nil {
			return err
		}
		created := c.now().UTC()
		spec := c.spec(pb, created)
		n, msg, err := c.fit(spec)
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
		nb := store.NewBatch{Number: pb.Number, RunningTotal: pb.RunningTotal - uint64(len(pb.Letters)-n), Created: created,
			MessageID: spec.MessageID, Message: msg, Recipients: c.cfg.Recipients, Rule: rule}
		if n < min(pending, c.cfg.MaxLetters) {
			nb.Rule = store.CloseSize
		}
		if c.cfg.MaxBytes > 0 && int64(len(msg)) > c.cfg.MaxBytes {
			c.log.Warn("a letter alone makes a batch message over batch.max_bytes; it goes alone",
				"batch", pb.Number, "letter", pb.Letters[0].ID, "bytes", len(msg), "max_bytes", c.cfg.MaxBytes)
		}
		for _, l := range pb.Letters[:n] {
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

// fit builds and signs the message of as many of spec's letters as fit in
// max_bytes, from the oldest, and says how many that is.
func (c *Closer) fit(spec Spec) (int, []byte, error) {
	if c.cfg.MaxBytes <= 0 {
		msg, err := c.buildSigned(spec)
		return len(spec.Letters), msg, err
	}
	total := spec.RunningTotal
	return largestFit(spec.Letters, c.cfg.MaxBytes, func(letters []Letter) ([]byte, error) {
		s := spec
		s.Letters, s.RunningTotal = letters, total-uint64(len(spec.Letters)-len(letters))
		return c.buildSigned(s)
	})
}

// largestFit returns how many of letters, from the first, make a message
// (built by build) of at most limit bytes, and that message. A message
// carries each letter whole, so letters whose own bytes pass the limit are
// never tried; the rest is a binary search, the message's size growing
// with every letter. When even the first letter alone is over the limit,
// it returns 1 and that message: a letter is never left behind for its
// size (smtp.max_message_bytes bounds it).
func largestFit(letters []Letter, limit int64, build func([]Letter) ([]byte, error)) (int, []byte, error) {
	hi := 1
	for raw := int64(len(letters[0].Raw)); hi < len(letters); hi++ {
		if raw += int64(len(letters[hi].Raw)); raw > limit {
			break
		}
	}
	msg, err := build(letters[:hi])
	if err != nil || int64(len(msg)) <= limit || hi == 1 {
		return hi, msg, err
	}
	// letters[:fits] fit (none known yet), letters[:over] do not.
	fits, over := 0, hi
	var fitMsg, oneMsg []byte
	for over-fits > 1 {
		mid := (fits + over) / 2
		m, err := build(letters[:mid])
		if err != nil {
			return 0, nil, err
		}
		if int64(len(m)) <= limit {
			fits, fitMsg = mid, m
		} else {
			over = mid
			if mid == 1 {
				oneMsg = m
			}
		}
	}
	if fits == 0 {
		return 1, oneMsg, nil
	}
	return fits, fitMsg, nil
}

// spec is the builder's input for a snapshot.
func (c *Closer) spec(pb *store.PendingBatch, created time.Time) Spec {
	spec := Spec{
		Number: pb.Number, CampaignName: c.cfg.CampaignName, From: c.cfg.From, Recipients: c.cfg.Recipients,
		MessageID: NewMessageID(pb.Number, c.cfg.From, created), Date: created, RunningTotal: pb.RunningTotal,
		Language: c.cfg.Language, Location: c.cfg.Location,
	}
	for _, l := range pb.Letters {
		spec.Letters = append(spec.Letters, letterOf(l))
	}
	return spec
}

// letterOf is a stored letter as the builder takes it.
func letterOf(l store.BatchLetter) Letter { return LetterOf(&l.Letter, l.Body) }

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
