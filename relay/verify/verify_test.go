package verify

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
)

// One RSA key for the package (2048-bit generation is slow under -race);
// tests that need it under other names copy the Key and rename it.
var sharedRSA = sync.OnceValues(func() (*keyserver.Key, error) {
	return keyserver.NewKey("example.org", "rsa", "rsa")
})

func rsaKey(t testing.TB, domain, selector string) *keyserver.Key {
	t.Helper()
	k, err := sharedRSA()
	if err != nil {
		t.Fatalf("NewKey rsa: %v", err)
	}
	c := *k
	c.Domain, c.Selector = domain, selector
	return &c
}

func edKey(t testing.TB, domain, selector string) *keyserver.Key {
	t.Helper()
	k, err := keyserver.NewKey(domain, selector, "ed25519")
	if err != nil {
		t.Fatalf("NewKey ed25519: %v", err)
	}
	return k
}

func letter(from string) []byte {
	return []byte("From: Ana Pérez <" + from + ">\r\n" +
		"To: libertad@campaign.example\r\n" +
		"Subject: Libertad a los presos politicos\r\n" +
		"Date: Fri, 18 Oct 2019 20:00:00 -0300\r\n" +
		"Message-ID: <letter-1@example.org>\r\n" +
		"\r\n" +
		"Exijo la libertad de los presos politicos de la revuelta de octubre.\r\n" +
		"Ana\r\n")
}

func sign(t testing.TB, k *keyserver.Key, msg []byte, opt keyserver.SignOptions) []byte {
	t.Helper()
	out, err := k.Sign(msg, opt)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return out
}

// dnsEnv is a real DNS server on loopback and a Verifier pointed at it.
type dnsEnv struct {
	ks *keyserver.Server
	v  *Verifier
}

func newEnv(t *testing.T, timeout time.Duration) *dnsEnv {
	t.Helper()
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("keyserver: %v", err)
	}
	t.Cleanup(func() { ks.Close() })
	return &dnsEnv{ks: ks, v: New(Options{Resolver: ks.Addr, Timeout: timeout})}
}

// check parses From like the daemon does, verifies, and compares.
func (e *dnsEnv) check(t *testing.T, msg []byte, want Verdict) {
	t.Helper()
	from, err := ParseFrom(msg)
	if err != nil {
		t.Fatalf("ParseFrom: %v", err)
	}
	got := e.v.Verify(context.Background(), msg, from)
	if got != want {
		t.Errorf("Verify:\n got %+v\nwant %+v", got, want)
	}
}

func TestVerifyPasses(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	for _, k := range []*keyserver.Key{rsaKey(t, "example.org", "rsa"), edKey(t, "example.org", "ed")} {
		t.Run(k.Algo, func(t *testing.T) {
			e.ks.SetKey(k)
			e.check(t, sign(t, k, letter("ana@example.org"), keyserver.SignOptions{}),
				Verdict{Pass: true, Domain: "example.org", Selector: k.Selector, Reason: "pass"})
		})
	}
}

func TestVerifyAlignment(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	tests := []struct {
		sigDomain, from string
		pass            bool
	}{
		{"example.org", "ana@EXAMPLE.org", true},
		{"mail.example.org", "ana@example.org", true}, // subdomain signs for the org
		{"example.org", "ana@news.example.org", true}, // parent signs for a subdomain
		{"a.example.org", "ana@b.example.org", true},  // siblings share the org domain
		{"other.org", "ana@example.org", false},
		{"example.org.evil.com", "ana@example.org", false},
		{"example.co.uk", "ana@other.co.uk", false}, // co.uk is a public suffix
		{"example.co.uk", "ana@www.example.co.uk", true},
		{"co.uk", "ana@example.co.uk", false},
		{"campaign.test", "ana@campaign.test", true}, // unknown TLD: one-label suffix
		{"other.test", "ana@campaign.test", false},
		{"mx.campaign.test", "ana@campaign.test", true},
		{"xn--bcher-kva.example", "ana@bücher.example", true}, // From in UTF-8 (SMTPUTF8)
		{"xn--bcher-kva.example", "ana@BÜCHER.example", true},
	}
	for i, tc := range tests {
		t.Run(tc.sigDomain+"/"+tc.from, func(t *testing.T) {
			k := edKey(t, tc.sigDomain, fmt.Sprintf("s%d", i))
			e.ks.SetKey(k)
			msg := sign(t, k, letter(tc.from), keyserver.SignOptions{})
			from, err := ParseFrom(msg)
			if err != nil {
				t.Fatal(err)
			}
			got := e.v.Verify(context.Background(), msg, from)
			if got.Pass != tc.pass || got.TempFail {
				t.Fatalf("Verify = %+v, want pass=%v", got, tc.pass)
			}
			if !tc.pass {
				want := fmt.Sprintf("not aligned: d=%s From %s", tc.sigDomain, from.Domain)
				if got.Reason != want || got.Domain != tc.sigDomain || got.Selector != k.Selector {
					t.Errorf("Verify = %+v, want reason %q", got, want)
				}
			}
		})
	}
}

func TestVerifyFailures(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	good := edKey(t, "example.org", "good")
	e.ks.SetKey(good)
	base := letter("ana@example.org")

	// The selector "swapped" publishes another key than the one signing.
	swapped := edKey(t, "example.org", "swapped")
	other := edKey(t, "example.org", "swapped")
	e.ks.SetKey(other)

	// "rsaswap": an RSA signature checked against another RSA-sized key.
	rsaSigner := rsaKey(t, "example.org", "rsaswap")
	rsaOther, err := keyserver.NewKey("example.org", "rsaswap", "rsa")
	if err != nil {
		t.Fatal(err)
	}
	e.ks.SetKey(rsaOther)

	tampered := sign(t, good, base, keyserver.SignOptions{})
	tampered = bytes.Replace(tampered, []byte("Exijo"), []byte("Pido"), 1)

	tamperedHeader := sign(t, good, base, keyserver.SignOptions{})
	tamperedHeader = bytes.Replace(tamperedHeader, []byte("Subject: Libertad"), []byte("Subject: Olvido"), 1)

	bodyLength := sign(t, good, base, keyserver.SignOptions{BodyLength: true})
	appended := append(bytes.Clone(bodyLength), "P.S. Click here: http://evil.example/\r\n"...)

	tests := []struct {
		name   string
		msg    []byte
		reason string
	}{
		{"tampered body", tampered, "body hash mismatch"},
		{"tampered signed header", tamperedHeader, "bad signature"},
		{"wrong key", sign(t, swapped, base, keyserver.SignOptions{}), "bad signature"},
		{"wrong rsa key", sign(t, rsaSigner, base, keyserver.SignOptions{}), "bad signature"},
		{"l= with appended text", appended, "body length limit (l=)"},
		{"l= as signed", bodyLength, "body length limit (l=)"},
		{"expired", sign(t, good, base, keyserver.SignOptions{Expiration: time.Now().Add(-time.Minute)}), "expired"},
		{"from not signed", sign(t, good, base, keyserver.SignOptions{HeaderKeys: []string{"To", "Subject", "Date"}}), "from not signed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel := good.Selector
			switch tc.name {
			case "wrong key":
				sel = "swapped"
			case "wrong rsa key":
				sel = "rsaswap"
			}
			e.check(t, tc.msg, Verdict{Domain: "example.org", Selector: sel, Reason: tc.reason})
		})
	}

	t.Run("not expired yet", func(t *testing.T) {
		e.check(t, sign(t, good, base, keyserver.SignOptions{Expiration: time.Now().Add(time.Hour)}),
			Verdict{Pass: true, Domain: "example.org", Selector: "good", Reason: "pass"})
	})
	t.Run("unsigned", func(t *testing.T) {
		e.check(t, base, Verdict{Reason: "no signature", Unsigned: true})
	})
}

func TestVerifyDNSFailures(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond)
	k := edKey(t, "example.org", "k")
	msg := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
	name := "k._domainkey.example.org"

	t.Run("NXDOMAIN is permanent", func(t *testing.T) {
		e.ks.Remove(name)
		e.check(t, msg, Verdict{Domain: "example.org", Selector: "k", Reason: "key not found"})
	})
	t.Run("SERVFAIL is temporary", func(t *testing.T) {
		e.ks.SetServFail(name)
		e.check(t, msg, Verdict{Domain: "example.org", Selector: "k", Reason: "key lookup failed temporarily", TempFail: true})
	})
	t.Run("timeout is temporary", func(t *testing.T) {
		e.ks.SetTimeout(name)
		// What ended the lookup, seen from inside it: its own deadline
		// (verify.dns_timeout), not the resolver giving up on its own
		// (seconds later) nor the caller, whose context has none.
		inner := e.v.lookupTXT
		defer func() { e.v.lookupTXT = inner }()
		var budget time.Duration
		atDeadline := false
		e.v.lookupTXT = func(ctx context.Context, name string) ([]string, error) {
			dl, ok := ctx.Deadline()
			if ok {
				budget = time.Until(dl)
			}
			txts, err := inner(ctx, name)
			atDeadline = ok && !time.Now().Before(dl)
			return txts, err
		}
		e.check(t, msg, Verdict{Domain: "example.org", Selector: "k", Reason: "key lookup timed out", TempFail: true})
		if budget <= 0 || budget > 300*time.Millisecond || !atDeadline {
			t.Errorf("lookup had %v of its deadline left at its start, returned at it: %v; want at most the 300ms lookup timeout, and to end there",
				budget, atDeadline)
		}
	})
	t.Run("empty key is revoked", func(t *testing.T) {
		e.ks.SetTXT(name, "v=DKIM1; k=ed25519; p=")
		e.check(t, msg, Verdict{Domain: "example.org", Selector: "k", Reason: "key revoked"})
	})
	t.Run("back again", func(t *testing.T) {
		e.ks.SetKey(k)
		e.check(t, msg, Verdict{Pass: true, Domain: "example.org", Selector: "k", Reason: "pass"})
	})
}

func TestVerifySeveralSignatures(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond)
	good := edKey(t, "example.org", "good")
	e.ks.SetKey(good)
	bad := edKey(t, "example.org", "bad")
	e.ks.SetKey(edKey(t, "example.org", "bad")) // another key under bad's name
	thirdParty := edKey(t, "esp.example", "esp")
	e.ks.SetKey(thirdParty)
	flaky := edKey(t, "example.org", "flaky")
	e.ks.SetServFail("flaky._domainkey.example.org")
	flakyOther := edKey(t, "other.org", "flaky")
	e.ks.SetServFail("flaky._domainkey.other.org")
	base := letter("ana@example.org")

	twice := func(inner, outer *keyserver.Key) []byte {
		return sign(t, outer, sign(t, inner, base, keyserver.SignOptions{}), keyserver.SignOptions{})
	}
	pass := Verdict{Pass: true, Domain: "example.org", Selector: "good", Reason: "pass"}

	t.Run("bad first, good second", func(t *testing.T) {
		e.check(t, twice(good, bad), pass) // outer (first in the header) is bad
	})
	t.Run("good first, bad second", func(t *testing.T) {
		e.check(t, twice(bad, good), pass)
	})
	t.Run("aligned temp failure beside a good one", func(t *testing.T) {
		e.check(t, twice(good, flaky), pass)
	})
	t.Run("valid third-party signature and aligned temp failure", func(t *testing.T) {
		e.check(t, twice(flaky, thirdParty), Verdict{
			Domain: "esp.example", Selector: "esp",
			Reason: "not aligned: d=esp.example From example.org", TempFail: true,
		})
	})
	t.Run("unaligned temp failure does not ask for a retry", func(t *testing.T) {
		e.check(t, twice(flakyOther, bad), Verdict{Domain: "example.org", Selector: "bad", Reason: "bad signature"})
	})
	t.Run("first failure is reported", func(t *testing.T) {
		e.check(t, twice(flakyOther, thirdParty), Verdict{
			Domain: "esp.example", Selector: "esp", Reason: "not aligned: d=esp.example From example.org",
		})
	})
}

// Only the first MaxVerifications signatures count: a message cannot make
// the daemon do unbounded lookups and RSA work.
func TestVerifyMaxVerifications(t *testing.T) {
	e := newEnv(t, time.Second)
	good := edKey(t, "example.org", "good")
	e.ks.SetKey(good)
	junk := edKey(t, "junk.example", "junk")
	e.ks.SetKey(junk)

	msg := sign(t, good, letter("ana@example.org"), keyserver.SignOptions{})
	for range DefaultMaxVerifications {
		msg = sign(t, junk, msg, keyserver.SignOptions{})
	}
	from, _ := ParseFrom(msg)
	if got := e.v.Verify(context.Background(), msg, from); got.Pass {
		t.Errorf("good signature in position 6 counted: %+v", got)
	}
	six := New(Options{Resolver: e.ks.Addr, Timeout: time.Second, MaxVerifications: 6})
	if got := six.Verify(context.Background(), msg, from); !got.Pass {
		t.Errorf("MaxVerifications 6: %+v", got)
	}
}

func TestVerifyCanceledContextIsTemporary(t *testing.T) {
	e := newEnv(t, time.Second)
	k := edKey(t, "example.org", "k")
	e.ks.SetKey(k)
	msg := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
	from, _ := ParseFrom(msg)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := e.v.Verify(ctx, msg, from)
	if got.Pass || !got.TempFail {
		t.Errorf("Verify with a canceled context = %+v, want a temporary failure", got)
	}
}

// A LookupTXT hook may wrap its errors; go-msgauth only sees a temporary
// failure in a bare net.Error, so Verify must unwrap for it.
func TestVerifyLookupHookErrors(t *testing.T) {
	k := edKey(t, "example.org", "k")
	msg := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
	from, _ := ParseFrom(msg)
	tests := []struct {
		err      error // returned by the hook; nil: the hook waits for its deadline
		tempFail bool
		reason   string
	}{
		{fmt.Errorf("hook: %w", &net.DNSError{Err: "server misbehaving", IsTemporary: true}), true, "key lookup failed temporarily"},
		{fmt.Errorf("hook: %w", &net.DNSError{Err: "i/o timeout", IsTimeout: true}), true, "key lookup timed out"},
		{nil, true, "key lookup timed out"},
		{fmt.Errorf("hook: %w", &net.DNSError{Err: "no such host", IsNotFound: true}), false, "key not found"},
		{fmt.Errorf("hook: broken"), false, "key lookup failed"},
	}
	for _, tc := range tests {
		v := New(Options{LookupTXT: func(ctx context.Context, name string) ([]string, error) {
			if name != "k._domainkey.example.org" {
				t.Errorf("hook got %q", name)
			}
			if tc.err != nil {
				return nil, tc.err
			}
			<-ctx.Done()
			return nil, fmt.Errorf("hook: %w", ctx.Err())
		}, Timeout: 50 * time.Millisecond})
		got := v.Verify(context.Background(), msg, from)
		if got.Pass || got.TempFail != tc.tempFail || got.Reason != tc.reason {
			t.Errorf("hook error %v: Verify = %+v, want TempFail=%v reason %q", tc.err, got, tc.tempFail, tc.reason)
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	v := New(Options{LookupTXT: func(context.Context, string) ([]string, error) {
		t.Error("lookup for a malformed signature")
		return nil, nil
	}})
	msg := append([]byte("DKIM-Signature: v=1; nonsense\r\n"), letter("ana@example.org")...)
	from, _ := ParseFrom(msg)
	got := v.Verify(context.Background(), msg, from)
	if got.Pass || got.TempFail || got.Reason == "" {
		t.Errorf("Verify = %+v", got)
	}
	// No end of header: go-msgauth cannot read it at all.
	got = v.Verify(context.Background(), []byte("From: a@example.org"), Sender{Domain: "example.org"})
	if got.Pass || got.TempFail || !strings.HasPrefix(got.Reason, "cannot verify") {
		t.Errorf("Verify(no header end) = %+v", got)
	}
}

func TestNewDefaults(t *testing.T) {
	v := New(Options{})
	if v.timeout != DefaultTimeout || v.max != DefaultMaxVerifications || v.lookupTXT == nil {
		t.Errorf("New(Options{}) = timeout %v, max %d", v.timeout, v.max)
	}
}

func benchmarkVerify(b *testing.B, k *keyserver.Key) {
	txt := []string{k.TXT()}
	v := New(Options{LookupTXT: func(context.Context, string) ([]string, error) { return txt, nil }})
	msg := sign(b, k, letter("ana@example.org"), keyserver.SignOptions{})
	from, err := ParseFrom(msg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if got := v.Verify(ctx, msg, from); !got.Pass {
			b.Fatalf("Verify = %+v", got)
		}
	}
}

func BenchmarkVerifyRSA(b *testing.B)     { benchmarkVerify(b, rsaKey(b, "example.org", "rsa")) }
func BenchmarkVerifyEd25519(b *testing.B) { benchmarkVerify(b, edKey(b, "example.org", "ed")) }

// A resolver given without a port means port 53, not a dial error that
// would defer every letter.
func TestResolverAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":      "127.0.0.1:53",
		"::1":            "[::1]:53",
		"127.0.0.1:5353": "127.0.0.1:5353",
		"[::1]:5353":     "[::1]:5353",
	} {
		if got := resolverAddr(in); got != want {
			t.Errorf("resolverAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// A lookup error explains only the signatures that got as far as looking:
// an expired signature sharing the key name stays "expired".
func TestVerifyReasonIsPerSignature(t *testing.T) {
	e := newEnv(t, time.Second)
	k := edKey(t, "example.org", "gone") // never published: NXDOMAIN
	inner := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
	msg := sign(t, k, inner, keyserver.SignOptions{Expiration: time.Now().Add(-time.Minute)})
	e.check(t, msg, Verdict{Domain: "example.org", Selector: "gone", Reason: "expired"})
	e.check(t, inner, Verdict{Domain: "example.org", Selector: "gone", Reason: "key not found"})
}

func TestVerifyDomainLowerCased(t *testing.T) {
	e := newEnv(t, time.Second)
	k := edKey(t, "Mail.Example.ORG", "Sel")
	e.ks.SetKey(k)
	e.check(t, sign(t, k, letter("ana@example.org"), keyserver.SignOptions{}),
		Verdict{Pass: true, Domain: "mail.example.org", Selector: "Sel", Reason: "pass"})
}
