package batchmime

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/relay/batch"
)

func TestReadBack(t *testing.T) {
	spec := batch.Spec{Number: 3, CampaignName: "Libertad", From: "relay@campaign.test",
		Recipients: []string{"familias@ofapp.test", "copias@sr.test"}, MessageID: "<batch-3@campaign.test>",
		Date: time.Unix(1795776000, 0), RunningTotal: 7}
	spec.Language = "es"
	spec.Location = time.FixedZone("", -4*3600)
	raws := [][]byte{
		[]byte("From: Ana <ana@ed.test>\r\nMessage-ID: <a1@ed.test>\r\nSubject: x\r\n\r\nLibertad.\r\n"),
		[]byte("From: bo@ed.test\r\nMessage-ID: <b2@ed.test>\r\nSubject: y\r\n\r\nJosé dice: libertad.\r\n"),
		// Carried base64-encoded: a line over 998 octets.
		[]byte("From: Ñandú <cy@ed.test>\r\nMessage-ID: <c3@ed.test>\r\nSubject: z\r\n\r\n" + strings.Repeat("libertad ", 200) + "\r\n"),
	}
	for i, raw := range raws {
		spec.Letters = append(spec.Letters, batch.Letter{ID: "L" + string(rune('1'+i)), Received: spec.Date,
			Address: []string{"ana@ed.test", "bo@ed.test", "cy@ed.test"}[i], DKIMDomain: "ed.test", Raw: raw})
	}
	spec.Letters[1].Verified, spec.Letters[1].DKIMDomain = batch.VerifiedUnverified, ""
	msg, err := batch.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Read(msg)
	if err != nil {
		t.Fatal(err)
	}
	if b.Parts != 3 || b.Header.Get("Message-Id") != "<batch-3@campaign.test>" {
		t.Errorf("parts %d, Message-ID %q", b.Parts, b.Header.Get("Message-Id"))
	}
	if len(b.CSV) != 4 || len(b.Letters) != 3 {
		t.Fatalf("CSV rows %d, letters %d", len(b.CSV), len(b.Letters))
	}
	for i, l := range b.Letters {
		if !bytes.Equal(l.Raw, raws[i]) {
			t.Errorf("letter %d not byte-identical", i)
		}
		if id, _ := l.MessageID(); id != []string{"a1@ed.test", "b2@ed.test", "c3@ed.test"}[i] {
			t.Errorf("letter %d Message-ID %q", i, id)
		}
	}
	if got := b.Letters[2].Header.Get("Content-Transfer-Encoding"); got != "base64" {
		t.Errorf("long-line letter carried as %q", got)
	}
	if !b.CSVBOM || b.CSVName != "lote-3.csv" {
		t.Errorf("CSV BOM %v, name %q", b.CSVBOM, b.CSVName)
	}
	rows, err := b.Rows()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || !rows[0].Received.Equal(spec.Date) || rows[0].Received.Format(time.RFC3339)[19:] != "-04:00" ||
		rows[0].DKIMDomain != "ed.test" || rows[0].Verified != "dkim" || rows[1].Verified != "unverified" || rows[1].DKIMDomain != "" {
		t.Errorf("rows %+v", rows)
	}
	quoted := b.QuotedTexts()
	if len(quoted) != 3 || quoted[0] != "Libertad." || quoted[1] != "José dice: libertad." {
		t.Errorf("quoted texts %q", quoted)
	}
	for _, line := range b.Unquoted() {
		if strings.Contains(line, "José dice") {
			t.Errorf("a letter's words outside its quote: %q", line)
		}
	}
	if !strings.Contains(strings.Join(b.Unquoted(), "\n"), "Lote 3: 3 cartas") {
		t.Errorf("summary not read:\n%s", b.Summary)
	}
	b.CSV[0][5] = "verificada"
	if _, err := b.Rows(); err == nil {
		t.Error("a CSV with another header read")
	}
	if _, err := Read([]byte("Subject: not a batch\r\n\r\nhi\r\n")); err == nil {
		t.Error("a plain message read as a batch")
	}
}
