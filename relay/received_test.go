package relay_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
)

// receivedField matches the trace field petitiond puts on top of a stored
// letter (RFC 5321 4.4); the groups are the client's name and IP, and the
// letter ID.
var receivedField = regexp.MustCompile(`^Received: from (\S+) \(\[([^\]]+)\]\)(?: \(HELO "[^"]*"\))?\r\n` +
	`\tby mx\.campaign\.test \(petitiond\) with ESMTP id (L[0-9A-F]{8})\r\n` +
	`\tfor <libertad@campaign\.test>;\r\n` +
	`\t\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n`)

// TestStoredLetterHasReceived: every stored letter, held ones included,
// gets a Received: field naming smtp.hostname, the client's HELO name and
// IP, and its letter ID, on top of the bytes as sent; the letter's own DKIM
// signature still verifies for dkimpy (issue 9 point 18).
func TestStoredLetterHasReceived(t *testing.T) {
	e := testenv.Start(t, nil)
	for _, tc := range []struct {
		name, helo, wantFrom string
		msg                  []byte
		dkim                 bool
	}{
		{name: "ed25519 signature", helo: "mail.ed.test", wantFrom: "mail.ed.test", msg: e.Signed("ed.test", "Bo <bo@ed.test>"), dkim: true},
		{name: "RSA signature", helo: "[127.0.0.1]", wantFrom: "[127.0.0.1]", msg: e.Signed("rsa.test", "Ana Díaz <ana@rsa.test>"), dkim: true},
		{name: "unsigned, held", helo: "bad\x1b]52;name", wantFrom: "unknown", msg: e.Letter("dan@rsa.test", "hi", "unsigned")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := smtpclient.SendMail(e.SMTPAddr(), tc.helo, "bounce@client.test", []string{campaignAddr}, tc.msg, 10*time.Second)
			if err != nil {
				t.Fatalf("send: %v (%v)", err, r)
			}
			id := r.LetterID()
			if id == "" {
				t.Fatalf("reply %q, want queued as", r)
			}
			body, err := e.Store().Body(id)
			if err != nil {
				t.Fatal(err)
			}
			m := receivedField.FindSubmatchIndex(body)
			if m == nil {
				t.Fatalf("stored letter does not start with the Received: field:\n%s", body[:min(len(body), 400)])
			}
			if from, ip, gotID := string(body[m[2]:m[3]]), string(body[m[4]:m[5]]), string(body[m[6]:m[7]]); from != tc.wantFrom || ip != "127.0.0.1" || gotID != id {
				t.Errorf("Received: from %q [%s] id %s; want %q [127.0.0.1] id %s", from, ip, gotID, tc.wantFrom, id)
			}
			if !bytes.Equal(body[m[1]:], tc.msg) {
				t.Errorf("stored letter after its Received: field is not the letter as sent")
			}
			if tc.dkim {
				dkimpyVerifies(t, body, e.DNS.Addr)
			}
		})
	}
}

// dkimpyVerifies checks msg's first DKIM signature with dkimpy, the
// library of Debian's dkimverify, asking the test's DNS server for keys
// (dkimverify itself asks the system's resolver).
func dkimpyVerifies(t *testing.T, msg []byte, dnsAddr string) {
	t.Helper()
	python := dkimpyPython(t)
	host, port, err := net.SplitHostPort(dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	const script = `
import sys, dkim, dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers, r.port = [sys.argv[1]], int(sys.argv[2])
def txt(name, timeout=5):
    try:
        a = r.resolve(name.decode(), "TXT", lifetime=timeout)
    except dns.resolver.NXDOMAIN:
        return None
    return b"".join(b"".join(rd.strings) for rd in a)
ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=txt)
print("signature ok" if ok else "signature verification failed")
sys.exit(0 if ok else 1)
`
	cmd := exec.Command(python, "-c", script, host, port)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("dkimpy: %v\n%s", err, out)
	}
}

// dkimpyPython is the interpreter Debian's dkimverify runs with (its #!
// line), which has the dkim module. Without dkimverify the test skips,
// unless PETITIOND_CI=1, where CI installed python3-dkim.
func dkimpyPython(t *testing.T) string {
	t.Helper()
	missing := func(why string) string {
		msg := "dkimverify (Debian package python3-dkim) " + why + "; this test checks stored letters with it"
		if os.Getenv("PETITIOND_CI") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
		return ""
	}
	path, err := exec.LookPath("dkimverify")
	if err != nil {
		return missing("is not installed")
	}
	f, err := os.Open(path)
	if err != nil {
		return missing("cannot be read: " + err.Error())
	}
	defer f.Close()
	first, _ := bufio.NewReader(f).ReadString('\n')
	python, ok := strings.CutPrefix(strings.TrimSpace(first), "#!")
	if !ok || strings.ContainsAny(python, " \t") {
		return missing("has no plain #! line")
	}
	return python
}
