package inbound

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/petitiond/petitiond/relay/verify"
)

// fieldValue is the value of a field authResultsField made.
func fieldValue(t testing.TB, field []byte) string {
	t.Helper()
	v, ok := bytes.CutPrefix(field, []byte(authResultsName+":"))
	if !ok || !bytes.HasSuffix(v, []byte("\r\n")) {
		t.Fatalf("not an Authentication-Results field: %q", field)
	}
	return string(v)
}

// TestAuthResultsFieldRoundTrip: what a secondary writes, a primary reads
// back: its name, the SPF result and MAIL FROM domain, the client's IP,
// whatever the sender put in its address or the reasons.
func TestAuthResultsFieldRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name       string
		dkim       *verify.Verdict
		spf        verify.SPFResult
		mailFrom   string
		ip         string
		wantDomain string
		wantStatus verify.SPFStatus
	}{
		{name: "spf pass", spf: verify.SPFResult{Status: verify.SPFPass, Domain: "spf.test", Reason: "pass"},
			mailFrom: "ana@spf.test", ip: "192.0.2.1", wantDomain: "spf.test", wantStatus: verify.SPFPass},
		{name: "dkim pass, spf fail", dkim: &verify.Verdict{Pass: true, Domain: "ed.test", Selector: "sel", Reason: "pass"},
			spf: verify.SPFResult{Status: verify.SPFFail, Domain: "ed.test", Reason: "matched all"}, mailFrom: "bo@ED.test",
			ip: "2001:db8::1", wantDomain: "ed.test", wantStatus: verify.SPFFail},
		{name: "quoted local part", spf: verify.SPFResult{Status: verify.SPFSoftFail, Domain: "x.test"},
			mailFrom: `"a; b=(c) \"d\""@x.test`, ip: "198.51.100.9", wantDomain: "x.test", wantStatus: verify.SPFSoftFail},
		{name: "null sender", dkim: &verify.Verdict{Unsigned: true, Reason: "no signature"},
			spf: verify.SPFResult{Status: verify.SPFNone, Reason: "null sender"}, ip: "192.0.2.2", wantStatus: verify.SPFNone},
		{name: "hostile reasons", dkim: &verify.Verdict{Domain: "evil\"; spf=pass", Reason: "not aligned: d=a\r\nX-Bad: 1 (\"\\"},
			spf: verify.SPFResult{Status: verify.SPFNeutral, Reason: "x\x00y;z"}, mailFrom: "c@n.test", ip: "192.0.2.3",
			wantDomain: "n.test", wantStatus: verify.SPFNeutral},
		{name: "temperror means nothing", spf: verify.SPFResult{Status: verify.SPFTempError, Domain: "t.test"},
			mailFrom: "d@t.test", ip: "192.0.2.4", wantDomain: "t.test", wantStatus: verify.SPFNone},
		{name: "overlong MAIL FROM left out", spf: verify.SPFResult{Status: verify.SPFPass, Domain: "l.test"},
			mailFrom: strings.Repeat("a", 300) + "@l.test", ip: "192.0.2.5", wantStatus: verify.SPFPass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			field := authResultsField("mx2.campaign.test", tc.dkim, tc.spf, tc.mailFrom, tc.ip)
			if n := bytes.Count(field, []byte("\n")); n != bytes.Count(field, []byte("\r\n")) || bytes.Contains(field, []byte("\nX-Bad")) {
				t.Fatalf("field has a bare line ending or a line of the sender's: %q", field)
			}
			ar, err := parseAuthResults(fieldValue(t, field))
			if err != nil {
				t.Fatalf("parse %q: %v", field, err)
			}
			if ar.servID != "mx2.campaign.test" {
				t.Errorf("authserv-id %q", ar.servID)
			}
			rel, ok := relayedBy(ar)
			if !ok {
				t.Fatalf("relayedBy(%q) found no client IP", field)
			}
			if rel.clientIP != tc.ip || rel.spf.Status != tc.wantStatus || rel.spf.Domain != tc.wantDomain {
				t.Errorf("read back ip %s spf %+v; want %s, %s for %q\n%s", rel.clientIP, rel.spf, tc.ip, tc.wantStatus, tc.wantDomain, field)
			}
			if len(tc.mailFrom) <= maxMailFromShown && rel.mailFrom != tc.mailFrom {
				t.Errorf("MAIL FROM read back %q, want %q", rel.mailFrom, tc.mailFrom)
			}
			if dkim := ar.result("dkim"); (dkim != nil) != (tc.dkim != nil) {
				t.Errorf("dkim result %+v", dkim)
			} else if dkim != nil && tc.dkim.Domain != "" && dkim.props["header.d"] != tc.dkim.Domain {
				t.Errorf("header.d %q, want %q", dkim.props["header.d"], tc.dkim.Domain)
			}
		})
	}
}

// TestParseAuthResults: RFC 8601's own examples (appendix B) and broken
// fields.
func TestParseAuthResults(t *testing.T) {
	for _, tc := range []struct {
		value   string
		servID  string
		methods []string // method=value of each result
		props   map[string]string
	}{
		{value: " example.org 1; none", servID: "example.org"},
		{value: " example.com;\r\n\tspf=pass smtp.mailfrom=example.net", servID: "example.com",
			methods: []string{"spf=pass"}, props: map[string]string{"smtp.mailfrom": "example.net"}},
		{value: " example.com;\r\n  auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n  spf=pass smtp.mailfrom=example.net",
			servID: "example.com", methods: []string{"auth=pass", "spf=pass"}, props: map[string]string{"smtp.auth": "sender@example.net"}},
		{value: " example.com; iprev=pass\r\n  policy.iprev=192.0.2.200", servID: "example.com",
			methods: []string{"iprev=pass"}, props: map[string]string{"policy.iprev": "192.0.2.200"}},
		{value: " mail-router.example.net;\r\n  dkim=pass (good signature) header.d=newyork.example.com\r\n        header.b=oINEO8hg;\r\n" +
			"  dkim=fail (bad signature) header.d=\r\n        mail-router.example.net header.b=EToRSuvU",
			servID: "mail-router.example.net", methods: []string{"dkim=pass", "dkim=fail"}, props: map[string]string{"header.d": "newyork.example.com"}},
		{value: ` "quoted.example" (comment (nested)) ; SPF/1 = Pass reason="a \"b\"" smtp . mailfrom = "x y"@z.test;`,
			servID: "quoted.example", methods: []string{"spf=pass"}, props: map[string]string{"smtp.mailfrom": `x y@z.test`}},
	} {
		ar, err := parseAuthResults(tc.value)
		if err != nil {
			t.Errorf("parse %q: %v", tc.value, err)
			continue
		}
		if ar.servID != tc.servID {
			t.Errorf("%q: authserv-id %q, want %q", tc.value, ar.servID, tc.servID)
		}
		var got []string
		for _, r := range ar.results {
			got = append(got, r.method+"="+r.value)
		}
		if strings.Join(got, ";") != strings.Join(tc.methods, ";") {
			t.Errorf("%q: results %v, want %v", tc.value, got, tc.methods)
		}
		if len(ar.results) > 0 {
			for k, v := range tc.props {
				if ar.results[0].props[k] != v {
					t.Errorf("%q: %s = %q, want %q", tc.value, k, ar.results[0].props[k], v)
				}
			}
		}
	}
	for _, bad := range []string{
		"", " ", "; spf=pass", "example.com 2; spf=pass", "example.com spf=pass", "example.com; spf",
		"example.com; spf=", "example.com; spf=pass smtp", "example.com; spf=pass smtp.mailfrom=",
		"example.com; none; spf=pass", "example.com; spf=pass (unterminated", `example.com; spf=pass reason="open`,
		"example.com; =pass",
	} {
		if ar, err := parseAuthResults(bad); !errors.Is(err, errAuthResults) {
			t.Errorf("parse %q = %+v, %v; want an error", bad, ar, err)
		}
	}
}

// secondaryField is what mx2 puts on top of a letter it forwards.
const secondaryField = "Authentication-Results: mx2.campaign.test;\r\n\tspf=pass smtp.mailfrom=ana@spf.test smtp.remote-ip=192.0.2.1\r\n"

// TestScrubAuthResults: fields claiming this host go always, and fields
// claiming a listed secondary ([secondary] names) go but for the topmost
// of a letter from a trusted secondary, which is read, and below which the
// others claiming its host go too; names compare as DNS names; fields of
// anyone else, and the rest of the letter, stay as they are.
func TestScrubAuthResults(t *testing.T) {
	const (
		own       = "Authentication-Results: MX.campaign.test.; spf=pass smtp.mailfrom=x@y.test\r\n"
		forged    = "Authentication-Results: mx2.campaign.test; spf=pass smtp.mailfrom=ana@spf.test\r\n\tsmtp.remote-ip=203.0.113.1\r\n"
		forgedMX3 = "Authentication-Results: MX3.Campaign.Test.; spf=pass smtp.mailfrom=ana@spf.test smtp.remote-ip=203.0.113.2\r\n"
		unlisted  = "Authentication-Results: mx4.campaign.test; spf=pass smtp.mailfrom=ana@spf.test smtp.remote-ip=203.0.113.3\r\n"
		other     = "Authentication-Results: mx.provider.test; dkim=pass header.d=spf.test\r\n"
		broken    = "Authentication-Results: ;;;\r\n"
		rest      = "From: Ana <ana@spf.test>\r\nSubject: hi\r\n\r\n"
		body      = "Authentication-Results: mx2.campaign.test; in the body, not a field\r\n"
		ownHost   = "mx.campaign.test"
		received  = "Received: from a by b; Tue, 01 Dec 2026 10:00:00 +0000\r\n"
		lowerCase = "authentication-results: mx.campaign.test; none\r\n"
	)
	// What mx3 puts on top, its name written as the listed one is not.
	mx3Field := strings.Replace(secondaryField, "mx2.campaign.test", "MX3.Campaign.Test.", 1)
	names := []string{"mx2.campaign.test.", "mx3.campaign.test"}
	for _, tc := range []struct {
		name, msg, want string
		names           []string
		trusted         bool
		top             string // the authserv-id believed, "" for none
	}{
		{name: "untrusted: own host and listed secondaries removed, others kept", names: names,
			msg:  forged + own + received + forgedMX3 + unlisted + other + lowerCase + rest + body,
			want: received + unlisted + other + rest + body},
		{name: "untrusted, no names: own host removed, secondaries' fields kept",
			msg:  forged + own + received + other + lowerCase + rest + body,
			want: forged + received + other + rest + body},
		{name: "trusted: topmost read, copies of its host and listed secondaries removed", names: names,
			msg:  secondaryField + received + forged + forgedMX3 + own + unlisted + other + rest + body,
			want: secondaryField + received + unlisted + other + rest + body, trusted: true, top: "mx2.campaign.test"},
		{name: "trusted: topmost read whatever its case, same host below removed", names: names,
			msg:  mx3Field + forgedMX3 + forged + other + rest,
			want: mx3Field + other + rest, trusted: true, top: "MX3.Campaign.Test."},
		{name: "trusted, no names: topmost read, copies of its host removed",
			msg:  secondaryField + forged + forgedMX3 + rest,
			want: secondaryField + forgedMX3 + rest, trusted: true, top: "mx2.campaign.test"},
		{name: "trusted: topmost claims this host", names: names, msg: own + forged + unlisted + rest,
			want: unlisted + rest, trusted: true},
		{name: "trusted: unreadable topmost", names: names, msg: broken + forged + unlisted + rest,
			want: broken + unlisted + rest, trusted: true},
		{name: "nothing to remove", names: names, msg: received + other + rest + body, want: received + other + rest + body},
		{name: "no header end", names: names, msg: unlisted + forged + own, want: unlisted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := []byte(tc.msg)
			out, sc := scrubAuthResults(msg, ownHost, tc.names, tc.trusted)
			if string(out) != tc.want {
				t.Errorf("scrubbed:\n%s\nwant:\n%s", out, tc.want)
			}
			fields := func(s string) int { return strings.Count(strings.ToLower(s), "authentication-results:") }
			if want := fields(tc.msg) - fields(tc.want); sc.removed != want {
				t.Errorf("removed %d fields, want %d", sc.removed, want)
			}
			got := ""
			if sc.top != nil {
				got = sc.top.servID
			}
			if got != tc.top {
				t.Errorf("topmost believed %q, want %q", got, tc.top)
			}
			if sc.top != nil {
				rel, ok := relayedBy(sc.top)
				if !ok || rel.clientIP != "192.0.2.1" || rel.spf.Status != verify.SPFPass || rel.spf.Domain != "spf.test" {
					t.Errorf("relayed %+v, %v", rel, ok)
				}
			}
		})
	}
}

func FuzzParseAuthResults(f *testing.F) {
	for _, s := range []string{
		" example.org 1; none",
		" example.com; spf=pass smtp.mailfrom=example.net",
		` "q" (a (b) \) c); dkim/1=fail reason="x \"y\"" header.d=d.test header.b=abc; spf=pass smtp.mailfrom="a b"@c.test`,
		string(secondaryField[len(authResultsName)+1:]),
		"x;;;", "(", `"`, "a; b=c d.e=\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		ar, err := parseAuthResults(value)
		id, idErr := authServID(value)
		if err == nil {
			if idErr != nil || id != ar.servID || id == "" {
				t.Fatalf("parse found authserv-id %q, authServID %q, %v", ar.servID, id, idErr)
			}
			for _, r := range ar.results {
				if r.method == "" || r.value == "" {
					t.Fatalf("empty method or result in %+v", r)
				}
			}
		}
		// Scrubbing a letter that carries the value never grows it and
		// never touches its body.
		msg := []byte(authResultsName + ":" + value + "\r\nFrom: a@b.test\r\n\r\nbody\r\n")
		if bytes.ContainsAny([]byte(value), "\r\n") {
			return
		}
		out, _ := scrubAuthResults(bytes.Clone(msg), id, []string{id}, true)
		if len(out) > len(msg) || !bytes.HasSuffix(out, []byte("\r\n\r\nbody\r\n")) {
			t.Fatalf("scrubbed %q into %q", msg, out)
		}
	})
}

func FuzzAuthResultsRoundTrip(f *testing.F) {
	f.Add("ana@spf.test", "pass", "no signature", "192.0.2.1")
	f.Add(`"a b"@c.test`, "fail", `x"y\z`, "2001:db8::1")
	f.Add("", "none", "", "::ffff:192.0.2.9")
	f.Fuzz(func(t *testing.T, mailFrom, status, reason, ip string) {
		if strings.ContainsAny(mailFrom, "\r\n") {
			return // a MAIL FROM is one command line's
		}
		field := authResultsField("mx2.campaign.test", &verify.Verdict{Reason: reason, Domain: reason},
			verify.SPFResult{Status: verify.SPFStatus(status), Reason: reason}, mailFrom, ip)
		if bytes.Count(field, []byte("\n")) != bytes.Count(field, []byte("\r\n")) || !bytes.HasSuffix(field, []byte("\r\n")) {
			t.Fatalf("field with a bare line ending: %q", field)
		}
		for _, line := range bytes.Split(field[:len(field)-2], []byte("\r\n"))[1:] {
			if len(line) == 0 || line[0] != '\t' {
				t.Fatalf("a line of %q that does not continue the field", field)
			}
		}
		ar, err := parseAuthResults(fieldValue(t, field))
		if err != nil {
			t.Fatalf("parse %q: %v", field, err)
		}
		if ar.servID != "mx2.campaign.test" {
			t.Fatalf("authserv-id %q", ar.servID)
		}
		spf := ar.result("spf")
		if spf == nil {
			t.Fatalf("no spf result in %q", field)
		}
		if mailFrom != "" && len(mailFrom) <= maxMailFromShown && spf.props["smtp.mailfrom"] != mailFrom &&
			!strings.ContainsAny(mailFrom, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f") {
			t.Fatalf("MAIL FROM %q read back as %q from %q", mailFrom, spf.props["smtp.mailfrom"], field)
		}
	})
}
