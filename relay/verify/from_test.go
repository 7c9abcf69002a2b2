package verify

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestParseFrom(t *testing.T) {
	const rest = "To: libertad@campaign.example\r\nSubject: hi\r\n\r\nbody\r\nFrom: not@header.example\r\n"
	tests := []struct {
		name   string
		header string
		want   Sender
	}{
		{"bare address", "From: ana@example.org\r\n", Sender{"", "ana@example.org", "example.org"}},
		{"name-addr", "From: Ana Pérez <Ana.Perez@Example.ORG>\r\n", Sender{"Ana Pérez", "Ana.Perez@Example.ORG", "example.org"}},
		{"quoted name", "From: \"Pérez, Ana\" <ana@example.org>\r\n", Sender{"Pérez, Ana", "ana@example.org", "example.org"}},
		{"lower-case field name", "from: ana@example.org\r\n", Sender{"", "ana@example.org", "example.org"}},
		{"folded", "From: Ana\r\n Perez\r\n\t<ana@example.org>\r\n", Sender{"Ana Perez", "ana@example.org", "example.org"}},
		{"folded before address", "From:\r\n ana@example.org\r\n", Sender{"", "ana@example.org", "example.org"}},
		{"encoded-word utf-8", "From: =?UTF-8?Q?Ana_P=C3=A9rez?= <ana@example.org>\r\n", Sender{"Ana Pérez", "ana@example.org", "example.org"}},
		{"encoded-word base64", "From: =?utf-8?B?5p2O5piO?= <li@example.cn>\r\n", Sender{"李明", "li@example.cn", "example.cn"}},
		{"encoded-word latin1", "From: =?ISO-8859-1?Q?Jos=E9?= <jose@example.org>\r\n", Sender{"José", "jose@example.org", "example.org"}},
		{"encoded-word windows-1252", "From: =?windows-1252?Q?Jos=E9_=80?= <jose@example.org>\r\n", Sender{"José €", "jose@example.org", "example.org"}},
		{"unknown charset falls back", "From: =?x-unknown?Q?Ana?= <ana@example.org>\r\n", Sender{"Ana", "ana@example.org", "example.org"}},
		{"encoded CRLF in name", "From: =?UTF-8?Q?Ana=0D=0AX-Evil=3A_1?= <ana@example.org>\r\n", Sender{"Ana  X-Evil: 1", "ana@example.org", "example.org"}},
		{"comment name", "From: ana@example.org (Ana)\r\n", Sender{"Ana", "ana@example.org", "example.org"}},
		{"IDNA domain", "From: ana@Bücher.example\r\n", Sender{"", "ana@Bücher.example", "xn--bcher-kva.example"}},
		{"LF line ends", "From: Ana <ana@example.org>\n", Sender{"Ana", "ana@example.org", "example.org"}},
		{"colon in quoted name", "From: \"Re: Ana\" <ana@example.org>\r\n", Sender{"Re: Ana", "ana@example.org", "example.org"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFrom([]byte("Date: x\r\n" + tc.header + rest))
			if err != nil {
				t.Fatalf("ParseFrom: %v", err)
			}
			if got != tc.want {
				t.Errorf("ParseFrom = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseFromErrors(t *testing.T) {
	tests := []struct {
		name, msg, says string
	}{
		{"no From", "To: a@example.org\r\nSubject: x\r\n\r\nFrom: ana@example.org\r\n", "no From"},
		{"two From fields", "From: ana@example.org\r\nTo: x@y\r\nFrom: eve@evil.example\r\n\r\nbody\r\n", "2 From header fields"},
		{"two From, differing case", "From: ana@example.org\r\nFROM: eve@evil.example\r\n\r\n", "2 From"},
		{"From with space before colon", "From: ana@example.org\r\nFrom : eve@evil.example\r\n\r\n", "2 From"},
		{"two addresses", "From: ana@example.org, eve@evil.example\r\n\r\n", "2 addresses"},
		{"group of one", "From: Friends: ana@example.org;\r\n\r\n", "group"},
		{"empty group", "From: undisclosed-recipients:;\r\n\r\n", "group"},
		{"group of two", "From: Friends: ana@example.org, eve@evil.example;\r\n\r\n", "group"},
		{"empty From", "From: \r\n\r\n", "empty"},
		{"garbage", "From: <<<>>>\r\n\r\n", ""},
		{"no domain", "From: ana\r\n\r\n", ""},
		{"bad IDNA", "From: ana@\u00ad\u200d.example\r\n\r\n", ""},
		{"empty message", "", "no From"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFrom([]byte(tc.msg))
			if err == nil {
				t.Fatalf("ParseFrom = %+v, want an error", got)
			}
			if !errors.Is(err, ErrFrom) {
				t.Errorf("error %v does not wrap ErrFrom", err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

// A From in the body is not a header field; header ends at the first empty
// line, with or without CR.
func TestParseFromHeaderEnd(t *testing.T) {
	got, err := ParseFrom([]byte("From: ana@example.org\n\nFrom: eve@evil.example\n"))
	if err != nil || got.Address != "ana@example.org" {
		t.Fatalf("ParseFrom = %+v, %v", got, err)
	}
	// A header with no body at all.
	got, err = ParseFrom([]byte("From: ana@example.org"))
	if err != nil || got.Domain != "example.org" {
		t.Fatalf("ParseFrom(header only) = %+v, %v", got, err)
	}
}

func TestHasGroup(t *testing.T) {
	for s, want := range map[string]bool{
		"a@b":                      false,
		"\"x:y\" <a@b>":            false,
		"(x:y) a@b":                false,
		"a@[IPv6:::1]":             false,
		"\"q\\\":\" <a@b>":         false,
		"<@route:a@b>":             false,
		"g: a@b;":                  true,
		"g:;":                      true,
		"a@b; c@d":                 true,
		"\"unterminated : a@b":     false,
		"(nested (comment:) ) g:;": true,
	} {
		if got := hasGroup(s); got != want {
			t.Errorf("hasGroup(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzParseFrom(f *testing.F) {
	for _, s := range []string{
		"From: ana@example.org\r\n\r\nbody",
		"From: =?UTF-8?Q?Ana_P=C3=A9rez?= <ana@example.org>\r\n\r\n",
		"From: =?x-unknown?B?QW5h?= <ana@Bücher.example>\r\n\r\n",
		"From: Friends: a@b, c@d;\r\n\r\n",
		"From: a@b\r\nFrom: c@d\r\n\r\n",
		"From: \"x:y\" <a@[1.2.3.4]>\r\n\r\n",
		"From:\r\n (comment\r\n  folded) a@b.c\r\n\r\n",
		"from : <>\n\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		s, err := ParseFrom(msg)
		if err != nil {
			if !errors.Is(err, ErrFrom) {
				t.Fatalf("error %v does not wrap ErrFrom", err)
			}
			return
		}
		if s.Address == "" || s.Domain == "" {
			t.Fatalf("ParseFrom = %+v without error", s)
		}
		if s.Domain != strings.ToLower(s.Domain) {
			t.Fatalf("domain %q not lower-case", s.Domain)
		}
		if !utf8.ValidString(s.Name) || strings.IndexFunc(s.Name, unicode.IsControl) >= 0 {
			t.Fatalf("name %q has invalid UTF-8 or control characters", s.Name)
		}
		// What ParseFrom accepts, dedup must be able to key.
		if _, err := NormalizeAddress(s.Address, FoldOptions{Subaddress: true, GmailDots: true}); err != nil {
			t.Fatalf("NormalizeAddress(%q): %v", s.Address, err)
		}
	})
}
