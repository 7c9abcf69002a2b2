package store

import (
	"encoding/json"
	"time"
)

// LetterState is where a letter is: it moves pending → batched, or held →
// pending / dropped; duplicate marks a letter that was stored before its
// sender turned out to be counted already.
type LetterState string

// Letter states.
const (
	StatePending   LetterState = "pending"
	StateHeld      LetterState = "held"
	StateBatched   LetterState = "batched"
	StateDuplicate LetterState = "duplicate"
)

// HeldReason is why a letter waits for an admin.
type HeldReason string

// Reasons a letter is held.
const (
	// HeldUnverified: no aligned passing signature, policy "quarantine".
	HeldUnverified HeldReason = "unverified"
	// HeldPostmaster: mail to postmaster@ or to campaign.from (bounces);
	// never counted, only dropped.
	HeldPostmaster HeldReason = "postmaster"
	// HeldUnbatchable: counted, but the batch builder could not take it, so
	// it was set aside rather than block every later batch.
	HeldUnbatchable HeldReason = "unbatchable"
	// HeldConfirm: unverified under policy "confirm"; its From address was
	// asked (or will be) to confirm it by reply (SPEC 11).
	HeldConfirm HeldReason = "confirm"
	// HeldUnconfirmed: unverified under policy "confirm", and no reply
	// confirmed it: the request expired or could not be delivered, or none
	// could be sent (SPF fail for MAIL FROM, a null MAIL FROM). It waits
	// for an admin.
	HeldUnconfirmed HeldReason = "unconfirmed"
)

// DeliveryState is where one recipient's copy of a batch is.
type DeliveryState string

// Delivery states.
const (
	DeliveryQueued    DeliveryState = "queued"
	DeliveryDeferred  DeliveryState = "deferred"
	DeliveryDelivered DeliveryState = "delivered"
	DeliveryFailed    DeliveryState = "failed"
	// DeliverySplit is a part whose letters went into smaller parts after
	// the recipient's server refused it as too big; only parts have it.
	DeliverySplit DeliveryState = "split"
)

// FailureKind names a delivery failure that needs more than a plain
// retry, so pages and scripts can say what happened without reading the
// error's text. Empty for any other failure.
type FailureKind string

// Failure kinds (the words relay/deliver's Kind prints).
const (
	FailureOther FailureKind = ""
	// FailureNo8BitMIME: the recipient's server does not offer 8BITMIME
	// and the batch has 8-bit letters (RFC 6152); the copy waits.
	FailureNo8BitMIME FailureKind = "no-8bitmime"
	// FailureTooBig: the recipient's server refused the message as too
	// big; its letters go in smaller messages (parts).
	FailureTooBig FailureKind = "too-big"
)

// EventKind is what an event records: the words of SPEC 8.
type EventKind string

// Event kinds.
const (
	EventAccepted  EventKind = "accepted"
	EventDuplicate EventKind = "duplicate"
	EventHeld      EventKind = "held"
	EventRejected  EventKind = "rejected"
	EventReleased  EventKind = "released"
	EventDropped   EventKind = "dropped"
	EventBatched   EventKind = "batched"
	EventDelivered EventKind = "delivered"
	EventDeferred  EventKind = "deferred"
	EventFailed    EventKind = "failed"
	EventPurged    EventKind = "purged"
	// EventRequeued is an admin putting failed copies back in the queue:
	// not a delivery attempt.
	EventRequeued EventKind = "requeued"
	// EventSplit is a recipient's copy (or part) refused as too big put
	// into smaller messages, now queued.
	EventSplit EventKind = "split"
	// The kinds of the later sections of SPEC 8 (confirmations, receipts,
	// the secondary, pause, erasure), so consumers switch on one set.
	EventConfirmSent EventKind = "confirm_sent"
	EventConfirmed   EventKind = "confirmed"
	EventReceiptSent EventKind = "receipt_sent"
	EventForwarded   EventKind = "forwarded"
	EventPaused      EventKind = "paused"
	EventResumed     EventKind = "resumed"
	EventErased      EventKind = "erased"
)

// DuplicateOf says what a duplicate event's letter repeats, as a fixed
// word, so that the log and tools tell one case from the other without
// reading the reason's text.
type DuplicateOf string

// What a duplicate repeats.
const (
	// DuplicateOfCounted: its sender was counted already (the letter
	// verified, came unverified under policy relay, or was released by an
	// admin after the sender was counted meanwhile).
	DuplicateOfCounted DuplicateOf = "counted"
	// DuplicateOfHeld: the same letter is held already (it was sent again
	// unverified); nothing was counted.
	DuplicateOfHeld DuplicateOf = "held"
)

// RejectClass says why a letter was refused at the end of DATA, as a fixed
// word that metrics and tools can count (the reason's text is for people).
type RejectClass string

// Rejection classes.
const (
	RejectBareLineEnding RejectClass = "bare_line_ending"
	RejectLineTooLong    RejectClass = "line_too_long"
	RejectFrom           RejectClass = "from"
	RejectSize           RejectClass = "size"
	RejectUnverified     RejectClass = "unverified"
)

// VerdictKind is how a letter verified (SPEC 5).
type VerdictKind string

// Verdict kinds.
const (
	VerdictDKIM       VerdictKind = "dkim"
	VerdictSPF        VerdictKind = "spf"
	VerdictConfirmed  VerdictKind = "confirmed"
	VerdictAdmin      VerdictKind = "admin"
	VerdictUnverified VerdictKind = "unverified"
)

// Verdict is the outcome of verification, kept with the letter.
type Verdict struct {
	Kind VerdictKind `json:"kind"`
	// Domain is the DKIM d= (or the MAIL FROM domain for spf), also kept
	// when verification failed, to say which signature failed.
	Domain   string `json:"domain,omitempty"`
	Selector string `json:"selector,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Verified reports whether the sender proved the address: by signature,
// SPF or reply. An admin's release counts the letter but proves nothing.
func (v Verdict) Verified() bool {
	switch v.Kind {
	case VerdictDKIM, VerdictSPF, VerdictConfirmed:
		return true
	}
	return false
}

// UnmarshalJSON reads both this layout and the first one, which had only
// "pass": a passing verdict then was always a DKIM pass.
func (v *Verdict) UnmarshalJSON(data []byte) error {
	type plain Verdict
	var r struct {
		plain
		Pass *bool `json:"pass"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return err
	}
	*v = Verdict(r.plain)
	if v.Kind == "" {
		v.Kind = VerdictUnverified
		if r.Pass != nil && *r.Pass {
			v.Kind = VerdictDKIM
		}
	}
	return nil
}

// Letter is a stored letter's record; its body is kept apart.
type Letter struct {
	ID         string      `json:"id"`
	Received   time.Time   `json:"received"`
	From       string      `json:"from"`
	Name       string      `json:"name,omitempty"`
	RemoteIP   string      `json:"ip,omitempty"`
	State      LetterState `json:"state"`
	HeldReason HeldReason  `json:"held_reason,omitempty"`
	Verdict    Verdict     `json:"verdict"`
	Size       int         `json:"size"`
	Batch      uint64      `json:"batch,omitempty"`
	Purged     bool        `json:"purged,omitempty"`
	// Erased is set once the supporter's personal data was removed at
	// their request (SPEC 13): From, Name, RemoteIP and the body are gone.
	Erased bool `json:"erased,omitempty"`
	// PendingSince is when the letter last became pending (accepted, or
	// released by an admin): the batch clock counts from here (SPEC 7).
	PendingSince time.Time `json:"pending_since,omitzero"`
	// DedupKey is the HMAC of the normalised sender, kept so that a held
	// letter can be checked against the index when an admin releases it.
	DedupKey []byte `json:"dedup_key,omitempty"`
	// Forward is the envelope and forwarding state of a letter on a
	// secondary MX (forward.go); nil on a primary.
	Forward *Forward `json:"forward,omitempty"`
}

// Unverified reports whether the letter was counted or held without the
// sender proving the address (policy "relay", quarantine, an admin release).
func (l *Letter) Unverified() bool { return !l.Verdict.Verified() }

// Delivery is one recipient's copy of a batch. Once the recipient's
// server refused the whole message as too big (TooBig set), the copy's
// letters travel in Parts, and its state sums up theirs: queued or
// deferred while a part waits (or the parts are being made), failed when
// every part is settled and one failed, delivered when every part is.
type Delivery struct {
	Address string `json:"address"`
	CopyState
	// Parts are the smaller messages the copy's letters went in, in the
	// order they were made; a part refused as too big in turn is marked
	// split and its letters go in parts added at the end.
	Parts []Part `json:"parts,omitempty"`
}

// CopyState is where one message to one recipient is: a whole batch's
// copy or one part of it.
type CopyState struct {
	State       DeliveryState `json:"state"`
	Attempts    int           `json:"attempts"`
	NextAttempt time.Time     `json:"next_attempt,omitzero"`
	LastError   string        `json:"last_error,omitempty"`
	// ErrorKind names the last error when it needs more than a retry.
	ErrorKind FailureKind `json:"error_kind,omitempty"`
	Done      time.Time   `json:"done,omitzero"`
	// Since starts the give-up clock: when the copy was queued, or requeued
	// by an admin.
	Since time.Time `json:"since"`
	// TooBig is set once the recipient's server refused this message as
	// too big: it is not sent again; its letters go in parts.
	TooBig *TooBig `json:"too_big,omitempty"`
}

// TooBig is what a recipient's server said about a message it refused as
// too big.
type TooBig struct {
	// Size is the refused message's size in bytes.
	Size int64 `json:"size"`
	// Limit is the largest message the server said it accepts (its EHLO
	// SIZE); 0 when it named none.
	Limit int64 `json:"limit,omitempty"`
	// Reason is the refusal, as the error said it.
	Reason string `json:"reason"`
}

// waiting reports whether the message waits in the delivery queue: open,
// and not set aside to be split.
func (c *CopyState) waiting() bool {
	return (c.State == DeliveryQueued || c.State == DeliveryDeferred) && c.TooBig == nil
}

// Part is one of the smaller messages a copy's letters went in: a batch
// message of its own, for this recipient only, with its own Message-ID.
type Part struct {
	// N is the part's number, 1 first; Of is how many parts the copy had
	// when this one was made, as its subject says ("part N of Of").
	N  int `json:"n"`
	Of int `json:"of"`
	// MessageID is the part's own Message-ID, the same on every retry.
	MessageID string   `json:"message_id"`
	LetterIDs []string `json:"letter_ids"`
	// File names the part's message below the store directory.
	File string `json:"file"`
	Size int64  `json:"size"`
	CopyState
}

// CloseRule is why a batch closed (SPEC 7).
type CloseRule string

// Close rules.
const (
	// CloseFull: batch.max_letters letters waited.
	CloseFull CloseRule = "max_letters"
	// CloseWait: the oldest letter waited batch.max_wait.
	CloseWait CloseRule = "max_wait"
	// CloseSize: more letters waited than fit in a message of
	// batch.max_bytes.
	CloseSize CloseRule = "max_bytes"
)

// Batch is a closed batch: its letters, its message and its deliveries.
type Batch struct {
	ID         uint64     `json:"id"`
	Created    time.Time  `json:"created"`
	MessageID  string     `json:"message_id"`
	LetterIDs  []string   `json:"letter_ids"`
	Recipients []Delivery `json:"recipients"`
	Rule       CloseRule  `json:"rule,omitempty"`
	// File names the message's file below the store directory; empty for
	// a batch closed by schema version 1, whose message is in the bbolt
	// file.
	File string `json:"file,omitempty"`
	// RunningTotal is how many letters had been batched with this one,
	// as its summary says (0 for batches closed before it was kept).
	RunningTotal uint64 `json:"running_total,omitempty"`
	// Purged is set once the letters' bodies and the message were removed
	// after the retention time.
	Purged bool `json:"purged,omitempty"`
	// PurgeAt is when the bodies go, set once every copy is delivered.
	PurgeAt time.Time `json:"purge_at,omitzero"`
	// Erased is set once the message was removed because a supporter in
	// it asked to be erased (SPEC 13).
	Erased bool `json:"erased,omitempty"`
}

// Complete reports whether every recipient has its copy.
func (b *Batch) Complete() bool {
	for _, d := range b.Recipients {
		if d.State != DeliveryDelivered {
			return false
		}
	}
	return true
}

// Event is one state change, as logged and kept in the journal (SPEC 8, 9).
type Event struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Event EventKind `json:"event"`
	// Class is set on rejected events.
	Class RejectClass `json:"class,omitempty"`
	// DuplicateOf is set on duplicate events.
	DuplicateOf DuplicateOf `json:"duplicate_of,omitempty"`

	Letter    string `json:"letter,omitempty"`
	Batch     uint64 `json:"batch,omitempty"`
	Sender    string `json:"sender,omitempty"`
	IP        string `json:"ip,omitempty"`
	Session   string `json:"session,omitempty"`
	Recipient string `json:"recipient,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Stats is the tally (SPEC 9).
type Stats struct {
	Counted    uint64         `json:"counted"`
	Duplicates uint64         `json:"duplicates"`
	Held       uint64         `json:"held"`
	Rejected   uint64         `json:"rejected"`
	Batches    uint64         `json:"batches"`
	Pending    uint64         `json:"pending"`
	Deliveries DeliveryCounts `json:"deliveries"`
	// Forward counts a secondary's letters (SPEC 12).
	Forward ForwardCounts `json:"-"` // the admin API shows it on a secondary only
	// Supporters counts the mail petitiond wrote to supporters.
	Supporters SupporterMailCounts `json:"supporters"`
}

// SupporterMailCounts counts confirmation requests and receipts (SPEC 11).
// The totals count since the store was made.
type SupporterMailCounts struct {
	// ConfirmWaiting is how many requests wait for their turn under
	// verify.confirm_per_hour, now; ConfirmLive how many were sent and
	// can still be answered.
	ConfirmWaiting uint64 `json:"confirm_waiting"`
	ConfirmLive    uint64 `json:"confirm_live"`
	// ConfirmSent, ConfirmConfirmed and ConfirmExpired are requests sent,
	// answered, and past verify.confirm_ttl without an answer;
	// ConfirmUndeliverable are requests the supporter's mail host refused
	// or that delivery gave up on.
	ConfirmSent          uint64 `json:"confirm_sent"`
	ConfirmConfirmed     uint64 `json:"confirmed"`
	ConfirmExpired       uint64 `json:"confirm_expired"`
	ConfirmUndeliverable uint64 `json:"confirm_undeliverable"`
	// ReceiptsSent are receipts handed to delivery.
	ReceiptsSent uint64 `json:"receipts_sent"`
	// Queued is supporter mail waiting to be delivered, now.
	Queued uint64 `json:"queued"`
}

// DeliveryCounts counts recipient copies by state.
type DeliveryCounts struct {
	Queued    uint64 `json:"queued"`
	Deferred  uint64 `json:"deferred"`
	Delivered uint64 `json:"delivered"`
	Failed    uint64 `json:"failed"`
}
