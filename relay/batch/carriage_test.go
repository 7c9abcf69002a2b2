package batch

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func TestCarriageOf(t *testing.T) {
	long := strings.Repeat("a", 999)
	tests := []struct {
		name, raw string
		want      carriage
	}{
		{"ascii", "From: a@b.cl\r\n\r\nhola\r\n", carriage{"message/rfc822", "7bit"}},
		{"8-bit body", "From: a@b.cl\r\n\r\nCanción\r\n", carriage{"message/rfc822", "8bit"}},
		{"utf-8 header", "From: Ñandú <a@b.cl>\r\n\r\nhola\r\n", carriage{"message/global", "8bit"}},
		{"utf-8 in the last header line", "From: a@b.cl\r\nSubject: ¡ya!\r\n\r\nhola\r\n", carriage{"message/global", "8bit"}},
		{"no body", "From: a@b.cl\r\nSubject: ¡ya!\r\n", carriage{"message/global", "8bit"}},
		{"no header", "\r\nCanción\r\n", carriage{"message/rfc822", "8bit"}},
		{"998 octets", "From: a@b.cl\r\n\r\n" + long[:998] + "\r\n", carriage{"message/rfc822", "7bit"}},
		{"998 octets, no CRLF", "From: a@b.cl\r\n\r\n" + long[:998], carriage{"message/rfc822", "7bit"}},
		{"999 octets", "From: a@b.cl\r\n\r\n" + long + "\r\n", carriage{"message/global", "base64"}},
		{"999 octets in the header", "From: a@b.cl\r\nX-Long: " + long + "\r\n\r\nx\r\n", carriage{"message/global", "base64"}},
		{"999 octets of 8-bit", "From: a@b.cl\r\n\r\n" + strings.Repeat("ñ", 500) + "\r\n", carriage{"message/global", "base64"}},
		{"NUL", "From: a@b.cl\r\n\r\nho\x00la\r\n", carriage{"message/global", "base64"}},
	}
	for _, tt := range tests {
		if got := carriageOf([]byte(tt.raw)); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// Issue 9 point 17: a letter with raw UTF-8 in its header (RFC 6532) is
// carried as message/global in 8bit, its bytes and signature intact; one
// with a NUL travels base64-encoded, and no line of the batch is longer
// than 998 octets.
func TestBuildInternationalisedAndBinaryLetters(t *testing.T) {
	keys := testKeys{}
	key := newEd25519(t)
	keys.addKey(t, "ejemplo.cl", "s", key)
	utf8Header := dkimSign(t, crlfLines(
		"From: Ñandú Pérez <nandu@ejemplo.cl>",
		"To: libertad@campaign.example",
		"Subject: ¡Libertad a los presos políticos!",
		"Date: Mon, 06 May 2024 10:00:00 +0000",
		"Message-ID: <utf8@ejemplo.cl>",
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 8bit",
		"",
		"Exigimos su libertad.",
	), "ejemplo.cl", "s", key)
	withNUL := dkimSign(t, plainLetter("nul@ejemplo.cl", "x", "uno\x00dos"), "ejemplo.cl", "s", key)
	s := baseSpec(
		Letter{ID: "L1", Received: t0, Name: "Ñandú Pérez", Address: "nandu@ejemplo.cl", DKIMDomain: "ejemplo.cl", Raw: utf8Header},
		Letter{ID: "L2", Received: t0, Address: "nul@ejemplo.cl", DKIMDomain: "ejemplo.cl", Raw: withNUL},
		Letter{ID: "L3", Received: t0, Address: "a@b.cl", Raw: plainLetter("a@b.cl", "x", "hola")},
	)
	s.Language = "es"
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	assertWellFormed(t, msg)
	assertLinesFit(t, msg)
	if bytes.IndexByte(msg, 0) >= 0 {
		t.Errorf("a NUL in the batch")
	}
	p := parseBatch(t, msg)
	wantTypes := []string{"message/global", "message/global", "message/rfc822"}
	wantCTEs := []string{"8bit", "base64", "7bit"}
	for i, l := range s.Letters {
		if p.digestTypes[i] != wantTypes[i] || p.digestCTEs[i] != wantCTEs[i] {
			t.Errorf("letter %s carried as %s in %s, want %s in %s", l.ID, p.digestTypes[i], p.digestCTEs[i], wantTypes[i], wantCTEs[i])
		}
		if !bytes.Equal(p.digest[i], l.Raw) {
			t.Errorf("letter %s changed in the digest", l.ID)
		}
		if l.DKIMDomain != "" {
			if vs := keys.verify(t, p.digest[i]); len(vs) != 1 || vs[0].Err != nil {
				t.Errorf("letter %s: DKIM from the digest: %+v", l.ID, vs)
			}
		}
	}
	if p.header.Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("top-level CTE %q with an 8bit part inside", p.header.Get("Content-Transfer-Encoding"))
	}
	if !strings.Contains(p.summary, "Asunto: ¡Libertad a los presos políticos!\n\n| Exigimos su libertad.\n") {
		t.Errorf("the UTF-8 letter's text:\n%s", p.summary)
	}
}

func TestBase64Lines(t *testing.T) {
	for _, n := range []int{0, 1, 56, 57, 58, 114, 1000} {
		in := bytes.Repeat([]byte{0xff, 'a', 0}, n)[:n]
		out := base64Lines(in)
		lines := strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n")
		for i, l := range lines {
			if len(l) > 76 || (i < len(lines)-1 && len(l) != 76) {
				t.Errorf("n=%d: line %d is %d characters", n, i, len(l))
			}
		}
		got, err := base64.StdEncoding.DecodeString(strings.Join(lines, ""))
		if err != nil || !bytes.Equal(got, in) {
			t.Errorf("n=%d: decodes to %q, %v", n, got, err)
		}
	}
}
