package admin

import (
	"time"

	"github.com/petitiond/petitiond/store"
)

// The JSON the API speaks, and so the shapes of the CLI's -json output (SPEC
// 9). They are their own types, not the store's records, so a change in how
// the store keeps things cannot silently change what scripts read; the one
// exception is Event, which the store journals in exactly SPEC 9's shape.

// Stats is the tally.
type Stats struct {
	Counted    uint64         `json:"counted"`
	Duplicates uint64         `json:"duplicates"`
	Held       uint64         `json:"held"`
	Rejected   uint64         `json:"rejected"`
	Batches    uint64         `json:"batches"`
	Pending    uint64         `json:"pending"` // counted letters waiting for a batch
	Deliveries DeliveryCounts `json:"deliveries"`
}

// DeliveryCounts counts recipient copies by state.
type DeliveryCounts struct {
	Queued    uint64 `json:"queued"`
	Deferred  uint64 `json:"deferred"`
	Delivered uint64 `json:"delivered"`
	Failed    uint64 `json:"failed"`
}

// HeldLetter is a letter waiting for an admin's decision.
type HeldLetter struct {
	ID       string    `json:"id"`
	From     string    `json:"from"`
	Name     string    `json:"name,omitempty"`
	Received time.Time `json:"received"`
	Reason   string    `json:"reason"`
	IP       string    `json:"ip,omitempty"`
	Size     int       `json:"size"`
}

// Batch is a closed batch with the state of each recipient's copy.
// LetterIDs is filled only when one batch is asked for.
type Batch struct {
	ID         uint64      `json:"id"`
	Letters    int         `json:"letters"`
	Created    time.Time   `json:"created"`
	MessageID  string      `json:"message_id"`
	Recipients []Recipient `json:"recipients"`
	Purged     bool        `json:"purged,omitempty"`
	LetterIDs  []string    `json:"letter_ids,omitempty"`
}

// Recipient is one recipient's copy of a batch. NextAttempt is null once no
// attempt is planned (delivered or failed).
type Recipient struct {
	Address     string              `json:"address"`
	State       store.DeliveryState `json:"state"`
	Attempts    int                 `json:"attempts"`
	NextAttempt *time.Time          `json:"next_attempt"`
	LastError   string              `json:"last_error"`
	// ErrorKind and Parts: see parts.go.
	ErrorKind store.FailureKind `json:"error_kind,omitempty"`
	Parts     []Part            `json:"parts,omitempty"`
}

// Event is one journal event as the store keeps it; Seq orders them and is
// what a follower resumes after.
type Event = store.Event

// HeldResult is what an admin's decision on a held letter did.
type HeldResult struct {
	ID string `json:"id"`
	// Outcome is the event the decision made: released, duplicate
	// (released, but its sender was counted meanwhile, so it is not
	// counted again) or dropped.
	Outcome store.EventKind `json:"outcome"`
}

// RetryResult says how many failed copies of a batch were requeued.
type RetryResult struct {
	ID       uint64 `json:"id"`
	Requeued int    `json:"requeued"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// FollowAfterHeader names the response header of the follow stream that
// says which sequence number the stream starts after, so a client that saw
// no event yet still knows where to resume.
const FollowAfterHeader = "Petitiond-Follow-After"

func apiStats(st store.Stats) Stats {
	return Stats{
		Counted: st.Counted, Duplicates: st.Duplicates, Held: st.Held, Rejected: st.Rejected,
		Batches: st.Batches, Pending: st.Pending,
		Deliveries: DeliveryCounts{
			Queued: st.Deliveries.Queued, Deferred: st.Deliveries.Deferred,
			Delivered: st.Deliveries.Delivered, Failed: st.Deliveries.Failed,
		},
	}
}

func apiHeld(l store.Letter) HeldLetter {
	reason := string(l.HeldReason)
	if l.HeldReason == store.HeldUnverified && l.Verdict.Reason != "" {
		reason += ": " + l.Verdict.Reason
	}
	return HeldLetter{ID: l.ID, From: l.From, Name: l.Name, Received: l.Received, Reason: reason, IP: l.RemoteIP, Size: l.Size}
}

func apiBatch(b store.Batch, withLetters bool) Batch {
	out := Batch{ID: b.ID, Letters: len(b.LetterIDs), Created: b.Created, MessageID: b.MessageID,
		Recipients: make([]Recipient, 0, len(b.Recipients)), Purged: b.Purged}
	for _, d := range b.Recipients {
		r := Recipient{Address: d.Address, State: d.State, Attempts: d.Attempts, LastError: d.LastError,
			NextAttempt: nextAttempt(d.CopyState), ErrorKind: d.ErrorKind, Parts: apiParts(d.Parts, withLetters)}
		out.Recipients = append(out.Recipients, r)
	}
	if withLetters {
		out.LetterIDs = append([]string{}, b.LetterIDs...)
	}
	return out
}
