package batchmime

import (
	"bytes"
	"testing"
	"time"

	"github.com/petitiond/petitiond/relay/batch"
)

func TestReadBack(t *testing.T) {
	spec := batch.Spec{Number: 3, CampaignName: "Libertad", From: "relay@campaign.test",
		Recipients: []string{"familias@ofapp.test", "copias@sr.test"}, MessageID: "<batch-3@campaign.test>",
		Date: time.Unix(1795776000, 0), RunningTotal: 7}
	raws := [][]byte{
		[]byte("From: Ana <ana@ed.test>\r\nMessage-ID: <a1@ed.test>\r\nSubject: x\r\n\r\nLibertad.\r\n"),
		[]byte("From: bo@ed.test\r\nMessage-ID: <b2@ed.test>\r\nSubject: y\r\n\r\nJosé dice: libertad.\r\n"),
	}
	for i, raw := range raws {
		spec.Letters = append(spec.Letters, batch.Letter{ID: "L" + string(rune('1'+i)), Received: spec.Date,
			Address: []string{"ana@ed.test", "bo@ed.test"}[i], DKIMDomain: "ed.test", Raw: raw})
	}
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
	if len(b.CSV) != 3 || len(b.Letters) != 2 {
		t.Fatalf("CSV rows %d, letters %d", len(b.CSV), len(b.Letters))
	}
	for i, l := range b.Letters {
		if !bytes.Equal(l.Raw, raws[i]) {
			t.Errorf("letter %d not byte-identical", i)
		}
		if id, _ := l.MessageID(); id != []string{"a1@ed.test", "b2@ed.test"}[i] {
			t.Errorf("letter %d Message-ID %q", i, id)
		}
	}
	if !bytes.Contains([]byte(b.Summary), []byte("José dice")) {
		t.Errorf("summary not decoded: %q", b.Summary)
	}
	if _, err := Read([]byte("Subject: not a batch\r\n\r\nhi\r\n")); err == nil {
		t.Error("a plain message read as a batch")
	}
}
