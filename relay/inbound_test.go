package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/store"
)

// expectReply checks the code and, when given, the enhanced code.
func expectReply(t *testing.T, what string, r smtpclient.Reply, code int, enhanced string) {
	t.Helper()
	if r.Code != code || (enhanced != "" && !strings.HasPrefix(r.Text, enhanced+" ")) {
		t.Errorf("%s: got %q, want %d %s", what, r.String(), code, enhanced)
	}
}

// TestInboundQuarantine sends every kind of letter SPEC 4 names to a daemon
// with the default policy and checks each reply and what the store holds.
func TestInboundQuarantine(t *testing.T) {
	e := startEnv(t, nil)
	other, err := keyserver.NewKey("wrongkey.test", "sel", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	published, err := keyserver.NewKey("wrongkey.test", "sel", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	e.ks.SetKey(published)
	e.keys["wrongkey.test"] = other // signs with a key that is not the published one
	for _, d := range []string{"servfail.test", "slow.test"} {
		k, err := keyserver.NewKey(d, "sel", "ed25519")
		if err != nil {
			t.Fatal(err)
		}
		e.keys[d] = k
	}
	e.ks.SetServFail("sel._domainkey.servfail.test")
	e.ks.SetTimeout("sel._domainkey.slow.test")

	counted := 0
	queued := func(what string, r smtpclient.Reply) {
		t.Helper()
		expectReply(t, what, r, 250, "2.0.0")
		if !strings.Contains(r.Text, "queued as L") {
			t.Errorf("%s: reply %q has no letter ID", what, r.Text)
		}
	}
	already := func(what string, r smtpclient.Reply) {
		t.Helper()
		expectReply(t, what, r, 250, "2.0.0")
		if !strings.Contains(r.Text, "already counted") {
			t.Errorf("%s: reply %q does not say already counted", what, r.Text)
		}
	}

	// Valid letters from distinct senders, RSA-2048 and ed25519.
	queued("rsa", e.send(e.signed("rsa.test", "Ana Díaz <ana@rsa.test>", keyserver.SignOptions{})))
	queued("ed25519", e.send(e.signed("ed.test", "bo@ed.test", keyserver.SignOptions{})))
	queued("gmail", e.send(e.signed("gmail.com", "Carla <Carla.Perez+petition@gmail.com>", keyserver.SignOptions{})))
	queued("subdomain signer", e.send(e.signed("mail.example.org", "dora@example.org", keyserver.SignOptions{})))
	counted += 4

	// Duplicates in folded spellings.
	already("upper case and +tag", e.send(e.signed("rsa.test", "ANA+otra@RSA.TEST", keyserver.SignOptions{})))
	already("gmail dots", e.send(e.signed("gmail.com", "carlaperez@gmail.com", keyserver.SignOptions{})))
	already("same again", e.send(e.signed("ed.test", "Bo <bo@ed.test>", keyserver.SignOptions{})))

	// Unverified letters are held, and the reply never tells whether the
	// address was counted before.
	queued("unsigned new sender", e.send(letterText("dan@rsa.test", "hi", "unsigned")))
	queued("unsigned counted sender", e.send(letterText("ana@rsa.test", "hi", "unsigned")))
	tampered := e.signed("ed.test", "eva@ed.test", keyserver.SignOptions{})
	tampered = bytes.Replace(tampered, []byte("political prisoners"), []byte("nobody at all here"), 1)
	queued("tampered body", e.send(tampered))
	queued("wrong key", e.send(e.signed("wrongkey.test", "fede@wrongkey.test", keyserver.SignOptions{})))
	queued("not aligned", e.send(e.signed("rsa.test", "gala@ed.test", keyserver.SignOptions{})))
	lsig := e.signed("ed.test", "hugo@ed.test", keyserver.SignOptions{BodyLength: true})
	lsig = append(lsig, []byte("P.S. text appended after signing.\r\n")...)
	queued("l= with appended text", e.send(lsig))
	queued("expired", e.send(e.signed("ed.test", "ines@ed.test", keyserver.SignOptions{Expiration: time.Now().Add(-time.Hour)})))
	queued("postmaster", e.send(letterText("someone@else.test", "complaint", "a report"), "postmaster@campaign.test"))
	queued("bounce of a batch", e.send(letterText("MAILER-DAEMON@ofapp.test", "Undelivered", "a bounce"), "relay@campaign.test"))
	wantHeld := map[string]store.HeldReason{
		"dan@rsa.test": store.HeldUnverified, "ana@rsa.test": store.HeldUnverified, "eva@ed.test": store.HeldUnverified,
		"fede@wrongkey.test": store.HeldUnverified, "gala@ed.test": store.HeldUnverified, "hugo@ed.test": store.HeldUnverified,
		"ines@ed.test": store.HeldUnverified, "someone@else.test": store.HeldPostmaster,
		"MAILER-DAEMON@ofapp.test": store.HeldPostmaster,
	}

	// Refusals: nothing stored.
	twoFrom := append([]byte("From: x@ed.test\r\n"), e.signed("ed.test", "jose@ed.test", keyserver.SignOptions{})...)
	expectReply(t, "two From headers", e.send(twoFrom), 550, "5.6.0")
	expectReply(t, "two addresses", e.send(letterText("a@ed.test, b@ed.test", "x", "y")), 550, "5.6.0")
	big := letterText("kim@ed.test", "big", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 17000))
	expectReply(t, "oversize", e.send(big), 552, "5.3.4")
	expectReply(t, "servfail", e.send(e.signed("servfail.test", "luz@servfail.test", keyserver.SignOptions{})), 451, "4.7.5")
	expectReply(t, "dns timeout", e.send(e.signed("slow.test", "mar@slow.test", keyserver.SignOptions{})), 451, "4.7.5")

	// A relay attempt is refused at RCPT and nothing is stored.
	c, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Hello("client.test")
	c.Cmd("MAIL FROM:<spammer@else.test>")
	for _, rcpt := range []string{"victim@elsewhere.test", "libertad@campaign.test.evil.test", "postmaster@elsewhere.test"} {
		r, err := c.Cmd("RCPT TO:<%s>", rcpt)
		if err != nil {
			t.Fatal(err)
		}
		expectReply(t, "relay to "+rcpt, r, 550, "5.7.1")
	}
	c.Quit()

	// Smuggling: a bare-LF end of data followed by a second transaction in
	// the same DATA. The whole thing is refused, and the smuggled letter
	// never arrives.
	inner := e.signed("ed.test", "nora@ed.test", keyserver.SignOptions{})
	smuggle := append(e.signed("ed.test", "olga@ed.test", keyserver.SignOptions{}), []byte("\n.\nMAIL FROM:<x@ed.test>\nRCPT TO:<"+campaignAddr+">\nDATA\n")...)
	smuggle = append(smuggle, bytes.ReplaceAll(inner, []byte("\r\n"), []byte("\n"))...)
	expectReply(t, "smuggling with bare LF", e.send(smuggle), 554, "5.6.0")
	bareCR := bytes.Replace(e.signed("ed.test", "pia@ed.test", keyserver.SignOptions{}), []byte("revolt."), []byte("revolt.\rX"), 1)
	expectReply(t, "bare CR", e.send(bareCR), 554, "5.6.0")

	st, err := e.store().Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counted != uint64(counted) || st.Pending != uint64(counted) {
		t.Errorf("counted %d pending %d, want %d", st.Counted, st.Pending, counted)
	}
	if st.Duplicates != 3 {
		t.Errorf("duplicates %d, want 3", st.Duplicates)
	}
	if st.Held != uint64(len(wantHeld)) {
		t.Errorf("held %d, want %d", st.Held, len(wantHeld))
	}
	// Two From, two addresses, oversize, two smuggling attempts; refusals at
	// RCPT are not letters, and 451s are not final.
	if st.Rejected != 5 {
		t.Errorf("rejected %d, want 5", st.Rejected)
	}
	held, err := e.store().Held()
	if err != nil {
		t.Fatal(err)
	}
	gotHeld := map[string]store.HeldReason{}
	for _, l := range held {
		gotHeld[l.From] = l.HeldReason
		body, err := e.store().Body(l.ID)
		if err != nil || len(body) != l.Size {
			t.Errorf("held letter %s body: %d bytes, %v", l.ID, len(body), err)
		}
	}
	for from, reason := range wantHeld {
		if gotHeld[from] != reason {
			t.Errorf("held %s: reason %q, want %q", from, gotHeld[from], reason)
		}
	}
	if len(gotHeld) != len(wantHeld) {
		t.Errorf("held senders %v, want %v", gotHeld, wantHeld)
	}
	events, err := e.store().LastEvents(1000)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[store.EventKind]int{}
	for _, ev := range events {
		kinds[ev.Event]++
		if ev.Sender == "nora@ed.test" {
			t.Errorf("the smuggled letter left an event: %+v", ev)
		}
	}
	if kinds[store.EventAccepted] != counted || kinds[store.EventDuplicate] != 3 || kinds[store.EventHeld] != len(wantHeld) {
		t.Errorf("events by kind %v", kinds)
	}
	if kinds[store.EventRejected] != int(st.Rejected) {
		t.Errorf("rejected events %d, tally %d", kinds[store.EventRejected], st.Rejected)
	}
}

// TestInboundRejectPolicy: unverified letters get 550 5.7.20 and nothing is kept.
func TestInboundRejectPolicy(t *testing.T) {
	e := startEnv(t, func(c *config.Config) { c.Verify.Unverified = "reject" })
	expectReply(t, "unsigned", e.send(letterText("dan@rsa.test", "hi", "unsigned")), 550, "5.7.20")
	expectReply(t, "signed", e.send(e.signed("ed.test", "bo@ed.test", keyserver.SignOptions{})), 250, "2.0.0")
	st, err := e.store().Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counted != 1 || st.Held != 0 || st.Rejected != 1 {
		t.Errorf("stats %+v, want counted 1, held 0, rejected 1", st)
	}
}

// TestInboundRelayPolicy: unverified letters are counted and marked; an
// unverified letter from a counted sender gets the same kind of reply as a
// new one but is not counted again.
func TestInboundRelayPolicy(t *testing.T) {
	e := startEnv(t, func(c *config.Config) { c.Verify.Unverified = "relay" })
	r1 := e.send(letterText("dan@rsa.test", "hi", "unsigned"))
	expectReply(t, "unsigned new", r1, 250, "2.0.0")
	r2 := e.send(letterText("Dan+x@rsa.test", "hi", "unsigned again"))
	expectReply(t, "unsigned counted", r2, 250, "2.0.0")
	if !strings.Contains(r1.Text, "queued as") || !strings.Contains(r2.Text, "queued as") {
		t.Errorf("replies differ in kind: %q / %q", r1.Text, r2.Text)
	}
	st, err := e.store().Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Counted != 1 || st.Pending != 1 || st.Duplicates != 1 || st.Held != 0 {
		t.Errorf("stats %+v, want counted 1, pending 1, duplicates 1", st)
	}
	id := strings.TrimSuffix(strings.Fields(strings.SplitN(r1.Text, "queued as ", 2)[1])[0], ",")
	l, err := e.store().Letter(id)
	if err != nil {
		t.Fatal(err)
	}
	if l.State != store.StatePending || !l.Unverified() {
		t.Errorf("letter %s: state %s unverified %v", id, l.State, l.Unverified())
	}
	// A signed letter from the same sender is a duplicate.
	expectReply(t, "signed after unverified", e.send(e.signed("rsa.test", "dan@rsa.test", keyserver.SignOptions{})), 250, "2.0.0")
}

// TestSessionLimits: over max_per_ip concurrent sessions get 421 4.7.0.
func TestSessionLimits(t *testing.T) {
	e := startEnv(t, func(c *config.Config) { c.SMTP.MaxPerIP = 2; c.SMTP.MaxConnections = 3 })
	var open []*smtpclient.Conn
	for i := 0; i < 2; i++ {
		c, err := smtpclient.Dial(e.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		expectReply(t, "banner", c.Banner, 220, "")
		open = append(open, c)
	}
	c, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "third session from one IP", c.Banner, 421, "4.7.0")
	c.Close()
	// Another loopback source address is another IP: it gets in, up to the total.
	c2, err := smtpclient.DialFrom("127.0.0.2", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "other IP", c2.Banner, 220, "")
	c3, err := smtpclient.DialFrom("127.0.0.3", e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "over the total", c3.Banner, 421, "4.7.0")
	c3.Close()
	c2.Quit()
	open[0].Quit()
	// A slot freed is a slot reusable; poll since the close is seen asynchronously.
	waitFor(t, "freed slot", 5*time.Second, func() bool {
		c, err := smtpclient.Dial(e.addr, 5*time.Second)
		if err != nil {
			return false
		}
		defer c.Quit()
		return c.Banner.Code == 220
	})
	open[1].Quit()
}

// TestGracefulShutdown: on shutdown an idle session gets 421 at once, and a
// transaction in the middle of its DATA finishes: stored, answered 250, and
// found in the store after the restart.
func TestGracefulShutdown(t *testing.T) {
	e := startEnv(t, nil)
	idle, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Hello("idle.test")
	busy, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busy.Hello("busy.test")
	for _, cmd := range []string{"MAIL FROM:<bo@ed.test>", "RCPT TO:<" + campaignAddr + ">", "DATA"} {
		if r, err := busy.Cmd("%s", cmd); err != nil || r.Code >= 400 {
			t.Fatalf("%s: %v %v", cmd, r, err)
		}
	}
	data := smtpclient.DotStuff(e.signed("ed.test", "bo@ed.test", keyserver.SignOptions{}))
	half := len(data) / 2
	if err := busy.Raw(data[:half]); err != nil {
		t.Fatal(err)
	}

	d := e.d
	e.d = nil // this test stops the daemon itself
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- d.Shutdown(ctx)
	}()
	r, err := idle.ReadReply()
	if err != nil || r.Code != 421 {
		t.Errorf("idle session at shutdown: %v %v, want 421", r, err)
	}
	if err := busy.Raw(data[half:]); err != nil {
		t.Fatal(err)
	}
	r, err = busy.ReadReply()
	if err != nil || r.Code != 250 || !strings.Contains(r.Text, "queued as ") {
		t.Fatalf("transaction in flight at shutdown: %v %v, want 250", r, err)
	}
	id := strings.Fields(strings.SplitN(r.Text, "queued as ", 2)[1])[0]
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	st, err := store.Open(e.cfg.Store.Dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if l, err := st.Letter(id); err != nil || l.From != "bo@ed.test" {
		t.Errorf("letter %s after shutdown: %+v %v", id, l, err)
	}
}

// TestBDAT: CHUNKING is always offered by go-smtp, so BDAT bodies get the
// same checks as DATA: a bare LF is refused, a clean letter is counted.
func TestBDAT(t *testing.T) {
	e := startEnv(t, nil)
	bdat := func(msg []byte, chunks int) smtpclient.Reply {
		t.Helper()
		c, err := smtpclient.Dial(e.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Quit()
		c.Hello("client.test")
		c.Cmd("MAIL FROM:<x@client.test>")
		c.Cmd("RCPT TO:<%s>", campaignAddr)
		size := (len(msg) + chunks - 1) / chunks
		for off := 0; off < len(msg); off += size {
			end := min(off+size, len(msg))
			last := ""
			if end == len(msg) {
				last = " LAST"
			}
			c.Raw([]byte(fmt.Sprintf("BDAT %d%s\r\n", end-off, last)))
			c.Raw(msg[off:end])
			r, err := c.ReadReply()
			if err != nil {
				t.Fatal(err)
			}
			if last != "" || r.Code != 250 {
				return r
			}
		}
		return smtpclient.Reply{}
	}
	smuggle := append(e.signed("ed.test", "olga@ed.test", keyserver.SignOptions{}), []byte("\n.\nMAIL FROM:<x@ed.test>\n")...)
	expectReply(t, "BDAT with bare LF", bdat(smuggle, 3), 554, "5.6.0")
	expectReply(t, "BDAT clean letter", bdat(e.signed("ed.test", "bo@ed.test", keyserver.SignOptions{}), 2), 250, "2.0.0")
	if st, _ := e.store().Stats(); st.Counted != 1 || st.Rejected != 1 {
		t.Errorf("stats %+v, want counted 1, rejected 1", st)
	}
}

// TestSMTPExtensions: STARTTLS is offered when a certificate is configured and
// carries a letter; SMTPUTF8 and 8BITMIME are offered and a UTF-8 letter is
// accepted.
func TestSMTPExtensions(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	e := startEnv(t, func(c *config.Config) { c.SMTP.TLSCert, c.SMTP.TLSKey = certFile, keyFile })

	c, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Hello("client.test")
	c.Quit()
	for _, ext := range []string{"STARTTLS", "SMTPUTF8", "8BITMIME"} {
		if !strings.Contains(r.Text, ext) {
			t.Errorf("EHLO does not offer %s: %q", ext, r.Text)
		}
	}

	sc, err := smtp.DialStartTLS(e.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer sc.Close()
	if _, ok := sc.TLSConnectionState(); !ok {
		t.Fatal("session not encrypted")
	}
	msg := e.signed("ed.test", "José Núñez <josé@ed.test>", keyserver.SignOptions{})
	if err := sc.SendMail("josé@ed.test", []string{campaignAddr}, bytes.NewReader(msg)); err != nil {
		t.Fatalf("UTF-8 letter over TLS: %v", err)
	}
	if st, _ := e.store().Stats(); st.Counted != 1 {
		t.Errorf("counted %d, want 1", st.Counted)
	}
}

// TestIdleTimeout: a session that says nothing for smtp.timeout is closed.
func TestIdleTimeout(t *testing.T) {
	e := startEnv(t, func(c *config.Config) { c.SMTP.Timeout = config.Duration{Duration: 300 * time.Millisecond} })
	c, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Hello("client.test")
	start := time.Now()
	r, err := c.ReadReply() // nothing sent: the server must give up on us
	if err == nil && r.Code != 421 {
		t.Fatalf("idle session got %v", r)
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Errorf("idle session closed after %v, timeout is 300ms", waited)
	}
}

// TestMixedRecipients: a letter is counted or kept for postmaster, never
// silently one instead of the other; the second kind gets 452 and waits for
// its own transaction.
func TestMixedRecipients(t *testing.T) {
	e := startEnv(t, nil)
	msg := e.signed("ed.test", "Ana <ana@ed.test>", keyserver.SignOptions{})
	c, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Quit()
	c.Hello("client.test")
	c.Cmd("MAIL FROM:<ana@ed.test>")
	if r, _ := c.Cmd("RCPT TO:<%s>", campaignAddr); r.Code != 250 {
		t.Fatalf("campaign RCPT: %v", r)
	}
	for _, other := range []string{"postmaster@campaign.test", "relay@campaign.test"} {
		r, _ := c.Cmd("RCPT TO:<%s>", other)
		expectReply(t, "second kind of recipient "+other, r, 452, "4.5.3")
	}
	c.Cmd("DATA")
	c.Raw(smtpclient.DotStuff(msg))
	r, _ := c.ReadReply()
	expectReply(t, "the letter", r, 250, "2.0.0")
	if st, _ := e.store().Stats(); st.Counted != 1 || st.Held != 0 {
		t.Errorf("stats %+v, want counted 1, held 0", st)
	}
}

// TestShutdownDoesNotWaitForIdleClients: neither a client that never said
// EHLO nor one idling after a refused RCPT holds up shutdown, and both are
// disconnected.
func TestShutdownDoesNotWaitForIdleClients(t *testing.T) {
	e := startEnv(t, nil)
	silent, err := smtpclient.Dial(e.addr, 5*time.Second) // banner read, nothing said
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	probe, err := smtpclient.Dial(e.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	probe.Hello("probe.test")
	probe.Cmd("MAIL FROM:<a@probe.test>")
	probe.Cmd("RCPT TO:<victim@elsewhere.test>")

	d := e.d
	e.d = nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v waiting for idle clients", took)
	}
	for name, c := range map[string]*smtpclient.Conn{"silent": silent, "probe": probe} {
		if r, err := c.ReadReply(); err == nil && r.Code != 421 {
			t.Errorf("%s client after shutdown: %v, want 421 or a closed connection", name, r)
		}
	}
}

// TestLimitsAcrossListeners: max_per_ip counts sessions on every listener
// together.
func TestLimitsAcrossListeners(t *testing.T) {
	e := startEnv(t, func(c *config.Config) {
		c.SMTP.Listen = []string{"127.0.0.1:0", "127.0.0.2:0"}
		c.SMTP.MaxPerIP = 1
	})
	addrs := e.d.SMTPAddrs()
	first, err := smtpclient.Dial(addrs[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Quit()
	expectReply(t, "first session", first.Banner, 220, "")
	second, err := smtpclient.DialFrom("127.0.0.1", addrs[1].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	expectReply(t, "second session from the same IP on the other listener", second.Banner, 421, "4.7.0")
}

// TestStoreFailure: when the store cannot write, the letter gets 451 4.3.0
// (never a 250 without the fsync) and the sender will retry.
func TestStoreFailure(t *testing.T) {
	e := startEnv(t, nil)
	if err := e.store().Close(); err != nil { // the daemon's store, closed under it
		t.Fatal(err)
	}
	r := e.send(e.signed("ed.test", "bo@ed.test", keyserver.SignOptions{}))
	expectReply(t, "letter while the store cannot write", r, 451, "4.3.0")
	if strings.Contains(r.Text, "closed") {
		t.Errorf("internal error text reached the client: %q", r.Text)
	}
}
