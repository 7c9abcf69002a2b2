package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/relay/inbound"
	"github.com/petitiond/petitiond/store"
)

const campaignAddr = testenv.CampaignAddr

// expectReply checks a reply against want: its code, then optionally its
// enhanced code, then words its text must contain, as in "250 2.0.0
// queued as L".
func expectReply(t *testing.T, what string, r smtpclient.Reply, want string) {
	t.Helper()
	if !replyIs(r, want) {
		t.Errorf("%s: got %q, want %s", what, r.String(), want)
	}
}

func replyIs(r smtpclient.Reply, want string) bool {
	code, rest, _ := strings.Cut(want, " ")
	if strconv.Itoa(r.Code) != code {
		return false
	}
	if enhanced, words, _ := strings.Cut(rest, " "); strings.Count(enhanced, ".") == 2 {
		if !strings.HasPrefix(r.Text, enhanced+" ") {
			return false
		}
		rest = words
	}
	return strings.Contains(r.Text, rest)
}

// step is one line (or chunk) of an SMTP dialogue and the reply it gets.
type step struct {
	send string // a command line; CRLF is added
	raw  []byte // bytes written as they are (a dot-stuffed message, a BDAT chunk), instead of send
	want string // the reply, as for expectReply; "" reads none
	// first, when set, is the reply's whole first line after the code.
	first string
}

func (s step) String() string {
	if s.raw != nil {
		return fmt.Sprintf("%d bytes of data", len(s.raw))
	}
	return s.send
}

// data is the DATA command and the message, dot-stuffed, getting want.
func data(msg []byte, want string) []step {
	return []step{{send: "DATA", want: "354"}, {raw: smtpclient.DotStuff(msg), want: want}}
}

// bdat sends msg in chunks BDAT commands, the last one LAST, each chunk
// written with its command; every chunk but the last gets 250.
func bdat(msg []byte, chunks int, want string) []step {
	var steps []step
	size := (len(msg) + chunks - 1) / chunks
	for off := 0; off < len(msg); off += size {
		end := min(off+size, len(msg))
		cmd, reply := fmt.Sprintf("BDAT %d\r\n", end-off), "250"
		if end == len(msg) {
			cmd, reply = fmt.Sprintf("BDAT %d LAST\r\n", end-off), want
		}
		steps = append(steps, step{raw: append([]byte(cmd), msg[off:end]...), want: reply})
	}
	return steps
}

// envelope is MAIL FROM from and RCPT TO the campaign address, accepted.
func envelope(from string) []step {
	return []step{{send: "MAIL FROM:<" + from + ">", want: "250"}, {send: "RCPT TO:<" + campaignAddr + ">", want: "250"}}
}

// folded is an unsigned letter from from with a References: field folded
// over lines lines, one message ID each.
func folded(from string, lines int) []byte {
	refs := "References: <first@client.test>\r\n" + strings.Repeat(" <another.message.id@client.test>\r\n", lines)
	return append([]byte(refs), testenv.Letter(from, campaignAddr, "folded", "text")...)
}

// sized pads msg with lines of z so that it is exactly size bytes long.
func sized(msg []byte, size int) []byte {
	for len(msg) < size {
		line := min(size-len(msg), 78)
		if size-len(msg)-line == 1 {
			line-- // not leave one byte for a line of its own
		}
		if line < 2 {
			panic("sized: one byte short of a line")
		}
		msg = append(append(msg, bytes.Repeat([]byte("z"), line-2)...), "\r\n"...)
	}
	if len(msg) != size {
		panic("sized: message already longer than the size")
	}
	return msg
}

// holds is what the store must hold after a case: nothing more.
type holds struct {
	// The tally: letters counted (all pending, as no batch closes),
	// duplicates, and letters refused at the end of data.
	counted, duplicates, rejected int
	// held is each held letter's sender and reason; each keeps its body.
	held map[string]string
	// marked are the senders of letters counted without a passing
	// signature (policy relay); every other counted letter verified.
	marked []string
	// events is the whole journal, oldest first, as "kind sender".
	events []string
	// verdicts, when set, are how the letters given an ID verified, by
	// sender: "spf spf.test" (kind and domain).
	verdicts map[string]string
}

// inboundCase is one hostile (or merely unusual) input: what the store
// held before, what was sent, the reply, and what the store holds after.
type inboundCase struct {
	name string
	// config sets the policy under test; nil keeps the defaults
	// (verify.unverified = "quarantine").
	config func(*config.Config)
	// limits tune the front end's defences (zero: the defaults).
	limits inbound.Limits
	// before are letters sent first, each in its own session and each
	// queued: a sender counted already, for instance.
	before [][]byte
	// msg is sent in a session of its own to rcpt (default the campaign
	// address) and gets reply; or, instead, dialogue runs after EHLO.
	msg  []byte
	rcpt string
	// noHello leaves the dialogue to say EHLO or HELO itself, if at all.
	noHello  bool
	mailFrom string // MAIL FROM of msg; default bounce@client.test, "<>" the null sender
	reply    string
	dialogue []step
	holds    holds
}

func relayPolicy(c *config.Config)  { c.Verify.Unverified = "relay" }
func rejectPolicy(c *config.Config) { c.Verify.Unverified = "reject" }

// TestInboundDialogues sends every kind of letter and dialogue SPEC 4
// names, each to a daemon of its own, and checks the reply and what the
// store holds.
func TestInboundDialogues(t *testing.T) {
	dns, err := testenv.StartDNS("sel", testenv.SigningDomains()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	// wrongkey.test publishes one key and its letters are signed with
	// another; servfail.test and slow.test have keys whose lookups fail.
	published, err := keyserver.NewKey("wrongkey.test", "sel", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	dns.SetKey(published)
	dns.SetServFail("sel._domainkey.servfail.test")
	dns.SetTimeout("sel._domainkey.slow.test")
	// SPF records of envelope senders; the daemon sees clients at 127.0.0.1.
	dns.SetTXT("spf.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.SetTXT("rsa.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.SetTXT("mail.spf.test", "v=spf1 ip4:127.0.0.0/8 -all")
	dns.SetTXT("spfsoft.test", "v=spf1 ip4:192.0.2.1 ~all")
	dns.SetTXT("spffail.test", "v=spf1 ip4:192.0.2.1 -all")
	dns.SetTXT("spfperm.test", "v=spf1 ip4:127.0.0.1/33 -all")
	dns.SetServFail("spftemp.test")
	// Eleven includes: the first ten do not match, the eleventh would
	// pass, but RFC 7208 4.6.4 allows ten DNS-querying terms.
	var includes []string
	for i := 1; i <= 11; i++ {
		name := fmt.Sprintf("i%d.spfinc.test", i)
		includes = append(includes, "include:"+name)
		dns.SetTXT(name, "v=spf1 -all")
	}
	dns.SetTXT("i11.spfinc.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.SetTXT("spfinc.test", "v=spf1 "+strings.Join(includes, " ")+" -all")
	unpublished := map[string]*keyserver.Key{}
	for _, k := range []struct{ domain, algo string }{{"wrongkey.test", "rsa"}, {"servfail.test", "ed25519"}, {"slow.test", "ed25519"}} {
		if unpublished[k.domain], err = keyserver.NewKey(k.domain, "sel", k.algo); err != nil {
			t.Fatal(err)
		}
	}

	letter := func(from, subject, body string) []byte { return testenv.Letter(from, campaignAddr, subject, body) }
	signedWith := func(domain, from string, opt keyserver.SignOptions) []byte {
		t.Helper()
		msg := letter(from, "Libertad", testenv.Body)
		var err error
		if k := unpublished[domain]; k != nil {
			msg, err = k.Sign(msg, opt)
		} else {
			msg, err = dns.Sign(domain, msg, opt)
		}
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	signed := func(domain, from string) []byte { return signedWith(domain, from, keyserver.SignOptions{}) }

	tampered := bytes.Replace(signed("ed.test", "eva@ed.test"), []byte("political prisoners"), []byte("nobody at all here"), 1)
	appended := append(signedWith("ed.test", "hugo@ed.test", keyserver.SignOptions{BodyLength: true}),
		"P.S. text appended after signing.\r\n"...)
	twoFrom := append([]byte("From: x@ed.test\r\n"), signed("ed.test", "jose@ed.test")...)
	big := letter("kim@ed.test", "big", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 17000))
	// A bare-LF end of data followed by a second transaction inside the
	// same DATA: the smuggled letter from nora must never arrive.
	smuggled := bytes.ReplaceAll(signed("ed.test", "nora@ed.test"), []byte("\r\n"), []byte("\n"))
	smuggle := append(signed("ed.test", "olga@ed.test"), "\n.\nMAIL FROM:<x@ed.test>\nRCPT TO:<"+campaignAddr+">\nDATA\n"...)
	smuggle = append(smuggle, smuggled...)
	bareCR := bytes.Replace(signed("ed.test", "pia@ed.test"), []byte("revolt."), []byte("revolt.\rX"), 1)
	bdatSmuggle := append(signed("ed.test", "olga@ed.test"), "\n.\nMAIL FROM:<x@ed.test>\n"...)

	cases := []inboundCase{
		// Valid letters from new senders: counted.
		{name: "RSA-2048 signature", msg: signed("rsa.test", "Ana Díaz <ana@rsa.test>"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted ana@rsa.test"}}},
		{name: "ed25519 signature", msg: signed("ed.test", "bo@ed.test"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted bo@ed.test"}}},
		{name: "Gmail address with dots and a +tag", msg: signed("gmail.com", "Carla <Carla.Perez+petition@gmail.com>"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted Carla.Perez+petition@gmail.com"}}},
		{name: "signer is a subdomain of the From domain", msg: signed("mail.example.org", "dora@example.org"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted dora@example.org"}}},

		// A counted sender again, in folded spellings: not counted twice.
		{name: "duplicate in upper case with a +tag", before: [][]byte{signed("rsa.test", "Ana Díaz <ana@rsa.test>")},
			msg: signed("rsa.test", "ANA+otra@RSA.TEST"), reply: "250 2.0.0 already counted",
			holds: holds{counted: 1, duplicates: 1, events: []string{"accepted ana@rsa.test", "duplicate ANA+otra@RSA.TEST"}}},
		{name: "duplicate without Gmail's dots", before: [][]byte{signed("gmail.com", "Carla <Carla.Perez+petition@gmail.com>")},
			msg: signed("gmail.com", "carlaperez@gmail.com"), reply: "250 2.0.0 already counted",
			holds: holds{counted: 1, duplicates: 1, events: []string{"accepted Carla.Perez+petition@gmail.com", "duplicate carlaperez@gmail.com"}}},
		{name: "duplicate with a display name", before: [][]byte{signed("ed.test", "bo@ed.test")},
			msg: signed("ed.test", "Bo <bo@ed.test>"), reply: "250 2.0.0 already counted",
			holds: holds{counted: 1, duplicates: 1, events: []string{"accepted bo@ed.test", "duplicate bo@ed.test"}}},

		// Unverified letters are held (policy quarantine), and the reply
		// never tells whether the address was counted before.
		{name: "unsigned from a new sender", msg: letter("dan@rsa.test", "hi", "unsigned"), reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"dan@rsa.test": "unverified"}, events: []string{"held dan@rsa.test"}}},
		{name: "unsigned from a counted sender", before: [][]byte{signed("rsa.test", "ana@rsa.test")},
			msg: letter("ana@rsa.test", "hi", "unsigned"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, held: map[string]string{"ana@rsa.test": "unverified"}, events: []string{"accepted ana@rsa.test", "held ana@rsa.test"}}},
		{name: "body changed after signing", msg: tampered, reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"eva@ed.test": "unverified"}, events: []string{"held eva@ed.test"}}},
		{name: "signed with a key other than the published one", msg: signed("wrongkey.test", "fede@wrongkey.test"), reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"fede@wrongkey.test": "unverified"}, events: []string{"held fede@wrongkey.test"}}},
		{name: "signer not aligned with From", msg: signed("rsa.test", "gala@ed.test"), reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"gala@ed.test": "unverified"}, events: []string{"held gala@ed.test"}}},
		{name: "l= with text appended after signing", msg: appended, reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"hugo@ed.test": "unverified"}, events: []string{"held hugo@ed.test"}}},
		{name: "expired signature", msg: signedWith("ed.test", "ines@ed.test", keyserver.SignOptions{Expiration: time.Now().Add(-time.Hour)}),
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"ines@ed.test": "unverified"}, events: []string{"held ines@ed.test"}}},

		// Mail to postmaster and bounces of batches are kept for an admin.
		{name: "mail to postmaster", msg: letter("someone@else.test", "complaint", "a report"), rcpt: "postmaster@campaign.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"someone@else.test": "postmaster"}, events: []string{"held someone@else.test"}}},
		{name: "bounce of a batch to campaign.from", msg: letter("MAILER-DAEMON@ofapp.test", "Undelivered", "a bounce"), rcpt: testenv.CampaignFrom,
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"MAILER-DAEMON@ofapp.test": "postmaster"}, events: []string{"held MAILER-DAEMON@ofapp.test"}}},

		// Refused at the end of data: nothing stored, the refusal counted.
		{name: "two From headers", msg: twoFrom, reply: "550 5.6.0",
			holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},
		{name: "two addresses in From", msg: letter("a@ed.test, b@ed.test", "x", "y"), reply: "550 5.6.0",
			holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},
		{name: "over max_message_bytes", msg: big, reply: "552 5.3.4",
			holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},
		{name: "smuggling with bare LF", msg: smuggle, reply: "554 5.6.0",
			holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},
		{name: "bare CR", msg: bareCR, reply: "554 5.6.0",
			holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},

		// A key lookup that fails for now: the sender retries, nothing is
		// stored and a 451 is not a final refusal.
		{name: "key lookup SERVFAIL", msg: signed("servfail.test", "luz@servfail.test"), reply: "451 4.7.5"},
		{name: "key lookup timeout", msg: signed("slow.test", "mar@slow.test"), reply: "451 4.7.5"},

		// Relay attempts are refused at RCPT; they are not letters.
		{name: "relay to another domain", dialogue: []step{
			{send: "MAIL FROM:<spammer@else.test>", want: "250"},
			{send: "RCPT TO:<victim@elsewhere.test>", want: "550 5.7.1"},
		}},
		{name: "relay to a look-alike of the campaign domain", dialogue: []step{
			{send: "MAIL FROM:<spammer@else.test>", want: "250"},
			{send: "RCPT TO:<libertad@campaign.test.evil.test>", want: "550 5.7.1"},
		}},
		{name: "relay to another domain's postmaster", dialogue: []step{
			{send: "MAIL FROM:<spammer@else.test>", want: "250"},
			{send: "RCPT TO:<postmaster@elsewhere.test>", want: "550 5.7.1"},
		}},

		// A letter is counted or kept for postmaster, never silently one
		// instead of the other: the second kind of recipient waits for a
		// transaction of its own.
		{name: "postmaster after the campaign address", dialogue: slices.Concat([]step{
			{send: "MAIL FROM:<ana@ed.test>", want: "250"},
			{send: "RCPT TO:<" + campaignAddr + ">", want: "250"},
			{send: "RCPT TO:<postmaster@campaign.test>", want: "452 4.5.3"},
		}, data(signed("ed.test", "Ana <ana@ed.test>"), "250 2.0.0 queued as L")),
			holds: holds{counted: 1, events: []string{"accepted ana@ed.test"}}},
		{name: "campaign.from after the campaign address", dialogue: slices.Concat([]step{
			{send: "MAIL FROM:<ana@ed.test>", want: "250"},
			{send: "RCPT TO:<" + campaignAddr + ">", want: "250"},
			{send: "RCPT TO:<" + testenv.CampaignFrom + ">", want: "452 4.5.3"},
		}, data(signed("ed.test", "Ana <ana@ed.test>"), "250 2.0.0 queued as L")),
			holds: holds{counted: 1, events: []string{"accepted ana@ed.test"}}},

		// CHUNKING is always offered by go-smtp, so BDAT bodies get the
		// same checks as DATA.
		{name: "BDAT with bare LF", dialogue: slices.Concat([]step{
			{send: "MAIL FROM:<x@client.test>", want: "250"},
			{send: "RCPT TO:<" + campaignAddr + ">", want: "250"},
		}, bdat(bdatSmuggle, 3, "554 5.6.0")),
			holds: holds{rejected: 1, events: []string{"rejected x@client.test"}}},
		{name: "BDAT clean letter", dialogue: slices.Concat([]step{
			{send: "MAIL FROM:<x@client.test>", want: "250"},
			{send: "RCPT TO:<" + campaignAddr + ">", want: "250"},
		}, bdat(signed("ed.test", "bo@ed.test"), 2, "250 2.0.0 queued as L")),
			holds: holds{counted: 1, events: []string{"accepted bo@ed.test"}}},

		// Policy reject: unverified letters get 550 5.7.20, nothing kept.
		{name: "unsigned under policy reject", config: rejectPolicy, msg: letter("dan@rsa.test", "hi", "unsigned"), reply: "550 5.7.20",
			holds: holds{rejected: 1, events: []string{"rejected dan@rsa.test"}}},
		{name: "signed under policy reject", config: rejectPolicy, msg: signed("ed.test", "bo@ed.test"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted bo@ed.test"}}},

		// Policy relay: unverified letters are counted and marked; one from
		// a counted sender gets the same kind of reply as a new one but is
		// not counted again.
		{name: "unsigned under policy relay", config: relayPolicy, msg: letter("dan@rsa.test", "hi", "unsigned"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, marked: []string{"dan@rsa.test"}, events: []string{"accepted dan@rsa.test"}}},
		{name: "unsigned from a counted sender under policy relay", config: relayPolicy, before: [][]byte{letter("dan@rsa.test", "hi", "unsigned")},
			msg: letter("Dan+x@rsa.test", "hi", "unsigned again"), reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, duplicates: 1, marked: []string{"dan@rsa.test"}, events: []string{"accepted dan@rsa.test", "duplicate Dan+x@rsa.test"}}},
		{name: "signed after unverified under policy relay", config: relayPolicy, before: [][]byte{letter("dan@rsa.test", "hi", "unsigned")},
			msg: signed("rsa.test", "dan@rsa.test"), reply: "250 2.0.0 already counted",
			holds: holds{counted: 1, duplicates: 1, marked: []string{"dan@rsa.test"}, events: []string{"accepted dan@rsa.test", "duplicate dan@rsa.test"}}},
	}

	// SPF (SPEC 5): a letter without an aligned DKIM pass verifies when
	// SPF passes for MAIL FROM from the client's IP and MAIL FROM's domain
	// aligns with From's; nothing else SPF says verifies it.
	cases = append(cases, []inboundCase{
		{name: "SPF pass aligned", msg: letter("Sol <sol@spf.test>", "hi", "unsigned"), mailFrom: "bounce@spf.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted sol@spf.test"}, verdicts: map[string]string{"sol@spf.test": "spf spf.test"}}},
		{name: "SPF pass for a subdomain of the From domain", msg: letter("tita@spf.test", "hi", "unsigned"), mailFrom: "bounce@mail.spf.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted tita@spf.test"}, verdicts: map[string]string{"tita@spf.test": "spf mail.spf.test"}}},
		{name: "SPF pass under policy reject", config: rejectPolicy, msg: letter("sol@spf.test", "hi", "unsigned"), mailFrom: "bounce@spf.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted sol@spf.test"}, verdicts: map[string]string{"sol@spf.test": "spf spf.test"}}},
		{name: "SPF pass from a counted sender", config: rejectPolicy, before: [][]byte{signed("rsa.test", "ana@rsa.test")},
			msg: letter("Ana+x@rsa.test", "hi", "unsigned"), mailFrom: "bounce@rsa.test", reply: "250 2.0.0 already counted",
			holds: holds{counted: 1, duplicates: 1, events: []string{"accepted ana@rsa.test", "duplicate Ana+x@rsa.test"}}},
		{name: "SPF pass not aligned with From", msg: letter("vera@ed.test", "hi", "unsigned"), mailFrom: "bounce@spf.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"vera@ed.test": "unverified"}, events: []string{"held vera@ed.test"}}},
		{name: "SPF softfail", msg: letter("sara@spfsoft.test", "hi", "unsigned"), mailFrom: "bounce@spfsoft.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"sara@spfsoft.test": "unverified"}, events: []string{"held sara@spfsoft.test"}}},
		{name: "SPF fail", msg: letter("fina@spffail.test", "hi", "unsigned"), mailFrom: "bounce@spffail.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"fina@spffail.test": "unverified"}, events: []string{"held fina@spffail.test"}}},
		{name: "SPF permerror", msg: letter("pepa@spfperm.test", "hi", "unsigned"), mailFrom: "bounce@spfperm.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"pepa@spfperm.test": "unverified"}, events: []string{"held pepa@spfperm.test"}}},
		{name: "SPF record with 11 includes", msg: letter("ines@spfinc.test", "hi", "unsigned"), mailFrom: "bounce@spfinc.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"ines@spfinc.test": "unverified"}, events: []string{"held ines@spfinc.test"}}},
		{name: "SPF with a null sender", msg: letter("nula@spf.test", "hi", "unsigned"), mailFrom: "<>",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"nula@spf.test": "unverified"}, events: []string{"held nula@spf.test"}}},
		{name: "SPF pass with verify.spf off", config: func(c *config.Config) { c.Verify.SPF = false },
			msg: letter("sol@spf.test", "hi", "unsigned"), mailFrom: "bounce@spf.test", reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"sol@spf.test": "unverified"}, events: []string{"held sol@spf.test"}}},
		{name: "SPF temporary error", msg: letter("tere@spftemp.test", "hi", "unsigned"), mailFrom: "bounce@spftemp.test",
			reply: "451 4.7.5"},
		{name: "SPF temporary error for an unaligned sender", msg: letter("ula@ed.test", "hi", "unsigned"), mailFrom: "bounce@spftemp.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"ula@ed.test": "unverified"}, events: []string{"held ula@ed.test"}}},
		{name: "SPF temporary error with an aligned DKIM pass", msg: signed("ed.test", "eda@ed.test"), mailFrom: "bounce@spftemp.test",
			reply: "250 2.0.0 queued as L",
			holds: holds{counted: 1, events: []string{"accepted eda@ed.test"}, verdicts: map[string]string{"eda@ed.test": "dkim ed.test"}}},
	}...)

	// SMTP itself: line and size limits, postmaster without a domain, the
	// greeting and commands out of order (RFC 5321, RFC 2034, RFC 4954).
	const small = 4096
	smallLimit := func(c *config.Config) { c.SMTP.MaxMessageBytes = small }
	exactly := sized(letter("exa@ed.test", "size", ""), small)
	cases = append(cases, []inboundCase{
		{name: "DATA line over the line limit", dialogue: slices.Concat(envelope("x@client.test"),
			data(letter("lara@ed.test", "long", strings.Repeat("x", 1999)), "554 5.6.0"),
			[]step{{send: "NOOP", want: "250"}}),
			holds: holds{rejected: 1, events: []string{"rejected x@client.test"}}},
		{name: "DATA line of a megabyte", dialogue: slices.Concat(envelope("x@client.test"),
			data(letter("lara@ed.test", "long", strings.Repeat("x", 1<<20-4096)), "554 5.6.0"),
			[]step{{send: "NOOP", want: "250"}}),
			holds: holds{rejected: 1, events: []string{"rejected x@client.test"}}},
		{name: "BDAT line over the line limit", dialogue: slices.Concat(envelope("x@client.test"),
			bdat(letter("lara@ed.test", "long", strings.Repeat("x", 1999)), 2, "554 5.6.0")),
			holds: holds{rejected: 1, events: []string{"rejected x@client.test"}}},
		{name: "DATA line at the line limit", msg: letter("lina@ed.test", "long", strings.Repeat("y", 1998)),
			reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"lina@ed.test": "unverified"}, events: []string{"held lina@ed.test"}}},
		{name: "exactly max_message_bytes", config: smallLimit, msg: exactly, reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"exa@ed.test": "unverified"}, events: []string{"held exa@ed.test"}}},
		{name: "one byte over max_message_bytes", config: smallLimit, msg: sized(letter("exo@ed.test", "size", ""), small+1),
			reply: "552 5.3.4", holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},
		{name: "BDAT of exactly max_message_bytes", config: smallLimit, dialogue: slices.Concat(envelope("x@client.test"),
			bdat(exactly, 3, "250 2.0.0 queued as L")),
			holds: holds{held: map[string]string{"exa@ed.test": "unverified"}, events: []string{"held exa@ed.test"}}},
		{name: "RCPT TO:<postmaster> without a domain", dialogue: slices.Concat([]step{
			{send: "MAIL FROM:<abuse@else.test>", want: "250"},
			{send: "RCPT TO:<Postmaster>", want: "250"},
		}, data(letter("abuse@else.test", "report", "a report"), "250 2.0.0 queued as L")),
			holds: holds{held: map[string]string{"abuse@else.test": "postmaster"}, events: []string{"held abuse@else.test"}}},
		{name: "header field folded over 20,000 lines", msg: folded("fold@ed.test", 20000), reply: "554 5.6.0",
			holds: holds{rejected: 1, events: []string{"rejected bounce@client.test"}}},
		{name: "header field folded over 300 lines", msg: folded("fold@ed.test", 300), reply: "250 2.0.0 queued as L",
			holds: holds{held: map[string]string{"fold@ed.test": "unverified"}, events: []string{"held fold@ed.test"}}},
		{name: "free disk below store.min_free_bytes at MAIL FROM", config: func(c *config.Config) { c.Store.MinFreeBytes = 1 << 62 },
			dialogue: []step{{send: "MAIL FROM:<x@client.test>", want: "452 4.3.1"}}},
		{name: "free disk below store.min_free_bytes after the letter", config: func(c *config.Config) { c.Store.MinFreeBytes = 1 << 30 },
			limits: inbound.Limits{FreeBytes: func() (uint64, error) { return 1<<30 + 10000, nil }},
			msg:    letter("lena@ed.test", "big", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 300)),
			reply:  "452 4.3.1"},
		{name: "RSET in the middle of BDAT", dialogue: slices.Concat(envelope("x@client.test"), []step{
			{raw: []byte("BDAT 21\r\nFrom: x@ed.test\r\nSubj"), want: "250"},
			{send: "RSET", want: "250"},
		}, envelope("y@client.test"), data(letter("rosa@ed.test", "hi", "after RSET"), "250 2.0.0 queued as L")),
			holds: holds{held: map[string]string{"rosa@ed.test": "unverified"}, events: []string{"held rosa@ed.test"}}},
		{name: "EHLO reply names smtp.hostname", noHello: true, dialogue: []step{
			{send: "EHLO client.test", want: "250", first: "mx.campaign.test Hello client.test"},
		}},
		{name: "HELO reply names smtp.hostname without an enhanced code", noHello: true, dialogue: []step{
			{send: "HELO client.test", want: "250", first: "mx.campaign.test Hello client.test"},
			{send: "MAIL FROM:<x@client.test>", want: "250 2.0.0"},
		}},
		{name: "MAIL before HELO", noHello: true, dialogue: []step{
			{send: "MAIL FROM:<x@client.test>", want: "503 5.5.1"},
		}},
		{name: "RCPT before MAIL", dialogue: []step{
			{send: "RCPT TO:<" + campaignAddr + ">", want: "503 5.5.1"},
		}},
		{name: "DATA before RCPT", dialogue: []step{
			{send: "MAIL FROM:<x@client.test>", want: "250"},
			{send: "DATA", want: "503 5.5.1"},
		}},
		{name: "MAIL inside a transaction", dialogue: slices.Concat(envelope("x@client.test"), []step{
			{send: "MAIL FROM:<y@client.test>", want: "503 5.5.1"},
		})},
		{name: "AUTH when none is offered", dialogue: []step{
			{send: "AUTH PLAIN AGFuYQBzZWNyZXQ=", want: "503 5.5.1"},
			{send: "MAIL FROM:<x@client.test>", want: "250"},
		}},
		{name: "unknown command", dialogue: []step{
			{send: "FROB", want: "500"},
		}},
	}...)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runInbound(t, dns, tc)
		})
	}
}

// runInbound runs one case on a daemon of its own.
func runInbound(t *testing.T, dns *testenv.DNS, tc inboundCase) {
	e := testenv.PrepareWith(t, testenv.Options{DNS: dns, Daemon: relay.Options{SMTPLimits: tc.limits}, Configure: func(c *config.Config) {
		testenv.UseCampaign(c)
		if tc.config != nil {
			tc.config(c)
		}
	}})
	e.Start()
	var ids []string      // of every letter the store was given
	var sessions []string // named by refusals
	for _, msg := range tc.before {
		ids = append(ids, e.Queued(msg))
	}
	if tc.msg != nil {
		rcpt := tc.rcpt
		if rcpt == "" {
			rcpt = campaignAddr
		}
		var r smtpclient.Reply
		if tc.mailFrom == "" {
			r = e.Send(tc.msg, rcpt)
		} else {
			var err error
			r, err = smtpclient.SendMail(e.SMTPAddr(), "client.test", strings.Trim(tc.mailFrom, "<>"), []string{rcpt}, tc.msg, 10*time.Second)
			if err != nil {
				t.Fatalf("send: %v (%v)", err, r)
			}
		}
		expectReply(t, "the letter", r, tc.reply)
		if id := r.LetterID(); id != "" {
			ids = append(ids, id)
		}
		sessions = append(sessions, refusalSession(t, r))
	} else {
		var s []string
		ids, s = runDialogue(t, e, tc.dialogue, !tc.noHello)
		sessions = append(sessions, s...)
	}
	checkHolds(t, e.Store(), ids, tc.holds)
	checkRejectedSessions(t, e.Store(), sessions)
}

// sessionNote is how every refusal names its session (12 hex digits).
var sessionNote = regexp.MustCompile(`\(session ([0-9a-f]{12})\)$`)

// refusalSession checks that a refusal names its session at the end of its
// text, and returns the session ID; "" for a reply that is no refusal.
func refusalSession(t *testing.T, r smtpclient.Reply) string {
	t.Helper()
	if r.Code < 400 {
		return ""
	}
	m := sessionNote.FindStringSubmatch(r.Text)
	if m == nil {
		t.Errorf("refusal %q does not name its session", r.String())
		return ""
	}
	return m[1]
}

// checkRejectedSessions: every rejected letter's event names a session that
// a refusal named, so the sender's report leads to the journal.
func checkRejectedSessions(t *testing.T, st *store.Store, sessions []string) {
	t.Helper()
	events, err := st.Events(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if ev.Event == store.EventRejected && !slices.Contains(sessions, ev.Session) {
			t.Errorf("rejected event of session %q; the refusals named %q", ev.Session, sessions)
		}
	}
}

// runDialogue speaks the steps, after EHLO if hello is set, and returns
// the letter IDs given and the sessions refusals named.
func runDialogue(t *testing.T, e *testenv.Test, steps []step, hello bool) (ids, sessions []string) {
	t.Helper()
	c := e.Dial()
	defer c.Quit()
	if hello {
		if r, err := c.Hello("client.test"); err != nil || r.Code != 250 {
			t.Fatalf("EHLO: %v %v", r, err)
		}
	}
	for i, s := range steps {
		msg := s.raw
		if msg == nil {
			msg = []byte(s.send + "\r\n")
		}
		if err := c.Raw(msg); err != nil {
			t.Fatalf("step %d (%s): %v", i+1, s, err)
		}
		if s.want == "" {
			continue
		}
		r, err := c.ReadReply()
		if err != nil {
			t.Fatalf("step %d (%s): no reply: %v", i+1, s, err)
		}
		if !replyIs(r, s.want) {
			t.Fatalf("step %d (%s): got %q, want %s", i+1, s, r.String(), s.want)
		}
		if first, _, _ := strings.Cut(r.Text, "\n"); s.first != "" && first != s.first {
			t.Errorf("step %d (%s): first line %q, want %q", i+1, s, first, s.first)
		}
		if id := r.LetterID(); id != "" {
			ids = append(ids, id)
		}
		sessions = append(sessions, refusalSession(t, r))
	}
	return ids, sessions
}

// checkHolds compares the store with want; ids are the letters it was given.
func checkHolds(t *testing.T, st *store.Store, ids []string, want holds) {
	t.Helper()
	stats, err := st.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := [5]uint64{stats.Counted, stats.Pending, stats.Duplicates, stats.Held, stats.Rejected}; got !=
		[5]uint64{uint64(want.counted), uint64(want.counted), uint64(want.duplicates), uint64(len(want.held)), uint64(want.rejected)} {
		t.Errorf("tally counted %d pending %d duplicates %d held %d rejected %d; want %d %d %d %d %d",
			got[0], got[1], got[2], got[3], got[4], want.counted, want.counted, want.duplicates, len(want.held), want.rejected)
	}

	heldLetters, err := st.Held()
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, l := range heldLetters {
		reasons[l.From] = string(l.HeldReason)
		body, err := st.Body(l.ID)
		if err != nil || len(body) != l.Size {
			t.Errorf("held letter %s body: %d bytes of %d, %v", l.ID, len(body), l.Size, err)
		}
	}
	if !maps.Equal(reasons, want.held) {
		t.Errorf("held %v, want %v", reasons, want.held)
	}

	var marked []string
	for _, id := range ids {
		l, err := st.Letter(id)
		if err != nil {
			t.Errorf("letter %s given in a reply: %v", id, err)
			continue
		}
		// Every letter answered with an ID is kept whole, an unverified
		// repeat under policy relay included: storing it or not must not
		// tell the sender whether the address was counted (issue 9 point 11).
		if body, err := st.Body(id); err != nil || len(body) != l.Size {
			t.Errorf("letter %s (%s) body: %d bytes of %d, %v", id, l.State, len(body), l.Size, err)
		}
		if l.State == store.StatePending && l.Unverified() {
			marked = append(marked, l.From)
		}
	}
	if want.verdicts != nil {
		got := map[string]string{}
		for _, id := range ids {
			if l, err := st.Letter(id); err == nil {
				got[l.From] = string(l.Verdict.Kind) + " " + l.Verdict.Domain
			}
		}
		if !maps.Equal(got, want.verdicts) {
			t.Errorf("verdicts %v, want %v", got, want.verdicts)
		}
	}
	if !slices.Equal(marked, want.marked) {
		t.Errorf("counted without a passing signature: %v, want %v", marked, want.marked)
	}

	events, err := st.Events(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range events {
		got = append(got, string(ev.Event)+" "+ev.Sender)
	}
	if !slices.Equal(got, want.events) {
		t.Errorf("events %q, want %q", got, want.events)
	}
}

// TestSessionLimits: over max_per_ip concurrent sessions get 421 4.7.0.
func TestSessionLimits(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) { c.SMTP.MaxPerIP = 2; c.SMTP.MaxConnections = 3 })
	var open []*smtpclient.Conn
	for i := 0; i < 2; i++ {
		c := e.Dial()
		expectReply(t, "banner", c.Banner, "220")
		open = append(open, c)
	}
	c := e.Dial()
	expectReply(t, "third session from one IP", c.Banner, "421 4.7.0")
	refusalSession(t, c.Banner)
	c.Close()
	// Another loopback source address is another IP: it gets in, up to the total.
	c2, err := smtpclient.DialFrom("127.0.0.2", e.SMTPAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "other IP", c2.Banner, "220")
	c3, err := smtpclient.DialFrom("127.0.0.3", e.SMTPAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectReply(t, "over the total", c3.Banner, "421 4.7.0")
	refusalSession(t, c3.Banner)
	c3.Close()
	c2.Quit()
	open[0].Quit()
	// A slot freed is a slot reusable; poll since the close is seen asynchronously.
	testenv.WaitFor(t, "freed slot", 5*time.Second, func() bool {
		c, err := e.Env.Dial()
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
	e := testenv.Start(t, nil)
	idle := e.Dial()
	defer idle.Close()
	idle.Hello("idle.test")
	busy := e.Dial()
	defer busy.Close()
	busy.Hello("busy.test")
	for _, cmd := range []string{"MAIL FROM:<bo@ed.test>", "RCPT TO:<" + campaignAddr + ">", "DATA"} {
		if r, err := busy.Cmd("%s", cmd); err != nil || r.Code >= 400 {
			t.Fatalf("%s: %v %v", cmd, r, err)
		}
	}
	data := smtpclient.DotStuff(e.Signed("ed.test", "bo@ed.test"))
	half := len(data) / 2
	if err := busy.Raw(data[:half]); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopped <- e.Env.Stop(ctx)
	}()
	r, err := idle.ReadReply()
	if err != nil || r.Code != 421 {
		t.Errorf("idle session at shutdown: %v %v, want 421", r, err)
	}
	refusalSession(t, r)
	if err := busy.Raw(data[half:]); err != nil {
		t.Fatal(err)
	}
	r, err = busy.ReadReply()
	id := r.LetterID()
	if err != nil || id == "" {
		t.Fatalf("transaction in flight at shutdown: %v %v, want 250 queued as", r, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	st, err := store.Open(e.Config.Store.Dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if l, err := st.Letter(id); err != nil || l.From != "bo@ed.test" {
		t.Errorf("letter %s after shutdown: %+v %v", id, l, err)
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
	e := testenv.Start(t, func(c *config.Config) { c.SMTP.TLSCert, c.SMTP.TLSKey = certFile, keyFile })

	c := e.Dial()
	r, _ := c.Hello("client.test")
	c.Quit()
	for _, ext := range []string{"STARTTLS", "SMTPUTF8", "8BITMIME"} {
		if !strings.Contains(r.Text, ext) {
			t.Errorf("EHLO does not offer %s: %q", ext, r.Text)
		}
	}

	sc, err := smtp.DialStartTLS(e.SMTPAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer sc.Close()
	if _, ok := sc.TLSConnectionState(); !ok {
		t.Fatal("session not encrypted")
	}
	msg := e.Signed("ed.test", "José Núñez <josé@ed.test>")
	if err := sc.SendMail("josé@ed.test", []string{campaignAddr}, bytes.NewReader(msg)); err != nil {
		t.Fatalf("UTF-8 letter over TLS: %v", err)
	}
	if st, _ := e.Store().Stats(); st.Counted != 1 {
		t.Errorf("counted %d, want 1", st.Counted)
	}
}

// TestIdleTimeout: a session that says nothing for smtp.timeout is closed
// by the server, with its 421 4.4.2: the client's own read timeout (10s)
// would end the wait with an error instead, and a session cut for its
// lifetime (10 x smtp.timeout) would come later.
func TestIdleTimeout(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) { c.SMTP.Timeout = config.Duration{Duration: 300 * time.Millisecond} })
	c := e.Dial()
	defer c.Close()
	c.Hello("client.test")
	r, err := c.ReadReply() // nothing sent: the server must give up on us
	if err != nil {
		t.Fatalf("no reply from the server to an idle session (%v): it did not time the session out", err)
	}
	if r.Code != 421 || !strings.Contains(r.Text, "4.4.2") {
		t.Fatalf("idle session got %v, want 421 4.4.2", r)
	}
}

// TestShutdownDoesNotWaitForIdleClients: neither a client that never said
// EHLO nor one idling after a refused RCPT holds up shutdown, and both are
// disconnected by it: the one in a session with the shutdown's 421 4.3.2.
// A shutdown that waited for them would leave them to their own timeout
// (smtp.timeout, 10s here, well inside the shutdown's minute): the server's
// 421 4.4.2.
func TestShutdownDoesNotWaitForIdleClients(t *testing.T) {
	e := testenv.Start(t, nil)
	silent := e.Dial() // banner read, nothing said
	defer silent.Close()
	probe := e.Dial()
	defer probe.Close()
	probe.Hello("probe.test")
	probe.Cmd("MAIL FROM:<a@probe.test>")
	probe.Cmd("RCPT TO:<victim@elsewhere.test>")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Env.Stop(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if r, err := probe.ReadReply(); err != nil || r.Code != 421 || !strings.Contains(r.Text, "4.3.2") {
		t.Errorf("client in a session after shutdown: %v, %v; want 421 4.3.2 shutting down", r, err)
	}
	if r, err := silent.ReadReply(); err == nil && (r.Code != 421 || !strings.Contains(r.Text, "4.3.2")) {
		t.Errorf("client that never said EHLO after shutdown: %v, want a closed connection or 421 4.3.2", r)
	}
}

// TestLimitsAcrossListeners: max_per_ip counts sessions on every listener
// together.
func TestLimitsAcrossListeners(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) {
		c.SMTP.Listen = []string{"127.0.0.1:0", "127.0.0.2:0"}
		c.SMTP.MaxPerIP = 1
	})
	addrs := e.Config.SMTP.Listen
	first, err := smtpclient.Dial(addrs[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Quit()
	expectReply(t, "first session", first.Banner, "220")
	second, err := smtpclient.DialFrom("127.0.0.1", addrs[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	expectReply(t, "second session from the same IP on the other listener", second.Banner, "421 4.7.0")
}

// TestStoreFailure: when the store cannot write, the letter gets 451 4.3.0
// (never a 250 without the fsync) and the sender will retry.
func TestStoreFailure(t *testing.T) {
	var logs syncbuf.Buffer
	e := testenv.PrepareWith(t, testenv.Options{Domains: testenv.SigningDomains(),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Configure: testenv.UseCampaign})
	e.Start()
	if err := e.Store().Close(); err != nil { // the daemon's store, closed under it
		t.Fatal(err)
	}
	r := e.Send(e.Signed("ed.test", "bo@ed.test"))
	expectReply(t, "letter while the store cannot write", r, "451 4.3.0")
	if strings.Contains(r.Text, "closed") {
		t.Errorf("internal error text reached the client: %q", r.Text)
	}
	// The admin must act: the failure is logged at ERROR (SPEC 8), naming
	// the session the reply named.
	session := regexp.MustCompile(`session ([0-9a-f]{12})`).FindStringSubmatch(r.Text)
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Level, Session string
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "ERROR" && session != nil && rec.Session == session[1] {
			found = true
		}
	}
	if !found {
		t.Errorf("no ERROR line for session %v in the log:\n%s", session, logs.String())
	}
}
