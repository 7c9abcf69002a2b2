package admin

import (
	"bytes"
	"mime"
	"strings"
	"time"

	"github.com/petitiond/petitiond/store"
)

// The JSON the API speaks, and so the shapes of the CLI's -json output (SPEC
// 9). Most are their own types, not the store's records, so a change in how
// the store keeps things cannot silently change what scripts read. The
// exceptions, the tally and Event, are the store's types, whose JSON is
// already SPEC 9's shape; api_test.go pins the tally's JSON, so a change
// in the store that would change it fails there.

// Stats is the tally (the store's: counted, duplicates, held, rejected,
// batches, pending, deliveries by state) and the pause.
type Stats struct {
	store.Stats
	// Paused is the emergency hold: letters are still counted, but no
	// batch closes and nothing is sent.
	Paused      bool       `json:"paused"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	PauseReason string     `json:"pause_reason,omitempty"`
	// Forwarding is a secondary MX's letters (SPEC 12); absent on a
	// primary.
	Forwarding *ForwardCounts `json:"forwarding,omitempty"`
}

// ForwardCounts are a secondary's letters waiting to go to the primary,
// and those the primary took so far.
type ForwardCounts struct {
	Waiting   uint64 `json:"waiting"`
	Forwarded uint64 `json:"forwarded"`
}

// DeliveryCounts counts recipient copies by state.
type DeliveryCounts = store.DeliveryCounts

// HeldLetter is a letter waiting for an admin's decision.
type HeldLetter struct {
	ID       string    `json:"id"`
	From     string    `json:"from"`
	Name     string    `json:"name,omitempty"`
	Subject  string    `json:"subject"`
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

// Recipient is one recipient's copy of a batch.
type Recipient struct {
	Address string `json:"address"`
	CopyStatus
	// Parts: see parts.go.
	Parts []Part `json:"parts,omitempty"`
}

// CopyStatus is where one message to one recipient is, a whole copy or a
// part. NextAttempt is null once no attempt is planned (delivered or
// failed). ErrorKind: see parts.go.
type CopyStatus struct {
	State       store.DeliveryState `json:"state"`
	Attempts    int                 `json:"attempts"`
	NextAttempt *time.Time          `json:"next_attempt"`
	LastError   string              `json:"last_error"`
	ErrorKind   store.FailureKind   `json:"error_kind,omitempty"`
}

func apiCopy(c store.CopyState) CopyStatus {
	return CopyStatus{State: c.State, Attempts: c.Attempts, NextAttempt: nextAttempt(c), LastError: c.LastError,
		ErrorKind: c.ErrorKind}
}

// Event is one journal event as the store keeps it; Seq orders them and is
// what a follower resumes after.
type Event = store.Event

// HeldResult is what an admin's decision on a held letter did.
type HeldResult struct {
	ID string `json:"id"`
	// Outcome is the event the decision made: released, duplicate
	// (released, but its sender was counted meanwhile, so it is not
	// counted again) or dropped; empty when Error says why nothing was
	// done.
	Outcome store.EventKind `json:"outcome,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// HeldRequest asks for a decision on several held letters: those named by
// IDs, or with All every held letter (only those held for Reason, when
// set).
type HeldRequest struct {
	IDs    []string `json:"ids,omitempty"`
	All    bool     `json:"all,omitempty"`
	Reason string   `json:"reason,omitempty"`
}

// Decisions is what a decision on several held letters did, one result per
// letter, in the order asked (oldest first for All).
type Decisions struct {
	Results []HeldResult `json:"results"`
	// Skipped counts the postmaster mail a release of All left alone: it
	// is never counted, only dropped.
	Skipped int `json:"skipped,omitempty"`
}

// FlushResult says how many deferred copies a flush made due now.
type FlushResult struct {
	Flushed int `json:"flushed"`
	// Paused: the copies wait for the daemon to resume.
	Paused bool `json:"paused"`
}

// PauseState is the emergency hold as it now is, and whether the request
// changed it.
type PauseState struct {
	Paused  bool       `json:"paused"`
	Since   *time.Time `json:"since,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Changed bool       `json:"changed"`
}

// PauseRequest is the body of POST /api/pause.
type PauseRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Health is the answer of /healthz: Status is "ok", "paused" (healthy, but
// an admin stopped batches and sending) or "failing" (HTTP 503; the other
// fields say what).
type Health struct {
	Status string `json:"status"`
	// Store is "ok" when a write transaction commits, else what failed.
	Store string `json:"store"`
	// SMTP is "ok" while the SMTP listeners take connections.
	SMTP string `json:"smtp"`
	// Parts is "ok" while every part of the daemon runs, else the one that
	// stopped.
	Parts       string     `json:"parts"`
	Paused      bool       `json:"paused"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	// OldestUndeliveredBatchAge is how long, in seconds, the oldest batch
	// some recipient does not have yet has existed; 0 when none.
	OldestUndeliveredBatchAge float64 `json:"oldest_undelivered_batch_age_seconds"`
}

// Health statuses.
const (
	HealthOK      = "ok"
	HealthPaused  = "paused"
	HealthFailing = "failing"
)

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

func apiPause(p store.Pause, changed bool) PauseState {
	return PauseState{Paused: p.Paused, Since: timePtr(p.Since), Reason: p.Reason, Changed: changed}
}

// timePtr is nil for the zero time, so JSON leaves it out.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// heldHeadBytes is how much of a held message a listing reads for its
// headers: more than any Subject a mail client writes.
const heldHeadBytes = 16 << 10

func apiHeld(h store.HeldHead) HeldLetter {
	l := h.Letter
	reason := string(l.HeldReason)
	if (l.HeldReason == store.HeldUnverified || l.HeldReason == store.HeldConfirm || l.HeldReason == store.HeldUnconfirmed) &&
		l.Verdict.Reason != "" {
		reason += ": " + l.Verdict.Reason
	}
	if l.HeldReason == store.HeldForwardFailed && l.Forward != nil {
		reason += ": " + l.Forward.LastError // what the primary said
	}
	return HeldLetter{ID: l.ID, From: l.From, Name: l.Name, Subject: subjectOf(h.Head), Received: l.Received,
		Reason: reason, IP: l.RemoteIP, Size: l.Size}
}

// subjectOf reads the Subject of a message from its first bytes, unfolded
// and with RFC 2047 words decoded; "" when there is none. A head cut short
// before the end of the headers still gives the Subject when it came before
// the cut. It is lenient on purpose, control characters included: the
// admin should see what a sender wrote (the commands escape it).
func subjectOf(head []byte) string {
	if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
		head = head[:i+2]
	} else if i := bytes.LastIndexByte(head, '\n'); i >= 0 {
		head = head[:i+1] // drop a header line cut in the middle
	} else {
		return ""
	}
	var raw []byte
	found := false
	for line := range bytes.Lines(head) {
		line = bytes.TrimRight(line, "\r\n")
		if found {
			if len(line) == 0 || (line[0] != ' ' && line[0] != '\t') {
				break
			}
			raw = append(raw, line...) // a folded continuation
			continue
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Subject") {
			raw, found = bytes.Clone(value), true
		}
	}
	if !found {
		return ""
	}
	dec := mime.WordDecoder{}
	if s, err := dec.DecodeHeader(string(raw)); err == nil {
		return strings.TrimSpace(s)
	}
	return strings.TrimSpace(string(raw))
}

func apiBatch(b store.Batch, withLetters bool) Batch {
	out := Batch{ID: b.ID, Letters: len(b.LetterIDs), Created: b.Created, MessageID: b.MessageID,
		Recipients: make([]Recipient, 0, len(b.Recipients)), Purged: b.Purged}
	for _, d := range b.Recipients {
		r := Recipient{Address: d.Address, CopyStatus: apiCopy(d.CopyState), Parts: apiParts(d.Parts, withLetters)}
		out.Recipients = append(out.Recipients, r)
	}
	if withLetters {
		out.LetterIDs = append([]string{}, b.LetterIDs...)
	}
	return out
}
