package oneline

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	tests := map[string]string{
		"Ana":               "Ana",
		"  Ana María  ":     "Ana María",
		"":                  "",
		"a\r\nb":            "a  b",
		"Eve\r\nBcc: x@y":   "Eve  Bcc: x@y",
		"a\tb\x7f\u0085c":   "a b  c",
		"bad \xff\xfe":      "bad \uFFFD\uFFFD",
		"rtl\u202eabc":      "rtl abc",
		"iso\u2066x\u2069":  "iso x",
		"sep\u2028x\u2029":  "sep x",
		"emoji 👩‍👩‍👧":       "emoji 👩‍👩‍👧",
		"Joaquín Ñancupil":  "Joaquín Ñancupil",
		"\x00nul":           "nul",
		"ends in newline\n": "ends in newline",
	}
	for in, want := range tests {
		if got := Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"Ana", "a\r\nb", "bad \xff", "rtl\u202eabc", " x "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := Clean(s)
		if !utf8.ValidString(c) {
			t.Fatalf("Clean(%q) = %q: invalid UTF-8", s, c)
		}
		for _, r := range c {
			if Unsafe(r) {
				t.Fatalf("Clean(%q) = %q keeps %U", s, c, r)
			}
		}
		if strings.TrimFunc(c, unicode.IsSpace) != c {
			t.Fatalf("Clean(%q) = %q: not trimmed", s, c)
		}
		if Clean(c) != c {
			t.Fatalf("Clean is not idempotent on %q", s)
		}
	})
}
