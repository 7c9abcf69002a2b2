package admin

import (
	"time"

	"github.com/petitiond/petitiond/store"
)

// A recipient's copy carries two facts beyond SPEC 9's shape (which allows
// more fields): error_kind names an error that needs more than a retry
// ("no-8bitmime": the recipient's server does not take 8-bit mail;
// "too-big": it refused the batch as too large), and parts lists the
// smaller messages the copy went in after a "too-big" refusal. The copy's
// own state then sums its parts up: queued or deferred while one waits,
// failed when one failed, delivered when all were.

// Part is one of the smaller messages a recipient's copy went in: a batch
// message of its own, "part N of Of" in its subject. A part refused as too
// big in turn has state "split": its letters went in later parts.
// LetterIDs is filled only when one batch is asked for.
type Part struct {
	N         int    `json:"n"`
	Of        int    `json:"of"`
	MessageID string `json:"message_id"`
	Letters   int    `json:"letters"`
	CopyStatus
	LetterIDs []string `json:"letter_ids,omitempty"`
}

func apiParts(parts []store.Part, withLetters bool) []Part {
	if len(parts) == 0 {
		return nil
	}
	out := make([]Part, 0, len(parts))
	for _, p := range parts {
		ap := Part{N: p.N, Of: p.Of, MessageID: p.MessageID, Letters: len(p.LetterIDs), CopyStatus: apiCopy(p.CopyState)}
		if withLetters {
			ap.LetterIDs = append([]string{}, p.LetterIDs...)
		}
		out = append(out, ap)
	}
	return out
}

// nextAttempt is when a copy or part is tried next; nil once no attempt
// is planned.
func nextAttempt(c store.CopyState) *time.Time {
	if (c.State != store.DeliveryQueued && c.State != store.DeliveryDeferred) || c.NextAttempt.IsZero() {
		return nil
	}
	t := c.NextAttempt
	return &t
}
