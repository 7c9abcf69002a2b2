package store

import "time"

// Letter states. A letter moves pending → batched, or held → pending /
// dropped; duplicate marks a letter that was stored before its sender turned
// out to be counted already.
const (
	StatePending   = "pending"
	StateHeld      = "held"
	StateBatched   = "batched"
	StateDuplicate = "duplicate"
)

// Reasons a letter is held.
const (
	HeldUnverified = "unverified"
	HeldPostmaster = "postmaster"
)

// Delivery states of one recipient's copy of a batch.
const (
	DeliveryQueued    = "queued"
	DeliveryDeferred  = "deferred"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// Event kinds (SPEC 8).
const (
	EventAccepted  = "accepted"
	EventDuplicate = "duplicate"
	EventHeld      = "held"
	EventRejected  = "rejected"
	EventReleased  = "released"
	EventDropped   = "dropped"
	EventBatched   = "batched"
	EventDelivered = "delivered"
	EventDeferred  = "deferred"
	EventFailed    = "failed"
	EventPurged    = "purged"
)

// Verdict is the outcome of DKIM verification, kept with the letter.
type Verdict struct {
	Pass     bool   `json:"pass"`
	Domain   string `json:"domain,omitempty"`
	Selector string `json:"selector,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Letter is a stored letter's record; its body is kept apart.
type Letter struct {
	ID         string    `json:"id"`
	Received   time.Time `json:"received"`
	From       string    `json:"from"`
	Name       string    `json:"name,omitempty"`
	RemoteIP   string    `json:"ip,omitempty"`
	State      string    `json:"state"`
	HeldReason string    `json:"held_reason,omitempty"`
	Verdict    Verdict   `json:"verdict"`
	Size       int       `json:"size"`
	Batch      uint64    `json:"batch,omitempty"`
	Purged     bool      `json:"purged,omitempty"`
	// DedupKey is the HMAC of the normalised sender, kept so that a held
	// letter can be checked against the index when an admin releases it.
	DedupKey []byte `json:"dedup_key,omitempty"`
}

// Unverified reports whether the letter was counted without a passing DKIM
// signature (policy "relay" or an admin release).
func (l *Letter) Unverified() bool { return !l.Verdict.Pass }

// Delivery is one recipient's copy of a batch.
type Delivery struct {
	Address     string    `json:"address"`
	State       string    `json:"state"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Done        time.Time `json:"done,omitzero"`
	// Since starts the give-up clock: when the copy was queued, or requeued
	// by an admin.
	Since time.Time `json:"since"`
}

// Batch is a closed batch: its letters, its message and its deliveries.
type Batch struct {
	ID         uint64     `json:"id"`
	Created    time.Time  `json:"created"`
	MessageID  string     `json:"message_id"`
	LetterIDs  []string   `json:"letter_ids"`
	Recipients []Delivery `json:"recipients"`
	// Purged is set once the letters' bodies and the message were removed
	// after the retention time.
	Purged bool `json:"purged,omitempty"`
	// PurgeAt is when the bodies go, set once every copy is delivered.
	PurgeAt time.Time `json:"purge_at,omitzero"`
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
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Event     string    `json:"event"`
	Letter    string    `json:"letter,omitempty"`
	Batch     uint64    `json:"batch,omitempty"`
	Sender    string    `json:"sender,omitempty"`
	IP        string    `json:"ip,omitempty"`
	Recipient string    `json:"recipient,omitempty"`
	Reason    string    `json:"reason,omitempty"`
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
}

// DeliveryCounts counts recipient copies by state.
type DeliveryCounts struct {
	Queued    uint64 `json:"queued"`
	Deferred  uint64 `json:"deferred"`
	Delivered uint64 `json:"delivered"`
	Failed    uint64 `json:"failed"`
}
