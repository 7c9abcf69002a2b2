package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Confirmation by reply (SPEC 11). A letter held with reason confirm asks
// for a request to its From address, unless that address has a live
// request already (the letter then waits for that one). A request waits
// its turn under verify.confirm_per_hour (relay/notify decides when), then
// leaves with a token made for it; a reply to the token's address counts
// one held confirm letter of the address and makes the others duplicates.
// After verify.confirm_ttl, or when the request cannot be delivered, the
// letters stay held as unconfirmed. Every request lives in the store from
// the letter's commit on, so a restart loses none; its token exists only
// from when it leaves, kept as the SHA-256 of its secret, and in the
// queued message until that is delivered.
var (
	// bucketConfirm: the ID of the letter that asked → confirmRecord.
	bucketConfirm = []byte("confirm")
	// bucketConfirmWait: pendingKey(asked, letter) → nil: the requests
	// waiting their turn, oldest first.
	bucketConfirmWait = []byte("confirm_wait")
	// bucketConfirmTokens: token ID → letter of the request it belongs to.
	bucketConfirmTokens = []byte("confirm_tokens")
	// bucketConfirmSenders: dedup key → letter of the address's request,
	// waiting or live: at most one per address.
	bucketConfirmSenders = []byte("confirm_senders")
	// bucketConfirmExpiry: pendingKey(expires, letter) → nil.
	bucketConfirmExpiry = []byte("confirm_expiry")
	// bucketConfirmSent: pendingKey(sent, letter) → nil: the requests that
	// left within the last hour, for verify.confirm_per_hour.
	bucketConfirmSent = []byte("confirm_sent")
	// bucketReceiptsDue: letter ID → the count when it was counted: newly
	// counted verified letters whose receipt is still to be made.
	bucketReceiptsDue = []byte("receipts_due")
)

// supporterBuckets are the buckets of the mail to supporters: this file's
// and outmail.go's.
var supporterBuckets = [][]byte{bucketConfirm, bucketConfirmWait, bucketConfirmTokens, bucketConfirmSenders,
	bucketConfirmExpiry, bucketConfirmSent, bucketReceiptsDue, bucketMail, bucketMailMsg, bucketMailQueue, bucketMailLast}

// Counters of the mail to supporters, in the meta bucket.
var (
	ctrConfirmSent          = []byte("n_confirm_sent")
	ctrConfirmed            = []byte("n_confirmed")
	ctrConfirmExpired       = []byte("n_confirm_expired")
	ctrConfirmUndeliverable = []byte("n_confirm_undeliverable")
	ctrReceiptsSent         = []byte("n_receipts_sent")
)

// confirmWindow is the span verify.confirm_per_hour counts requests in.
const confirmWindow = time.Hour

// confirmExpireBatch bounds the requests one ExpireConfirmations ends.
const confirmExpireBatch = 256

// ConfirmToken is the token of a confirmation address, in two parts: ID
// finds the request, Secret proves that the reply saw it. The store keeps
// only the secret's SHA-256, and compares it in constant time.
type ConfirmToken struct {
	ID, Secret string
}

func (t ConfirmToken) hash() []byte {
	h := sha256.Sum256([]byte(t.Secret))
	return h[:]
}

// confirmRecord is a confirmation request as the store keeps it. Token,
// sent and expiry are set once it left.
type confirmRecord struct {
	Letter   string    `json:"letter"`
	DedupKey []byte    `json:"dedup_key"`
	To       string    `json:"to"`
	Via      string    `json:"via"`
	Asked    time.Time `json:"asked"`
	TokenID  string    `json:"token_id,omitempty"`
	Hash     []byte    `json:"hash,omitempty"`
	Sent     time.Time `json:"sent,omitzero"`
	Expires  time.Time `json:"expires,omitzero"`
	Mail     uint64    `json:"mail,omitempty"`
}

// ConfirmRequest is a confirmation request waiting for its turn.
type ConfirmRequest struct {
	// Letter is the letter that asked for it: the request answers it.
	Letter string
	// To is that letter's From address, where the request goes.
	To string
	// Via is the campaign address the letter was sent to; the
	// confirmation address is made from it.
	Via   string
	Asked time.Time
}

func getConfirm(tx *bolt.Tx, letter string) (*confirmRecord, error) {
	v := tx.Bucket(bucketConfirm).Get([]byte(letter))
	if v == nil {
		return nil, nil
	}
	var r confirmRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode the confirmation request of %s: %w", letter, err)
	}
	return &r, nil
}

func putConfirm(tx *bolt.Tx, r *confirmRecord) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode the confirmation request of %s: %w", r.Letter, err)
	}
	return tx.Bucket(bucketConfirm).Put([]byte(r.Letter), data)
}

// askConfirm records that the held letter l wants its sender asked, in
// Accept's transaction: a new request waiting its turn, or, when the
// address has one already, nothing (the letter waits for that one). ev is
// the letter's held event.
func askConfirm(tx *bolt.Tx, l *Letter, via string, ev *Event) error {
	if via == "" || len(l.DedupKey) == 0 {
		return fmt.Errorf("letter %s held for confirmation needs its campaign address and a dedup address", l.ID)
	}
	if prev := tx.Bucket(bucketConfirmSenders).Get(l.DedupKey); prev != nil {
		ev.Reason += "; waits for the confirmation request of " + string(prev)
		return nil
	}
	r := &confirmRecord{Letter: l.ID, DedupKey: l.DedupKey, To: l.From, Via: via, Asked: l.Received}
	if err := putConfirm(tx, r); err != nil {
		return err
	}
	if err := tx.Bucket(bucketConfirmWait).Put(pendingKey(r.Asked, r.Letter), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bucketConfirmSenders).Put(l.DedupKey, []byte(l.ID)); err != nil {
		return err
	}
	ev.Reason += "; a confirmation request to the sender waits its turn"
	return nil
}

// ConfirmWaiting lists up to limit requests waiting for their turn, oldest
// first.
func (s *Store) ConfirmWaiting(limit int) ([]ConfirmRequest, error) {
	var out []ConfirmRequest
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConfirmWait).Cursor()
		for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
			r, err := getConfirm(tx, string(k[8:]))
			if err != nil {
				return err
			}
			if r == nil {
				return fmt.Errorf("the waiting confirmation request of %s has no record", k[8:])
			}
			out = append(out, ConfirmRequest{Letter: r.Letter, To: r.To, Via: r.Via, Asked: r.Asked})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: confirmation requests waiting: %w", err)
	}
	return out, nil
}

// ConfirmsSentSince counts the requests that left after since (at most an
// hour back: older ones are forgotten) and says when the first of them
// left (zero when none did).
func (s *Store) ConfirmsSentSince(since time.Time) (n int, first time.Time, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConfirmSent).Cursor()
		for k, _ := c.Seek(pendingKey(since.Add(time.Nanosecond), "")); k != nil; k, _ = c.Next() {
			if n == 0 {
				first = pendingSince(k)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("store: confirmation requests sent: %w", err)
	}
	return n, first, nil
}

// ConfirmSend is a waiting request made ready to leave: its token and the
// message that carries it.
type ConfirmSend struct {
	Letter  string
	Token   ConfirmToken
	Message []byte
	// TTL is verify.confirm_ttl: how long the request can be answered, and
	// the least time between two requests to one address.
	TTL time.Duration
}

// ConfirmOutcome is what SendConfirm did with a waiting request.
type ConfirmOutcome string

// Outcomes of SendConfirm.
const (
	// ConfirmQueued: the request left: its message waits for delivery.
	ConfirmQueued ConfirmOutcome = "queued"
	// ConfirmNothingHeld: no letter of the address is held for
	// confirmation any more (an admin released or dropped them): the
	// request ended without a message.
	ConfirmNothingHeld ConfirmOutcome = "nothing held"
	// ConfirmTooSoon: a request went to the address less than TTL ago:
	// no message; the letters are held as unconfirmed.
	ConfirmTooSoon ConfirmOutcome = "too soon"
)

// SendConfirm lets a waiting request leave: its token is recorded (as a
// hash), its message queued for delivery, event confirm_sent, and it can
// be answered for cs.TTL from now. It fails with ErrNotFound when the
// request is not waiting any more.
func (s *Store) SendConfirm(ctx context.Context, cs ConfirmSend) (ConfirmOutcome, error) {
	var out ConfirmOutcome
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		out = ""
		r, err := getConfirm(tx, cs.Letter)
		if err != nil {
			return err
		}
		if r == nil || r.TokenID != "" {
			return fmt.Errorf("no confirmation request of %s waits: %w", cs.Letter, ErrNotFound)
		}
		letters, err := heldForConfirmation(tx, r.DedupKey)
		if err != nil {
			return err
		}
		if len(letters) == 0 {
			out = ConfirmNothingHeld
			return removeConfirm(tx, r)
		}
		now := s.now().UTC()
		if last := lastMail(tx, MailConfirm, r.DedupKey); !last.IsZero() && now.Sub(last) < cs.TTL {
			out = ConfirmTooSoon
			return endConfirm(tx, w, r, letters, fmt.Sprintf(
				"no confirmation request: one went to this address less than %s ago (verify.confirm_ttl)", cs.TTL))
		}
		tokens := tx.Bucket(bucketConfirmTokens)
		if tokens.Get([]byte(cs.Token.ID)) != nil {
			return fmt.Errorf("confirmation token ID %s is in use", cs.Token.ID)
		}
		m := &OutMail{Purpose: MailConfirm, Letter: r.Letter, To: r.To, DedupKey: r.DedupKey}
		if err := enqueueMail(tx, m, cs.Message, now); err != nil {
			return err
		}
		if err := tx.Bucket(bucketConfirmWait).Delete(pendingKey(r.Asked, r.Letter)); err != nil {
			return err
		}
		r.TokenID, r.Hash, r.Sent, r.Expires, r.Mail = cs.Token.ID, cs.Token.hash(), now, now.Add(cs.TTL), m.ID
		if err := putConfirm(tx, r); err != nil {
			return err
		}
		for _, kv := range []struct{ bucket, key, val []byte }{
			{bucketConfirmTokens, []byte(r.TokenID), []byte(r.Letter)},
			{bucketConfirmExpiry, pendingKey(r.Expires, r.Letter), nil},
			{bucketConfirmSent, pendingKey(now, r.Letter), nil},
		} {
			if err := tx.Bucket(kv.bucket).Put(kv.key, kv.val); err != nil {
				return err
			}
		}
		if err := forgetSentBefore(tx, now.Add(-confirmWindow)); err != nil {
			return err
		}
		if err := addU64(tx.Bucket(bucketMeta), ctrConfirmSent, 1); err != nil {
			return err
		}
		out = ConfirmQueued
		return w.event(Event{Event: EventConfirmSent, Letter: r.Letter, Sender: r.To,
			Reason: fmt.Sprintf("confirmation request queued for the sender (mail %d); it can be answered until %s",
				m.ID, r.Expires.Format(time.RFC3339))})
	})
	if err != nil {
		return "", fmt.Errorf("store: send the confirmation request of %s: %w", cs.Letter, err)
	}
	return out, nil
}

// EndConfirm ends a waiting request that cannot be sent (its message
// could not be made): its letters are held as unconfirmed, why saying why.
func (s *Store) EndConfirm(ctx context.Context, letter, why string) error {
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		r, err := getConfirm(tx, letter)
		if err != nil {
			return err
		}
		if r == nil || r.TokenID != "" {
			return fmt.Errorf("no confirmation request of %s waits: %w", letter, ErrNotFound)
		}
		letters, err := heldForConfirmation(tx, r.DedupKey)
		if err != nil {
			return err
		}
		return endConfirm(tx, w, r, letters, "no confirmation request: "+why)
	})
	if err != nil {
		return fmt.Errorf("store: end the confirmation request of %s: %w", letter, err)
	}
	return nil
}

// forgetSentBefore drops the sent requests that no longer count against
// verify.confirm_per_hour.
func forgetSentBefore(tx *bolt.Tx, before time.Time) error {
	c := tx.Bucket(bucketConfirmSent).Cursor()
	for k, _ := c.First(); k != nil && pendingSince(k).Before(before); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// heldForConfirmation lists the letters of the supporter with dedupKey
// held with reason confirm, oldest first.
func heldForConfirmation(tx *bolt.Tx, dedupKey []byte) ([]*Letter, error) {
	var out []*Letter
	for _, id := range senderLetterIDs(tx, dedupKey) {
		l, err := getLetter(tx, id)
		if err != nil {
			continue // dropped: only its index entry is left
		}
		if l.State == StateHeld && l.HeldReason == HeldConfirm {
			out = append(out, l)
		}
	}
	return out, nil
}

// removeConfirm deletes a request and its index entries: its token dies.
func removeConfirm(tx *bolt.Tx, r *confirmRecord) error {
	if err := tx.Bucket(bucketConfirm).Delete([]byte(r.Letter)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketConfirmWait).Delete(pendingKey(r.Asked, r.Letter)); err != nil {
		return err
	}
	if r.TokenID != "" {
		if err := tx.Bucket(bucketConfirmTokens).Delete([]byte(r.TokenID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketConfirmExpiry).Delete(pendingKey(r.Expires, r.Letter)); err != nil {
			return err
		}
	}
	senders := tx.Bucket(bucketConfirmSenders)
	if string(senders.Get(r.DedupKey)) == r.Letter {
		return senders.Delete(r.DedupKey)
	}
	return nil
}

// endConfirm ends a request without a reply: it is removed, and the
// letters held for it are held as unconfirmed, why saying why, each with a
// held event.
func endConfirm(tx *bolt.Tx, w *writer, r *confirmRecord, letters []*Letter, why string) error {
	if err := removeConfirm(tx, r); err != nil {
		return err
	}
	for _, l := range letters {
		l.HeldReason = HeldUnconfirmed
		if err := putLetter(tx, l); err != nil {
			return err
		}
		if err := w.event(Event{Event: EventHeld, Letter: l.ID, Sender: l.From, IP: l.RemoteIP,
			Reason: string(HeldUnconfirmed) + ": " + why}); err != nil {
			return err
		}
	}
	return nil
}

// ExpireConfirmations ends the requests whose time to answer ran out at or
// before now: their letters are held as unconfirmed. It ends at most a few
// hundred per call and returns how many, and when the next one expires
// (zero when none is live; not after now when more are due already).
func (s *Store) ExpireConfirmations(ctx context.Context, now time.Time) (ended int, next time.Time, err error) {
	// Most calls find nothing due: a read says so without a commit.
	var first time.Time
	err = s.view(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketConfirmExpiry).Cursor().First(); k != nil {
			first = pendingSince(k)
		}
		return nil
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("store: expire confirmation requests: %w", err)
	}
	if first.IsZero() || first.After(now) {
		return 0, first, nil
	}
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		ended, next = 0, time.Time{}
		c := tx.Bucket(bucketConfirmExpiry).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.First() {
			if at := pendingSince(k); at.After(now) || ended == confirmExpireBatch {
				next = at
				return nil
			}
			r, err := getConfirm(tx, string(k[8:]))
			if err != nil {
				return err
			}
			if r == nil {
				if err := c.Delete(); err != nil {
					return err
				}
				continue
			}
			letters, err := heldForConfirmation(tx, r.DedupKey)
			if err != nil {
				return err
			}
			if err := endConfirm(tx, w, r, letters, fmt.Sprintf("no reply to the confirmation request sent %s (verify.confirm_ttl)",
				r.Sent.Format(time.RFC3339))); err != nil {
				return err
			}
			if err := addU64(tx.Bucket(bucketMeta), ctrConfirmExpired, 1); err != nil {
				return err
			}
			ended++
		}
		return nil
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("store: expire confirmation requests: %w", err)
	}
	return ended, next, nil
}

// liveConfirm finds the request tok belongs to, if it is live at now: the
// secret's hash is compared in constant time.
func liveConfirm(tx *bolt.Tx, tok ConfirmToken, now time.Time) (*confirmRecord, error) {
	letter := tx.Bucket(bucketConfirmTokens).Get([]byte(tok.ID))
	if letter == nil {
		return nil, nil
	}
	r, err := getConfirm(tx, string(letter))
	if err != nil || r == nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(tok.hash(), r.Hash) != 1 || !now.Before(r.Expires) {
		return nil, nil
	}
	return r, nil
}

// ConfirmLive reports whether tok belongs to a request that can be
// answered now.
func (s *Store) ConfirmLive(tok ConfirmToken) (bool, error) {
	live := false
	err := s.view(func(tx *bolt.Tx) error {
		r, err := liveConfirm(tx, tok, s.now())
		live = r != nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: look up a confirmation token: %w", err)
	}
	return live, nil
}

// ConfirmReply is a reply to a confirmation address.
type ConfirmReply struct {
	Token ConfirmToken
	// Session and IP are the reply's SMTP session and client, for the
	// event.
	Session, IP string
}

// Confirmation is what a reply did.
type Confirmation struct {
	// Counted is the letter the reply counted, with verdict confirmed; ""
	// when none was (the sender was counted meanwhile, or an admin had
	// decided on every letter the request was for).
	Counted string
	// Duplicates are the other letters of the address held for
	// confirmation: not counted.
	Duplicates []string
}

// Confirm takes a reply to a live request: of the letters of its address
// held for confirmation, the one that asked (or else the oldest) is
// counted with verdict confirmed, the rest are duplicates, and the token
// dies. A sender counted meanwhile makes them all duplicates. An unknown,
// used or expired token is ErrNotFound.
func (s *Store) Confirm(ctx context.Context, cr ConfirmReply) (Confirmation, error) {
	var out Confirmation
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		out = Confirmation{}
		now := s.now().UTC()
		r, err := liveConfirm(tx, cr.Token, now)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("confirmation token %s is unknown, used or expired: %w", cr.Token.ID, ErrNotFound)
		}
		letters, err := heldForConfirmation(tx, r.DedupKey)
		if err != nil {
			return err
		}
		if err := removeConfirm(tx, r); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := addU64(meta, ctrConfirmed, 1); err != nil {
			return err
		}
		counted := tx.Bucket(bucketDedup).Get(r.DedupKey) != nil
		pick := -1
		if !counted {
			for i, l := range letters {
				if l.ID == r.Letter || pick < 0 {
					pick = i
				}
			}
		}
		ev := Event{Event: EventConfirmed, Letter: r.Letter, Sender: r.To, IP: cr.IP, Session: cr.Session,
			Reason: "confirmed by reply; no letter was held for it any more (an admin decided on it)"}
		for i, l := range letters {
			if err := s.unhold(tx, l); err != nil {
				return err
			}
			if i == pick {
				out.Counted = l.ID
				l.State, l.HeldReason, l.PendingSince, l.Verdict.Kind = StatePending, "", now, VerdictConfirmed
				if err := countLetter(tx, l, nil); err != nil {
					return err
				}
				if err := s.receiptDue(tx, l); err != nil {
					return err
				}
				ev.Letter, ev.Sender, ev.Reason = l.ID, l.From, verdictReason(l.Verdict)
			} else {
				out.Duplicates = append(out.Duplicates, l.ID)
				why := "the sender confirmed another letter"
				if counted {
					why = "confirmed, but the sender was counted meanwhile"
				}
				if err := s.markDuplicate(tx, w, l, why); err != nil {
					return err
				}
			}
			if err := putLetter(tx, l); err != nil {
				return err
			}
		}
		if counted && len(letters) > 0 {
			ev.Reason = "confirmed by reply, but the sender was counted meanwhile"
		}
		return w.event(ev)
	})
	if err != nil {
		return Confirmation{}, fmt.Errorf("store: confirm by reply: %w", err)
	}
	return out, nil
}

// unhold takes a held letter off the held list and its indexes.
func (s *Store) unhold(tx *bolt.Tx, l *Letter) error {
	if err := tx.Bucket(bucketHeld).Delete([]byte(l.ID)); err != nil {
		return err
	}
	if err := unindexHeld(tx, l); err != nil {
		return err
	}
	return addU64(tx.Bucket(bucketMeta), ctrHeld, -1)
}

// markDuplicate makes a letter taken off the held list a duplicate: its
// body goes, it is counted as a duplicate, with a duplicate event.
func (s *Store) markDuplicate(tx *bolt.Tx, w *writer, l *Letter, why string) error {
	l.State, l.HeldReason = StateDuplicate, ""
	if err := tx.Bucket(bucketBodies).Delete([]byte(l.ID)); err != nil {
		return err
	}
	if err := addU64(tx.Bucket(bucketMeta), ctrDuplicates, 1); err != nil {
		return err
	}
	return w.event(Event{Event: EventDuplicate, Letter: l.ID, Sender: l.From, IP: l.RemoteIP, Reason: why})
}

// receiptDue records, when receipts are on, that the newly counted letter
// l is owed a receipt naming the count it brought the tally to.
func (s *Store) receiptDue(tx *bolt.Tx, l *Letter) error {
	if !s.receipts || !l.Verdict.Verified() {
		return nil
	}
	return tx.Bucket(bucketReceiptsDue).Put([]byte(l.ID), u64(getU64(tx.Bucket(bucketMeta), ctrCounted)))
}

// ReceiptDue is a newly counted letter whose receipt is still to be made.
type ReceiptDue struct {
	Letter string
	// Count is how many letters were counted with it, it included.
	Count uint64
}

// ReceiptsDue lists up to limit letters owed a receipt, in ID order.
func (s *Store) ReceiptsDue(limit int) ([]ReceiptDue, error) {
	var out []ReceiptDue
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketReceiptsDue).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			out = append(out, ReceiptDue{Letter: string(k), Count: bytesU64(v)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: receipts due: %w", err)
	}
	return out, nil
}

// ReceiptSend is a receipt made for a letter that is owed one.
type ReceiptSend struct {
	Letter  string
	Message []byte
	// Gap is the least time between two receipts to one address
	// (verify.confirm_ttl).
	Gap time.Duration
}

// QueueReceipt queues a receipt for delivery, with event receipt_sent, and
// reports whether it did: a letter no longer counted (erased meanwhile),
// an address that got a receipt less than Gap ago, or a receipt without a
// message (none could be made) gets none. Either way the letter is owed
// nothing more. A letter not owed one is ErrNotFound.
func (s *Store) QueueReceipt(ctx context.Context, rs ReceiptSend) (bool, error) {
	queued := false
	err := s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		queued = false
		due := tx.Bucket(bucketReceiptsDue)
		v := due.Get([]byte(rs.Letter))
		if v == nil {
			return fmt.Errorf("letter %s is owed no receipt: %w", rs.Letter, ErrNotFound)
		}
		count := bytesU64(v)
		if err := due.Delete([]byte(rs.Letter)); err != nil {
			return err
		}
		l, err := getLetter(tx, rs.Letter)
		if err != nil || (l.State != StatePending && l.State != StateBatched) || l.Erased {
			return nil
		}
		now := s.now().UTC()
		if last := lastMail(tx, MailReceipt, l.DedupKey); len(rs.Message) == 0 || (!last.IsZero() && now.Sub(last) < rs.Gap) {
			return nil
		}
		m := &OutMail{Purpose: MailReceipt, Letter: l.ID, To: l.From, DedupKey: l.DedupKey}
		if err := enqueueMail(tx, m, rs.Message, now); err != nil {
			return err
		}
		if err := addU64(tx.Bucket(bucketMeta), ctrReceiptsSent, 1); err != nil {
			return err
		}
		queued = true
		return w.event(Event{Event: EventReceiptSent, Letter: l.ID, Sender: l.From,
			Reason: fmt.Sprintf("receipt queued for the sender (mail %d): letter %d counted", m.ID, count)})
	})
	if err != nil {
		return false, fmt.Errorf("store: queue the receipt of %s: %w", rs.Letter, err)
	}
	return queued, nil
}

// eraseSupporterMail removes what the mail to supporters holds about the
// supporter with dedupKey, whose letters are ids, inside Erase: the
// address's request, the mail waiting for delivery, receipts owed and
// the times of the last mail.
func eraseSupporterMail(tx *bolt.Tx, dedupKey []byte, ids []string) error {
	if letter := tx.Bucket(bucketConfirmSenders).Get(dedupKey); letter != nil {
		r, err := getConfirm(tx, string(letter))
		if err != nil {
			return err
		}
		if r != nil {
			if err := removeConfirm(tx, r); err != nil {
				return err
			}
		} else if err := tx.Bucket(bucketConfirmSenders).Delete(dedupKey); err != nil {
			return err
		}
	}
	due := tx.Bucket(bucketReceiptsDue)
	of := map[string]bool{}
	for _, id := range ids {
		of[id] = true
		if err := due.Delete([]byte(id)); err != nil {
			return err
		}
	}
	var drop []*OutMail
	err := tx.Bucket(bucketMail).ForEach(func(_, v []byte) error {
		var m OutMail
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		if of[m.Letter] || bytes.Equal(m.DedupKey, dedupKey) {
			drop = append(drop, &m)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range drop {
		if err := removeMail(tx, m); err != nil {
			return err
		}
	}
	for _, p := range []MailPurpose{MailConfirm, MailReceipt} {
		if err := tx.Bucket(bucketMailLast).Delete(lastMailKey(p, dedupKey)); err != nil {
			return err
		}
	}
	return nil
}

// supporterMailCounts reads the counts of the mail to supporters.
func supporterMailCounts(tx *bolt.Tx) SupporterMailCounts {
	meta := tx.Bucket(bucketMeta)
	return SupporterMailCounts{
		ConfirmWaiting:       uint64(tx.Bucket(bucketConfirmWait).Stats().KeyN),
		ConfirmLive:          uint64(tx.Bucket(bucketConfirmTokens).Stats().KeyN),
		ConfirmSent:          getU64(meta, ctrConfirmSent),
		ConfirmConfirmed:     getU64(meta, ctrConfirmed),
		ConfirmExpired:       getU64(meta, ctrConfirmExpired),
		ConfirmUndeliverable: getU64(meta, ctrConfirmUndeliverable),
		ReceiptsSent:         getU64(meta, ctrReceiptsSent),
		Queued:               uint64(tx.Bucket(bucketMail).Stats().KeyN),
	}
}

func bytesU64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}
