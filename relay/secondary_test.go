package relay_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/batchmime"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/inbound"
	"github.com/petitiond/petitiond/store"
)

// The MX pair of these tests: the primary on 127.0.0.2, the secondary on
// 127.0.0.3, and supporters' mail servers at 127.0.0.9.
const (
	primaryIP   = "127.0.0.2"
	secondaryIP = "127.0.0.3"
	clientIP    = "127.0.0.9"
)

// prepareMX makes the pair with retries and batches fast enough for a
// test, and the supporters' SPF records: spf.test sends from clientIP
// only, forge.test from an address of the documentation range.
func prepareMX(t *testing.T) *testenv.MX {
	t.Helper()
	mx := testenv.PrepareMX(t, testenv.MXOptions{PrimaryIP: primaryIP, SecondaryIP: secondaryIP, Configure: func(c *config.Config, _ bool) {
		c.Delivery.RetryMin = config.Duration{Duration: 100 * time.Millisecond}
		c.Delivery.RetryMax = config.Duration{Duration: 300 * time.Millisecond}
		c.Batch.MaxWait = config.Duration{Duration: 300 * time.Millisecond}
		c.SMTP.MaxPerIP = 50
	}})
	mx.Primary.DNS.SetTXT("spf.test", "v=spf1 ip4:"+clientIP+" -all")
	mx.Primary.DNS.SetTXT("forge.test", "v=spf1 ip4:198.51.100.7 -all")
	return mx
}

// queuedAs requires a 250 "queued as" with an ID starting with prefix.
func queuedAs(t testing.TB, what string, r smtpclient.Reply, prefix string) string {
	t.Helper()
	id := r.LetterID()
	if !strings.HasPrefix(id, prefix) {
		t.Fatalf("%s: reply %q, want 250 queued as %s…", what, r, prefix)
	}
	return id
}

// letters returns every letter a store holds, by ID.
func letters(t *testing.T, st *store.Store) map[string]store.BatchLetter {
	t.Helper()
	ls, err := st.ScanLetters(store.LetterScan{Bodies: true})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.BatchLetter{}
	for _, l := range ls {
		out[l.ID] = l
	}
	return out
}

// batchedLetters reads every batch delivered to rcpt's Maildir and returns
// the letters they carried, each as its From address.
func batchedLetters(t *testing.T, e *testenv.Test, rcpt string) []string {
	t.Helper()
	var out []string
	for _, f := range e.Delivered(rcpt) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := batchmime.Read(raw)
		if err != nil {
			t.Fatalf("batch %s: %v", f, err)
		}
		for _, row := range b.CSV[1:] { // after the header row
			out = append(out, row[2])
		}
	}
	slices.Sort(out)
	return out
}

var secondaryAR = regexp.MustCompile(`(?m)^Authentication-Results: mx2\.campaign\.test;\r\n(?:\t[^\r]*\r\n)*`)

// TestSecondaryDuringOutage: with the primary down, the secondary takes
// every letter (S… IDs), verified as the primary would, and keeps trying;
// when the primary starts, each arrives once, is counted once (or held) and
// batched, SPF-verified letters stay verified through the secondary's
// Authentication-Results field, the original client's IP is the letter's,
// and the secondary's queue empties.
func TestSecondaryDuringOutage(t *testing.T) {
	mx := prepareMX(t)
	p, s := mx.Primary, mx.Secondary
	s.Start()

	signed := map[string][]byte{
		"ana@rsa.test":  s.Signed("rsa.test", "Ana <ana@rsa.test>"),
		"bo@ed.test":    s.Signed("ed.test", "Bo <bo@ed.test>"),
		"cai@gmail.com": s.Signed("gmail.com", "Cai <cai@gmail.com>"),
	}
	ids := map[string]string{} // letter ID on the secondary → sender
	for from, msg := range signed {
		ids[queuedAs(t, from, s.SendFrom(clientIP, "mail.client.test", "bounce@client.test", msg), "S")] = from
	}
	// Verified by SPF only: its record names the client's IP, which the
	// primary never sees.
	spfLetter := s.Letter("dana@spf.test", "Libertad", testenv.Body)
	ids[queuedAs(t, "SPF letter", s.SendFrom(clientIP, "mail.spf.test", "dana@spf.test", spfLetter), "S")] = "dana@spf.test"
	// Unverified: the primary holds it (quarantine), as if sent to it.
	ids[queuedAs(t, "unsigned letter", s.SendFrom(clientIP, "client.test", "eve@nosig.test",
		s.Letter("eve@nosig.test", "hi", "unsigned")), "S")] = "eve@nosig.test"
	// Postmaster mail goes through too, and is held there.
	ids[queuedAs(t, "postmaster mail", mustSend(t, s.SMTPAddr(), "", "postmaster@campaign.test",
		s.Letter("mailer-daemon@client.test", "bounce", "a bounce")), "S")] = "mailer-daemon@client.test"
	// What the primary would refuse, the secondary refuses now.
	expectReply(t, "letter without From", s.SendFrom(clientIP, "client.test", "x@client.test",
		[]byte("Subject: no from\r\n\r\nhi\r\n")), "550 5.6.0")
	expectReply(t, "RCPT not a campaign address", mustSend(t, s.SMTPAddr(), "bounce@client.test", "nobody@campaign.test",
		signed["bo@ed.test"]), "550 5.7.1")
	// A reply to a confirmation request waits for the primary, which alone
	// knows the tokens.
	expectReply(t, "RCPT a confirmation address", mustSend(t, s.SMTPAddr(), "bo@ed.test", "libertad+confirm-0abc9@campaign.test",
		signed["bo@ed.test"]), "451 4.3.0")

	st, _ := s.Store().Stats()
	if st.Forward.Waiting != uint64(len(ids)) || st.Counted != 0 || st.Batches != 0 {
		t.Fatalf("secondary's tally %+v: want %d waiting, nothing counted", st, len(ids))
	}
	onSecondary := letters(t, s.Store())
	for id, from := range ids {
		body := onSecondary[id].Body
		ar := secondaryAR.Find(body)
		if ar == nil || !bytes.HasPrefix(body, ar) {
			t.Errorf("letter %s (%s) does not start with the secondary's Authentication-Results:\n%.400s", id, from, body)
			continue
		}
		if !bytes.Contains(ar, []byte("smtp.remote-ip="+clientIP)) {
			t.Errorf("letter %s: no client IP in %q", id, ar)
		}
		if from == "dana@spf.test" && (!bytes.Contains(ar, []byte("spf=pass")) || !bytes.Contains(ar, []byte("smtp.mailfrom=dana@spf.test"))) {
			t.Errorf("SPF letter's field %q", ar)
		}
	}
	// The primary is down: the secondary tried and will try again.
	testenv.WaitFor(t, "a deferred forwarding attempt", 10*time.Second, func() bool {
		evs, _ := s.Store().Events(0, 0)
		return slices.ContainsFunc(evs, func(e store.Event) bool { return e.Event == store.EventDeferred && e.Letter != "" })
	})

	p.Start()
	s.WaitStats("the secondary's queue to empty", func(st store.Stats) bool {
		return st.Forward.Waiting == 0 && st.Forward.Forwarded == uint64(len(ids)) && st.Held == 0
	})
	p.WaitStats("the primary to count and batch", func(st store.Stats) bool {
		return st.Counted == 4 && st.Held == 2 && st.Pending == 0 && st.Duplicates == 0
	})
	if left := letters(t, s.Store()); len(left) != 0 {
		t.Errorf("the secondary still holds %d letters", len(left))
	}

	onPrimary := letters(t, p.Store())
	if len(onPrimary) != len(ids) {
		t.Errorf("the primary stored %d letters, want %d", len(onPrimary), len(ids))
	}
	for id, l := range onPrimary {
		if !strings.HasPrefix(id, "L") {
			t.Errorf("primary's letter ID %s", id)
		}
		if l.RemoteIP != clientIP {
			t.Errorf("letter %s (%s) from %q, want the original client %s", id, l.From, l.RemoteIP, clientIP)
		}
		// The primary's Received: field names the secondary; the
		// secondary's fields follow, then the letter as sent.
		if !bytes.HasPrefix(l.Body, []byte("Received: from mx2.campaign.test (["+secondaryIP+"])")) ||
			secondaryAR.Find(l.Body) == nil {
			t.Errorf("letter %s on the primary:\n%.500s", id, l.Body)
		}
		want := store.VerdictDKIM
		switch l.From {
		case "dana@spf.test":
			want = store.VerdictSPF
			if l.Verdict.Domain != "spf.test" {
				t.Errorf("SPF verdict %+v", l.Verdict)
			}
		case "eve@nosig.test", "mailer-daemon@client.test":
			want = store.VerdictUnverified
			if l.State != store.StateHeld {
				t.Errorf("letter %s from %s is %s, want held", id, l.From, l.State)
			}
		}
		if l.Verdict.Kind != want {
			t.Errorf("letter %s from %s verified as %s (%s), want %s", id, l.From, l.Verdict.Kind, l.Verdict.Reason, want)
		}
	}
	if h, err := p.Store().Held(); err != nil || len(h) != 2 {
		t.Errorf("held on the primary: %v, %v", h, err)
	}

	want := []string{"ana@rsa.test", "bo@ed.test", "cai@gmail.com", "dana@spf.test"}
	for _, rcpt := range []string{testenv.Familias, testenv.Copias} {
		var got []string
		testenv.WaitFor(t, "the batch at "+rcpt, 20*time.Second, func() bool {
			got = batchedLetters(t, p, rcpt)
			return len(got) >= len(want)
		})
		if !slices.Equal(got, want) {
			t.Errorf("batched for %s: %v, want each of %v once", rcpt, got, want)
		}
	}
}

// mustSend delivers msg to rcpt at addr from clientIP, with MAIL FROM
// mailFrom.
func mustSend(t *testing.T, addr, mailFrom, rcpt string, msg []byte) smtpclient.Reply {
	t.Helper()
	c, err := smtpclient.DialFrom(clientIP, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Quit()
	if r, err := c.Hello("client.test"); err != nil || r.Code != 250 {
		t.Fatalf("EHLO: %v %v", r, err)
	}
	r, err := c.Send(mailFrom, []string{rcpt}, msg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSecondaryLetterReachedBoth: a sender whose wait for the primary's
// 250 timed out retries at the secondary; the letter reaches the primary
// twice and is counted once (a held letter, held once), and the secondary
// is done with it.
func TestSecondaryLetterReachedBoth(t *testing.T) {
	mx := prepareMX(t)
	p, s := mx.Primary, mx.Secondary
	p.Start()
	s.Start()
	signed := p.Signed("ed.test", "Bo <bo@ed.test>")
	unsigned := p.Letter("eve@nosig.test", "hi", "unsigned")
	queuedAs(t, "signed letter at the primary", p.SendFrom(clientIP, "client.test", "bounce@client.test", signed), "L")
	queuedAs(t, "unsigned letter at the primary", p.SendFrom(clientIP, "client.test", "eve@nosig.test", unsigned), "L")
	// The secondary never says "already counted": it counts nothing.
	queuedAs(t, "signed letter at the secondary", s.SendFrom(clientIP, "client.test", "bounce@client.test", signed), "S")
	queuedAs(t, "unsigned letter at the secondary", s.SendFrom(clientIP, "client.test", "eve@nosig.test", unsigned), "S")

	s.WaitStats("both forwarded", func(st store.Stats) bool { return st.Forward.Forwarded == 2 && st.Forward.Waiting == 0 })
	p.WaitStats("one counted and batched", func(st store.Stats) bool { return st.Counted == 1 && st.Batches == 1 })
	if st, _ := p.Store().Stats(); st.Duplicates != 2 || st.Held != 1 || st.Counted != 1 {
		t.Errorf("primary's tally %+v: want 1 counted, 1 held, 2 duplicates", st)
	}
	if h, _ := s.Store().Stats(); h.Held != 0 {
		t.Errorf("secondary holds %d letters", h.Held)
	}
	testenv.WaitFor(t, "the batch", 20*time.Second, func() bool { return len(batchedLetters(t, p, testenv.Familias)) > 0 })
	if got := batchedLetters(t, p, testenv.Familias); !slices.Equal(got, []string{"bo@ed.test"}) {
		t.Errorf("batched %v, want bo@ed.test once", got)
	}
}

// arField is an Authentication-Results field naming host, with an SPF
// pass for mailFrom from ip.
func arField(host, result, mailFrom, ip string) string {
	return fmt.Sprintf("Authentication-Results: %s;\r\n\tspf=%s smtp.mailfrom=%s smtp.remote-ip=%s\r\n", host, result, mailFrom, ip)
}

// TestForgedAuthResults: a field claiming the secondary's name, sent to
// the primary from an IP it does not trust, verifies nothing (SPF goes by
// the connecting IP), does not move the letter's IP, and is removed, as
// is one claiming the primary's own name; a field of anyone else stays.
// From the trusted IP, only the topmost field is believed, and any other
// naming the same host is removed.
func TestForgedAuthResults(t *testing.T) {
	mx := prepareMX(t)
	p := mx.Primary
	p.Start()
	forgedPass := arField(testenv.SecondaryHostname, "pass", "eve@forge.test", "198.51.100.7")
	// The secondary's name as DNS compares it, not as the config spells it.
	forgedUpper := arField(strings.ToUpper(testenv.SecondaryHostname)+".", "pass", "eve@forge.test", "198.51.100.7")
	ownClaim := arField("mx.campaign.test", "pass", "eve@forge.test", "198.51.100.7")
	provider := arField("mx.provider.test", "pass", "eve@forge.test", "198.51.100.7")
	// Each letter its own text: the same held letter twice is stored once.
	letter := func(text string) []byte { return p.Letter("eve@forge.test", "Libertad", text) }

	// Untrusted: no field is believed; SPF for forge.test fails from the
	// client's own IP, so the letter is held unverified. The fields
	// claiming the primary or its secondary are gone from the letter the
	// organisations would get.
	id := queuedAs(t, "forged letter", p.SendFrom(clientIP, "client.test", "eve@forge.test",
		append([]byte(forgedPass+ownClaim+provider+forgedUpper), letter("forged")...)), "L")
	l := letters(t, p.Store())[id]
	if l.Verdict.Kind != store.VerdictUnverified || l.State != store.StateHeld || l.RemoteIP != clientIP {
		t.Errorf("forged letter: %s %s from %s (%s); want held unverified from %s", l.State, l.Verdict.Kind, l.RemoteIP, l.Verdict.Reason, clientIP)
	}
	for _, f := range []string{forgedPass, forgedUpper, ownClaim} {
		if bytes.Contains(l.Body, []byte(f)) {
			t.Errorf("stored: the field %q should be gone:\n%.800s", f, l.Body)
		}
	}
	if !bytes.Contains(l.Body, []byte(provider)) {
		t.Errorf("stored: the field of another host should be kept (not believed):\n%.800s", l.Body)
	}

	// Trusted: the topmost field (what the secondary wrote) is believed,
	// the forged one below it, naming the same host, removed.
	top := arField(testenv.SecondaryHostname, "fail", "eve@forge.test", "192.0.2.55")
	id = queuedAs(t, "relayed letter", p.SendFrom(secondaryIP, testenv.SecondaryHostname, "eve@forge.test",
		append([]byte(top+forgedPass), letter("relayed")...)), "L")
	l = letters(t, p.Store())[id]
	if l.Verdict.Kind != store.VerdictUnverified || l.RemoteIP != "192.0.2.55" {
		t.Errorf("relayed letter: %s from %s (%s); want unverified from 192.0.2.55", l.Verdict.Kind, l.RemoteIP, l.Verdict.Reason)
	}
	if bytes.Contains(l.Body, []byte(forgedPass)) || !bytes.Contains(l.Body, []byte(top)) {
		t.Errorf("stored: only the topmost field should be left:\n%q", l.Body)
	}
	// And believed when it says pass.
	id = queuedAs(t, "relayed SPF letter", p.SendFrom(secondaryIP, testenv.SecondaryHostname, "eve@forge.test",
		append([]byte(forgedPass), letter("relayed, SPF")...)), "L")
	if l := letters(t, p.Store())[id]; l.Verdict.Kind != store.VerdictSPF || l.RemoteIP != "198.51.100.7" {
		t.Errorf("relayed SPF letter: %s from %s (%s)", l.Verdict.Kind, l.RemoteIP, l.Verdict.Reason)
	}
}

// TestPerIPLimitsThroughSecondary: the cap on unverified mail per client
// network counts a trusted secondary's letters by the client its field
// names, and anyone else's by the connecting IP, whatever field they carry.
func TestPerIPLimitsThroughSecondary(t *testing.T) {
	mx := prepareMX(t)
	p := mx.Primary
	p.Options.SMTPLimits = inbound.Limits{UnverifiedBytesPerHour: 3 << 10}
	p.Start()
	unsigned := func(from, ar string) []byte {
		return append([]byte(ar), p.Letter(from, "hi", strings.Repeat("an unsigned letter. ", 50))...)
	}
	// Through the secondary: each client network has its own cap.
	for _, net := range []string{"192.0.2.1", "198.51.100.1", "203.0.113.1"} {
		for i := 0; ; i++ {
			from := fmt.Sprintf("s%d@n%s.test", i, strings.ReplaceAll(net, ".", ""))
			r := p.SendFrom(secondaryIP, testenv.SecondaryHostname, from, unsigned(from,
				arField(testenv.SecondaryHostname, "none", from, net)))
			if r.Code == 451 {
				expectReply(t, "client network over its cap", r, "451 4.7.1")
				if i == 0 {
					t.Fatalf("client %s refused at once: the secondary's own IP was capped", net)
				}
				break
			}
			queuedAs(t, "unverified letter through the secondary", r, "L")
			if i > 20 {
				t.Fatalf("no cap for client %s", net)
			}
		}
	}
	// Directly, a field naming other clients changes nothing: the
	// connecting IP's network is capped.
	refused := false
	for i := 0; i < 20 && !refused; i++ {
		from := fmt.Sprintf("d%d@direct%d.test", i, i)
		r := p.SendFrom(clientIP, "client.test", from, unsigned(from,
			arField(testenv.SecondaryHostname, "none", from, fmt.Sprintf("10.%d.0.1", i))))
		refused = r.Code == 451
	}
	if !refused {
		t.Errorf("a client naming other IPs in a forged field was never capped")
	}
}

// BenchmarkSecondaryBacklog: how fast a secondary hands the primary the
// letters it kept through an outage. b.N signed letters wait on the
// secondary; the clock runs from the primary's start until the secondary's
// queue is empty and the primary has counted them all (each forwarded over
// its own SMTP session, DKIM-verified again and fsynced there, then deleted
// on the secondary).
func BenchmarkSecondaryBacklog(b *testing.B) {
	mx := testenv.PrepareMX(b, testenv.MXOptions{PrimaryIP: primaryIP, SecondaryIP: secondaryIP,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Configure: func(c *config.Config, _ bool) {
			c.SMTP.MaxPerIP = 100
			c.Batch.MaxLetters = 1 << 20
			c.Batch.MaxWait = config.Duration{Duration: time.Hour}
			c.Delivery.RetryMin = config.Duration{Duration: 50 * time.Millisecond}
			c.Delivery.RetryMax = config.Duration{Duration: 50 * time.Millisecond}
		}})
	p, s := mx.Primary, mx.Secondary
	s.Start()
	for i := range b.N {
		queuedAs(b, "letter", s.SendFrom(clientIP, "client.test", "bounce@client.test",
			s.Signed("ed.test", fmt.Sprintf("s%d@ed.test", i))), "S")
	}
	b.ResetTimer()
	p.Start()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := p.Store().Stats()
		if err != nil {
			b.Fatal(err)
		}
		if st.Counted == uint64(b.N) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the primary counted %d of %d letters in 5 minutes", st.Counted, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "letters/s")
	s.WaitStats("the queue empty", func(st store.Stats) bool { return st.Forward.Waiting == 0 })
}

// TestSecondaryRefusesAtSMTPTime: what the primary would refuse, the
// secondary refuses in the session, with the primary's replies, and keeps
// nothing of it (SPEC 12: never a bounce later): bare line endings, a
// letter over max_message_bytes, an unverified letter under policy reject.
func TestSecondaryRefusesAtSMTPTime(t *testing.T) {
	mx := testenv.PrepareMX(t, testenv.MXOptions{PrimaryIP: primaryIP, SecondaryIP: secondaryIP,
		Configure: func(c *config.Config, _ bool) {
			c.Verify.Unverified = config.UnverifiedReject
			c.SMTP.MaxMessageBytes = 32 << 10
		}})
	s := mx.Secondary
	s.Start()

	expectReply(t, "bare LF", s.SendFrom(clientIP, "client.test", "bounce@client.test",
		[]byte("From: eva@ed.test\r\nSubject: x\n\r\nbody\r\n")), "554 5.6.0")
	big := s.Letter("fede@ed.test", "Libertad", strings.Repeat("Libertad a los presos políticos. ", 2000))
	expectReply(t, "over max_message_bytes", s.SendFrom(clientIP, "client.test", "bounce@client.test",
		s.Sign("ed.test", big, keyserver.SignOptions{})), "552 5.3.4")
	expectReply(t, "unsigned under policy reject", s.SendFrom(clientIP, "client.test", "bounce@client.test",
		s.Letter("gala@ed.test", "Libertad", testenv.Body)), "550 5.7.20")
	// And a letter the primary would count is taken.
	queuedAs(t, "signed", s.SendFrom(clientIP, "client.test", "bounce@client.test", s.Signed("ed.test", "hugo@ed.test")), "S")

	st, err := s.Store().Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Forward.Waiting != 1 || st.Held != 0 || st.Counted != 0 {
		t.Errorf("the secondary keeps %+v, want only the signed letter waiting", st)
	}
}

// TestSecondarySendsNothingToSupporters: with confirmation by reply and
// receipts on both machines, only the primary writes to supporters: the
// secondary forwards an unsigned letter and a signed one and queues no
// request and no receipt, while the primary, once back, does both.
func TestSecondarySendsNothingToSupporters(t *testing.T) {
	mx := testenv.PrepareMX(t, testenv.MXOptions{PrimaryIP: primaryIP, SecondaryIP: secondaryIP,
		Configure: func(c *config.Config, _ bool) {
			c.Verify.Unverified = config.UnverifiedConfirm
			c.Receipts.Enabled = true
			c.Delivery.RetryMin = config.Duration{Duration: 100 * time.Millisecond}
			c.Delivery.RetryMax = config.Duration{Duration: 300 * time.Millisecond}
		}})
	p, s := mx.Primary, mx.Secondary
	s.Start()
	queuedAs(t, "unsigned", s.SendFrom(clientIP, "client.test", "ines@ed.test", s.Letter("ines@ed.test", "Libertad", testenv.Body)), "S")
	queuedAs(t, "signed", s.SendFrom(clientIP, "client.test", "bounce@client.test", s.Signed("ed.test", "juan@ed.test")), "S")

	p.Start()
	p.WaitStats("a request and a receipt queued on the primary", func(st store.Stats) bool {
		return st.Supporters.ConfirmSent+st.Supporters.ConfirmWaiting == 1 && st.Supporters.ReceiptsSent == 1
	})
	s.WaitStats("the secondary's queue empty", func(st store.Stats) bool { return st.Forward.Waiting == 0 })
	st, err := s.Store().Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Supporters != (store.SupporterMailCounts{}) {
		t.Errorf("the secondary wrote to supporters: %+v", st.Supporters)
	}
}
