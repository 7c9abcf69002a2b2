package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/petitiond/petitiond/store"
)

// A recipient's server may refuse a batch as too big (a 552, or a SIZE
// smaller than the message). The delivery scheduler then sets the copy
// aside (store.SplitTooBig) rather than fail it, and the closer, the one
// part that builds messages, puts its letters in smaller ones here: each a
// whole batch message for that recipient alone, with its own Message-ID
// and "part N of M" in its subject and summary, recorded as the copy's
// parts (store.AddParts) for the scheduler to deliver.

// splitDue builds the parts of every copy waiting to be split; one that
// fails does not hold up the others.
func (c *Closer) splitDue(ctx context.Context) error {
	refs, err := c.store.SplitsDue()
	if err != nil {
		return err
	}
	var errs []error
	for _, ref := range refs {
		if ctx.Err() != nil {
			break
		}
		errs = append(errs, c.splitOne(ctx, ref))
	}
	return errors.Join(errs...)
}

// splitOne puts the letters of one copy in parts: as many letters as fit
// in each, in batch order, every letter in exactly one part.
func (c *Closer) splitOne(ctx context.Context, ref store.DeliveryRef) error {
	sc, err := c.store.SplitSnapshot(ref)
	if errors.Is(err, store.ErrState) {
		return nil // no longer waits: split meanwhile
	}
	if err != nil {
		return err
	}
	if len(sc.Missing) > 0 {
		c.log.Warn("letters removed from the store cannot go in the parts of a copy", "batch", ref.Batch,
			"recipient", sc.Address, "letters", sc.Missing)
	}
	letters := make([]Letter, len(sc.Letters))
	for i, l := range sc.Letters {
		letters[i] = letterOf(l)
	}
	created := c.now().UTC()
	target := partTarget(sc.TooBig)
	// Plan the parts, numbered as if each letter took one: the real count
	// is no larger, so its digits, and the messages, are no longer.
	var groups [][]Letter
	for rest := letters; len(rest) > 0; {
		first := len(letters) - len(rest)
		n, _, err := largestFit(rest, target, func(ls []Letter) ([]byte, error) {
			return c.buildSigned(c.partSpec(sc, ls, first, sc.NextPart+len(groups), sc.NextPart-1+len(letters), created))
		})
		if err != nil {
			return fmt.Errorf("batch %d to %s: plan parts: %w", ref.Batch, sc.Address, err)
		}
		groups = append(groups, rest[:n])
		rest = rest[n:]
	}
	parts := make([]store.NewPart, 0, len(groups))
	of, first := sc.NextPart-1+len(groups), 0
	for i, g := range groups {
		spec := c.partSpec(sc, g, first, sc.NextPart+i, of, created)
		msg, err := c.buildSigned(spec)
		if err != nil {
			return fmt.Errorf("batch %d to %s: build part %d: %w", ref.Batch, sc.Address, spec.Part.N, err)
		}
		np := store.NewPart{N: spec.Part.N, Of: of, MessageID: spec.MessageID, Message: msg}
		for _, l := range g {
			np.LetterIDs = append(np.LetterIDs, l.ID)
		}
		parts = append(parts, np)
		first += len(g)
	}
	err = c.store.AddParts(ctx, ref, parts)
	if errors.Is(err, store.ErrConflict) {
		return nil // the copy changed meanwhile: read again when it next wakes us
	}
	if err != nil {
		return err
	}
	c.log.Info("a copy too big for its recipient goes in smaller messages", "batch", ref.Batch,
		"recipient", sc.Address, "letters", len(letters), "parts", len(parts), "max_bytes", target)
	return nil
}

// partSpec is the builder's input for one part made at created: letters,
// from place first among those of the copy, as part n of of.
func (c *Closer) partSpec(sc *store.SplitCopy, letters []Letter, first, n, of int, created time.Time) Spec {
	return Spec{
		Number: sc.Ref.Batch, CampaignName: c.cfg.CampaignName, From: c.cfg.From,
		Recipients: []string{sc.Address},
		MessageID:  NewPartMessageID(sc.Ref.Batch, sc.Ref.Index, n, c.cfg.From, created),
		Date:       created, RunningTotal: sc.RunningTotal, Letters: letters,
		Language: c.cfg.Language, Location: c.cfg.Location,
		Part: &Part{N: n, Of: of, First: sc.First + first, BatchLetters: sc.BatchLetters},
	}
}

// partTarget is the size parts are built to: a little under the server's
// SIZE when the refused message was over it (room for the headers the
// receiving server adds), else half the refused size: the server named no
// limit, or refused a message within the one it named.
func partTarget(tb store.TooBig) int64 {
	if tb.Limit > 0 && tb.Size > tb.Limit {
		return tb.Limit - tb.Limit/100 - 1
	}
	return tb.Size / 2
}
