package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// NewLetter is a letter the SMTP front end wants stored.
type NewLetter struct {
	// ID is the letter's ID from ReserveLetterID; "" reserves one here.
	ID       string
	Received time.Time
	From     string // the From: address as written
	Name     string // display name, decoded
	RemoteIP string
	// Session is the SMTP session's ID, as in its replies, for the event.
	Session string
	Verdict Verdict
	// DedupAddress is the normalised sender address (SPEC 6); the store
	// keeps only its HMAC. Empty for postmaster mail.
	DedupAddress string
	// Hold, when set, keeps the letter for an admin instead of counting it
	// (HeldUnverified or HeldPostmaster), or for its sender's reply
	// (HeldConfirm).
	Hold HeldReason
	Body []byte
	// TraceLen is how many bytes at the start of Body are the front end's
	// own Received: field: what differs between two copies of one letter
	// (its ID, the time), so a comparison of letters skips it.
	TraceLen int
	// ConfirmVia is, with Hold HeldConfirm, the campaign address the letter
	// was sent to: the sender's confirmation address is made from it.
	ConfirmVia string
	// HoldNote says more in the held event: why no confirmation request
	// goes out, for a letter held as unconfirmed at once.
	HoldNote string
}

// Accepted is what Accept did with a letter.
type Accepted struct {
	// ID is the letter's ID; empty when the letter was a duplicate of a
	// counted sender and so was not stored.
	ID string
	// Duplicate is set when a verified sender was already counted (and so
	// the letter was not stored). An unverified repeat is stored as a
	// duplicate record under its own ID instead, with Duplicate false, so
	// its reply looks like any other.
	Duplicate bool
}

// DedupKey is the HMAC-SHA256 of a normalised address under the store's
// secret, so that the dedup index holds no readable address.
func (s *Store) DedupKey(normalised string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(normalised))
	return m.Sum(nil)
}

// Accept stores a letter durably: record, body, dedup key and event in one
// transaction, fsynced before it returns nil. A letter to be counted whose
// sender is already counted is not stored: Accepted.Duplicate says so.
//
// A letter counted without verification (policy "relay") whose sender is
// already counted is recorded as a duplicate under its own ID, so the reply
// the sender sees does not reveal that the address signed before.
func (s *Store) Accept(ctx context.Context, nl NewLetter) (Accepted, error) {
	var key []byte
	if nl.DedupAddress != "" {
		key = s.DedupKey(nl.DedupAddress)
	}
	if nl.Received.IsZero() {
		nl.Received = s.now()
	}
	var res Accepted
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		res = Accepted{}
		if nl.Hold == "" && key == nil {
			return fmt.Errorf("store: accept: a counted letter needs a dedup address")
		}
		dedup := tx.Bucket(bucketDedup)
		meta := tx.Bucket(bucketMeta)
		ev := Event{Sender: nl.From, IP: nl.RemoteIP, Session: nl.Session}
		counted := nl.Hold == "" && dedup.Get(key) != nil
		if counted && nl.Verdict.Verified() {
			res.Duplicate = true
			ev.Event, ev.Reason, ev.DuplicateOf = EventDuplicate, "already counted", DuplicateOfCounted
			if err := addU64(meta, ctrDuplicates, 1); err != nil {
				return err
			}
			return w.event(ev)
		}
		if nl.ID == "" {
			// Kept if this runs again after a failed group commit.
			nl.ID = formatLetterID(s.ids.next(getU64(meta, keyLetterSeq)))
		}
		id := nl.ID
		if err := useLetterID(tx, id, letterPrefix); err != nil {
			return err
		}
		res.ID = id
		l := Letter{
			ID: id, Received: nl.Received.UTC(), From: nl.From, Name: nl.Name, RemoteIP: nl.RemoteIP,
			Verdict: nl.Verdict, Size: len(nl.Body), DedupKey: key,
		}
		ev.Letter = id
		switch {
		case counted:
			// Unverified and already counted: kept whole like a new
			// letter, so that storing it costs what counting one does and
			// its timing does not tell the sender the address signed
			// before (SPEC 4).
			l.State = StateDuplicate
			ev.Event, ev.Reason, ev.DuplicateOf = EventDuplicate, "already counted (unverified)", DuplicateOfCounted
			if err := tx.Bucket(bucketBodies).Put([]byte(id), nl.Body); err != nil {
				return err
			}
			if err := queueExpiry(tx, &l); err != nil { // never batched: it goes after store.held_retention
				return err
			}
			if err := addU64(meta, ctrDuplicates, 1); err != nil {
				return err
			}
		case nl.Hold != "":
			if err := s.hold(tx, &l, &ev, &nl); err != nil {
				return err
			}
			if l.State == StateHeld && l.HeldReason == HeldConfirm {
				if err := askConfirm(tx, &l, nl.ConfirmVia, &ev); err != nil {
					return err
				}
			}
		default:
			l.State, l.PendingSince = StatePending, l.Received
			ev.Event, ev.Reason = EventAccepted, verdictReason(nl.Verdict)
			if err := countLetter(tx, &l, nl.Body); err != nil {
				return err
			}
			if err := s.receiptDue(tx, &l); err != nil {
				return err
			}
		}
		if err := putLetter(tx, &l); err != nil {
			return err
		}
		if l.State != StatePending { // a counted letter is found through the dedup index
			if err := indexSender(tx, key, id); err != nil {
				return err
			}
		}
		return w.event(ev)
	})
	if err != nil {
		return Accepted{}, fmt.Errorf("store: accept letter from %s: %w", nl.From, err)
	}
	return res, nil
}

func heldReason(nl NewLetter) string {
	switch nl.Hold {
	case HeldPostmaster:
		return string(HeldPostmaster)
	case HeldConfirm, HeldUnconfirmed:
		r := string(nl.Hold) + ": unverified: " + nl.Verdict.Reason
		if nl.HoldNote != "" {
			r += "; " + nl.HoldNote
		}
		return r
	}
	return "unverified: " + nl.Verdict.Reason
}

// verdictReason says in an event how a counted letter verified.
func verdictReason(v Verdict) string {
	switch v.Kind {
	case VerdictDKIM:
		return "dkim pass d=" + v.Domain
	case VerdictSPF:
		return "spf pass " + v.Domain
	case VerdictConfirmed:
		return "confirmed by reply"
	case VerdictAdmin:
		return "released by an admin: " + v.Reason
	}
	return "UNVERIFIED: " + v.Reason
}

// countLetter marks a letter counted: dedup key, pending queue (at
// l.PendingSince), counters.
func countLetter(tx *bolt.Tx, l *Letter, body []byte) error {
	meta := tx.Bucket(bucketMeta)
	if err := tx.Bucket(bucketDedup).Put(l.DedupKey, []byte(l.ID)); err != nil {
		return fmt.Errorf("put dedup key: %w", err)
	}
	if body != nil {
		if err := tx.Bucket(bucketBodies).Put([]byte(l.ID), body); err != nil {
			return fmt.Errorf("put body: %w", err)
		}
	}
	if err := addU64(meta, ctrCounted, 1); err != nil {
		return err
	}
	return queuePending(tx, l)
}

// queuePending puts l in the pending queue at l.PendingSince, and counts it
// and its bytes.
func queuePending(tx *bolt.Tx, l *Letter) error {
	if err := tx.Bucket(bucketPending).Put(pendingKey(l.PendingSince, l.ID), nil); err != nil {
		return fmt.Errorf("put pending: %w", err)
	}
	meta := tx.Bucket(bucketMeta)
	if err := addU64(meta, ctrPending, 1); err != nil {
		return err
	}
	return addU64(meta, ctrPendingBytes, int64(l.Size))
}

// unqueuePending takes l out of the pending queue and its counters.
func unqueuePending(tx *bolt.Tx, l *Letter) error {
	if err := tx.Bucket(bucketPending).Delete(pendingKey(l.PendingSince, l.ID)); err != nil {
		return err
	}
	meta := tx.Bucket(bucketMeta)
	if err := addU64(meta, ctrPending, -1); err != nil {
		return err
	}
	return addU64(meta, ctrPendingBytes, -int64(l.Size))
}

// sumPendingBytes adds up the sizes of the pending letters once, for a
// store written before it kept ctrPendingBytes.
func sumPendingBytes(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta.Get(ctrPendingBytes) != nil {
		return nil
	}
	var sum uint64
	err := tx.Bucket(bucketPending).ForEach(func(k, _ []byte) error {
		l, err := getLetter(tx, string(k[8:]))
		if err != nil {
			return err
		}
		sum += uint64(l.Size)
		return nil
	})
	if err != nil {
		return err
	}
	return meta.Put(ctrPendingBytes, u64(sum))
}

// pendingKey orders the pending queue by when each letter became pending,
// then by ID, so the oldest is the first key.
func pendingKey(since time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(since.UnixNano()))
	return append(k, id...)
}

// pendingSince reads the time back out of a pendingKey.
func pendingSince(k []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).UTC()
}

func putLetter(tx *bolt.Tx, l *Letter) error {
	data, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("encode letter %s: %w", l.ID, err)
	}
	if err := tx.Bucket(bucketLetters).Put([]byte(l.ID), data); err != nil {
		return fmt.Errorf("put letter %s: %w", l.ID, err)
	}
	return nil
}

func getLetter(tx *bolt.Tx, id string) (*Letter, error) {
	v := tx.Bucket(bucketLetters).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("letter %s: %w", id, ErrNotFound)
	}
	var l Letter
	if err := json.Unmarshal(v, &l); err != nil {
		return nil, fmt.Errorf("decode letter %s: %w", id, err)
	}
	return &l, nil
}

// Rejection is a letter refused at the end of DATA, recorded for the tally
// and the journal (nothing of it is stored).
type Rejection struct {
	Class                  RejectClass
	From, RemoteIP, Reason string
	Session                string
}

// Reject counts a letter refused at the end of DATA and journals it with
// its class.
func (s *Store) Reject(ctx context.Context, r Rejection) error {
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		if err := addU64(tx.Bucket(bucketMeta), ctrRejected, 1); err != nil {
			return err
		}
		return w.event(Event{Event: EventRejected, Class: r.Class, Sender: r.From, IP: r.RemoteIP,
			Session: r.Session, Reason: r.Reason})
	})
	if err != nil {
		return fmt.Errorf("store: record rejection: %w", err)
	}
	return nil
}

// Letter returns a letter's record (ErrNotFound if there is none).
func (s *Store) Letter(id string) (*Letter, error) {
	var l *Letter
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		l, err = getLetter(tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return l, nil
}

// Body returns a copy of a letter's original bytes.
func (s *Store) Body(id string) ([]byte, error) {
	var body []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBodies).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("body of letter %s: %w", id, ErrNotFound)
		}
		body = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return body, nil
}

// Held lists the letters waiting for an admin, oldest first.
func (s *Store) Held() ([]Letter, error) {
	var out []Letter
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHeld).ForEach(func(k, _ []byte) error {
			l, err := getLetter(tx, string(k))
			if err != nil {
				return err
			}
			out = append(out, *l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list held: %w", err)
	}
	return out, nil
}

// Release counts a held letter as an admin decided, with verdict "admin"
// and pending from now (SPEC 7: its batch clock starts at the release). If
// its sender was counted meanwhile it becomes a duplicate (SPEC 5) and is
// never batched; its body is removed, and Release returns once the store
// file's free pages are wiped of it. Mail to postmaster is never counted:
// it can only be dropped. A letter held as unbatchable was counted already;
// releasing it puts it back in the pending queue for another try. On a
// secondary, a letter held as forward_failed goes back in the forwarding
// queue.
func (s *Store) Release(ctx context.Context, id string) (duplicate bool, err error) {
	if duplicate, err = s.release(ctx, id); err != nil || !duplicate {
		return duplicate, err
	}
	return true, s.wipeRemoved(ctx, "release "+id)
}

// release is Release but for the wipe.
func (s *Store) release(ctx context.Context, id string) (duplicate bool, err error) {
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		duplicate = false
		l, err := getLetter(tx, id)
		if err != nil {
			return err
		}
		if l.State != StateHeld {
			return fmt.Errorf("letter %s is %s, not held: %w", id, l.State, ErrState)
		}
		if l.HeldReason == HeldForwardFailed {
			return s.releaseForward(tx, w, l)
		}
		if l.HeldReason == HeldPostmaster {
			return fmt.Errorf("letter %s is postmaster mail, which is never counted (drop it): %w", id, ErrState)
		}
		if l.DedupKey == nil {
			return fmt.Errorf("letter %s has no sender address to count: %w", id, ErrState)
		}
		meta := tx.Bucket(bucketMeta)
		if err := tx.Bucket(bucketHeld).Delete([]byte(id)); err != nil {
			return err
		}
		if err := unindexHeld(tx, l); err != nil {
			return err
		}
		if err := addU64(meta, ctrHeld, -1); err != nil {
			return err
		}
		ev := Event{Letter: id, Sender: l.From, IP: l.RemoteIP}
		now := s.now().UTC()
		switch {
		case l.HeldReason == HeldUnbatchable:
			// Counted when it arrived: only back into the queue.
			l.State, l.HeldReason, l.PendingSince = StatePending, "", now
			ev.Event, ev.Reason = EventReleased, "back in the pending queue after it could not be batched"
			if err := queuePending(tx, l); err != nil {
				return err
			}
		case tx.Bucket(bucketDedup).Get(l.DedupKey) != nil:
			duplicate = true
			l.State = StateDuplicate
			ev.Event, ev.Reason, ev.DuplicateOf = EventDuplicate, "released, but the sender was counted meanwhile", DuplicateOfCounted
			if err := tx.Bucket(bucketBodies).Delete([]byte(id)); err != nil {
				return err
			}
			if err := markWipe(tx); err != nil {
				return err
			}
			if err := addU64(meta, ctrDuplicates, 1); err != nil {
				return err
			}
		default:
			l.State, l.HeldReason, l.PendingSince = StatePending, "", now
			l.Verdict.Kind = VerdictAdmin
			ev.Event, ev.Reason = EventReleased, verdictReason(l.Verdict)
			if err := countLetter(tx, l, nil); err != nil {
				return err
			}
		}
		if err := putLetter(tx, l); err != nil {
			return err
		}
		return w.event(ev)
	})
	if err != nil {
		return false, fmt.Errorf("store: release %s: %w", id, err)
	}
	return duplicate, nil
}

// HoldUnbatchable moves a pending letter to the held letters with reason
// "unbatchable", because the batch builder could not take it (why says what
// went wrong), so later batches are not blocked by it. It stays counted; an
// admin may release it (another try) or drop it.
func (s *Store) HoldUnbatchable(ctx context.Context, id, why string) error {
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		l, err := getLetter(tx, id)
		if err != nil {
			return err
		}
		if l.State != StatePending {
			return fmt.Errorf("letter %s is %s, not pending: %w", id, l.State, ErrState)
		}
		if err := unqueuePending(tx, l); err != nil {
			return err
		}
		if err := tx.Bucket(bucketHeld).Put([]byte(id), nil); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := addU64(meta, ctrHeld, 1); err != nil {
			return err
		}
		l.State, l.HeldReason, l.PendingSince = StateHeld, HeldUnbatchable, time.Time{}
		if err := putLetter(tx, l); err != nil {
			return err
		}
		return w.event(Event{Event: EventHeld, Letter: id, Sender: l.From, IP: l.RemoteIP,
			Reason: string(HeldUnbatchable) + ": " + why})
	})
	if err != nil {
		return fmt.Errorf("store: hold unbatchable letter %s: %w", id, err)
	}
	return nil
}

// Drop removes a held letter and its body; an unbatchable one is uncounted.
// It returns once the store file's free pages are wiped of them.
func (s *Store) Drop(ctx context.Context, id string) error {
	if err := s.drop(ctx, id); err != nil {
		return err
	}
	return s.wipeRemoved(ctx, "drop "+id)
}

// drop is Drop but for the wipe.
func (s *Store) drop(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		l, err := getLetter(tx, id)
		if err != nil {
			return err
		}
		if l.State != StateHeld {
			return fmt.Errorf("letter %s is %s, not held: %w", id, l.State, ErrState)
		}
		for _, b := range [][]byte{bucketHeld, bucketBodies, bucketLetters} {
			if err := tx.Bucket(b).Delete([]byte(id)); err != nil {
				return err
			}
		}
		if err := unindexHeld(tx, l); err != nil {
			return err
		}
		if err := markWipe(tx); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := addU64(meta, ctrHeld, -1); err != nil {
			return err
		}
		if l.HeldReason == HeldUnbatchable {
			// It was counted, and will never be in a batch: uncount it, so
			// the tally says what the organisations get and the sender
			// may sign again.
			if err := addU64(meta, ctrCounted, -1); err != nil {
				return err
			}
			dedup := tx.Bucket(bucketDedup)
			if string(dedup.Get(l.DedupKey)) == id {
				if err := dedup.Delete(l.DedupKey); err != nil {
					return err
				}
			}
		}
		return w.event(Event{Event: EventDropped, Letter: id, Sender: l.From, IP: l.RemoteIP, Reason: string(l.HeldReason)})
	})
	if err != nil {
		return fmt.Errorf("store: drop %s: %w", id, err)
	}
	return nil
}

// Stats returns the tally; deliveries are counted from the batch records.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		st.Counted = getU64(meta, ctrCounted)
		st.Duplicates = getU64(meta, ctrDuplicates)
		st.Held = getU64(meta, ctrHeld)
		st.Rejected = getU64(meta, ctrRejected)
		st.Batches = getU64(meta, ctrBatches)
		st.Pending = getU64(meta, ctrPending)
		st.Forward = forwardCounts(meta)
		st.Supporters = supporterMailCounts(tx)
		return tx.Bucket(bucketBatches).ForEach(func(_, v []byte) error {
			var b Batch
			if err := json.Unmarshal(v, &b); err != nil {
				return err
			}
			for _, d := range b.Recipients {
				switch d.State {
				case DeliveryQueued:
					st.Deliveries.Queued++
				case DeliveryDeferred:
					st.Deliveries.Deferred++
				case DeliveryDelivered:
					st.Deliveries.Delivered++
				case DeliveryFailed:
					st.Deliveries.Failed++
				}
			}
			return nil
		})
	})
	if err != nil {
		return Stats{}, fmt.Errorf("store: stats: %w", err)
	}
	return st, nil
}

// PendingState is what the batch closer decides on (SPEC 7).
type PendingState struct {
	// Letters is how many counted letters wait for a batch.
	Letters int
	// Oldest is when the longest-waiting one became pending (zero when
	// none waits).
	Oldest time.Time
	// LastWaitClose is when the last batch closed for the time rule
	// (zero when none did).
	LastWaitClose time.Time
}

// Pending reports what waits for a batch.
func (s *Store) Pending() (PendingState, error) {
	var p PendingState
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		p.Letters = int(getU64(meta, ctrPending))
		if v := getU64(meta, keyLastWaitClose); v != 0 {
			p.LastWaitClose = time.Unix(0, int64(v)).UTC()
		}
		if k, _ := tx.Bucket(bucketPending).Cursor().First(); k != nil {
			p.Oldest = pendingSince(k)
		}
		return nil
	})
	if err != nil {
		return PendingState{}, fmt.Errorf("store: pending: %w", err)
	}
	return p, nil
}
