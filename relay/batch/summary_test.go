package batch

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
)

func TestBuildHeaderInjection(t *testing.T) {
	evilName := "Eve\r\nBcc: evil@x\r\n\r\nbody? Ñandú \x00\xff\u202eDEIFIREVNU"
	letter := crlfLines(
		`From: =?utf-8?q?Eve=0D=0ABcc=3A_evil=40x?= <eve@supporter.example>`,
		"To: libertad@campaign.example",
		"Subject: =?utf-8?b?wqFMaWJlcnRhZCE=?= =?iso-8859-1?q?pol=EDticos?=",
		"Date: Mon, 06 May 2024 10:00:00 +0000",
		"",
		"Hola.",
	)
	s := baseSpec(Letter{ID: "L0000001A", Received: t0, Name: evilName, Address: "eve@supporter.example\r\nX-Evil: 1", Raw: letter})
	s.CampaignName = "Libertad\r\nBcc: evil@x — ¡ya!"
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	assertWellFormed(t, msg)
	p := parseBatch(t, msg)
	want := []string{"From", "To", "Cc", "Subject", "Date", "Message-Id", "Mime-Version", "Content-Type"}
	if got := headerKeys(p.header); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("header fields %q, want %q", got, want)
	}
	head := msg[:bytes.Index(msg, []byte("\r\n\r\n"))]
	for _, b := range head {
		if b > 127 {
			t.Fatalf("8-bit byte in the top header:\n%s", head)
		}
	}
	subj, err := p.header.Subject()
	if err != nil || subj != "[Libertad  Bcc: evil@x — ¡ya!] batch 7: 1 letters" {
		t.Errorf("Subject %q, %v", subj, err)
	}
	wantName := "Eve  Bcc: evil@x    body? Ñandú  \uFFFD DEIFIREVNU"
	line := "2024-05-06T10:00:00Z  " + wantName + " <eve@supporter.example  X-Evil: 1>  UNVERIFIED  L0000001A\n"
	if !strings.Contains(p.summary, line) {
		t.Errorf("summary lacks %q:\n%s", line, p.summary)
	}
	if !strings.Contains(p.summary, "Subject:  ¡Libertad!políticos\n") {
		t.Errorf("letter subject not decoded:\n%s", p.summary)
	}
	rows, err := csv.NewReader(strings.NewReader(p.csvText)).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("csv %q: %v", rows, err)
	}
	if rows[1][1] != wantName {
		t.Errorf("csv name %q, want %q", rows[1][1], wantName)
	}
	if !bytes.Equal(p.digest[0], letter) {
		t.Errorf("letter changed in the digest")
	}
}

func TestBuildCSVFormulaNeutralised(t *testing.T) {
	s := baseSpec(Letter{ID: "L1", Received: t0, Name: `=HYPERLINK("http://x","y")`, Address: "a@b.example", Raw: plainLetter("a@b.example", "x", "y")})
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(parseBatch(t, msg).csvText)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if rows[1][1] != `'=HYPERLINK("http://x","y")` {
		t.Errorf("csv name %q", rows[1][1])
	}
}
