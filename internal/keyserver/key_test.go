package keyserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rsa"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/petitiond/petitiond/crlf"
)

// One RSA key for the whole package: 2048-bit generation is slow under -race.
var sharedRSAKey = sync.OnceValues(func() (*Key, error) {
	return NewKey("example.org", "sel", "rsa")
})

func rsaKey(t testing.TB) *Key {
	t.Helper()
	k, err := sharedRSAKey()
	if err != nil {
		t.Fatalf("NewKey rsa: %v", err)
	}
	return k
}

func edKey(t testing.TB) *Key {
	t.Helper()
	k, err := NewKey("example.org", "ed", "ed25519")
	if err != nil {
		t.Fatalf("NewKey ed25519: %v", err)
	}
	return k
}

const testMsg = "From: Ana <ana@example.org>\n" +
	"To: libertad@campaign.example\n" +
	"Subject: Libertad\n" +
	"Date: Mon, 21 Oct 2019 10:00:00 -0300\n" +
	"Message-ID: <1@example.org>\n" +
	"\n" +
	"Libertad a los presos  politicos.   \n" +
	"\ttabbed line\n" +
	"\n" +
	"\n"

// verify runs go-msgauth against k's published record, held in memory.
func verify(t *testing.T, k *Key, signed []byte) *dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(signed), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if name != k.Selector+"._domainkey."+k.Domain {
				t.Errorf("lookup of %q", name)
			}
			return []string{k.TXT()}, nil
		},
	})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(vs) != 1 {
		t.Fatalf("%d verifications, want 1", len(vs))
	}
	return vs[0]
}

func TestNewKey(t *testing.T) {
	for _, algo := range []string{"rsa", "ed25519"} {
		var k *Key
		if algo == "rsa" {
			k = rsaKey(t)
		} else {
			k = edKey(t)
		}
		txt := k.TXT()
		if !strings.HasPrefix(txt, "v=DKIM1; k="+algo+"; p=") {
			t.Errorf("%s TXT = %q", algo, txt)
		}
		switch pub := k.Signer.Public().(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() != 2048 {
				t.Errorf("rsa key has %d bits", pub.N.BitLen())
			}
		case ed25519.PublicKey:
		default:
			t.Errorf("%s: public key %T", algo, pub)
		}
	}
	if _, err := NewKey("example.org", "s", "dsa"); err == nil {
		t.Error("NewKey accepted algorithm dsa")
	}
	if _, err := NewKey("", "s", "ed25519"); err == nil {
		t.Error("NewKey accepted an empty domain")
	}
}

func TestSignVerifies(t *testing.T) {
	for _, k := range []*Key{rsaKey(t), edKey(t)} {
		t.Run(k.Algo, func(t *testing.T) {
			signed, err := k.Sign([]byte(testMsg), SignOptions{})
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if bytes.Contains(bytes.ReplaceAll(signed, []byte("\r\n"), nil), []byte("\n")) {
				t.Error("signed message has a bare LF")
			}
			if !bytes.HasPrefix(signed, []byte("DKIM-Signature:")) {
				t.Errorf("signed message starts %q", signed[:40])
			}
			for _, tag := range []string{"c=relaxed/relaxed", "d=example.org", "s=" + k.Selector, "h=From:To:Subject:Date:Message-ID"} {
				if !bytes.Contains(signed, []byte(tag)) {
					t.Errorf("signature lacks %s", tag)
				}
			}
			if v := verify(t, k, signed); v.Err != nil {
				t.Fatalf("verification: %v", v.Err)
			}
		})
	}
}

// The small signer must produce what go-msgauth accepts: same canonical
// forms, same header picking. Checked without l= and with From, the one case
// both can do.
func TestOwnSignerMatchesLibrary(t *testing.T) {
	msgs := []string{
		testMsg,
		"From: a@example.org\r\nSubject:   folded\r\n  subject\t line \r\n\r\n",                  // empty body
		"From: a@example.org\r\nFrom: b@example.org\r\n\r\n\r\n\r\nleading blank lines\r\n \r\n", // repeated field, blank lines
		"From: a@example.org\r\n\r\nno final newline",
	}
	for _, k := range []*Key{rsaKey(t), edKey(t)} {
		for i, m := range msgs {
			msg := crlf.Normalize([]byte(m))
			keys := []string{"From", "From", "Subject", "X-Absent"}
			sig, err := k.signature(msg, keys, SignOptions{})
			if err != nil {
				t.Fatalf("%s msg %d: %v", k.Algo, i, err)
			}
			if v := verify(t, k, append([]byte(sig), msg...)); v.Err != nil {
				t.Errorf("%s msg %d: %v\n%s", k.Algo, i, v.Err, sig)
			}
		}
	}
}

func TestSignBodyLength(t *testing.T) {
	k := edKey(t)
	signed, err := k.Sign([]byte(testMsg), SignOptions{BodyLength: true})
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(testMsg, "\n\n")
	want := "l=" + itoa(len(relaxedBody(crlf.Normalize([]byte(body)))))
	if !bytes.Contains(signed, []byte(want)) {
		t.Errorf("signature lacks %s:\n%s", want, signed)
	}
	// go-msgauth refuses every l= signature: this is what the verifier
	// relies on.
	v := verify(t, k, append(signed, "Appended by someone else.\r\n"...))
	if v.Err == nil || !strings.Contains(v.Err.Error(), "body length") {
		t.Errorf("l= signature: err = %v, want the body length refusal", v.Err)
	}
}

func TestSignWithoutFrom(t *testing.T) {
	k := edKey(t)
	signed, err := k.Sign([]byte(testMsg), SignOptions{HeaderKeys: []string{"Subject", "To"}})
	if err != nil {
		t.Fatal(err)
	}
	v := verify(t, k, signed)
	if v.Err == nil || !strings.Contains(v.Err.Error(), "From field not signed") {
		t.Errorf("err = %v, want From not signed", v.Err)
	}
}

func TestSignExpiration(t *testing.T) {
	k := edKey(t)
	past := time.Now().Add(-time.Hour)
	signed, err := k.Sign([]byte(testMsg), SignOptions{Expiration: past})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(signed, []byte("x="+itoa(int(past.Unix())))) {
		t.Errorf("no x= tag:\n%s", signed)
	}
	if v := verify(t, k, signed); v.Err == nil || !strings.Contains(v.Err.Error(), "expired") {
		t.Errorf("err = %v, want expired", v.Err)
	}

	future := time.Now().Add(time.Hour)
	signed, err = k.Sign([]byte(testMsg), SignOptions{Expiration: future})
	if err != nil {
		t.Fatal(err)
	}
	if v := verify(t, k, signed); v.Err != nil {
		t.Errorf("future x=: %v", v.Err)
	}
}

func TestRelaxedBody(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"\r\n\r\n":              "",
		"a":                     "a\r\n",
		"a  b \t\r\n\r\n":       "a b\r\n",
		"\r\n a\r\n \r\nb\r\n":  "\r\n a\r\n\r\nb\r\n",
		"x\t\ty\r\n\r\n\r\nz  ": "x y\r\n\r\n\r\nz\r\n",
	} {
		if got := string(relaxedBody([]byte(in))); got != want {
			t.Errorf("relaxedBody(%q) = %q, want %q", in, got, want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestKeyFlagsPublished(t *testing.T) {
	k := edKey(t)
	if strings.Contains(k.TXT(), "t=") {
		t.Errorf("TXT without flags = %q", k.TXT())
	}
	k.Flags = []string{"y", "s"}
	if txt := k.TXT(); !strings.HasSuffix(txt, "; t=y:s") || !strings.HasPrefix(txt, "v=DKIM1; k=ed25519; p=") {
		t.Errorf("TXT with flags = %q", txt)
	}
	signed, err := k.Sign([]byte(testMsg), SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// go-msgauth ignores the flags: the record must still parse as a key.
	if v := verify(t, k, signed); v.Err != nil {
		t.Errorf("verification with flags: %v", v.Err)
	}
}

func TestSignIdentifier(t *testing.T) {
	k := edKey(t)
	for _, opt := range []SignOptions{
		{Identifier: "ana@news.example.org"},                   // go-msgauth's signer
		{Identifier: "ana@news.example.org", BodyLength: true}, // the small signer
	} {
		signed, err := k.Sign([]byte(testMsg), opt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(signed, []byte("i=ana@news.example.org")) {
			t.Errorf("BodyLength %v: no i= tag:\n%s", opt.BodyLength, signed)
		}
		v := verify(t, k, signed)
		if v.Identifier != "ana@news.example.org" {
			t.Errorf("BodyLength %v: verifier read i= as %q", opt.BodyLength, v.Identifier)
		}
		if !opt.BodyLength && v.Err != nil {
			t.Errorf("i= signature: %v", v.Err)
		}
	}
}
