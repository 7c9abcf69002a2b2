package store

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/testclock"
)

const confirmVia = "libertad@campaign.example"

// askingLetter is an unverified letter held under policy "confirm".
func askingLetter(clk *testclock.Manual, sender, text string) NewLetter {
	nl := unverified(clk, sender, HeldConfirm)
	nl.ConfirmVia = confirmVia
	nl.Body = append(nl.Body, text...)
	return nl
}

func mustSendConfirm(t *testing.T, s *Store, letter string, tok ConfirmToken, ttl time.Duration) ConfirmOutcome {
	t.Helper()
	out, err := s.SendConfirm(context.Background(), ConfirmSend{Letter: letter, Token: tok,
		Message: []byte("Subject: confirm\r\n\r\nreply\r\n"), TTL: ttl})
	if err != nil {
		t.Fatalf("SendConfirm(%s): %v", letter, err)
	}
	return out
}

func waitingLetters(t *testing.T, s *Store) []string {
	t.Helper()
	reqs, err := s.ConfirmWaiting(100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range reqs {
		out = append(out, r.Letter)
	}
	return out
}

// One request per address: a second letter from the address waits for the
// first one's request, and a reply counts one letter, makes the other a
// duplicate, and kills the token.
func TestConfirmRoundTrip(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	first := mustAccept(t, s, askingLetter(clk, "Ana@sin-firma.example", "one")).ID
	second := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "two")).ID
	other := mustAccept(t, s, askingLetter(clk, "beto@sin-firma.example", "three")).ID
	if got := waitingLetters(t, s); !slices.Equal(got, []string{first, other}) {
		t.Fatalf("waiting requests %v, want %s and %s", got, first, other)
	}
	for _, id := range []string{first, second} {
		if l := mustLetter(t, s, id); l.State != StateHeld || l.HeldReason != HeldConfirm {
			t.Fatalf("%s is %s/%s, want held/confirm", id, l.State, l.HeldReason)
		}
	}
	req, err := s.ConfirmWaiting(1)
	if err != nil || len(req) != 1 || req[0].To != "Ana@sin-firma.example" || req[0].Via != confirmVia {
		t.Fatalf("waiting request %+v, %v", req, err)
	}

	tok := ConfirmToken{ID: "abcdefgh", Secret: "s3cr3t"}
	if out := mustSendConfirm(t, s, first, tok, time.Hour); out != ConfirmQueued {
		t.Fatalf("SendConfirm: %s", out)
	}
	if got := waitingLetters(t, s); !slices.Equal(got, []string{other}) {
		t.Errorf("waiting after one left: %v", got)
	}
	if _, err := s.SendConfirm(ctx, ConfirmSend{Letter: first, Token: ConfirmToken{ID: "x", Secret: "y"}, Message: []byte("m"), TTL: time.Hour}); !errors.Is(err, ErrNotFound) {
		t.Errorf("sending a request twice: %v, want ErrNotFound", err)
	}
	for _, c := range []struct {
		tok  ConfirmToken
		live bool
	}{
		{tok, true},
		{ConfirmToken{ID: tok.ID, Secret: "s3cr3u"}, false},
		{ConfirmToken{ID: "abcdefgi", Secret: tok.Secret}, false},
		{ConfirmToken{}, false},
	} {
		if live, err := s.ConfirmLive(c.tok); err != nil || live != c.live {
			t.Errorf("ConfirmLive(%+v) = %v, %v; want %v", c.tok, live, err, c.live)
		}
	}
	if _, err := s.Confirm(ctx, ConfirmReply{Token: ConfirmToken{ID: tok.ID, Secret: "wrong"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a wrong secret: %v, want ErrNotFound", err)
	}
	before := mustStats(t, s)
	res, err := s.Confirm(ctx, ConfirmReply{Token: tok, Session: "sess1", IP: "192.0.2.99"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Counted != first || !slices.Equal(res.Duplicates, []string{second}) {
		t.Errorf("Confirm = %+v, want %s counted and %s a duplicate", res, first, second)
	}
	l := mustLetter(t, s, first)
	if l.State != StatePending || l.Verdict.Kind != VerdictConfirmed {
		t.Errorf("confirmed letter is %s with verdict %s", l.State, l.Verdict.Kind)
	}
	if l := mustLetter(t, s, second); l.State != StateDuplicate {
		t.Errorf("the other letter is %s, want duplicate", l.State)
	}
	if _, err := s.Body(second); !errors.Is(err, ErrNotFound) {
		t.Errorf("the duplicate's body is still kept: %v", err)
	}
	after := mustStats(t, s)
	if after.Counted != before.Counted+1 || after.Held != before.Held-2 || after.Duplicates != before.Duplicates+1 {
		t.Errorf("stats %+v after, %+v before", after, before)
	}
	if sm := after.Supporters; sm.ConfirmSent != 1 || sm.ConfirmConfirmed != 1 || sm.ConfirmLive != 0 || sm.ConfirmWaiting != 1 || sm.Queued != 1 {
		t.Errorf("supporter mail counts %+v", sm)
	}
	if _, err := s.Confirm(ctx, ConfirmReply{Token: tok}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a second reply: %v, want ErrNotFound", err)
	}
	if live, _ := s.ConfirmLive(tok); live {
		t.Errorf("the token lives on after the reply")
	}
	evs := eventsOfKind(t, s, EventConfirmed)
	if len(evs) != 1 || evs[0].Letter != first || evs[0].Session != "sess1" || evs[0].IP != "192.0.2.99" {
		t.Errorf("confirmed events %+v", evs)
	}
	if evs := eventsOfKind(t, s, EventConfirmSent); len(evs) != 1 || evs[0].Letter != first || evs[0].Sender != "Ana@sin-firma.example" {
		t.Errorf("confirm_sent events %+v", evs)
	}
	// The address is counted: a new letter from it is held and asks
	// again, but no request may go within the TTL.
	third := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "four")).ID
	if out := mustSendConfirm(t, s, third, ConfirmToken{ID: "zzzzzzzz", Secret: "q"}, time.Hour); out != ConfirmTooSoon {
		t.Errorf("a second request within the TTL: %s", out)
	}
	if l := mustLetter(t, s, third); l.State != StateHeld || l.HeldReason != HeldUnconfirmed {
		t.Errorf("the letter whose request could not go is %s/%s", l.State, l.HeldReason)
	}
}

// A sender counted meanwhile (a signed letter) makes every letter the
// reply was for a duplicate.
func TestConfirmAfterCounted(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	id := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "one")).ID
	tok := ConfirmToken{ID: "aaaaaaaa", Secret: "b"}
	mustSendConfirm(t, s, id, tok, time.Hour)
	mustAccept(t, s, verified(clk, "ana@sin-firma.example"))
	res, err := s.Confirm(context.Background(), ConfirmReply{Token: tok})
	if err != nil || res.Counted != "" || !slices.Equal(res.Duplicates, []string{id}) {
		t.Fatalf("Confirm = %+v, %v; want %s a duplicate", res, err, id)
	}
	if st := mustStats(t, s); st.Counted != 1 || st.Held != 0 {
		t.Errorf("stats %+v", st)
	}
}

// After the TTL the token is dead and the letters are held as unconfirmed;
// a request whose letters an admin decided on ends without a message.
func TestConfirmExpiry(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	id := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "one")).ID
	tok := ConfirmToken{ID: "aaaaaaaa", Secret: "b"}
	mustSendConfirm(t, s, id, tok, time.Hour)
	n, next, err := s.ExpireConfirmations(ctx, clk.Now())
	if err != nil || n != 0 || !next.Equal(clk.Now().Add(time.Hour)) {
		t.Fatalf("ExpireConfirmations early = %d, %v, %v", n, next, err)
	}
	clk.Advance(time.Hour)
	if live, _ := s.ConfirmLive(tok); live {
		t.Errorf("the token is live at its expiry")
	}
	if _, err := s.Confirm(ctx, ConfirmReply{Token: tok}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a reply after the TTL: %v", err)
	}
	if n, next, err := s.ExpireConfirmations(ctx, clk.Now()); err != nil || n != 1 || !next.IsZero() {
		t.Fatalf("ExpireConfirmations = %d, %v, %v", n, next, err)
	}
	if l := mustLetter(t, s, id); l.State != StateHeld || l.HeldReason != HeldUnconfirmed {
		t.Errorf("expired letter is %s/%s", l.State, l.HeldReason)
	}
	if st := mustStats(t, s).Supporters; st.ConfirmExpired != 1 || st.ConfirmLive != 0 {
		t.Errorf("counts %+v", st)
	}
	held := eventsOfKind(t, s, EventHeld)
	if last := held[len(held)-1]; last.Letter != id || !strings.HasPrefix(last.Reason, "unconfirmed: ") {
		t.Errorf("expiry event %+v", last)
	}

	dropped := mustAccept(t, s, askingLetter(clk, "beto@sin-firma.example", "two")).ID
	if err := s.Drop(ctx, dropped); err != nil {
		t.Fatal(err)
	}
	if out := mustSendConfirm(t, s, dropped, ConfirmToken{ID: "bbbbbbbb", Secret: "c"}, time.Hour); out != ConfirmNothingHeld {
		t.Errorf("request for a dropped letter: %s", out)
	}
	if st := mustStats(t, s).Supporters; st.ConfirmWaiting != 0 || st.Queued != 1 {
		t.Errorf("counts %+v", st)
	}
}

// The requests that left within the hour are counted, and older ones
// forgotten.
func TestConfirmsSentSince(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	start := clk.Now()
	for i, who := range []string{"a", "b", "c"} {
		id := mustAccept(t, s, askingLetter(clk, who+"@sin-firma.example", who)).ID
		mustSendConfirm(t, s, id, ConfirmToken{ID: who + "0000000", Secret: who}, 2*time.Hour)
		if i < 2 {
			clk.Advance(40 * time.Minute)
		}
	}
	n, first, err := s.ConfirmsSentSince(clk.Now().Add(-time.Hour))
	if err != nil || n != 2 || !first.Equal(start.Add(40*time.Minute)) {
		t.Errorf("ConfirmsSentSince = %d, %v, %v", n, first, err)
	}
	if k := bucketLen(t, s, bucketConfirmSent); k != 2 {
		t.Errorf("%d sent times kept, want the 2 within the hour", k)
	}
}

// The supporter mail queue: attempts recorded first, deferral, delivery,
// and a confirmation request that cannot be delivered ends its request.
func TestSupporterMailQueue(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	ctx := context.Background()
	a := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "one")).ID
	b := mustAccept(t, s, askingLetter(clk, "beto@sin-firma.example", "two")).ID
	mustSendConfirm(t, s, a, ConfirmToken{ID: "aaaaaaaa", Secret: "1"}, time.Hour)
	tokB := ConfirmToken{ID: "bbbbbbbb", Secret: "2"}
	mustSendConfirm(t, s, b, tokB, time.Hour)
	due, next, err := s.DueMail(clk.Now(), 10)
	if err != nil || len(due) != 2 || !next.IsZero() {
		t.Fatalf("DueMail = %v, %v, %v", due, next, err)
	}
	m, err := s.StartMailAttempt(ctx, due[0], at(clk.Now().Add(time.Minute)))
	if err != nil || m.Attempts != 1 || m.To != "ana@sin-firma.example" || m.Purpose != MailConfirm || m.Letter != a {
		t.Fatalf("StartMailAttempt = %+v, %v", m, err)
	}
	if due, _, _ := s.DueMail(clk.Now(), 10); len(due) != 1 {
		t.Errorf("a mail being tried is still due now: %v", due)
	}
	if msg, err := s.MailMessage(m.ID); err != nil || !strings.Contains(string(msg), "Subject: confirm") {
		t.Errorf("MailMessage = %q, %v", msg, err)
	}
	if err := s.DeferMail(ctx, m.ID, clk.Now().Add(5*time.Minute), "451 try later"); err != nil {
		t.Fatal(err)
	}
	if err := s.MailDelivered(ctx, m.ID, "mx said 250"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MailMessage(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("a delivered message is still kept: %v", err)
	}
	if err := s.MailDelivered(ctx, m.ID, "again"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delivering twice: %v", err)
	}
	if err := s.FailMail(ctx, due[1], "550 no such user"); err != nil {
		t.Fatal(err)
	}
	if live, _ := s.ConfirmLive(tokB); live {
		t.Errorf("the token of an undeliverable request lives on")
	}
	if l := mustLetter(t, s, b); l.HeldReason != HeldUnconfirmed {
		t.Errorf("letter of the undeliverable request: %s", l.HeldReason)
	}
	st := mustStats(t, s).Supporters
	if st.ConfirmUndeliverable != 1 || st.Queued != 0 || st.ConfirmLive != 1 {
		t.Errorf("counts %+v", st)
	}
	kinds := map[EventKind]int{}
	for _, e := range allEvents(t, s) {
		if e.Batch == 0 && (e.Event == EventDelivered || e.Event == EventDeferred || e.Event == EventFailed) {
			kinds[e.Event]++
			if !strings.HasPrefix(e.Reason, "confirmation request to the sender: ") || e.Sender == "" || e.Letter == "" {
				t.Errorf("mail event %+v", e)
			}
		}
	}
	if kinds[EventDelivered] != 1 || kinds[EventDeferred] != 1 || kinds[EventFailed] != 1 {
		t.Errorf("mail events %v", kinds)
	}
}

// Receipts: owed by newly counted verified letters only (with receipts
// on), once, and none within the gap of the last one to the address.
func TestReceiptsDue(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now, Receipts: true})
	ctx := context.Background()
	signed := mustAccept(t, s, verified(clk, "ana@firma.example")).ID
	mustAccept(t, s, verified(clk, "ana@firma.example"))            // a duplicate
	mustAccept(t, s, unverified(clk, "beto@sin-firma.example", "")) // policy relay
	mustAccept(t, s, unverified(clk, "carla@sin-firma.example", HeldUnverified))
	asked := mustAccept(t, s, askingLetter(clk, "dora@sin-firma.example", "x")).ID
	tok := ConfirmToken{ID: "dddddddd", Secret: "d"}
	mustSendConfirm(t, s, asked, tok, time.Hour)
	if _, err := s.Confirm(ctx, ConfirmReply{Token: tok}); err != nil {
		t.Fatal(err)
	}
	due, err := s.ReceiptsDue(10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 2 || due[0] != (ReceiptDue{Letter: signed, Count: 1}) || due[1] != (ReceiptDue{Letter: asked, Count: 3}) {
		t.Fatalf("ReceiptsDue = %+v, want %s (1st) and %s (3rd)", due, signed, asked)
	}
	for _, d := range due {
		if ok, err := s.QueueReceipt(ctx, ReceiptSend{Letter: d.Letter, Message: []byte("receipt"), Gap: time.Hour}); err != nil || !ok {
			t.Errorf("QueueReceipt(%s) = %v, %v", d.Letter, ok, err)
		}
	}
	if _, err := s.QueueReceipt(ctx, ReceiptSend{Letter: signed, Message: []byte("again"), Gap: time.Hour}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a second receipt: %v", err)
	}
	if evs := eventsOfKind(t, s, EventReceiptSent); len(evs) != 2 {
		t.Errorf("receipt_sent events %+v", evs)
	}
	if st := mustStats(t, s).Supporters; st.ReceiptsSent != 2 || st.Queued != 3 {
		t.Errorf("counts %+v", st)
	}

	// Without receipts on, nothing is owed.
	s.Close()
	s = openStore(t, dir, Options{Now: clk.Now})
	mustAccept(t, s, verified(clk, "eva@firma.example"))
	if due, _ := s.ReceiptsDue(10); len(due) != 0 {
		t.Errorf("receipts owed with receipts off: %+v", due)
	}
}

// A restart keeps waiting requests, live tokens and queued mail.
func TestConfirmSurvivesRestart(t *testing.T) {
	clk := newClock()
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: clk.Now})
	a := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "one")).ID
	b := mustAccept(t, s, askingLetter(clk, "beto@sin-firma.example", "two")).ID
	tok := ConfirmToken{ID: "aaaaaaaa", Secret: "1"}
	mustSendConfirm(t, s, a, tok, time.Hour)
	s.Close()
	s = openStore(t, dir, Options{Now: clk.Now})
	if got := waitingLetters(t, s); !slices.Equal(got, []string{b}) {
		t.Errorf("waiting after a restart: %v", got)
	}
	if due, _, _ := s.DueMail(clk.Now(), 10); len(due) != 1 {
		t.Errorf("queued mail after a restart: %v", due)
	}
	if res, err := s.Confirm(context.Background(), ConfirmReply{Token: tok}); err != nil || res.Counted != a {
		t.Errorf("Confirm after a restart = %+v, %v", res, err)
	}
}

// Erasing a supporter removes their request and the mail waiting for them.
func TestEraseSupporterMail(t *testing.T) {
	clk := newClock()
	s := openStore(t, t.TempDir(), Options{Now: clk.Now})
	a := mustAccept(t, s, askingLetter(clk, "ana@sin-firma.example", "one")).ID
	tok := ConfirmToken{ID: "aaaaaaaa", Secret: "1"}
	mustSendConfirm(t, s, a, tok, time.Hour)
	mustAccept(t, s, askingLetter(clk, "beto@sin-firma.example", "two"))
	if _, err := s.Erase(context.Background(), Supporter{Address: "ana@sin-firma.example"}); err != nil {
		t.Fatal(err)
	}
	if live, _ := s.ConfirmLive(tok); live {
		t.Errorf("an erased supporter's token lives on")
	}
	st := mustStats(t, s).Supporters
	if st.Queued != 0 || st.ConfirmWaiting != 1 || st.ConfirmLive != 0 {
		t.Errorf("counts after the erasure %+v", st)
	}
	if n := bucketLen(t, s, bucketConfirmSenders); n != 1 {
		t.Errorf("%d addresses with a request, want beto's only", n)
	}
}
