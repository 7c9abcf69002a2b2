package verify

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/petitiond/petitiond/internal/keyserver"
)

// TestVerifyKeyFlags runs RFC 6376 3.6.1's key flags through a real DNS
// server: t=s refuses an i= in a subdomain of d= (OpenDKIM's "unauthorized
// subdomain"), and t=y (testing) changes nothing.
func TestVerifyKeyFlags(t *testing.T) {
	e := newEnv(t, time.Second)
	base := letter("ana@example.org")
	const sub = "ana@news.example.org"

	cases := []struct {
		name       string
		flags      []string
		identifier string
		want       string // Verdict.Reason
	}{
		{"t=s, i= in a subdomain", []string{"s"}, sub, "unauthorized subdomain"},
		{"t=s, i= at d=", []string{"s"}, "ana@example.org", "pass"},
		{"t=s, i= with no local part", []string{"s"}, "@example.org", "pass"},
		{"t=s, no i=", []string{"s"}, "", "pass"},
		{"no flags, i= in a subdomain", nil, sub, "pass"},
		{"t=y, i= in a subdomain", []string{"y"}, sub, "pass"},
		{"t=y:s, i= in a subdomain", []string{"y", "s"}, sub, "unauthorized subdomain"},
		{"unknown flag beside s", []string{"x", "s"}, sub, "unauthorized subdomain"},
		{"flag S is not s", []string{"S"}, sub, "pass"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := edKey(t, "example.org", "f"+string(rune('a'+i)))
			k.Flags = tc.flags
			e.ks.SetKey(k)
			msg := sign(t, k, base, keyserver.SignOptions{Identifier: tc.identifier})
			want := Verdict{Domain: "example.org", Selector: k.Selector, Reason: tc.want, Pass: tc.want == "pass"}
			e.check(t, msg, want)
		})
	}
}

// A testing key (t=y) is not treated differently from any other: a failing
// signature fails the same way, a passing one passes.
func TestVerifyTestingKeyFailsAsUsual(t *testing.T) {
	e := newEnv(t, time.Second)
	for _, flags := range [][]string{nil, {"y"}} {
		k := edKey(t, "example.org", "tamper")
		k.Flags = flags
		e.ks.SetKey(k)
		msg := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
		tampered := bytes.Replace(msg, []byte("Exijo"), []byte("Pido"), 1)
		e.check(t, tampered, Verdict{Domain: "example.org", Selector: "tamper", Reason: "body hash mismatch"})
	}
}

// The flags come from the record go-msgauth already fetched: one question
// per key, with or without t=s.
func TestVerifyKeyFlagsNoSecondLookup(t *testing.T) {
	e := newEnv(t, time.Second)
	k := edKey(t, "example.org", "once")
	k.Flags = []string{"s"}
	e.ks.SetKey(k)
	name := "once._domainkey.example.org"

	refused := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{Identifier: "ana@news.example.org"})
	e.check(t, refused, Verdict{Domain: "example.org", Selector: "once", Reason: "unauthorized subdomain"})
	if n := e.ks.Queries(name); n != 1 {
		t.Errorf("refused signature: %d questions for the key, want 1", n)
	}
	passed := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{Identifier: "ana@example.org"})
	e.check(t, passed, Verdict{Pass: true, Domain: "example.org", Selector: "once", Reason: "pass"})
	if n := e.ks.Queries(name); n != 2 {
		t.Errorf("after a second letter: %d questions for the key, want 2", n)
	}
}

// A refused signature does not hide a valid one beside it, and each
// signature's flags come from its own key.
func TestVerifyKeyFlagsPerSignature(t *testing.T) {
	e := newEnv(t, time.Second)
	strict := edKey(t, "example.org", "strict")
	strict.Flags = []string{"s"}
	e.ks.SetKey(strict)
	loose := edKey(t, "example.org", "loose")
	e.ks.SetKey(loose)
	opt := keyserver.SignOptions{Identifier: "ana@news.example.org"}

	inner := sign(t, loose, letter("ana@example.org"), opt)
	e.check(t, sign(t, strict, inner, opt),
		Verdict{Pass: true, Domain: "example.org", Selector: "loose", Reason: "pass"})

	inner = sign(t, strict, letter("ana@example.org"), opt)
	e.check(t, sign(t, strict, inner, opt),
		Verdict{Domain: "example.org", Selector: "strict", Reason: "unauthorized subdomain"})
}

// With the key cache on, flags of a cached record still count.
func TestVerifyKeyFlagsCached(t *testing.T) {
	e := newEnv(t, time.Second)
	k := edKey(t, "example.org", "cached")
	k.Flags = []string{"s"}
	e.ks.SetKey(k)
	v := New(Options{Resolver: e.ks.Addr, Timeout: time.Second, KeyCache: time.Hour})
	from := Sender{Address: "ana@example.org", Domain: "example.org"}
	ok := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{})
	if vd := v.Verify(context.Background(), ok, from); !vd.Pass {
		t.Fatalf("first letter: %+v", vd)
	}
	sub := sign(t, k, letter("ana@example.org"), keyserver.SignOptions{Identifier: "@news.example.org"})
	if vd := v.Verify(context.Background(), sub, from); vd.Pass || vd.Reason != "unauthorized subdomain" {
		t.Errorf("cached t=s key: %+v", vd)
	}
}

func TestKeyFlags(t *testing.T) {
	for rec, want := range map[string][]string{
		"v=DKIM1; k=ed25519; p=AAAA":            nil,
		"v=DKIM1; t=s; p=AAAA":                  {"s"},
		"v=DKIM1; p=AAAA; t = y : s ":           {"y", "s"},
		"t=y:\r\n\ts;p=AAAA":                    {"y", "s"},
		"v=DKIM1; t=; p=AAAA":                   nil,
		"v=DKIM1; st=s; p=AAAA":                 nil,
		"v=DKIM1; n=t=s is a note; p=AAAA":      nil,
		"v=DKIM1; t=y::s; p=AAAA; t=s (second)": {"y", "s"},
	} {
		if got := keyFlags(rec); !slices.Equal(got, want) {
			t.Errorf("keyFlags(%q) = %q, want %q", rec, got, want)
		}
	}
}

func TestSubdomainRefused(t *testing.T) {
	const strict, loose = "v=DKIM1; t=s; p=AAAA", "v=DKIM1; p=AAAA"
	for _, tc := range []struct {
		record, identifier, domain string
		want                       bool
	}{
		{strict, "ana@news.example.org", "example.org", true},
		{strict, "@news.example.org", "example.org", true},
		{strict, "ana@example.org", "example.org", false},
		{strict, "ana@Example.Org", "example.org", false},
		{strict, "@example.org", "Example.org", false},
		{strict, "news.example.org", "example.org", true}, // no @: all of it is the domain
		{loose, "ana@news.example.org", "example.org", false},
		{"", "ana@news.example.org", "example.org", false},
	} {
		if got := subdomainRefused(tc.record, tc.identifier, tc.domain); got != tc.want {
			t.Errorf("subdomainRefused(%q, %q, %q) = %v, want %v", tc.record, tc.identifier, tc.domain, got, tc.want)
		}
	}
}

// FuzzKeyFlags: any record text parses without panicking, flags carry no
// separators or white space, and a record that keyFlags finds strict
// refuses every subdomain identity.
func FuzzKeyFlags(f *testing.F) {
	for _, s := range []string{"v=DKIM1; t=s; p=AAAA", "t=y:s", "t = y : s ;", "t=", ";;=;t", "t=\xff:s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		flags := keyFlags(rec)
		for _, fl := range flags {
			if fl == "" || bytes.ContainsAny([]byte(fl), ":; \t\r\n") {
				t.Fatalf("keyFlags(%q) has flag %q", rec, fl)
			}
		}
		if slices.Contains(flags, "s") != subdomainRefused(rec, "a@sub.example.org", "example.org") {
			t.Fatalf("record %q: flags %q disagree with subdomainRefused", rec, flags)
		}
		if subdomainRefused(rec, "a@example.org", "example.org") {
			t.Fatalf("record %q refused i= at d=", rec)
		}
	})
}

// stripSpace's shortcut for plain ASCII changes nothing: it returns what
// strings.Map with unicode.IsSpace returns, invalid UTF-8 included.
func TestStripSpaceMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []string{"a", "=", ";", " ", "\t", "\r\n", "\v", "\f", "\u00a0", "\u0085", "\u2003", "ñ", "\xff", "\xc3"}
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		s := b.String()
		want := strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return -1
			}
			return r
		}, s)
		if got := stripSpace(s); got != want {
			t.Fatalf("stripSpace(%q) = %q, want %q", s, got, want)
		}
	}
}
