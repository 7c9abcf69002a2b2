package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A supporter's rights (SPEC 13): Lookup says what the store holds about one
// supporter, Erase removes their personal data, ForgetOldSenders takes the
// sender and IP out of journal events older than the retention time.
//
// Letters are found through the sender index (index.go), never by reading
// every letter. Journal events carry letter IDs but not dedup keys, and some
// name a sender without a stored letter (a rejection, a verified
// duplicate), so Lookup and Erase read the journal once; it is bounded by
// Options.JournalMax, which bounds that read too.

// StateErased is a letter withdrawn at its supporter's request before it
// went into a batch: it is never sent and no longer counted or held.
const StateErased LetterState = "erased"

// erasedText stands in the reason of an event for the address, or its
// domain, of a supporter who was erased or forgotten.
const erasedText = "[erased]"

// keyEventsForgotten is the sequence number up to which journal events
// have lost their sender and IP to the retention time.
var keyEventsForgotten = []byte("events_forgotten")

// forgetPage is how many journal events one ForgetOldSenders commit takes.
const forgetPage = 1000

// Supporter names one supporter for Lookup and Erase.
type Supporter struct {
	// Address is the normalised address (SPEC 6); its dedup key finds the
	// supporter's letters in the sender index.
	Address string
	// Same reports whether an address as written (in an event, or on
	// postmaster mail, which has no dedup key) is the supporter's, under
	// the same normalisation. Nil matches only through letter IDs.
	Same func(addr string) bool
}

func (sp Supporter) same(addr string) bool {
	return addr != "" && sp.Same != nil && sp.Same(addr)
}

// SupporterLetter is one of a supporter's letters, as Lookup found it.
type SupporterLetter struct {
	Letter
	// Body says whether the letter's text is still stored.
	Body bool
	// Delivered says the letter's batch reached every recipient.
	Delivered bool
}

// SupporterBatch is a batch that carried one of a supporter's letters.
type SupporterBatch struct {
	ID uint64
	// Delivered says every recipient has its copy.
	Delivered bool
	// Message is what became of the stored message: "kept", "purged"
	// (after retention) or "erased".
	Message string
}

// SupporterRecord is what the store holds about a supporter.
type SupporterRecord struct {
	Letters []SupporterLetter
	Batches []SupporterBatch
	// Events counts the journal events that still name the supporter
	// (their address or IP), about their letters or their address.
	Events int
}

// Lookup returns what the store holds about a supporter: every letter the
// sender index (or, for postmaster mail, the held list) has from them, the
// batches that carried those letters, and how many journal events still
// name them.
func (s *Store) Lookup(sp Supporter) (*SupporterRecord, error) {
	key := s.DedupKey(sp.Address)
	var rec *SupporterRecord
	err := s.view(func(tx *bolt.Tx) error {
		rec = &SupporterRecord{}
		ids := supporterLetterIDs(tx, key, sp)
		batches := map[uint64]bool{}
		for _, id := range ids {
			l, err := getLetter(tx, id)
			if err != nil {
				continue // dropped by an admin: only its index entry is left
			}
			sl := SupporterLetter{Letter: *l, Body: tx.Bucket(bucketBodies).Get([]byte(id)) != nil}
			if l.Batch != 0 {
				b, err := getBatch(tx, l.Batch)
				if err != nil {
					return err
				}
				sl.Delivered = b.Complete()
				if !batches[b.ID] {
					batches[b.ID] = true
					rec.Batches = append(rec.Batches, SupporterBatch{ID: b.ID, Delivered: b.Complete(), Message: messageFate(b)})
				}
			}
			rec.Letters = append(rec.Letters, sl)
		}
		slices.SortFunc(rec.Batches, func(a, b SupporterBatch) int { return cmp.Compare(a.ID, b.ID) })
		matched := idSet(ids)
		return eachEvent(tx, 0, func(e *Event) error {
			if eventOf(e, matched, sp) && (e.Sender != "" || e.IP != "") {
				rec.Events++
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: look up a supporter: %w", err)
	}
	return rec, nil
}

func messageFate(b *Batch) string {
	switch {
	case b.Erased:
		return "erased"
	case b.Purged:
		return "purged"
	}
	return "kept"
}

// Erasure is what Erase removed: letter IDs and batch numbers, never an
// address.
type Erasure struct {
	// Letters lists every letter whose personal data was removed.
	Letters []string
	// Withdrawn lists those of them that were not in a batch: they are no
	// longer counted or held, and the supporter may sign again.
	Withdrawn []string
	// Batches lists the batches whose stored message was removed.
	Batches []uint64
	// Events counts the journal events that lost sender and IP.
	Events int
	// Wipe says what zeroing the freed pages did.
	Wipe WipeStats
}

// Erase removes a supporter's personal data (SPEC 13): address, display
// name, body and client IP from every letter of theirs, their held mail,
// the stored messages of batches that carried their letters, and their
// journal events (which stay, without sender and IP). A letter not yet in a
// batch is withdrawn: never sent, no longer counted, its dedup key removed.
// A batched letter stays counted, as an anonymous entry with its dedup
// key. One "erased" event names the letter IDs. It returns once the freed
// pages of the store file are wiped, so nothing erased stays readable.
//
// A batch whose copies are still being delivered (queued or deferred)
// needs its message: Erase then changes nothing and fails with ErrState,
// naming the batch; it can be run again once the batch is delivered (or
// failed, which erasing makes final).
func (s *Store) Erase(ctx context.Context, sp Supporter) (*Erasure, error) {
	er, err := s.eraseCommit(ctx, sp)
	if err != nil {
		return er, fmt.Errorf("store: erase a supporter: %w", err)
	}
	// The erasure is committed: finish the wipe even if the caller gives
	// up waiting (Close still stops it; Open then finishes it).
	er.Wipe, err = s.Wipe(context.WithoutCancel(ctx))
	if err != nil {
		return er, fmt.Errorf("store: erase a supporter: letters erased, but %w", err)
	}
	return er, nil
}

// eraseCommit is Erase up to the wipe: the erasure committed, the batch
// messages' files removed.
func (s *Store) eraseCommit(ctx context.Context, sp Supporter) (*Erasure, error) {
	key := s.DedupKey(sp.Address)
	// Read the journal outside the writer, so letters' commits do not
	// wait for it; the write transaction rewrites only what matched, and
	// reads the events committed since.
	var seen uint64
	var candidates []uint64
	err := s.view(func(tx *bolt.Tx) error {
		matched := idSet(supporterLetterIDs(tx, key, sp))
		seen = tx.Bucket(bucketEvents).Sequence()
		return eachEvent(tx, 0, func(e *Event) error {
			if eventOf(e, matched, sp) {
				candidates = append(candidates, e.Seq)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read the journal: %w", err)
	}
	var er *Erasure
	var files []string
	err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
		er, files = &Erasure{}, nil
		ids := supporterLetterIDs(tx, key, sp)
		letters, err := erasable(tx, ids)
		if err != nil {
			return err
		}
		batches := map[uint64]bool{}
		for _, id := range ids {
			l := letters[id]
			if l == nil {
				// Dropped: the index entry is all that is left.
				if err := tx.Bucket(bucketSenders).Delete(senderKey(key, id)); err != nil {
					return err
				}
				continue
			}
			withdrawn, err := eraseLetter(tx, l, key)
			if err != nil {
				return err
			}
			er.Letters = append(er.Letters, id)
			if withdrawn {
				er.Withdrawn = append(er.Withdrawn, id)
			}
			if l.Batch != 0 {
				batches[l.Batch] = true
			}
		}
		for _, n := range slices.Sorted(maps.Keys(batches)) {
			removed, erased, err := eraseBatchMessage(tx, n)
			if err != nil {
				return err
			}
			if erased {
				er.Batches = append(er.Batches, n)
			}
			files = append(files, removed...)
		}
		if err := eraseSupporterMail(tx, key, ids); err != nil {
			return err
		}
		if er.Events, err = scrubSupporterEvents(tx, candidates, seen, idSet(ids), sp); err != nil {
			return err
		}
		if err := markWipe(tx); err != nil {
			return err
		}
		return w.event(Event{Event: EventErased, Reason: erasureReason(er)})
	})
	if err != nil {
		return nil, err
	}
	failpoint("erase-committed")
	// The batches no longer name their files, so a crash before these
	// removals leaves files that Open sweeps.
	for _, f := range files {
		if err := s.removeMessage(f); err != nil {
			return er, err
		}
	}
	return er, nil
}

// erasable reads the supporter's letters and refuses the erasure while a
// batch that carries one is still being delivered.
func erasable(tx *bolt.Tx, ids []string) (map[string]*Letter, error) {
	letters := map[string]*Letter{}
	for _, id := range ids {
		l, err := getLetter(tx, id)
		if err != nil {
			continue
		}
		letters[id] = l
		if l.Batch == 0 {
			continue
		}
		b, err := getBatch(tx, l.Batch)
		if err != nil {
			return nil, err
		}
		for _, d := range b.Recipients {
			if d.State == DeliveryQueued || d.State == DeliveryDeferred {
				return nil, fmt.Errorf("letter %s is in batch %d, whose copy to %s is still %s: "+
					"erase once the batch is delivered (petitiond batches show %d): %w",
					id, b.ID, d.Address, d.State, b.ID, ErrState)
			}
		}
	}
	return letters, nil
}

// eraseLetter removes a letter's personal data. A letter in a batch stays
// counted and indexed; any other is withdrawn: out of the pending queue or
// the held list, uncounted if it was counted, its dedup key and index entry
// gone.
func eraseLetter(tx *bolt.Tx, l *Letter, key []byte) (withdrawn bool, err error) {
	id := []byte(l.ID)
	meta := tx.Bucket(bucketMeta)
	if err := tx.Bucket(bucketBodies).Delete(id); err != nil {
		return false, err
	}
	if l.State != StateBatched {
		withdrawn = true
		counted := false
		switch l.State {
		case StatePending:
			counted = true
			if err := unqueuePending(tx, l); err != nil {
				return false, err
			}
		case StateForwarding:
			if err := unqueueForward(tx, l); err != nil {
				return false, err
			}
		case StateHeld:
			counted = l.HeldReason == HeldUnbatchable
			if err := tx.Bucket(bucketHeld).Delete(id); err != nil {
				return false, err
			}
			if err := addU64(meta, ctrHeld, -1); err != nil {
				return false, err
			}
		}
		if counted {
			if err := addU64(meta, ctrCounted, -1); err != nil {
				return false, err
			}
		}
		dedup := tx.Bucket(bucketDedup)
		if len(l.DedupKey) > 0 && string(dedup.Get(l.DedupKey)) == l.ID {
			if err := dedup.Delete(l.DedupKey); err != nil {
				return false, err
			}
		}
		if err := tx.Bucket(bucketSenders).Delete(senderKey(key, l.ID)); err != nil {
			return false, err
		}
		l.State, l.HeldReason, l.PendingSince = StateErased, "", time.Time{}
	}
	// The verdict keeps how the letter verified, not the domain that says
	// whose it was.
	l.From, l.Name, l.RemoteIP, l.DedupKey, l.Forward = "", "", "", nil, nil
	l.Verdict = Verdict{Kind: l.Verdict.Kind}
	l.Erased = true
	return withdrawn, putLetter(tx, l)
}

// eraseBatchMessage removes a batch's stored messages (its own and its
// parts'), if it still has them, and returns the names of the files to
// delete once the transaction commits.
func eraseBatchMessage(tx *bolt.Tx, n uint64) (files []string, erased bool, err error) {
	b, err := getBatch(tx, n)
	if err != nil {
		return nil, false, err
	}
	if b.Purged || b.Erased {
		return nil, false, nil
	}
	files = b.Files()
	b.File, b.Erased = "", true
	for i := range b.Recipients {
		for j := range b.Recipients[i].Parts {
			b.Recipients[i].Parts[j].File = ""
		}
	}
	if err := tx.Bucket(bucketBatchMsg).Delete(u64(n)); err != nil {
		return nil, false, err
	}
	return files, true, putBatch(tx, b)
}

// scrubSupporterEvents clears the events the journal read found, and those
// committed since it read up to seen.
func scrubSupporterEvents(tx *bolt.Tx, candidates []uint64, seen uint64, ids map[string]bool, sp Supporter) (int, error) {
	b := tx.Bucket(bucketEvents)
	var changed []Event
	take := func(e *Event) error {
		if eventOf(e, ids, sp) && scrubEvent(e) {
			changed = append(changed, *e)
		}
		return nil
	}
	for _, seq := range candidates {
		v := b.Get(u64(seq))
		if v == nil {
			continue // trimmed off the journal meanwhile
		}
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return 0, fmt.Errorf("decode event %d: %w", seq, err)
		}
		if err := take(&e); err != nil {
			return 0, err
		}
	}
	if err := eachEvent(tx, seen, take); err != nil {
		return 0, err
	}
	return len(changed), putEvents(b, changed)
}

// erasureReason says in the "erased" event what was erased, by ID only.
func erasureReason(er *Erasure) string {
	var b strings.Builder
	fmt.Fprintf(&b, "personal data of %d letters removed", len(er.Letters))
	if len(er.Letters) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(er.Letters, " "))
	}
	if len(er.Withdrawn) > 0 {
		fmt.Fprintf(&b, "; withdrawn (not counted): %s", strings.Join(er.Withdrawn, " "))
	}
	if len(er.Batches) > 0 {
		nums := make([]string, len(er.Batches))
		for i, n := range er.Batches {
			nums[i] = fmt.Sprint(n)
		}
		fmt.Fprintf(&b, "; messages of batches %s removed", strings.Join(nums, " "))
	}
	fmt.Fprintf(&b, "; %d journal events cleared", er.Events)
	return b.String()
}

// ForgetOldSenders clears the sender and IP of journal events older than the
// retention time (SPEC 13), oldest first, and returns when the next event
// comes due. It takes events in groups: the time it returns is at least
// retention/100 away (1s to 1h). Call Wipe afterwards, so the old bytes
// leave the file too.
func (s *Store) ForgetOldSenders(ctx context.Context) (next time.Time, err error) {
	now := s.now()
	cutoff := now.Add(-s.retention)
	for more := true; more; {
		err = s.update(ctx, func(tx *bolt.Tx, w *writer) error {
			more, next = false, time.Time{}
			meta, b := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents)
			from := getU64(meta, keyEventsForgotten)
			last, n := from, 0
			var changed []Event
			c := b.Cursor()
			for k, v := c.Seek(u64(from + 1)); k != nil; k, v = c.Next() {
				if n == forgetPage {
					more = true
					break
				}
				n++
				var e Event
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
				}
				if e.Time.After(cutoff) {
					next = e.Time.Add(s.retention)
					break
				}
				if scrubEvent(&e) {
					changed = append(changed, e)
				}
				last = e.Seq
			}
			if last == from {
				return nil
			}
			if err := meta.Put(keyEventsForgotten, u64(last)); err != nil {
				return err
			}
			if len(changed) == 0 {
				return nil
			}
			if err := markWipe(tx); err != nil {
				return err
			}
			return putEvents(b, changed)
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("store: forget old events' senders: %w", err)
		}
	}
	gap := min(max(s.retention/100, time.Second), time.Hour)
	if next.IsZero() {
		// Nothing waits: an event yet to come is due a retention from now.
		next = now.Add(s.retention)
	}
	if soonest := now.Add(gap); next.Before(soonest) {
		next = soonest
	}
	return next, nil
}

// supporterLetterIDs is every letter ID the sender index holds for key,
// and held postmaster mail (which has no dedup key) from the supporter.
func supporterLetterIDs(tx *bolt.Tx, key []byte, sp Supporter) []string {
	ids := senderLetterIDs(tx, key)
	if sp.Same == nil {
		return ids
	}
	_ = tx.Bucket(bucketHeld).ForEach(func(k, _ []byte) error {
		l, err := getLetter(tx, string(k))
		if err == nil && len(l.DedupKey) == 0 && sp.same(l.From) && !slices.Contains(ids, l.ID) {
			ids = append(ids, l.ID)
		}
		return nil
	})
	slices.Sort(ids)
	return ids
}

// eachEvent calls fn with every journal event after seq after, oldest first.
func eachEvent(tx *bolt.Tx, after uint64, fn func(e *Event) error) error {
	c := tx.Bucket(bucketEvents).Cursor()
	for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decode event %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if err := fn(&e); err != nil {
			return err
		}
	}
	return nil
}

func putEvents(b *bolt.Bucket, events []Event) error {
	for _, e := range events {
		data, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", e.Seq, err)
		}
		if err := b.Put(u64(e.Seq), data); err != nil {
			return fmt.Errorf("put event %d: %w", e.Seq, err)
		}
	}
	return nil
}

// eventOf reports whether an event is about one of the letters, or names
// the supporter as its sender.
func eventOf(e *Event, ids map[string]bool, sp Supporter) bool {
	return (e.Letter != "" && ids[e.Letter]) || sp.same(e.Sender)
}

// scrubEvent removes what names a supporter from an event: its sender and
// IP, and the address or its domain where the reason repeats them. It
// reports whether the event changed.
func scrubEvent(e *Event) bool {
	if e.Sender == "" && e.IP == "" {
		return false
	}
	if e.Sender != "" {
		e.Reason = replaceFold(e.Reason, e.Sender, erasedText)
		if at := strings.LastIndexByte(e.Sender, '@'); at >= 0 && at+1 < len(e.Sender) {
			e.Reason = replaceFold(e.Reason, e.Sender[at+1:], erasedText)
		}
	}
	e.Sender, e.IP = "", ""
	return true
}

// replaceFold replaces old in s, in any case, with repl.
func replaceFold(s, old, repl string) string {
	if old == "" {
		return s
	}
	lower, lowerOld := strings.ToLower(s), strings.ToLower(old)
	if len(lower) != len(s) || len(lowerOld) != len(old) {
		// Case folding changed lengths (rare non-ASCII): exact matches only.
		return strings.ReplaceAll(s, old, repl)
	}
	var b strings.Builder
	for {
		i := strings.Index(lower, lowerOld)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(repl)
		s, lower = s[i+len(old):], lower[i+len(old):]
	}
}

func idSet(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}
