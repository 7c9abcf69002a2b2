package relay_test

import (
	"bytes"
	"fmt"
	"mime"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/batchmime"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/store"
)

// Issue 9 point 3: a recipient whose server refuses a batch as too big
// gets it in smaller messages (parts), every letter once; the other
// recipient gets the batch whole.

const splitAdminToken = "split-test-admin-token"

// splitEnv is a daemon closing a batch at letters letters, delivering by MX
// to two mail hosts: familias's runs with opt, copias's as any host.
func splitEnv(t *testing.T, letters int, opt sinkserver.Options) (*testenv.Test, *testenv.MailHosts) {
	t.Helper()
	e := testenv.Prepare(t, func(c *config.Config) {
		c.Batch.MaxLetters = letters
		c.Delivery.RetryMin = config.Duration{Duration: 100 * time.Millisecond}
		c.Delivery.RetryMax = config.Duration{Duration: 300 * time.Millisecond}
		c.Admin.Listen = "127.0.0.1:0"
		c.Admin.Token = splitAdminToken
	})
	mh := e.MailHosts()
	old := mh.Sinks[testenv.Familias]
	opt.Addr, opt.Hostname = old.Addr, "mx.ofapp.test"
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	// The address may stay busy for a moment after Close.
	testenv.WaitFor(t, "familias's mail host back", 5*time.Second, func() bool {
		s, err := sinkserver.Start(opt)
		if err == nil {
			mh.Sinks[testenv.Familias] = s
		}
		return err == nil
	})
	e.SignBatches("campaign.test", "batch")
	e.Start()
	return e, mh
}

// sendSized sends one signed letter per size, each with a text of about
// that many bytes, and returns the letters as sent.
func sendSized(t *testing.T, e *testenv.Test, sizes ...int) [][]byte {
	t.Helper()
	var sent [][]byte
	for i, size := range sizes {
		line := fmt.Sprintf("Carta %d: libertad a los presos políticos de la revuelta de octubre.", i)
		var text []string
		for n := 0; n < size; n += len(line) + 2 {
			text = append(text, line)
		}
		raw := e.Sign("ed.test", e.Letter(fmt.Sprintf("Firmante %d <s%d@ed.test>", i, i), "Libertad", strings.Join(text, "\r\n")), keyserver.SignOptions{})
		expectReply(t, fmt.Sprintf("letter %d", i), e.Send(raw), "250 2.0.0")
		sent = append(sent, raw)
	}
	return sent
}

var partSubject = regexp.MustCompile(`^\[Libertad a los presos políticos\] lote 1, parte (\d+) de (\d+): (\d+) cartas?$`)

// receivedParts reads the parts rcpt's host took: each a valid batch
// message of its own, to rcpt alone, with its own Message-ID, "parte N de
// M" in its subject, and each letter numbered by its place among sent (the
// batch's letters); and returns the letters they carry in batch order
// (parts go out side by side, so they may arrive in any order).
func receivedParts(t *testing.T, rcpt string, msgs []sinkserver.Message, batchMessageID string, sent [][]byte) [][]byte {
	t.Helper()
	type part struct {
		n, first int
		letters  [][]byte
	}
	var parts []part
	ids := map[string]bool{batchMessageID: true}
	for i, m := range msgs {
		b, err := batchmime.Read(m.Data)
		if err != nil {
			t.Fatalf("message %d to %s does not parse: %v", i+1, rcpt, err)
		}
		if b.Parts != 3 || len(b.Letters) == 0 {
			t.Fatalf("message %d: %d MIME parts, %d letters", i+1, b.Parts, len(b.Letters))
		}
		subj := decodeSubject(t, b.Header.Get("Subject"))
		sm := partSubject.FindStringSubmatch(subj)
		if sm == nil || sm[3] != strconv.Itoa(len(b.Letters)) {
			t.Fatalf("message %d subject %q for %d letters", i+1, subj, len(b.Letters))
		}
		n, _ := strconv.Atoi(sm[1])
		if to := b.Header.Get("To"); !strings.Contains(to, rcpt) || b.Header.Get("Cc") != "" {
			t.Errorf("part %d To %q Cc %q: want %s alone", n, to, b.Header.Get("Cc"), rcpt)
		}
		if id := b.Header.Get("Message-Id"); id == "" || ids[id] {
			t.Errorf("part %d Message-ID %q is not its own", n, id)
		} else {
			ids[id] = true
		}
		if rows, err := b.Rows(); err != nil || len(rows) != len(b.Letters) {
			t.Errorf("part %d CSV: %d rows, %v; want %d", n, len(rows), err, len(b.Letters))
		}
		p := part{n: n}
		for _, l := range b.Letters {
			p.letters = append(p.letters, l.Raw)
		}
		first := slices.IndexFunc(sent, func(s []byte) bool { return bytes.Equal(s, p.letters[0]) }) + 1
		for _, want := range []string{
			fmt.Sprintf("Este lote tiene %d cartas.", len(sent)),
			fmt.Sprintf("Carta %d de %d · ", first, len(sent)),
		} {
			if !strings.Contains(b.Summary, want) {
				t.Errorf("part %d summary lacks %q:\n%s", n, want, b.Summary)
			}
		}
		p.first = first
		parts = append(parts, p)
	}
	// A part split again is followed by its own parts at the end: order by
	// the first letter.
	slices.SortFunc(parts, func(a, b part) int { return a.first - b.first })
	var letters [][]byte
	for _, p := range parts {
		letters = append(letters, p.letters...)
	}
	return letters
}

func decodeSubject(t *testing.T, s string) string {
	t.Helper()
	dec, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		t.Fatalf("subject %q: %v", s, err)
	}
	return dec
}

// wholeBatch checks that rcpt's host took the batch as one message with
// every letter.
func wholeBatch(t *testing.T, mh *testenv.MailHosts, rcpt string, sent [][]byte) {
	t.Helper()
	msgs := mh.Sinks[rcpt].Messages()
	if len(msgs) != 1 {
		t.Fatalf("%s got %d messages, want the batch whole", rcpt, len(msgs))
	}
	_, _, digest, hdr := digestParts(t, msgs[0].Data)
	if got, _ := hdr.Subject(); got != fmt.Sprintf("[Libertad a los presos políticos] lote 1: %d cartas", len(sent)) {
		t.Errorf("%s: subject %q", rcpt, got)
	}
	if !slices.EqualFunc(digest, sent, bytes.Equal) {
		t.Errorf("%s: the batch does not carry the letters as sent", rcpt)
	}
}

// deliveredInParts sends six letters of 3000 bytes, waits for batch 1 to
// reach both hosts, checks that copias got it whole and familias every
// letter once in parts, and returns the batch and familias's messages.
func deliveredInParts(t *testing.T, e *testenv.Test, mh *testenv.MailHosts) (*store.Batch, []sinkserver.Message) {
	t.Helper()
	sent := sendSized(t, e, 3000, 3000, 3000, 3000, 3000, 3000)
	testenv.WaitFor(t, "batch 1 delivered", 20*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Complete()
	})
	wholeBatch(t, mh, testenv.Copias, sent)
	b, err := e.Store().Batch(1)
	if err != nil {
		t.Fatal(err)
	}
	msgs := mh.Sinks[testenv.Familias].Messages()
	got := receivedParts(t, testenv.Familias, msgs, b.MessageID, sent)
	if !slices.EqualFunc(got, sent, bytes.Equal) {
		t.Errorf("familias's parts carry %d letters; want the %d sent, each once, in order", len(got), len(sent))
	}
	return b, msgs
}

// batchJSON is what `petitiond batches show -json 1` prints.
func batchJSON(t *testing.T, e *testenv.Test) admin.Batch {
	t.Helper()
	c, err := admin.NewClient(e.AdminURL(), splitAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Batch(ctxT(t, 10*time.Second), "1")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSplitForAdvertisedSize: familias's host says SIZE 20000, less than
// the batch: the batch goes there in parts, each within the limit, every
// letter once and in order; copias gets it whole. The store and `batches
// show -json` list the parts.
func TestSplitForAdvertisedSize(t *testing.T) {
	const limit = 20000
	e, mh := splitEnv(t, 6, sinkserver.Options{MaxMessageBytes: limit})
	b, msgs := deliveredInParts(t, e, mh)
	if len(msgs) < 2 {
		t.Fatalf("familias got %d messages, want the batch in parts", len(msgs))
	}
	for i, m := range msgs {
		if len(m.Data) >= limit {
			t.Errorf("part %d is %d bytes, over the host's SIZE %d", i+1, len(m.Data), limit)
		}
	}

	d := b.Recipients[0]
	if d.Address != testenv.Familias || d.State != store.DeliveryDelivered || d.TooBig == nil || d.TooBig.Limit != limit || len(d.Parts) != len(msgs) {
		t.Fatalf("familias's copy = %+v", d)
	}
	if c := b.Recipients[1]; c.State != store.DeliveryDelivered || len(c.Parts) != 0 || c.TooBig != nil {
		t.Errorf("copias's copy = %+v", c)
	}
	j := batchJSON(t, e)
	r := j.Recipients[0]
	if r.State != store.DeliveryDelivered || len(r.Parts) != len(msgs) {
		t.Fatalf("batches show -json, familias: %+v", r)
	}
	var ids []string
	for i, p := range r.Parts {
		if p.N != i+1 || p.Of != len(msgs) || p.State != store.DeliveryDelivered || p.Letters != len(p.LetterIDs) || p.MessageID == "" {
			t.Errorf("part %d in JSON: %+v", i+1, p)
		}
		ids = append(ids, p.LetterIDs...)
	}
	if !slices.Equal(ids, j.LetterIDs) {
		t.Errorf("the parts carry %v, the batch %v", ids, j.LetterIDs)
	}
	if len(j.Recipients[1].Parts) != 0 {
		t.Errorf("copias in JSON has parts: %+v", j.Recipients[1])
	}
	kinds := eventCounts(t, e)
	if kinds[store.EventSplit] != 1 || kinds[store.EventDelivered] != 1+len(msgs) || kinds[store.EventFailed] != 0 {
		t.Errorf("events %v", kinds)
	}
}

// TestSplitAfter552: familias's host names no limit and answers 552 5.3.4
// at the end of the data: the batch is split into halves, and halves
// refused again are split again, until every letter is there once;
// copias gets the batch whole.
func TestSplitAfter552(t *testing.T) {
	for name, refuseOver := range map[string]int64{"halves fit": 32000, "halves split again": 14000} {
		t.Run(name, func(t *testing.T) {
			e, mh := splitEnv(t, 6, sinkserver.Options{RefuseOver: refuseOver})
			b, msgs := deliveredInParts(t, e, mh)
			d := b.Recipients[0]
			split := 0
			for _, p := range d.Parts {
				if p.State == store.DeliverySplit {
					split++
				}
			}
			if d.TooBig == nil || d.TooBig.Limit != 0 || len(d.Parts)-split != len(msgs) || (refuseOver < 20000) != (split > 0) {
				t.Errorf("familias's copy: %d parts, %d split again, %d messages: %+v", len(d.Parts), split, len(msgs), d)
			}
		})
	}
}

// TestLetterTooBigAlone: one letter is too big for familias's host even
// alone: only the part that carries it fails, with an error naming it; the
// other letters reach familias, and copias gets the batch whole.
func TestLetterTooBigAlone(t *testing.T) {
	e, mh := splitEnv(t, 4, sinkserver.Options{MaxMessageBytes: 30000})
	sent := sendSized(t, e, 1000, 40000, 1000, 1000)
	testenv.WaitFor(t, "familias's copy settled", 20*time.Second, func() bool {
		b, err := e.Store().Batch(1)
		return err == nil && b.Recipients[0].State == store.DeliveryFailed && b.Recipients[1].State == store.DeliveryDelivered
	})
	wholeBatch(t, mh, testenv.Copias, sent)
	b, _ := e.Store().Batch(1)
	bigID := b.LetterIDs[1]
	got := receivedParts(t, testenv.Familias, mh.Sinks[testenv.Familias].Messages(), b.MessageID, sent)
	if want := [][]byte{sent[0], sent[2], sent[3]}; !slices.EqualFunc(got, want, bytes.Equal) {
		t.Errorf("familias got %d letters; want every letter but the big one", len(got))
	}
	d := b.Recipients[0]
	failed := 0
	for _, p := range d.Parts {
		if p.State != store.DeliveryFailed {
			continue
		}
		failed++
		if !slices.Equal(p.LetterIDs, []string{bigID}) || p.ErrorKind != store.FailureTooBig ||
			!strings.Contains(p.LastError, "letter "+bigID+" alone") {
			t.Errorf("failed part %+v", p)
		}
	}
	if failed != 1 || d.ErrorKind != store.FailureTooBig || !strings.Contains(d.LastError, "letter "+bigID+" alone") {
		t.Errorf("familias's copy: %d failed parts, %+v", failed, d)
	}
	if kinds := eventCounts(t, e); kinds[store.EventFailed] != 1 {
		t.Errorf("events %v, want one failed (the part)", kinds)
	}
}

func eventCounts(t *testing.T, e *testenv.Test) map[store.EventKind]int {
	t.Helper()
	events, err := e.Store().Events(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[store.EventKind]int{}
	for _, ev := range events {
		kinds[ev.Event]++
	}
	return kinds
}
