package verify

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
)

// The connecting client in these tests. SPF only compares it with records:
// nothing connects to it.
var (
	clientIP   = net.ParseIP("127.0.0.1")
	clientIPv6 = net.ParseIP("::1")
)

// newSPFEnv is newEnv with SPF checks on.
func newSPFEnv(t *testing.T, timeout time.Duration) *dnsEnv {
	t.Helper()
	e := newEnv(t, timeout)
	e.v = New(Options{Resolver: e.ks.Addr, Timeout: timeout, SPF: true})
	return e
}

func (e *dnsEnv) addRecord(t *testing.T, zoneLine string) {
	t.Helper()
	if err := e.ks.AddRecord(zoneLine); err != nil {
		t.Fatal(err)
	}
}

// decide runs a letter through what the front end does: From, DKIM, SPF
// for the envelope, and the combined verdict.
func (e *dnsEnv) decide(t *testing.T, msg []byte, ip net.IP, mailFrom string) (Decision, SPFResult) {
	t.Helper()
	from, err := ParseFrom(msg)
	if err != nil {
		t.Fatalf("ParseFrom: %v", err)
	}
	ctx := context.Background()
	dkim := e.v.Verify(ctx, msg, from)
	spfRes := e.v.CheckSPF(ctx, ip, "mail.client.test", mailFrom)
	return Decide(dkim, spfRes, from.Domain), spfRes
}

// TestSPFEndToEnd: letters without a DKIM signature, their SPF checked
// through a real DNS server (SPEC 5, issue 12).
func TestSPFEndToEnd(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	ks := e.ks
	ks.SetTXT("example.org", "v=spf1 ip4:127.0.0.1 -all")
	ks.SetTXT("ip6.example.org", "v=spf1 ip6:::1 -all")
	ks.SetTXT("bounce.example.org", "v=spf1 a -all")
	e.addRecord(t, "bounce.example.org. A 127.0.0.1")
	ks.SetTXT("mx.example.org", "v=spf1 mx -all")
	e.addRecord(t, "mx.example.org. MX 10 smtp.example.org.")
	e.addRecord(t, "smtp.example.org. A 127.0.0.1")
	ks.SetTXT("mailer.example.net", "v=spf1 ip4:127.0.0.0/8 -all")
	ks.SetTXT("soft.example.org", "v=spf1 ip4:192.0.2.1 ~all")
	ks.SetTXT("hard.example.org", "v=spf1 ip4:192.0.2.1 -all")
	ks.SetTXT("neutral.example.org", "v=spf1 ?all")
	ks.SetTXT("broken.example.org", "v=spf1 ip4:127.0.0.1/33 -all")
	ks.SetTXT("unknown.example.org", "v=spf1 frobnicate -all")
	ks.SetTXT("two.example.org", "v=spf1 ip4:127.0.0.1 -all", "v=spf1 -all")
	ks.SetTXT("inc.example.org", "v=spf1 include:_spf.provider.example -all")
	ks.SetTXT("_spf.provider.example", "v=spf1 ip4:127.0.0.1 -all")
	ks.SetTXT("unsigned.example.org", "google-site-verification=x") // TXT, but no SPF record
	ks.SetTXT("other.co.uk", "v=spf1 ip4:127.0.0.1 -all")

	cases := []struct {
		name     string
		from     string // letter's From
		mailFrom string
		ip       net.IP
		status   SPFStatus
		reason   string
		want     Method
	}{
		{"pass aligned", "ana@example.org", "ana@example.org", clientIP, SPFPass, "matched ip", MethodSPF},
		{"pass aligned, IPv6", "ana@example.org", "ana@ip6.example.org", clientIPv6, SPFPass, "matched ip", MethodSPF},
		{"pass aligned by an a mechanism", "ana@example.org", "bounces@bounce.example.org", clientIP, SPFPass, "matched a", MethodSPF},
		{"pass aligned by an mx mechanism", "ana@example.org", "ana@mx.example.org", clientIP, SPFPass, "matched mx", MethodSPF},
		{"pass aligned through an include", "ana@example.org", "ana@inc.example.org", clientIP, SPFPass, "matched ip", MethodSPF},
		{"MAIL FROM in capitals", "ana@example.org", "ANA@EXAMPLE.ORG", clientIP, SPFPass, "matched ip", MethodSPF},
		{"pass unaligned", "ana@example.org", "bounce@mailer.example.net", clientIP, SPFPass, "matched ip", MethodUnverified},
		{"pass under a public suffix, unaligned", "ana@example.co.uk", "ana@other.co.uk", clientIP, SPFPass, "matched ip", MethodUnverified},
		{"softfail", "ana@soft.example.org", "ana@soft.example.org", clientIP, SPFSoftFail, "matched all", MethodUnverified},
		{"fail", "ana@hard.example.org", "ana@hard.example.org", clientIP, SPFFail, "matched all", MethodUnverified},
		{"fail from another IP", "ana@example.org", "ana@example.org", net.ParseIP("127.0.0.2"), SPFFail, "matched all", MethodUnverified},
		{"neutral", "ana@neutral.example.org", "ana@neutral.example.org", clientIP, SPFNeutral, "matched all", MethodUnverified},
		{"permerror: bad mask", "ana@broken.example.org", "ana@broken.example.org", clientIP, SPFPermError, "invalid mask", MethodUnverified},
		{"permerror: unknown mechanism", "ana@unknown.example.org", "ana@unknown.example.org", clientIP, SPFPermError, "unknown field", MethodUnverified},
		{"permerror: two records", "ana@two.example.org", "ana@two.example.org", clientIP, SPFPermError, "several SPF records", MethodUnverified},
		{"none: no SPF record", "ana@unsigned.example.org", "ana@unsigned.example.org", clientIP, SPFNone, "no SPF record", MethodUnverified},
		{"none: no such domain", "ana@nowhere.example.org", "ana@nowhere.example.org", clientIP, SPFNone, "no SPF record", MethodUnverified},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, r := e.decide(t, letter(tc.from), tc.ip, tc.mailFrom)
			if r.Status != tc.status || r.Reason != tc.reason {
				t.Errorf("SPF = %+v, want %s (%s)", r, tc.status, tc.reason)
			}
			if d.Method != tc.want || d.TempFail {
				t.Errorf("Decision = %+v, want %s", d, tc.want)
			}
			if tc.want == MethodSPF {
				_, domain, _ := strings.Cut(strings.ToLower(tc.mailFrom), "@")
				if d.Domain != domain || r.Domain != domain {
					t.Errorf("verified for %q (SPF checked %q), want the MAIL FROM domain %q", d.Domain, r.Domain, domain)
				}
			}
		})
	}
}

// TestSPFLookupLimit: RFC 7208 4.6.4's limit of 10 DNS-querying mechanisms.
// The 11th include would pass, so only the limit makes it a permerror.
func TestSPFLookupLimit(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	chain := func(domain string, n int) {
		var incs []string
		for i := 1; i <= n; i++ {
			name := fmt.Sprintf("i%d.%s", i, domain)
			incs = append(incs, "include:"+name)
			rec := "v=spf1 ip4:192.0.2.1 -all"
			if i == n {
				rec = "v=spf1 ip4:127.0.0.1 -all"
			}
			e.ks.SetTXT(name, rec)
		}
		e.ks.SetTXT(domain, "v=spf1 "+strings.Join(incs, " ")+" -all")
	}
	chain("eleven.example.org", 11)
	chain("ten.example.org", 10)

	d, r := e.decide(t, letter("ana@eleven.example.org"), clientIP, "ana@eleven.example.org")
	if r.Status != SPFPermError || r.Reason != "over 10 DNS-querying mechanisms" || d.Method != MethodUnverified || d.TempFail {
		t.Errorf("11 includes: SPF %+v, decision %+v; want permerror, unverified", r, d)
	}
	if n := e.ks.Queries("i11.eleven.example.org"); n != 0 {
		t.Errorf("the 11th include was looked up %d times", n)
	}
	d, r = e.decide(t, letter("ana@ten.example.org"), clientIP, "ana@ten.example.org")
	if r.Status != SPFPass || d.Method != MethodSPF {
		t.Errorf("10 includes: SPF %+v, decision %+v; want pass, spf", r, d)
	}
}

// TestSPFVoidLookupLimit: more than 2 lookups that find nothing is a
// permerror (RFC 7208 4.6.4), even when a later mechanism would pass.
func TestSPFVoidLookupLimit(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	e.ks.SetTXT("void3.example.org", "v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org ip4:127.0.0.1 -all")
	e.ks.SetTXT("void2.example.org", "v=spf1 a:n1.example.org a:n2.example.org ip4:127.0.0.1 -all")

	_, r := e.decide(t, letter("ana@void3.example.org"), clientIP, "ana@void3.example.org")
	if r.Status != SPFPermError || r.Reason != "over 2 void lookups" {
		t.Errorf("3 void lookups: %+v, want permerror", r)
	}
	d, r := e.decide(t, letter("ana@void2.example.org"), clientIP, "ana@void2.example.org")
	if r.Status != SPFPass || d.Method != MethodSPF {
		t.Errorf("2 void lookups: %+v, %+v; want pass", r, d)
	}
}

// TestSPFNullSender: a null MAIL FROM never verifies by SPF, even from a
// client whose HELO name would pass, and costs no lookup.
func TestSPFNullSender(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	e.ks.SetTXT("example.org", "v=spf1 ip4:127.0.0.1 -all")
	e.ks.SetTXT("mail.client.test", "v=spf1 ip4:127.0.0.1 -all") // the HELO name
	for _, mailFrom := range []string{"", "<>"} {
		d, r := e.decide(t, letter("ana@example.org"), clientIP, mailFrom)
		if r != (SPFResult{Status: SPFNone, Reason: "null sender"}) {
			t.Errorf("MAIL FROM %q: SPF %+v", mailFrom, r)
		}
		if d.Method != MethodUnverified || d.TempFail {
			t.Errorf("MAIL FROM %q: %+v", mailFrom, d)
		}
	}
	if n := e.ks.Queries("example.org") + e.ks.Queries("mail.client.test"); n != 0 {
		t.Errorf("%d lookups for a null sender", n)
	}
}

// TestSPFTemporaryErrors: SERVFAIL or no answer on the SPF lookup, at the
// top or inside an include, gives temperror, and a retry (451 4.7.5) when
// the MAIL FROM domain aligns.
func TestSPFTemporaryErrors(t *testing.T) {
	e := newSPFEnv(t, 300*time.Millisecond)
	e.ks.SetServFail("servfail.example.org")
	e.ks.SetTimeout("silent.example.org")
	e.ks.SetTXT("inc.example.org", "v=spf1 include:flaky.provider.example -all")
	e.ks.SetServFail("flaky.provider.example")
	e.ks.SetTXT("a.example.org", "v=spf1 a:silent-host.example.org -all")
	e.ks.SetTimeout("silent-host.example.org")
	e.ks.SetServFail("mailer.example.net")

	cases := []struct {
		name, from, mailFrom, reason string
		tempFail                     bool
	}{
		{"SERVFAIL", "ana@servfail.example.org", "ana@servfail.example.org", "lookup of servfail.example.org failed temporarily", true},
		{"timeout", "ana@silent.example.org", "ana@silent.example.org", "lookup of silent.example.org timed out", true},
		{"SERVFAIL in an include", "ana@example.org", "ana@inc.example.org", "lookup of flaky.provider.example failed temporarily", true},
		{"timeout in an a mechanism", "ana@example.org", "ana@a.example.org", "lookup of silent-host.example.org timed out", true},
		{"unaligned MAIL FROM: no retry", "ana@example.org", "bounce@mailer.example.net", "lookup of mailer.example.net failed temporarily", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, r := e.decide(t, letter(tc.from), clientIP, tc.mailFrom)
			if r.Status != SPFTempError || r.Reason != tc.reason {
				t.Errorf("SPF = %+v, want temperror (%s)", r, tc.reason)
			}
			if d.Method != MethodUnverified || d.TempFail != tc.tempFail {
				t.Errorf("Decision = %+v, want unverified, TempFail %v", d, tc.tempFail)
			}
		})
	}
}

// A caller's context cut short turns into temperror, never a verdict.
func TestSPFCanceledContext(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	e.ks.SetTXT("example.org", "v=spf1 ip4:127.0.0.1 -all")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := e.v.CheckSPF(ctx, clientIP, "h", "ana@example.org"); r.Status != SPFTempError {
		t.Errorf("canceled: %+v, want temperror", r)
	}
}

// DKIM comes first: a valid aligned signature verifies whatever SPF says.
func TestSPFAfterDKIM(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	k := edKey(t, "example.org", "s1")
	e.ks.SetKey(k)
	e.ks.SetTXT("example.org", "v=spf1 -all")
	msg := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
	d, r := e.decide(t, msg, clientIP, "ana@example.org")
	if r.Status != SPFFail {
		t.Errorf("SPF = %+v, want fail", r)
	}
	if d != (Decision{Method: MethodDKIM, Domain: "example.org", Selector: "s1", Reason: "pass"}) {
		t.Errorf("Decision = %+v", d)
	}
}

// With SPF off (verify.spf = false), nothing is looked up and nothing
// verifies by SPF.
func TestSPFOff(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	e.ks.SetTXT("example.org", "v=spf1 ip4:127.0.0.1 -all")
	e.v = New(Options{Resolver: e.ks.Addr, Timeout: time.Second})
	d, r := e.decide(t, letter("ana@example.org"), clientIP, "ana@example.org")
	if r.Status != SPFNone || r.Reason != "SPF checks off" || d.Method != MethodUnverified {
		t.Errorf("SPF off: %+v, %+v", r, d)
	}
	if n := e.ks.Queries("example.org"); n != 0 {
		t.Errorf("%d lookups with SPF off", n)
	}
}

// MAIL FROM values with no domain SPF could check give none, with no lookup.
func TestSPFUncheckableSender(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	e.ks.SetTXT("example.org", "v=spf1 ip4:127.0.0.1 -all")
	for mailFrom, reason := range map[string]string{
		"postmaster":                "MAIL FROM has no domain",
		"@example.org":              "MAIL FROM has no domain",
		"ana@localhost":             "MAIL FROM domain has one label",
		"ana@[127.0.0.1]":           "MAIL FROM domain is an address literal",
		"ana@example..org":          `MAIL FROM domain "example..org" has an empty label`,
		`"a@b"@example.org`:         "MAIL FROM local part holds @",
		"ana@xn--bcher-kva.example": "no SPF record", // checked: a valid name
	} {
		r := e.v.CheckSPF(context.Background(), clientIP, "h", mailFrom)
		if r.Status != SPFNone || r.Reason != reason {
			t.Errorf("MAIL FROM %q: %+v, want none (%s)", mailFrom, r, reason)
		}
	}
	if n := e.ks.Queries("example.org"); n != 0 {
		t.Errorf("%d lookups for uncheckable senders", n)
	}
}

// An internationalised MAIL FROM domain is checked under its ASCII name.
func TestSPFInternationalDomain(t *testing.T) {
	e := newSPFEnv(t, time.Second)
	e.ks.SetTXT("xn--bcher-kva.example", "v=spf1 ip4:127.0.0.1 -all")
	r := e.v.CheckSPF(context.Background(), clientIP, "h", "ana@Bücher.example")
	if r.Status != SPFPass || r.Domain != "xn--bcher-kva.example" {
		t.Errorf("IDN MAIL FROM: %+v", r)
	}
}

func BenchmarkCheckSPF(b *testing.B) {
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ks.Close()
	ks.SetTXT("example.org", "v=spf1 include:_spf.provider.example -all")
	ks.SetTXT("_spf.provider.example", "v=spf1 ip4:192.0.2.0/24 ip4:127.0.0.1 -all")
	v := New(Options{Resolver: ks.Addr, Timeout: time.Second, SPF: true})
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if r := v.CheckSPF(ctx, clientIP, "h", "ana@example.org"); r.Status != SPFPass {
			b.Fatalf("%+v", r)
		}
	}
}

// FuzzCheckSPFSender: any MAIL FROM is taken apart without panicking, and
// the domain reported is empty or a stable lower-case ASCII name. SPF is
// off, so no lookup is made.
func FuzzCheckSPFSender(f *testing.F) {
	for _, s := range []string{"", "<>", "ana@example.org", `"a@b"@example.org`, "ana@Bücher.example", "@", "a@[1.2.3.4]", "a@.", "a@b@c.d"} {
		f.Add(s)
	}
	v := New(Options{Resolver: "127.0.0.1:1", Timeout: time.Millisecond})
	f.Fuzz(func(t *testing.T, mailFrom string) {
		r := v.CheckSPF(context.Background(), clientIP, "h", mailFrom)
		if r.Status != SPFNone || r.Reason == "" {
			t.Fatalf("CheckSPF(%q) with SPF off = %+v", mailFrom, r)
		}
		if r.Domain == "" {
			return
		}
		if again, err := asciiDomain(r.Domain); err != nil || again != r.Domain || !isASCII(r.Domain) {
			t.Fatalf("CheckSPF(%q): domain %q not canonical (%q, %v)", mailFrom, r.Domain, again, err)
		}
	})
}
