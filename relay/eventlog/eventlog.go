// Package eventlog writes the daemon's log line for every store event (SPEC
// 8). It follows the store's feed like any other consumer, so a slow or
// blocked log (a full pipe on stderr) never delays a letter's 250: the
// store drops a follower that falls behind, and this one catches up from
// the journal.
package eventlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/petitiond/petitiond/store"
)

// Level is how loudly an event is logged: what an admin must act on is
// louder (SPEC 8), so that journalctl -p warning shows it.
func Level(k store.EventKind) slog.Level {
	switch k {
	case store.EventFailed:
		return slog.LevelError
	case store.EventRejected, store.EventDeferred:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// messages say in an admin's words what each event means.
var messages = map[store.EventKind]string{
	store.EventAccepted:    "letter accepted and counted",
	store.EventDuplicate:   "duplicate letter; not counted again",
	store.EventHeld:        "letter held for an admin",
	store.EventRejected:    "letter rejected",
	store.EventReleased:    "held letter released by an admin and counted",
	store.EventDropped:     "held letter dropped by an admin",
	store.EventBatched:     "batch closed",
	store.EventDelivered:   "batch copy delivered",
	store.EventDeferred:    "batch copy deferred; will retry",
	store.EventFailed:      "batch copy failed",
	store.EventPurged:      "letter bodies purged after retention",
	store.EventRequeued:    "batch copy requeued by an admin: tried now",
	store.EventSplit:       "batch copy too big for its recipient sent as smaller messages",
	store.EventConfirmSent: "confirmation request sent to the sender",
	store.EventConfirmed:   "sender confirmed the letter by reply",
	store.EventReceiptSent: "receipt sent to the sender",
	store.EventForwarded:   "letter forwarded to the primary",
	store.EventQueued:      "letter stored, to be forwarded to the primary",
	store.EventPaused:      "paused by an admin: no batch closes, nothing is sent",
	store.EventResumed:     "resumed by an admin",
	store.EventErased:      "a supporter's personal data erased",
}

// duplicateMessages say what a duplicate repeats; the kind's message is
// for one that does not say (journalled before it was recorded).
var duplicateMessages = map[store.DuplicateOf]string{
	store.DuplicateOfCounted: "letter from a sender already counted; not counted again",
	store.DuplicateOfHeld:    "the same letter is held already; not stored again",
}

// supporterMail says what delivery events mean for mail to a supporter
// (a letter's, where a batch copy's name a batch).
var supporterMail = map[store.EventKind]string{
	store.EventDelivered: "mail to a supporter delivered",
	store.EventDeferred:  "mail to a supporter deferred; will retry",
	store.EventFailed:    "mail to a supporter failed",
}

// forwarding words the events of a secondary's attempts to forward a
// letter to its primary (SPEC 12), which share their kinds with batch
// copies'; its letters' IDs start with "S".
var forwarding = map[store.EventKind]string{
	store.EventDeferred: "forwarding to the primary deferred; will retry",
	store.EventFailed:   "letter not forwarded: the primary refused it, or forwarding gave up; held for an admin",
}

// Message is the log line's text for an event.
func Message(e store.Event) string {
	if m, ok := duplicateMessages[e.DuplicateOf]; ok && e.Event == store.EventDuplicate {
		return m
	}
	if e.Batch == 0 && e.Letter != "" {
		// A letter's delivery event: a secondary forwarding it, or mail
		// to its supporter.
		table := supporterMail
		if e.Letter[0] == 'S' {
			table = forwarding
		}
		if m, ok := table[e.Event]; ok {
			return m
		}
	}
	if m, ok := messages[e.Event]; ok {
		return m
	}
	return string(e.Event)
}

// Attrs renders an event as log attributes: no letter bodies, ever.
func Attrs(e store.Event) []slog.Attr {
	attrs := []slog.Attr{slog.String("event", string(e.Event))}
	add := func(key, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(key, v))
		}
	}
	add("letter", e.Letter)
	if e.Batch != 0 {
		attrs = append(attrs, slog.Uint64("batch", e.Batch))
	}
	add("sender", e.Sender)
	add("ip", e.IP)
	add("session", e.Session)
	add("recipient", e.Recipient)
	add("class", string(e.Class))
	add("duplicate_of", string(e.DuplicateOf))
	add("reason", e.Reason)
	return attrs
}

// Writer logs the store's events as they are committed.
type Writer struct {
	log  *slog.Logger
	feed *store.Feed
}

// New makes a writer for the events committed from now on: it starts
// following at once, so events committed before Run starts are not lost.
func New(st *store.Store, log *slog.Logger) (*Writer, error) {
	feed, err := st.FollowNew()
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return &Writer{log: log, feed: feed}, nil
}

// Run writes a line per event until the store closes, after the line of
// the last event committed (it then returns store.ErrClosed), or until ctx
// ends (nil).
func (w *Writer) Run(ctx context.Context) error {
	defer w.feed.Close()
	for {
		e, err := w.feed.Next(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("following the store: %w", err)
		}
		w.log.LogAttrs(context.Background(), Level(e.Event), Message(e), Attrs(e)...)
	}
}
