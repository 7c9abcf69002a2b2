package notify

import (
	"bytes"
	"context"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/testclock"
	"github.com/petitiond/petitiond/store"
)

const via = "libertad@campaign.test"

// notifyEnv is a store and a notifier on a clock the test moves; the test
// runs the notifier's steps itself.
type notifyEnv struct {
	clk *testclock.Manual
	st  *store.Store
	n   *Notifier
}

func newNotifyEnv(t *testing.T, lang string, perHour int, receipts bool) *notifyEnv {
	t.Helper()
	clk := testclock.NewManual(time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC))
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Now: clk.Now, Receipts: receipts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(st, Options{Campaign: "Libertad a los presos políticos", From: "Campaña <relay@campaign.test>", Language: lang,
		Location: santiago, TTL: 24 * time.Hour, PerHour: perHour, Receipts: receipts, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return &notifyEnv{clk: clk, st: st, n: n}
}

// ask stores an unverified letter from sender held for confirmation.
func (e *notifyEnv) ask(t *testing.T, sender string) string {
	t.Helper()
	res, err := e.st.Accept(context.Background(), store.NewLetter{From: sender, DedupAddress: sender, Hold: store.HeldConfirm,
		ConfirmVia: via, Verdict: store.Verdict{Kind: store.VerdictUnverified, Reason: "no signature"},
		Body: []byte("From: <" + sender + ">\r\nMessage-ID: <abc.123@" + sender[strings.IndexByte(sender, '@')+1:] +
			">\r\nSubject: Libertad\r\n\r\nLiberen a los presos.\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// queued reads every message waiting for delivery, by recipient.
func (e *notifyEnv) queued(t *testing.T) map[string]*mail.Message {
	t.Helper()
	ids, _, err := e.st.DueMail(e.clk.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*mail.Message{}
	for _, id := range ids {
		raw, err := e.st.MailMessage(id)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("mail %d: %v\n%s", id, err, raw)
		}
		to, err := mail.ParseAddress(m.Header.Get("To"))
		if err != nil {
			t.Fatalf("mail %d To: %v", id, err)
		}
		out[to.Address] = m
	}
	return out
}

func text(t *testing.T, m *mail.Message) string {
	t.Helper()
	b, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A burst past confirm_per_hour waits for the hour; each request is a
// message as SPEC 11 describes, in the campaign's language, whose
// Reply-To confirms the letter.
func TestRequestsWaitTheirTurn(t *testing.T) {
	e := newNotifyEnv(t, "es", 2, false)
	ctx := context.Background()
	letters := map[string]string{}
	for _, who := range []string{"ana", "beto", "carla"} {
		letters[who+"@sin-firma.test"] = e.ask(t, who+"@sin-firma.test")
	}
	e.n.step(ctx)
	if got := e.queued(t); len(got) != 2 || got["ana@sin-firma.test"] == nil || got["beto@sin-firma.test"] == nil {
		t.Fatalf("queued after the first step: %v, want ana's and beto's", got)
	}
	if w, _ := e.st.ConfirmWaiting(10); len(w) != 1 || w[0].Letter != letters["carla@sin-firma.test"] {
		t.Fatalf("waiting: %+v, want carla's", w)
	}
	e.clk.Advance(30 * time.Minute)
	e.n.step(ctx)
	if got := e.queued(t); len(got) != 2 {
		t.Fatalf("a request left before its turn: %d queued", len(got))
	}
	e.clk.Advance(30 * time.Minute)
	e.n.step(ctx)
	got := e.queued(t)
	if len(got) != 3 {
		t.Fatalf("after the hour %d queued, want 3", len(got))
	}

	m := got["ana@sin-firma.test"]
	h := m.Header
	for key, want := range map[string]string{
		"From":           `"Campaña" <relay@campaign.test>`,
		"Auto-Submitted": "auto-replied",
		"In-Reply-To":    "<abc.123@sin-firma.test>",
		"References":     "<abc.123@sin-firma.test>",
		"Content-Type":   "text/plain; charset=utf-8",
	} {
		got := h.Get(key)
		if key == "From" {
			a, err := mail.ParseAddress(got)
			if err != nil || a.Name != "Campaña" || a.Address != "relay@campaign.test" {
				t.Errorf("From: %q (%v)", got, err)
			}
			continue
		}
		if got != want {
			t.Errorf("%s: %q, want %q", key, got, want)
		}
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if err != nil || subject != "[Libertad a los presos políticos] Confirma tu carta respondiendo este correo" {
		t.Errorf("Subject: %q, %v", subject, err)
	}
	if id := h.Get("Message-ID"); !strings.HasPrefix(id, "<confirm-"+letters["ana@sin-firma.test"]+".") || !strings.HasSuffix(id, "@campaign.test>") {
		t.Errorf("Message-ID: %q", id)
	}
	body := text(t, m)
	for _, want := range []string{"Tu proveedor no firmó esta", "basta con que respondas este correo", letters["ana@sin-firma.test"],
		"hasta el 28-11-2026 10:00 (UTC-03:00)"} {
		if !strings.Contains(body, want) {
			t.Errorf("request lacks %q:\n%s", want, body)
		}
	}
	replyTo, err := mail.ParseAddress(h.Get("Reply-To"))
	if err != nil {
		t.Fatalf("Reply-To %q: %v", h.Get("Reply-To"), err)
	}
	v, tok, ok := ParseConfirmAddress(replyTo.Address)
	if !ok || v != via {
		t.Fatalf("Reply-To %q is not a confirmation address of %s", replyTo.Address, via)
	}
	res, err := e.st.Confirm(ctx, store.ConfirmReply{Token: tok})
	if err != nil || res.Counted != letters["ana@sin-firma.test"] {
		t.Errorf("a reply to the Reply-To: %+v, %v", res, err)
	}
}

// A request nobody answers expires with the TTL: the letter is held as
// unconfirmed; while paused no request leaves.
func TestExpiryAndPause(t *testing.T) {
	e := newNotifyEnv(t, "en", 10, false)
	ctx := context.Background()
	first := e.ask(t, "ana@sin-firma.test")
	e.n.step(ctx)
	if got := e.queued(t); len(got) != 1 {
		t.Fatalf("queued %d", len(got))
	}
	if !strings.Contains(text(t, e.queued(t)["ana@sin-firma.test"]), "Your provider did not sign this one") {
		t.Errorf("the request is not in English")
	}
	if _, _, err := e.st.SetPause(ctx, true, ""); err != nil {
		t.Fatal(err)
	}
	e.ask(t, "beto@sin-firma.test")
	e.n.step(ctx)
	if w, _ := e.st.ConfirmWaiting(10); len(w) != 1 {
		t.Errorf("a request left while paused: waiting %+v", w)
	}
	e.clk.Advance(24 * time.Hour)
	e.n.step(ctx)
	if l, _ := e.st.Letter(first); l.HeldReason != store.HeldUnconfirmed {
		t.Errorf("after the TTL the letter is held as %s", l.HeldReason)
	}
	if _, _, err := e.st.SetPause(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	e.n.step(ctx)
	if w, _ := e.st.ConfirmWaiting(10); len(w) != 0 {
		t.Errorf("after resuming, still waiting: %+v", w)
	}
}

// Receipts go to newly counted verified letters, naming the letter and the
// count, once.
func TestReceipts(t *testing.T) {
	e := newNotifyEnv(t, "es", 10, true)
	ctx := context.Background()
	var ids []string
	for _, who := range []string{"ana", "beto"} {
		from := who + "@firma.test"
		res, err := e.st.Accept(ctx, store.NewLetter{From: from, DedupAddress: from,
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "firma.test"},
			Body:    []byte("From: <" + from + ">\r\nSubject: x\r\n\r\nhola\r\n")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}
	e.n.step(ctx)
	e.n.step(ctx)
	got := e.queued(t)
	if len(got) != 2 {
		t.Fatalf("%d receipts queued, want 2", len(got))
	}
	m := got["beto@firma.test"]
	if m.Header.Get("Reply-To") != "" || m.Header.Get("In-Reply-To") != "" || m.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("receipt header %v", m.Header)
	}
	body := text(t, m)
	if !strings.Contains(body, ids[1]) || !strings.Contains(body, "Con la tuya ya van 2 cartas.") {
		t.Errorf("receipt:\n%s", body)
	}
	if st, _ := e.st.Stats(); st.Supporters.ReceiptsSent != 2 {
		t.Errorf("receipts sent %d", st.Supporters.ReceiptsSent)
	}
}

func TestMessageID(t *testing.T) {
	for _, c := range []struct{ head, want string }{
		{"Message-ID: <a.b@c.example>\r\n\r\nx", "<a.b@c.example>"},
		{"message-id:   <a@b>  \r\n\r\n", "<a@b>"},
		{"Subject: x\r\n\r\nMessage-ID: <a@b>\r\n", ""},
		{"Message-ID: <a@b>\r\nMessage-ID: <c@d>\r\n\r\n", ""},
		{"Message-ID: <a b@c>\r\n\r\n", ""},
		{"Message-ID: <a@b@c>\r\n\r\n", ""},
		{"Message-ID: <a@b>\r\nBcc: <x>\r\n\r\n", "<a@b>"},
		{"Message-ID: a@b\r\n\r\n", ""},
		{"Message-ID: <a@b>\r\nbroken line\r\n\r\n", "<a@b>"},
		{"Message-ID: <caf\xc3\xa9@b>\r\n\r\n", ""},
	} {
		if got := messageID([]byte(c.head)); got != c.want {
			t.Errorf("messageID(%q) = %q, want %q", c.head, got, c.want)
		}
	}
}
