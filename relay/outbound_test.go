package relay_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/batchmime"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// digestParts reads a batch back and checks its shape: three parts, and
// every letter carried as message/rfc822 (or message/global) in 7bit or 8bit.
func digestParts(t *testing.T, msg []byte) (summary string, rows [][]string, letters [][]byte, hdr mail.Header) {
	t.Helper()
	b, err := batchmime.Read(msg)
	if err != nil {
		t.Fatalf("batch does not parse: %v", err)
	}
	if b.Parts != 3 {
		t.Errorf("batch has %d parts, want 3", b.Parts)
	}
	for _, l := range b.Letters {
		// message/global: a letter with raw UTF-8 in its header (RFC 6532).
		if ct := l.Header.Get("Content-Type"); ct != "" && ct != "message/rfc822" && ct != "message/global" {
			t.Errorf("digest part type %q", ct)
		}
		if cte := l.Header.Get("Content-Transfer-Encoding"); cte != "7bit" && cte != "8bit" && cte != "" {
			t.Errorf("digest part encoded as %q", cte)
		}
		letters = append(letters, l.Raw)
	}
	return b.Summary, b.CSV, letters, mail.Header{Header: message.Header{Header: b.Header}}
}

// TestOutboundEndToEnd: letters in over SMTP, one signed batch out to each
// recipient's mail host, holding exactly the counted letters byte for byte.
func TestOutboundEndToEnd(t *testing.T) {
	e := testenv.Prepare(t, func(c *config.Config) {
		c.Batch.MaxLetters = 5
		c.Verify.Unverified = "relay"
	})
	mh := e.MailHosts()
	e.SignBatches("campaign.test", "batch")
	e.Start()

	type sent struct {
		from, name string
		raw        []byte
	}
	var letters []sent
	add := func(domain, name, addr, subject string) {
		from := addr
		if name != "" {
			from = name + " <" + addr + ">"
		}
		raw := e.Letter(from, subject, testenv.Body)
		if domain != "" {
			raw = e.Sign(domain, raw, keyserver.SignOptions{})
		}
		r := e.Send(raw)
		expectReply(t, "letter from "+addr, r, "250 2.0.0")
		letters = append(letters, sent{from: addr, name: name, raw: raw})
	}
	add("rsa.test", "Ana Díaz", "ana@rsa.test", "Libertad")
	add("ed.test", "", "bo@ed.test", "Libertad")
	// Header injection attempt in the display name, and encoded-words in
	// the subject: data, not headers.
	add("gmail.com", "=?utf-8?q?Carla_P=C3=A9rez=0D=0ABcc=3A_evil=40x.test?=", "carla@gmail.com", "Libertad")
	add("mail.example.org", "Dora \"the\" Explorer", "dora@example.org", "=?utf-8?b?wqFMaWJlcnRhZCE=?= =?iso-8859-1?q?=E1?=")
	add("", "", "eli@unsigned.test", "Libertad")

	for rcpt, s := range mh.Sinks {
		if _, err := s.Wait(ctxT(t, 30*time.Second), 1); err != nil {
			t.Fatalf("%s got no batch: %v", rcpt, err)
		}
	}
	var first []byte
	for rcpt, s := range mh.Sinks {
		msgs := s.Messages()
		if len(msgs) != 1 {
			t.Fatalf("%s got %d messages, want 1", rcpt, len(msgs))
		}
		m := msgs[0]
		if m.From != e.Config.Campaign.From || len(m.To) != 1 || m.To[0] != rcpt {
			t.Errorf("%s: envelope from %q to %v", rcpt, m.From, m.To)
		}
		if first == nil {
			first = m.Data
		} else if !bytes.Equal(first, m.Data) {
			t.Errorf("recipients' copies differ")
		}
	}
	if i := bytes.IndexAny(bytes.ReplaceAll(first, []byte("\r\n"), nil), "\r\n"); i >= 0 {
		t.Errorf("batch has a bare CR or LF at %d", i)
	}

	v := verify.New(verify.Options{Resolver: e.DNS.Addr, Timeout: 2 * time.Second})
	if vd := v.Verify(context.Background(), first, verify.Sender{Domain: "campaign.test"}); !vd.Pass {
		t.Errorf("batch DKIM: %+v", vd)
	}
	summary, rows, digest, hdr := digestParts(t, first)
	// The default campaign.language is Spanish.
	if got, _ := hdr.Subject(); got != "[Libertad a los presos políticos] lote 1: 5 cartas" {
		t.Errorf("subject %q", got)
	}
	if to, _ := hdr.AddressList("To"); len(to) != 1 || to[0].Address != testenv.Familias {
		t.Errorf("To %v", to)
	}
	if cc, _ := hdr.AddressList("Cc"); len(cc) != 1 || cc[0].Address != testenv.Copias {
		t.Errorf("Cc %v", cc)
	}
	if hdr.Get("Bcc") != "" || strings.Contains(hdr.Get("Subject"), "\n") {
		t.Errorf("header injection reached the batch header")
	}
	if len(digest) != len(letters) {
		t.Fatalf("digest has %d letters, want %d", len(digest), len(letters))
	}
	for i, l := range letters {
		if !bytes.Equal(digest[i], l.raw) {
			t.Errorf("digest letter %d differs from what was sent", i)
		}
		sender, err := verify.ParseFrom(digest[i])
		if err != nil {
			t.Errorf("digest letter %d From: %v", i, err)
			continue
		}
		vd := v.Verify(context.Background(), digest[i], sender)
		if want := l.from != "eli@unsigned.test"; vd.Pass != want {
			t.Errorf("letter from %s: DKIM pass %v in the batch, want %v (%s)", l.from, vd.Pass, want, vd.Reason)
		}
		if !strings.Contains(summary, l.from) {
			t.Errorf("summary does not name %s", l.from)
		}
	}
	if !strings.Contains(summary, "Carla Pérez") || !strings.Contains(summary, "Ana Díaz") {
		t.Errorf("summary does not show the decoded names")
	}
	if !strings.Contains(summary, "SIN VERIFICAR") {
		t.Errorf("summary does not mark the unverified letter")
	}
	if len(rows) != len(letters)+1 || strings.Join(rows[0], ",") != "received,name,address,dkim_domain,letter_id,verified" {
		t.Errorf("CSV rows %v", rows)
	}

	// The store agrees: one batch, both copies delivered, events journalled.
	testenv.WaitFor(t, "delivery recorded", 10*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Complete()
	})
	b, _ := e.Store().Batch(1)
	if len(b.LetterIDs) != 5 || b.MessageID == "" || hdr.Get("Message-Id") != b.MessageID {
		t.Errorf("batch record %+v, header Message-ID %q", b, hdr.Get("Message-Id"))
	}
	events, _ := e.Store().LastEvents(100)
	kinds := map[string]int{}
	for _, ev := range events {
		kinds[string(ev.Event)]++
	}
	if kinds["batched"] != 1 || kinds["delivered"] != 2 {
		t.Errorf("events %v", kinds)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestOutboundOutage: one recipient's host answers 451, the other is down;
// after they recover each gets the batch exactly once.
func TestOutboundOutage(t *testing.T) {
	e := testenv.Prepare(t, func(c *config.Config) {
		c.Batch.MaxLetters = 2
		c.Delivery.RetryMin = config.Duration{Duration: 100 * time.Millisecond}
		c.Delivery.RetryMax = config.Duration{Duration: 300 * time.Millisecond}
	})
	mh := e.MailHosts()
	e.Start()
	famil, copias := testenv.Familias, testenv.Copias
	mh.Sinks[famil].FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "try later"})
	mh.Sinks[copias].Close()

	expectReply(t, "letter 1", e.Send(e.Signed("rsa.test", "ana@rsa.test")), "250 2.0.0")
	expectReply(t, "letter 2", e.Send(e.Signed("ed.test", "bo@ed.test")), "250 2.0.0")

	// Both copies get deferred more than once.
	testenv.WaitFor(t, "deferrals", 15*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Recipients[0].Attempts >= 2 && b.Recipients[1].Attempts >= 2 &&
			b.Recipients[0].State == store.DeliveryDeferred && b.Recipients[1].State == store.DeliveryDeferred
	})
	b, _ := e.Store().Batch(1)
	if !strings.Contains(b.Recipients[0].LastError, "451") {
		t.Errorf("last error for %s: %q", famil, b.Recipients[0].LastError)
	}
	mh.Sinks[famil].FailRcpt(nil)
	if err := mh.Restart(copias); err != nil {
		t.Fatal(err)
	}
	for rcpt, s := range mh.Sinks {
		if _, err := s.Wait(ctxT(t, 15*time.Second), 1); err != nil {
			t.Fatalf("%s never got the batch: %v", rcpt, err)
		}
	}
	testenv.WaitFor(t, "both delivered", 10*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Complete()
	})
	// Give a stray duplicate a chance to show up, by waiting for the
	// scheduler to go idle: nothing is due any more.
	due, _, _ := e.Store().Due(time.Now().Add(time.Hour), 10)
	if len(due) != 0 {
		t.Errorf("still queued after delivery: %v", due)
	}
	for rcpt, s := range mh.Sinks {
		if n := len(s.Messages()); n != 1 {
			t.Errorf("%s got %d copies, want exactly 1", rcpt, n)
		}
	}
}

// TestMaildirDefault: the embedded default, with only max_wait shortened
// (and a temp store and free port so tests can run side by side), writes a
// batch into each recipient's Maildir.
func TestMaildirDefault(t *testing.T) {
	e := testenv.PrepareWith(t, testenv.Options{Domains: testenv.SigningDomains(), Configure: func(c *config.Config) {
		c.Batch.MaxWait = config.Duration{Duration: 300 * time.Millisecond}
	}})
	e.Start()
	msg := e.Signed("ed.test", "Bo <bo@ed.test>")
	expectReply(t, "letter", e.Send(msg, "libertad@localhost"), "250 2.0.0")
	for _, rcpt := range e.Config.Campaign.Recipients {
		dir := filepath.Join(e.Config.Store.Dir, "outbox", rcpt, "new")
		var files []os.DirEntry
		testenv.WaitFor(t, "maildir file for "+rcpt, 15*time.Second, func() bool {
			files, _ = os.ReadDir(dir)
			return len(files) == 1
		})
		data, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n")) // a Maildir file has LF line ends
		_, _, digest, _ := digestParts(t, data)
		if len(digest) != 1 || !bytes.Equal(digest[0], msg) {
			t.Errorf("%s: maildir batch does not hold the letter", rcpt)
		}
	}
}

// TestRetentionPurge: once a batch reached every recipient and
// store.retention passed, its letters' bodies go (event purged); the count,
// the batch record and the dedup key stay.
func TestRetentionPurge(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) {
		c.Batch.MaxLetters = 1
		c.Store.Retention = config.Duration{Duration: 300 * time.Millisecond}
	})
	id := e.Queued(e.Signed("ed.test", "bo@ed.test"))
	testenv.WaitFor(t, "purge", 15*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Purged
	})
	if _, err := e.Store().Body(id); err == nil {
		t.Errorf("body of %s still there after retention", id)
	}
	if _, err := e.Store().BatchMessage(1); err == nil {
		t.Errorf("batch message still there after retention")
	}
	l, err := e.Store().Letter(id)
	if err != nil || !l.Purged || l.State != store.StateBatched {
		t.Errorf("letter record after purge: %+v %v", l, err)
	}
	events, _ := e.Store().LastEvents(50)
	purged := 0
	for _, ev := range events {
		if string(ev.Event) == "purged" && ev.Batch == 1 {
			purged++
		}
	}
	if purged != 1 {
		t.Errorf("%d purged events, want 1", purged)
	}
	r := e.Send(e.Signed("ed.test", "bo+again@ed.test"))
	if !strings.Contains(r.Text, "already counted") {
		t.Errorf("after purge the sender must still be counted: %v", r)
	}
	if st, _ := e.Store().Stats(); st.Counted != 1 || st.Batches != 1 {
		t.Errorf("stats after purge %+v", st)
	}
}
