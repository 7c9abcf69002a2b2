package relay_test

import (
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testclock"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/notify"
	"github.com/petitiond/petitiond/store"
)

// Supporters whose providers do not sign, on domains without SPF records
// unless a test publishes one: their letters do not verify.
const (
	ana   = "ana@sin-firma.test"
	beto  = "beto@sin-firma.test"
	carla = "carla@sin-firma.test"
)

// confirmPolicy is verify.unverified = "confirm".
func confirmPolicy(c *config.Config) { c.Verify.Unverified = config.UnverifiedConfirm }

// sendAs sends msg as the supporter's provider would: EHLO its domain,
// MAIL FROM mailFrom, to rcpt.
func sendAs(t *testing.T, e *testenv.Test, mailFrom, rcpt string, msg []byte) smtpclient.Reply {
	t.Helper()
	r, err := smtpclient.SendMail(e.SMTPAddr(), "mail.sin-firma.test", mailFrom, []string{rcpt}, msg, 10*time.Second)
	if err != nil {
		t.Fatalf("send to %s: %v (reply %v)", rcpt, err, r)
	}
	return r
}

// unsignedLetter sends an unsigned letter from from (MAIL FROM the same)
// and returns its ID; the reply must be the 250 of any stored letter.
func unsignedLetter(t *testing.T, e *testenv.Test, from string) (id, messageID string) {
	t.Helper()
	msg := e.Letter(from, "Libertad", testenv.Body)
	m, err := testenv.ParseMail(msg)
	if err != nil {
		t.Fatal(err)
	}
	r := sendAs(t, e, from, e.CampaignAddr(), msg)
	if id = r.LetterID(); id == "" || !strings.HasPrefix(r.Text, "2.0.0 queued as ") {
		t.Fatalf("the unsigned letter from %s got %q, want the 250 of any stored letter", from, r)
	}
	return id, m.Header.Get("Message-ID")
}

// reply sends a reply to a confirmation address, as the supporter's
// provider would, and returns the reply to RCPT (when it refused) or to
// the end of data.
func reply(t *testing.T, e *testenv.Test, from, confirmAddr string) smtpclient.Reply {
	t.Helper()
	msg := testenv.Letter(from, confirmAddr, "Re: confirma tu carta", "Sí, la mandé yo.")
	return sendAs(t, e, from, confirmAddr, msg)
}

func heldAs(t *testing.T, e *testenv.Test, id string) store.HeldReason {
	t.Helper()
	l, err := e.Store().Letter(id)
	if err != nil {
		t.Fatal(err)
	}
	if l.State != store.StateHeld {
		return store.HeldReason("not held: " + string(l.State))
	}
	return l.HeldReason
}

func supporterCounts(t *testing.T, e *testenv.Test) store.SupporterMailCounts {
	t.Helper()
	st, err := e.Store().Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.Supporters
}

func bodyText(t *testing.T, m *mail.Message) string {
	t.Helper()
	b, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The confirmation round trip over SMTP: an unsigned letter under policy
// "confirm" gets the 250 of any stored letter and is held; its From
// address gets one request from the supporter's MX, with a null envelope
// sender and SPEC 11's headers, in the campaign's language; a reply to its
// Reply-To counts the letter once (and it goes in a batch); a second
// reply, or a forged token, is refused 550 5.1.1 at RCPT.
func TestConfirmationRoundTrip(t *testing.T) {
	e := testenv.Prepare(t, func(c *config.Config) {
		confirmPolicy(c)
		c.Batch.MaxLetters = 1
		c.Admin.Listen = "127.0.0.1:0"
	})
	mh := e.MailHosts(ana)
	e.Start()

	id, letterMsgID := unsignedLetter(t, e, ana)
	if got := heldAs(t, e, id); got != store.HeldConfirm {
		t.Fatalf("the letter is held as %q, want confirm", got)
	}
	provider := mh.Sinks[ana]
	testenv.WaitFor(t, "the request at the supporter's provider", 15*time.Second, func() bool { return len(provider.Messages()) > 0 })
	msgs := provider.Messages()
	if len(msgs) != 1 || msgs[0].From != "" || len(msgs[0].To) != 1 || msgs[0].To[0] != ana {
		t.Fatalf("the provider got %d messages (envelope %q → %q), want one from <> to %s", len(msgs), msgs[0].From, msgs[0].To, ana)
	}
	m, err := testenv.ParseMail(msgs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	for key, want := range map[string]string{
		"From": "<" + testenv.CampaignFrom + ">", "To": "<" + ana + ">", "Auto-Submitted": "auto-replied",
		"In-Reply-To": letterMsgID, "References": letterMsgID,
	} {
		if got := h.Get(key); got != want {
			t.Errorf("request %s: %q, want %q", key, got, want)
		}
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
	if !strings.Contains(subject, "Confirma tu carta") {
		t.Errorf("request Subject %q is not the Spanish one", subject)
	}
	text := bodyText(t, m)
	for _, want := range []string{"Tu proveedor no firmó esta", "basta con que respondas este correo", id} {
		if !strings.Contains(text, want) {
			t.Errorf("the request lacks %q:\n%s", want, text)
		}
	}
	confirmAddr, err := testenv.ReplyTo(m)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(confirmAddr, "libertad+confirm-") || !strings.HasSuffix(confirmAddr, "@campaign.test") {
		t.Fatalf("Reply-To %q is not a confirmation address of %s", confirmAddr, e.CampaignAddr())
	}
	_, tok, _ := notify.ParseConfirmAddress(confirmAddr)
	forged := strings.Replace(confirmAddr, tok.Secret, strings.Repeat("a", len(tok.Secret)), 1)
	expectReply(t, "a forged secret", reply(t, e, ana, forged), "550 5.1.1")

	expectReply(t, "the reply", reply(t, e, ana, strings.ToUpper(confirmAddr[:8])+confirmAddr[8:]), "250 2.0.0")
	l, err := e.Store().Letter(id)
	if err != nil || l.State == store.StateHeld || l.Verdict.Kind != store.VerdictConfirmed {
		t.Fatalf("after the reply the letter is %+v (%v), want counted with verdict confirmed", l, err)
	}
	expectReply(t, "a second reply", reply(t, e, ana, confirmAddr), "550 5.1.1")
	if st, _ := e.Store().Stats(); st.Counted != 1 || st.Held != 0 || st.Supporters.ConfirmSent != 1 || st.Supporters.ConfirmConfirmed != 1 {
		t.Errorf("stats %+v", st)
	}
	expectMetrics(t, e, map[string]float64{
		`petitiond_confirmation_requests_total{outcome="sent"}`:      1,
		`petitiond_confirmation_requests_total{outcome="confirmed"}`: 1,
		`petitiond_confirmation_requests_total{outcome="expired"}`:   0,
		`petitiond_confirmation_requests_waiting`:                    0,
		`petitiond_letters_total{outcome="confirmed"}`:               1,
	})
	// The confirmed letter is batched, as its verdict says.
	testenv.WaitFor(t, "the batch at the families' host", 15*time.Second, func() bool {
		return len(mh.Sinks[testenv.Familias].Messages()) == 1
	})
	if batch := string(mh.Sinks[testenv.Familias].Messages()[0].Data); !strings.Contains(batch, id+",confirmed") {
		t.Errorf("the batch's CSV does not list %s as confirmed", id)
	}
	if n := len(provider.Messages()); n != 1 {
		t.Errorf("the supporter got %d messages, want the one request", n)
	}
}

// A request nobody answers expires: the letter stays held as unconfirmed,
// and a late reply is refused 550 5.1.1. Maildir mode: the request is in
// the supporters Maildir, in English here.
func TestConfirmationExpires(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) {
		confirmPolicy(c)
		c.Campaign.Language = "en"
		c.Verify.ConfirmTTL = config.Duration{Duration: 500 * time.Millisecond}
		c.Admin.Listen = "127.0.0.1:0"
	})
	id, _ := unsignedLetter(t, e, ana)
	var files []string
	testenv.WaitFor(t, "the request in the supporters Maildir", 15*time.Second, func() bool {
		files, _ = e.SupporterMail()
		return len(files) == 1
	})
	m, err := testenv.ReadMail(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if text := bodyText(t, m); !strings.Contains(text, "Your provider did not sign this one") {
		t.Errorf("the request is not the English one:\n%s", text)
	}
	confirmAddr, err := testenv.ReplyTo(m)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the letter held as unconfirmed", 15*time.Second, func() bool {
		return heldAs(t, e, id) == store.HeldUnconfirmed
	})
	expectReply(t, "a reply after confirm_ttl", reply(t, e, ana, confirmAddr), "550 5.1.1")
	if c := supporterCounts(t, e); c.ConfirmExpired != 1 || c.ConfirmLive != 0 {
		t.Errorf("counts %+v", c)
	}
	expectMetrics(t, e, map[string]float64{
		`petitiond_confirmation_requests_total{outcome="sent"}`:      1,
		`petitiond_confirmation_requests_total{outcome="confirmed"}`: 0,
		`petitiond_confirmation_requests_total{outcome="expired"}`:   1,
		`petitiond_letters_held{reason="unconfirmed"}`:               1,
	})
}

// expectMetrics requires /metrics to show want (a counter read by the
// collector from the store: no wait needed once the store says so).
func expectMetrics(t *testing.T, e *testenv.Test, want map[string]float64) {
	t.Helper()
	got := scrape(t, e.AdminURL()+"/metrics")
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// Never a backscatter source: a letter whose envelope SPF fails, or with a
// null MAIL FROM, gets the same 250 and is held as unconfirmed, with no
// request; a second letter from an address with a live request waits for
// that one, and the one reply releases both (one counted, one duplicate).
func TestConfirmationNoBackscatter(t *testing.T) {
	e := testenv.Prepare(t, confirmPolicy)
	e.DNS.SetTXT("spffail.test", "v=spf1 ip4:192.0.2.1 -all")
	e.Start()

	forged, _ := unsignedLetter(t, e, "fina@spffail.test")
	r := sendAs(t, e, "", e.CampaignAddr(), e.Letter("nulo@sin-firma.test", "Libertad", testenv.Body))
	null := r.LetterID()
	if null == "" {
		t.Fatalf("the letter with a null MAIL FROM got %q", r)
	}
	for _, id := range []string{forged, null} {
		if got := heldAs(t, e, id); got != store.HeldUnconfirmed {
			t.Errorf("%s is held as %q, want unconfirmed", id, got)
		}
	}
	if c := supporterCounts(t, e); c.ConfirmWaiting != 0 || c.ConfirmSent != 0 {
		t.Fatalf("requests made for a forged envelope or a null sender: %+v", c)
	}
	events, _ := e.Store().LastEvents(20)
	for _, ev := range events {
		if ev.Letter == forged && ev.Event == store.EventHeld && !strings.Contains(ev.Reason, "SPF fails for MAIL FROM") {
			t.Errorf("the held event does not say why no request went: %q", ev.Reason)
		}
	}

	first, _ := unsignedLetter(t, e, ana)
	second, _ := unsignedLetter(t, e, ana)
	var files []string
	testenv.WaitFor(t, "the request", 15*time.Second, func() bool {
		files, _ = e.SupporterMail()
		return len(files) >= 1 && supporterCounts(t, e).ConfirmWaiting == 0
	})
	if len(files) != 1 {
		t.Fatalf("%d messages in the supporters Maildir, want one request for both letters", len(files))
	}
	m, err := testenv.ReadMail(files[0])
	if err != nil {
		t.Fatal(err)
	}
	confirmAddr, err := testenv.ReplyTo(m)
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "the reply", reply(t, e, ana, confirmAddr), "250 2.0.0")
	a, _ := e.Store().Letter(first)
	b, _ := e.Store().Letter(second)
	if a.Verdict.Kind != store.VerdictConfirmed || a.State == store.StateHeld || b.State != store.StateDuplicate {
		t.Errorf("after the reply: %s %s/%s, %s %s; want the first confirmed, the second a duplicate",
			first, a.State, a.Verdict.Kind, second, b.State)
	}
}

// A burst past confirm_per_hour waits its turn, and a restart loses
// neither the request waiting nor the tokens already sent: after the
// restart the early replies still count, and the hour over, the last
// request leaves and its reply counts too.
func TestConfirmationBurstWaitsAcrossRestart(t *testing.T) {
	clk := &testclock.Skewed{}
	e := testenv.PrepareWith(t, testenv.Options{Domains: testenv.SigningDomains(), Configure: func(c *config.Config) {
		testenv.UseCampaign(c)
		confirmPolicy(c)
		c.Verify.ConfirmPerHour = 2
		c.Batch.MaxWait = config.Duration{Duration: 24 * time.Hour}
	}})
	e.Options.Now = clk.Now
	e.Start()
	letters := map[string]string{}
	for _, who := range []string{ana, beto, carla} {
		letters[who], _ = unsignedLetter(t, e, who)
	}
	requests := func() map[string]string {
		files, _ := e.SupporterMail()
		out := map[string]string{}
		for _, f := range files {
			m, err := testenv.ReadMail(f)
			if err != nil {
				t.Fatal(err)
			}
			to, _ := mail.ParseAddress(m.Header.Get("To"))
			out[to.Address], _ = testenv.ReplyTo(m)
		}
		return out
	}
	testenv.WaitFor(t, "two requests", 15*time.Second, func() bool { return len(requests()) == 2 })
	c := supporterCounts(t, e)
	if c.ConfirmSent != 2 || c.ConfirmWaiting != 1 {
		t.Fatalf("after the burst %+v, want 2 sent and 1 waiting", c)
	}
	sent := requests()
	if sent[carla] != "" {
		t.Fatalf("the third request left before its turn: %v", sent)
	}

	e.Restart()
	if c := supporterCounts(t, e); c.ConfirmWaiting != 1 || c.ConfirmLive != 2 {
		t.Fatalf("after the restart %+v, want 1 waiting and 2 live", c)
	}
	expectReply(t, "ana's reply after the restart", reply(t, e, ana, sent[ana]), "250 2.0.0")
	if n := len(requests()); n != 2 {
		t.Fatalf("%d requests before the hour is over", n)
	}
	clk.Advance(time.Hour)
	expectReply(t, "beto's reply an hour later", reply(t, e, beto, sent[beto]), "250 2.0.0")
	testenv.WaitFor(t, "the third request, an hour on", 15*time.Second, func() bool { return requests()[carla] != "" })
	expectReply(t, "carla's reply", reply(t, e, carla, requests()[carla]), "250 2.0.0")
	for who, id := range letters {
		if l, _ := e.Store().Letter(id); l.Verdict.Kind != store.VerdictConfirmed {
			t.Errorf("%s's letter %s has verdict %s", who, id, l.Verdict.Kind)
		}
	}
}

// Receipts: a newly counted letter verified by DKIM or SPF gets one,
// naming its letter ID and the running count; a duplicate and an
// unverified letter counted under policy "relay" get none.
func TestReceipts(t *testing.T) {
	e := testenv.Prepare(t, func(c *config.Config) {
		c.Verify.Unverified = config.UnverifiedRelay
		c.Receipts.Enabled = true
	})
	e.DNS.SetTXT("spf.test", "v=spf1 ip4:127.0.0.1 -all")
	e.Start()
	signed := e.Queued(e.Signed("ed.test", "ana@ed.test"))
	if r := e.Send(e.Signed("ed.test", "ana@ed.test")); !strings.Contains(r.Text, "already counted") {
		t.Fatalf("the duplicate got %q", r)
	}
	e.Queued(e.Letter("beto@sin-firma.test", "Libertad", testenv.Body)) // counted, unverified
	spf := sendAs(t, e, "sol@spf.test", e.CampaignAddr(), e.Letter("sol@spf.test", "Libertad", testenv.Body)).LetterID()
	receipts := map[string]string{}
	testenv.WaitFor(t, "two receipts", 15*time.Second, func() bool {
		files, _ := e.SupporterMail()
		for _, f := range files {
			m, err := testenv.ReadMail(f)
			if err != nil {
				t.Fatal(err)
			}
			to, _ := mail.ParseAddress(m.Header.Get("To"))
			receipts[to.Address] = bodyText(t, m)
		}
		return len(files) >= 2
	})
	if len(receipts) != 2 || !strings.Contains(receipts["ana@ed.test"], signed) || !strings.Contains(receipts["sol@spf.test"], spf) {
		t.Fatalf("receipts %v, want one for %s (ana) and one for %s (sol)", receipts, signed, spf)
	}
	if !strings.Contains(receipts["ana@ed.test"], "Es la primera carta de la campaña.") ||
		!strings.Contains(receipts["sol@spf.test"], "Con la tuya ya van 3 cartas.") {
		t.Errorf("running counts: %v", receipts)
	}
	// The Maildir file exists before the store records its delivery.
	testenv.WaitFor(t, "the receipts' deliveries recorded", 10*time.Second, func() bool {
		return supporterCounts(t, e).Queued == 0
	})
	if c := supporterCounts(t, e); c.ReceiptsSent != 2 {
		t.Errorf("counts %+v", c)
	}
}
