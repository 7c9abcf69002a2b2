package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// partsOf builds parts of sc from groups of letter positions (in
// sc.Letters), numbered on from the copy's parts.
func partsOf(sc *SplitCopy, groups ...[]int) []NewPart {
	var out []NewPart
	for i, g := range groups {
		np := NewPart{N: sc.NextPart + i, Of: sc.NextPart - 1 + len(groups),
			MessageID: fmt.Sprintf("<batch-%d.%d.part-%d@campaign.example>", sc.Ref.Batch, sc.Ref.Index, sc.NextPart+i)}
		var msg strings.Builder
		fmt.Fprintf(&msg, "Subject: part %d of %d\r\n\r\n", np.N, np.Of)
		for _, j := range g {
			np.LetterIDs = append(np.LetterIDs, sc.Letters[j].ID)
			msg.Write(sc.Letters[j].Body)
		}
		np.Message = []byte(msg.String())
		out = append(out, np)
	}
	return out
}

func mustBatch(t *testing.T, s *Store, id uint64) *Batch {
	t.Helper()
	b, err := s.Batch(id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A copy refused as too big is set aside, never sent whole again, and its
// letters go in parts that are queued and delivered like copies; a part
// refused in turn is split again; the copy's state sums its parts up; an
// admin's retry requeues only failed parts; the other recipient's copy is
// untouched; the parts' files survive a restart and go with the purge.
func TestSplitCopyIntoParts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	dir := t.TempDir()
	opt := Options{Now: clk.Now, Retention: time.Hour}
	s := openStore(t, dir, opt)
	ctx := context.Background()
	ids := acceptN(t, s, clk, 4)
	b, err := closeNext(ctx, s, 10, recipients)
	if err != nil {
		t.Fatal(err)
	}
	r0, r1 := DeliveryRef{Batch: b.ID, Index: 0}, DeliveryRef{Batch: b.ID, Index: 1}
	if _, err := s.StartAttempt(ctx, r0, at(clk.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	tb := TooBig{Size: 5000, Limit: 3000, Reason: "552 5.3.4 message too big"}
	if err := s.SplitTooBig(ctx, r0, tb); err != nil {
		t.Fatal(err)
	}
	d := mustBatch(t, s, b.ID).Recipients[0]
	if d.State != DeliveryDeferred || d.ErrorKind != FailureTooBig || d.TooBig == nil || *d.TooBig != tb ||
		!d.NextAttempt.IsZero() || !strings.Contains(d.LastError, "552 5.3.4") {
		t.Errorf("copy set aside = %+v", d)
	}
	if due := dueRefs(t, s, clk.Now().Add(24*time.Hour)); !slices.Equal(due, []DeliveryRef{r1}) {
		t.Errorf("Due = %v, want only the other recipient's copy", due)
	}
	if _, err := s.StartAttempt(ctx, r0, at(clk.Now())); !errors.Is(err, ErrState) {
		t.Errorf("StartAttempt of a copy set aside: %v, want ErrState", err)
	}
	if err := s.SplitTooBig(ctx, r0, tb); !errors.Is(err, ErrState) {
		t.Errorf("second SplitTooBig: %v, want ErrState", err)
	}
	if refs, err := s.SplitsDue(); err != nil || !slices.Equal(refs, []DeliveryRef{r0}) {
		t.Errorf("SplitsDue = %v, %v", refs, err)
	}

	sc, err := s.SplitSnapshot(r0)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Address != recipients[0] || sc.NextPart != 1 || sc.First != 0 || sc.BatchLetters != 4 || sc.RunningTotal != 4 ||
		sc.TooBig != tb || len(sc.Letters) != 4 || len(sc.Missing) != 0 {
		t.Fatalf("SplitSnapshot = %+v", sc)
	}
	for i, l := range sc.Letters {
		if body, _ := s.Body(ids[i]); l.ID != ids[i] || !bytes.Equal(l.Body, body) {
			t.Errorf("snapshot letter %d = %s", i, l.ID)
		}
	}
	for name, bad := range map[string][]NewPart{
		"numbered from 2":  func() []NewPart { p := partsOf(sc, []int{0, 1}, []int{2, 3}); p[0].N, p[1].N = 2, 3; return p }(),
		"letters reversed": partsOf(sc, []int{2, 3}, []int{0, 1}),
		"a letter twice":   partsOf(sc, []int{0, 1}, []int{1, 2, 3}),
	} {
		if err := s.AddParts(ctx, r0, bad); !errors.Is(err, ErrConflict) {
			t.Errorf("AddParts %s: %v, want ErrConflict", name, err)
		}
	}
	if files := messageFiles(t, dir); len(files) != 1 {
		t.Errorf("refused parts left files: %v", files)
	}
	parts := partsOf(sc, []int{0, 1}, []int{2, 3})
	if err := s.AddParts(ctx, r0, parts); err != nil {
		t.Fatal(err)
	}
	if err := s.AddParts(ctx, r0, parts); !errors.Is(err, ErrConflict) {
		t.Errorf("AddParts twice: %v, want ErrConflict", err)
	}
	if refs, _ := s.SplitsDue(); len(refs) != 0 {
		t.Errorf("SplitsDue after AddParts = %v", refs)
	}
	p1, p2 := DeliveryRef{Batch: b.ID, Index: 0, Part: 1}, DeliveryRef{Batch: b.ID, Index: 0, Part: 2}
	if due := dueRefs(t, s, clk.Now()); len(due) != 3 || !slices.Contains(due, p1) || !slices.Contains(due, p2) || !slices.Contains(due, r1) {
		t.Errorf("Due = %v, want both parts and the other recipient's copy", due)
	}
	for _, ref := range []DeliveryRef{p1, p2} {
		msg, err := s.DeliveryMessage(ref)
		if err != nil || !bytes.Equal(msg, parts[ref.Part-1].Message) {
			t.Errorf("DeliveryMessage(%v) = %q, %v", ref, msg, err)
		}
	}
	d = mustBatch(t, s, b.ID).Recipients[0]
	if d.State != DeliveryQueued || len(d.Parts) != 2 || d.Parts[1].N != 2 || d.Parts[1].Of != 2 ||
		!slices.Equal(d.Parts[1].LetterIDs, ids[2:]) || d.Parts[0].State != DeliveryQueued {
		t.Errorf("copy with parts = %+v", d)
	}
	if ev := eventsOfKind(t, s, EventSplit); len(ev) != 1 || ev[0].Recipient != recipients[0] || !strings.Contains(ev[0].Reason, "parts 1 to 2 of 2") {
		t.Errorf("split events = %+v", ev)
	}

	// Part 2 is refused too: its two letters go in parts 3 and 4.
	if _, err := s.StartAttempt(ctx, p2, at(clk.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := s.SplitTooBig(ctx, p2, TooBig{Size: 2800, Reason: "552 too big"}); err != nil {
		t.Fatal(err)
	}
	sc, err = s.SplitSnapshot(p2)
	if err != nil || sc.NextPart != 3 || sc.First != 2 || len(sc.Letters) != 2 || sc.Letters[0].ID != ids[2] {
		t.Fatalf("SplitSnapshot(part 2) = %+v, %v", sc, err)
	}
	if err := s.AddParts(ctx, p2, partsOf(sc, []int{0}, []int{1})); err != nil {
		t.Fatal(err)
	}
	p3, p4 := DeliveryRef{Batch: b.ID, Index: 0, Part: 3}, DeliveryRef{Batch: b.ID, Index: 0, Part: 4}
	d = mustBatch(t, s, b.ID).Recipients[0]
	if len(d.Parts) != 4 || d.Parts[1].State != DeliverySplit || d.Parts[3].Of != 4 || d.State != DeliveryQueued {
		t.Errorf("copy after part 2 split = %+v", d)
	}
	if _, err := s.StartAttempt(ctx, p2, at(clk.Now())); !errors.Is(err, ErrState) {
		t.Errorf("StartAttempt of a split part: %v, want ErrState", err)
	}

	// The parts survive a restart (Open sweeps only files no batch names).
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, opt)
	if files := messageFiles(t, dir); len(files) != 5 {
		t.Errorf("message files after reopening = %v, want the batch's and 4 parts'", files)
	}

	for _, ref := range []DeliveryRef{p1, p3} {
		if _, err := s.StartAttempt(ctx, ref, at(clk.Now().Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkDelivered(ctx, ref, "250 ok"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.StartAttempt(ctx, p4, at(clk.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := s.DeferAs(ctx, p4, clk.Now().Add(time.Hour), FailureOther, "451 4.3.0 later"); err != nil {
		t.Fatal(err)
	}
	d = mustBatch(t, s, b.ID).Recipients[0]
	if d.State != DeliveryDeferred || !d.NextAttempt.Equal(clk.Now().Add(time.Hour)) || !strings.Contains(d.LastError, "part 4 of 4: 451 4.3.0 later") {
		t.Errorf("copy with a deferred part = %+v", d)
	}
	if _, err := s.StartAttempt(ctx, p4, at(clk.Now().Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := s.FailAs(ctx, p4, FailureTooBig, "letter alone too big"); err != nil {
		t.Fatal(err)
	}
	d = mustBatch(t, s, b.ID).Recipients[0]
	if d.State != DeliveryFailed || d.ErrorKind != FailureTooBig || !strings.Contains(d.LastError, "part 4 of 4 failed: letter alone too big") {
		t.Errorf("copy with a failed part = %+v", d)
	}
	if ev := eventsOfKind(t, s, EventFailed); len(ev) != 1 || !strings.HasPrefix(ev[0].Reason, "part 4 of 4: ") {
		t.Errorf("failed events = %+v", ev)
	}

	// An admin's retry requeues the failed part, not the whole batch.
	if n, err := s.Retry(ctx, b.ID); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	if due := dueRefs(t, s, clk.Now()); !slices.Contains(due, p4) || slices.Contains(due, r0) {
		t.Errorf("Due after retry = %v, want part 4 and not the whole copy", due)
	}
	for _, ref := range []DeliveryRef{p4, r1} {
		if _, err := s.StartAttempt(ctx, ref, at(clk.Now().Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkDelivered(ctx, ref, "250 ok"); err != nil {
			t.Fatal(err)
		}
	}
	b = mustBatch(t, s, b.ID)
	if d := b.Recipients[0]; d.State != DeliveryDelivered || d.LastError != "" || d.Done.IsZero() || !b.Complete() || b.PurgeAt.IsZero() {
		t.Errorf("delivered in parts: %+v, complete %v, purge at %v", d, b.Complete(), b.PurgeAt)
	}
	if st := mustStats(t, s); st.Deliveries != (DeliveryCounts{Delivered: 2}) {
		t.Errorf("stats count copies, not parts: %+v", st.Deliveries)
	}
	if err := s.Purge(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if files := messageFiles(t, dir); len(files) != 0 {
		t.Errorf("message files after purge: %v", files)
	}
	if _, err := s.DeliveryMessage(p1); !errors.Is(err, ErrNotFound) {
		t.Errorf("part message after purge: %v, want ErrNotFound", err)
	}
}

// One letter cannot be split; a copy whose letters all lost their bodies
// fails rather than wait forever.
func TestSplitLimits(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	b := closeOne(t, s, clk, "ana@example.org", recipients)
	r0 := DeliveryRef{Batch: b.ID, Index: 0}
	if _, err := s.StartAttempt(ctx, r0, at(clk.Now())); err != nil {
		t.Fatal(err)
	}
	if err := s.SplitTooBig(ctx, r0, TooBig{Size: 10, Reason: "552"}); !errors.Is(err, ErrState) {
		t.Errorf("SplitTooBig of one letter: %v, want ErrState", err)
	}

	acceptN(t, s, clk, 2)
	b, err := closeNext(ctx, s, 10, recipients[:1])
	if err != nil {
		t.Fatal(err)
	}
	r0 = DeliveryRef{Batch: b.ID, Index: 0}
	if _, err := s.StartAttempt(ctx, r0, at(clk.Now())); err != nil {
		t.Fatal(err)
	}
	if err := s.SplitTooBig(ctx, r0, TooBig{Size: 10, Reason: "552"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddParts(ctx, r0, nil); err != nil {
		t.Fatal(err)
	}
	if d := mustBatch(t, s, b.ID).Recipients[0]; d.State != DeliveryFailed || !strings.Contains(d.LastError, "no letter is left") {
		t.Errorf("copy with nothing left to send = %+v", d)
	}
}

// NextBatchWithin takes only letters whose bodies fit the bound (the oldest
// always); PendingOver says when the waiting letters cannot all fit.
func TestNextBatchWithinBytes(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ids := acceptN(t, s, clk, 4)
	size := int64(mustLetter(t, s, ids[0]).Size)
	for _, c := range []struct {
		max   int
		bytes int64
		want  int
		over  bool
	}{
		{10, 0, 4, false},
		{10, 4 * size, 4, false},
		{10, 4*size - 1, 3, true},
		{2, 2*size + 1, 2, false},
		{10, size / 2, 1, true},
	} {
		pb, err := s.NextBatchWithin(c.max, c.bytes)
		if err != nil || pb == nil || len(pb.Letters) != c.want || pb.RunningTotal != uint64(c.want) {
			t.Errorf("NextBatchWithin(%d, %d) = %+v, %v; want %d letters", c.max, c.bytes, pb, err, c.want)
		}
		if c.bytes == 0 {
			continue
		}
		if over, err := s.PendingOver(c.max, c.bytes); err != nil || over != c.over {
			t.Errorf("PendingOver(%d, %d) = %v, %v; want %v", c.max, c.bytes, over, err, c.over)
		}
	}
}
