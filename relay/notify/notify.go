// Package notify decides what supporters are told, and when (SPEC 11):
// confirmation requests to the senders of letters held for confirmation,
// at most verify.confirm_per_hour of them, and receipts for newly counted
// verified letters. It writes each message, in campaign.language, and
// hands it to the store's queue of mail to supporters, which relay/deliver
// sends; it never talks SMTP itself. It follows the store's feed and reads
// the store's indexes (requests waiting, receipts owed, requests live), so
// a restart resumes where it stopped.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/petitiond/petitiond/oneline"
	"github.com/petitiond/petitiond/relay/batch"
	"github.com/petitiond/petitiond/relay/catalog"
	"github.com/petitiond/petitiond/store"
)

// Options say what the mail to supporters says and how much of it goes.
type Options struct {
	Campaign string // campaign.name
	From     string // campaign.from
	Language string // campaign.language
	Location *time.Location
	// TTL is verify.confirm_ttl: how long a request can be answered, and
	// the least time between two messages of one purpose to one address.
	TTL time.Duration
	// PerHour is verify.confirm_per_hour: requests leaving per hour, in
	// all.
	PerHour int
	// Receipts is [receipts] enabled.
	Receipts bool
	// Signer signs the messages as the batches are ([dkim]); nil leaves
	// them unsigned.
	Signer *batch.Signer
	Logger *slog.Logger
	// Now is the clock, the store's; nil means time.Now.
	Now func() time.Time
}

// Notifier writes the mail to supporters.
type Notifier struct {
	st       *store.Store
	cat      *catalog.Catalog
	campaign string
	from     string // campaign.from as a header writes it
	domain   string // campaign.from's domain, for Message-IDs
	ttl      time.Duration
	perHour  int
	receipts bool
	signer   *batch.Signer
	log      *slog.Logger
	now      func() time.Time
}

// New makes a Notifier; it fails for a language without a catalogue or an
// unusable From address.
func New(st *store.Store, opt Options) (*Notifier, error) {
	cat, err := catalog.New(opt.Language, opt.Location)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	from, err := mail.ParseAddress(opt.From)
	if err != nil {
		return nil, fmt.Errorf("notify: campaign.from %q: %w", opt.From, err)
	}
	n := &Notifier{st: st, cat: cat, campaign: oneline.Clean(opt.Campaign), from: from.String(),
		domain: strings.ToLower(from.Address[strings.LastIndexByte(from.Address, '@')+1:]),
		ttl:    opt.TTL, perHour: opt.PerHour, receipts: opt.Receipts, signer: opt.Signer, log: opt.Logger, now: opt.Now}
	if n.ttl <= 0 || n.perHour <= 0 {
		return nil, fmt.Errorf("notify: verify.confirm_ttl (%s) and verify.confirm_per_hour (%d) must be positive", n.ttl, n.perHour)
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	return n, nil
}

// idle is the longest the notifier sleeps with nothing due; retryAfterError
// is its wait after a store error.
const (
	idle            = time.Minute
	retryAfterError = 5 * time.Second
)

// Run writes the mail to supporters until ctx ends. It acts on what the
// store holds, then waits on its feed for a letter held or counted, a
// reply, or the end of a pause, or for the next request to expire or to
// have its turn. It returns an error only if it can no longer follow the
// store.
func (n *Notifier) Run(ctx context.Context) error {
	feed, err := n.st.FollowNew()
	if err != nil {
		return err
	}
	defer feed.Close()
	return feed.Loop(ctx, []store.EventKind{store.EventHeld, store.EventAccepted, store.EventConfirmed, store.EventResumed},
		func() time.Duration { return n.step(ctx) })
}

// step, unless paused, lets the waiting requests whose turn it is leave
// and makes the receipts owed, then ends the requests past their time
// (those just sent among them, for the time they expire); it says how long
// until something is due.
func (n *Notifier) step(ctx context.Context) time.Duration {
	wait := idle
	// Nothing is written to supporters while paused: resuming wakes the
	// notifier.
	if pause, err := n.st.Paused(); err == nil && !pause.Paused {
		wait = min(n.sendRequests(ctx), n.sendReceipts(ctx))
	}
	return min(wait, n.expire(ctx))
}

// expire ends every request whose time to answer is over.
func (n *Notifier) expire(ctx context.Context) time.Duration {
	for ctx.Err() == nil {
		now := n.now()
		ended, next, err := n.st.ExpireConfirmations(ctx, now)
		if err != nil {
			n.logError(ctx, "ending expired confirmation requests failed; will retry", err)
			return retryAfterError
		}
		if next.IsZero() {
			return idle
		}
		if ended == 0 || next.After(now) {
			return max(next.Sub(now), time.Millisecond)
		}
	}
	return idle
}

// sendRequests lets waiting requests leave, oldest first, as long as fewer
// than perHour left within the last hour, and says when the next may.
func (n *Notifier) sendRequests(ctx context.Context) time.Duration {
	for ctx.Err() == nil {
		now := n.now()
		sent, first, err := n.st.ConfirmsSentSince(now.Add(-time.Hour))
		if err != nil {
			n.logError(ctx, "reading the confirmation requests failed; will retry", err)
			return retryAfterError
		}
		room := n.perHour - sent
		waiting, err := n.st.ConfirmWaiting(max(room, 1))
		if err != nil {
			n.logError(ctx, "reading the confirmation requests failed; will retry", err)
			return retryAfterError
		}
		if len(waiting) == 0 {
			return idle
		}
		if room <= 0 {
			// The oldest request of the hour frees a place when it is an
			// hour old.
			return max(first.Add(time.Hour).Sub(now), time.Millisecond)
		}
		for _, r := range waiting {
			if err := n.sendRequest(ctx, r); err != nil {
				n.logError(ctx, "sending a confirmation request failed; will retry", err, "letter", r.Letter)
				return retryAfterError
			}
		}
	}
	return idle
}

// sendRequest makes r's token and message and has the store queue it.
func (n *Notifier) sendRequest(ctx context.Context, r store.ConfirmRequest) error {
	tok, err := NewToken()
	if err != nil {
		return err
	}
	now := n.now()
	received, inReplyTo := n.aboutLetter(r.Letter, r.Asked)
	data := catalog.Supporter{Campaign: n.campaign, Address: r.To, LetterID: r.Letter, Received: received,
		Expires: now.Add(n.ttl)}
	msg, err := n.message(mailSpec{purpose: "confirm", letter: r.Letter, to: r.To, replyTo: ConfirmAddress(r.Via, tok),
		inReplyTo: inReplyTo, date: now}, "supporter.confirm", data)
	if err != nil {
		// Made again it would fail again, and hold up every request
		// behind it: the letters wait for an admin instead.
		n.log.Warn("no confirmation request can be made for this letter; it is held as unconfirmed", "letter", r.Letter, "err", err)
		if err := n.st.EndConfirm(ctx, r.Letter, err.Error()); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	}
	out, err := n.st.SendConfirm(ctx, store.ConfirmSend{Letter: r.Letter, Token: tok, Message: msg, TTL: n.ttl})
	if errors.Is(err, store.ErrNotFound) {
		return nil // answered by an erasure meanwhile
	}
	if err != nil {
		return err
	}
	if out == store.ConfirmNothingHeld {
		n.log.Info("confirmation request not sent: an admin decided on the letters it was for", "letter", r.Letter)
	}
	return nil
}

// sendReceipts makes every receipt owed.
func (n *Notifier) sendReceipts(ctx context.Context) time.Duration {
	if !n.receipts {
		return idle
	}
	for ctx.Err() == nil {
		due, err := n.st.ReceiptsDue(100)
		if err != nil {
			n.logError(ctx, "reading the receipts owed failed; will retry", err)
			return retryAfterError
		}
		if len(due) == 0 {
			return idle
		}
		for _, d := range due {
			if err := n.sendReceipt(ctx, d); err != nil {
				n.logError(ctx, "sending a receipt failed; will retry", err, "letter", d.Letter)
				return retryAfterError
			}
		}
	}
	return idle
}

// sendReceipt makes the receipt of one newly counted letter and has the
// store queue it.
func (n *Notifier) sendReceipt(ctx context.Context, d store.ReceiptDue) error {
	var msg []byte
	l, err := n.st.Letter(d.Letter)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Gone: the store lets the receipt go with it.
	case err != nil:
		return err
	case !l.Erased:
		now := n.now()
		received, inReplyTo := n.aboutLetter(l.ID, l.Received)
		data := catalog.Supporter{Campaign: n.campaign, Address: l.From, LetterID: l.ID, Received: received, Count: d.Count}
		if msg, err = n.message(mailSpec{purpose: "receipt", letter: l.ID, to: l.From, inReplyTo: inReplyTo, date: now},
			"supporter.receipt", data); err != nil {
			// It would fail again: the letter goes without one.
			n.log.Warn("no receipt can be made for this letter", "letter", l.ID, "err", err)
		}
	}
	if _, err := n.st.QueueReceipt(ctx, store.ReceiptSend{Letter: d.Letter, Message: msg, Gap: n.ttl}); err != nil &&
		!errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// aboutLetter is when a letter arrived (received when it cannot be read)
// and its Message-ID, "" when it has none that can be repeated.
func (n *Notifier) aboutLetter(id string, received time.Time) (time.Time, string) {
	if l, err := n.st.Letter(id); err == nil {
		received = l.Received
	}
	body, err := n.st.Body(id)
	if err != nil {
		return received, ""
	}
	return received, messageID(body)
}

// message writes a message to a supporter with the catalogue's subject and
// body of key.
func (n *Notifier) message(m mailSpec, key string, data catalog.Supporter) ([]byte, error) {
	var err error
	if m.subject, err = n.cat.Text(key+".subject", data); err != nil {
		return nil, err
	}
	if m.body, err = n.cat.Text(key+".body", data); err != nil {
		return nil, err
	}
	return n.compose(m)
}

func (n *Notifier) logError(ctx context.Context, msg string, err error, args ...any) {
	if ctx.Err() != nil || errors.Is(err, store.ErrClosed) {
		return
	}
	n.log.Error(msg, append(args, "err", err)...)
}
