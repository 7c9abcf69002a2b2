package inbound

import (
	"bytes"
	"net/mail"
	"strings"
	"testing"
	"time"
)

func TestHeloDomain(t *testing.T) {
	for helo, want := range map[string]string{
		"client.example":        "client.example",
		"client.example.":       "client.example.",
		"localhost":             "localhost",
		"[192.0.2.1]":           "[192.0.2.1]",
		"[IPv6:2001:db8::1]":    "[IPv6:2001:db8::1]",
		"[IPv6:192.0.2.1]":      "",
		"[2001:db8::1]":         "",
		"[192.0.2.1":            "",
		"[999.0.2.1]":           "",
		"under_score.example":   "",
		"bad\x1b]52;c;x.test":   "",
		"client.example;x":      "",
		"(comment)":             "",
		"":                      "",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
		"bücher.example":        "",
	} {
		if got := heloDomain(helo); got != want {
			t.Errorf("heloDomain(%q) = %q, want %q", helo, got, want)
		}
	}
}

func TestReceivedField(t *testing.T) {
	when := time.Date(2026, 12, 1, 10, 0, 0, 0, time.FixedZone("", -3*3600))
	for _, tc := range []struct {
		name string
		t    trace
		want string
	}{
		{"plain", trace{host: "mx.campaign.example", helo: "client.example", ip: "192.0.2.1", id: "L0000002A", rcpt: "libertad@campaign.example", when: when},
			"Received: from client.example ([192.0.2.1])\r\n\tby mx.campaign.example (petitiond) with ESMTP id L0000002A\r\n" +
				"\tfor <libertad@campaign.example>;\r\n\tTue, 01 Dec 2026 10:00:00 -0300\r\n"},
		{"TLS, SMTPUTF8, IPv6, several recipients", trace{host: "mx.campaign.example", helo: "[IPv6:2001:db8::1]", ip: "2001:db8::1", id: "L00000001", tls: true, utf8: true, when: when},
			"Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n\tby mx.campaign.example (petitiond) with UTF8SMTPS id L00000001;\r\n" +
				"\tTue, 01 Dec 2026 10:00:00 -0300\r\n"},
		{"malformed HELO", trace{host: "mx.campaign.example", helo: "a\"b(c)\\d\x1b\r\nInjected: yes é", ip: "192.0.2.1", id: "L00000001", tls: true, when: when},
			"Received: from unknown ([192.0.2.1]) (HELO \"a?b?c??d???Injected:?yes???\")\r\n\tby mx.campaign.example (petitiond) with ESMTPS id L00000001;\r\n" +
				"\tTue, 01 Dec 2026 10:00:00 -0300\r\n"},
	} {
		if got := string(tc.t.receivedField()); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// checkField fails unless field is one well-formed header field: CRLF line
// endings, continuation lines folded with a tab, printable ASCII, each line
// within RFC 5322's 998 octets, and readable by net/mail on top of a body.
func checkField(t *testing.T, field []byte) {
	t.Helper()
	if !bytes.HasPrefix(field, []byte("Received: ")) || !bytes.HasSuffix(field, []byte("\r\n")) {
		t.Fatalf("not a Received: field ending in CRLF: %q", field)
	}
	lines := strings.Split(strings.TrimSuffix(string(field), "\r\n"), "\r\n")
	for i, line := range lines {
		if len(line)+2 > 998 {
			t.Errorf("line %d is %d octets", i, len(line)+2)
		}
		if i > 0 && !strings.HasPrefix(line, "\t") {
			t.Errorf("line %d is not folded: %q", i, line)
		}
		for _, c := range []byte(line) {
			if (c < 0x20 && c != '\t') || c > 0x7e {
				t.Fatalf("line %d has byte %#x: %q", i, c, line)
			}
		}
	}
	m, err := mail.ReadMessage(bytes.NewReader(append(field, "Subject: x\r\n\r\nbody\r\n"...)))
	if err != nil {
		t.Fatalf("net/mail cannot read the field: %v", err)
	}
	if len(m.Header["Received"]) != 1 || m.Header.Get("Subject") != "x" {
		t.Errorf("net/mail read %v", m.Header)
	}
}

// FuzzReceivedField: whatever a client sends as its HELO name (go-smtp
// passes the first word of the line, any bytes but CR and LF), the trace
// field stays one well-formed header field.
func FuzzReceivedField(f *testing.F) {
	for _, seed := range []string{"client.example", "[192.0.2.1]", "[IPv6:::1]", "bad\x1b]52;c;x", "a)b(c", "\"quoted\"", "é.example", strings.Repeat("a.", 200)} {
		f.Add(seed, "192.0.2.1")
	}
	f.Add("x", "2001:db8::1")
	f.Add("x", "not-an-ip)\r\nX: y")
	f.Fuzz(func(t *testing.T, helo, ip string) {
		tr := trace{host: "mx.campaign.example", helo: helo, ip: ip, id: "L00000001", rcpt: "libertad@campaign.example",
			when: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
		field := tr.receivedField()
		checkField(t, field)
		if d := heloDomain(helo); d != "" && !bytes.HasPrefix(field, []byte("Received: from "+d+" (")) {
			t.Errorf("a valid HELO name %q is not the from clause: %q", helo, field)
		}
	})
}

func TestFoldCost(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		want int64
	}{
		{"unfolded", "From: a@b\r\nSubject: x\r\n\r\nbody\r\n more\r\n", 0},
		{"one continuation", "Subject: ab\r\n cd\r\n\r\nbody\r\n", 13},
		{"two fields", "A: 1\r\n 2\r\n 3\r\nB: 4\r\n 5\r\n\r\n", 6 + 10 + 6},
		{"no body", "A: 1\r\n 2", 6},
		{"tab", "A: 1\n\t2\n\n", 5},
	} {
		if got := foldCost([]byte(tc.msg)); got != tc.want {
			t.Errorf("%s: foldCost = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// FuzzLineChecks: the line length and folding cost the front end checks
// every message for agree with plain reference computations.
func FuzzLineChecks(f *testing.F) {
	f.Add([]byte("From: a@b\r\nSubject: x\r\n y\r\n\tz\r\n\r\nbody\r\n"))
	f.Add([]byte("A: 1\n 2\n\n"))
	f.Add([]byte(" leading\r\nB: x\r\n"))
	f.Add([]byte("no line ending"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		lines := strings.SplitAfter(string(msg), "\n")
		longest := 0
		for _, l := range lines {
			longest = max(longest, len(l))
		}
		if got := longestLine(msg); got != longest {
			t.Fatalf("longestLine = %d, want %d", got, longest)
		}
		// The cost of building each field by concatenating its lines.
		var cost int64
		field := ""
		for _, l := range lines {
			if strings.TrimRight(l, "\r\n") == "" {
				break
			}
			if l[0] == ' ' || l[0] == '\t' {
				cost += int64(len(field))
				field += l
			} else {
				field = l
			}
		}
		if got := foldCost(msg); got != cost {
			t.Fatalf("foldCost = %d, want %d", got, cost)
		}
	})
}
