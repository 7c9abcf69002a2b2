package batch

import (
	"context"
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

// Closer is the one scheduler that closes batches: when max_letters counted
// letters wait, or the oldest has waited max_wait. It reads the pending
// queue from the store, so a restart resumes where it was.
type Closer struct {
	cfg     CloserConfig
	store   *store.Store
	log     *slog.Logger
	now     func() time.Time
	onBatch func(*store.Batch)
}

// NewCloser makes a closer; onBatch (may be nil) hears of each new batch.
func NewCloser(cfg CloserConfig, st *store.Store, log *slog.Logger, now func() time.Time, onBatch func(*store.Batch)) *Closer {
	if now == nil {
		now = time.Now
	}
	if onBatch == nil {
		onBatch = func(*store.Batch) {}
	}
	return &Closer{cfg: cfg, store: st, log: log, now: now, onBatch: onBatch}
}

// Run closes batches until ctx ends. It wakes on every newly counted letter
// (through the store's event feed) and on the max_wait timer.
func (c *Closer) Run(ctx context.Context) {
	sub := c.store.Subscribe()
	defer func() { sub.Close() }()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := c.closeDue(ctx)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case _, ok := <-sub.C:
			if !ok {
				// Fell behind the feed: follow again; the store is the
				// truth, so nothing is lost.
				sub = c.store.Subscribe()
			}
		drain:
			for {
				select {
				case _, ok := <-sub.C:
					if !ok {
						break drain
					}
				default:
					break drain
				}
			}
		}
	}
}

// closeDue closes every batch that is due and says how long to sleep.
func (c *Closer) closeDue(ctx context.Context) time.Duration {
	const idle = time.Minute
	for ctx.Err() == nil {
		n, oldest, err := c.store.Pending()
		if err != nil {
			c.log.Error("reading the pending queue failed", "err", err)
			return 5 * time.Second
		}
		if n == 0 {
			return idle
		}
		age := c.now().Sub(oldest)
		if n < c.cfg.MaxLetters && age < c.cfg.MaxWait {
			return min(c.cfg.MaxWait-age, idle)
		}
		b, err := c.store.CloseBatch(ctx, c.cfg.MaxLetters, c.cfg.Recipients, c.build)
		if err != nil {
			c.log.Error("closing a batch failed; will retry", "err", err)
			return 5 * time.Second
		}
		if b == nil {
			return idle
		}
		c.onBatch(b)
	}
	return idle
}

// build makes the batch message; it runs inside the closing transaction.
func (c *Closer) build(bc store.BatchContent) (string, []byte, error) {
	msgID := NewMessageID(bc.Number, c.cfg.From, bc.Created)
	spec := Spec{
		Number: bc.Number, CampaignName: c.cfg.CampaignName, From: c.cfg.From, Recipients: c.cfg.Recipients,
		MessageID: msgID, Date: bc.Created, RunningTotal: bc.RunningTotal,
	}
	for _, l := range bc.Letters {
		bl := Letter{ID: l.ID, Received: l.Received, Name: l.Name, Address: l.From, Raw: l.Body}
		if l.Verdict.Pass {
			bl.DKIMDomain = l.Verdict.Domain
		}
		spec.Letters = append(spec.Letters, bl)
	}
	msg, err := Build(spec)
	if err != nil {
		return "", nil, err
	}
	if c.cfg.Signer != nil {
		if msg, err = c.cfg.Signer.Sign(msg); err != nil {
			return "", nil, fmt.Errorf("sign batch %d: %w", bc.Number, err)
		}
	}
	return msgID, msg, nil
}
