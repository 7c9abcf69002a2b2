// The parts of a batch that organisers read: the summary and the CSV list.
// Every field that comes from a letter or the configuration is printed
// through oneline.Clean (one line, no control or bidi characters), and every
// CSV cell that a spreadsheet could run as a formula through csvSafe.

package batch

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"strings"
	"time"

	"github.com/petitiond/petitiond/crlf"
	"github.com/petitiond/petitiond/oneline"
)

// unverifiedLabel stands where a DKIM domain would be for a letter that had
// no aligned passing signature (verify.unverified = "relay").
const unverifiedLabel = "UNVERIFIED"

// preparedLetter is a Letter with its fields made safe to print and its
// text extracted.
type preparedLetter struct {
	id, name, address, dkim string
	received                time.Time
	subject                 string
	text                    string // the letter's own text, or a note in parentheses
	raw                     []byte // what goes into the digest
	repaired                bool   // raw had bare CR or LF, normalised to CRLF
	eightBit                bool   // raw has bytes the 7bit label does not allow
}

func prepareLetter(l *Letter) preparedLetter {
	p := preparedLetter{
		id:       oneline.Clean(l.ID),
		name:     oneline.Clean(l.Name),
		address:  oneline.Clean(l.Address),
		dkim:     oneline.Clean(l.DKIMDomain),
		received: l.Received.UTC(),
		raw:      l.Raw,
	}
	// Inbound rejects bare CR and LF (SMTP smuggling), so this is a guard:
	// the batch must stay well-formed MIME and safe to send whatever is in
	// the store, even if the letter's own signature then no longer verifies.
	if crlf.IndexBare(p.raw) >= 0 {
		p.raw = crlf.Normalize(p.raw)
		p.repaired = true
	}
	p.eightBit = needs8bit(p.raw)
	p.subject, p.text = readLetter(p.raw)
	return p
}

// who is "Name <address>", or "<address>" when there is no name.
func (p *preparedLetter) who() string {
	if p.name == "" {
		return "<" + p.address + ">"
	}
	return p.name + " <" + p.address + ">"
}

func (p *preparedLetter) dkimLabel() string {
	if p.dkim == "" {
		return unverifiedLabel
	}
	return p.dkim
}

const rfc3339UTC = "2006-01-02T15:04:05Z"

// summaryText is the first part: the batch's figures, the list of letters,
// then each letter's text (LF line breaks; qpEncode makes them CRLF).
func summaryText(s Spec, letters []preparedLetter) string {
	var b strings.Builder
	size := 1024
	for i := range letters {
		size += 512 + len(letters[i].text) + 2*len(letters[i].name)
	}
	b.Grow(size)
	first, last := letters[0].received, letters[0].received
	for i := range letters {
		if t := letters[i].received; t.Before(first) {
			first = t
		} else if t.After(last) {
			last = t
		}
	}
	name := oneline.Clean(s.CampaignName)
	fmt.Fprintf(&b, "%s: batch %d\n\n", name, s.Number)
	fmt.Fprintf(&b, "Letters in this batch: %d\n", len(letters))
	fmt.Fprintf(&b, "Running total:         %d\n", s.RunningTotal)
	fmt.Fprintf(&b, "Received:              %s .. %s (UTC)\n\n", first.Format(rfc3339UTC), last.Format(rfc3339UTC))
	b.WriteString("received              sender, DKIM domain, letter ID\n")
	for i := range letters {
		p := &letters[i]
		fmt.Fprintf(&b, "%s  %s  %s  %s\n", p.received.Format(rfc3339UTC), p.who(), p.dkimLabel(), p.id)
	}
	fmt.Fprintf(&b, "\nThe list is attached as batch-%d.csv, and every letter as it was\n", s.Number)
	b.WriteString("received (with its own DKIM signature) in the attached digest.\n")

	for i := range letters {
		p := &letters[i]
		b.WriteString("\n\n" + strings.Repeat("_", 72) + "\n")
		fmt.Fprintf(&b, "Letter %d of %d: %s\n", i+1, len(letters), p.id)
		fmt.Fprintf(&b, "From:     %s\n", p.who())
		fmt.Fprintf(&b, "Received: %s\n", p.received.Format(rfc3339UTC))
		fmt.Fprintf(&b, "DKIM:     %s\n", p.dkimLabel())
		if p.subject != "" {
			fmt.Fprintf(&b, "Subject:  %s\n", p.subject)
		}
		if p.repaired {
			b.WriteString("(its line endings had to be repaired, so its own DKIM signature may not verify)\n")
		}
		b.WriteString("\n")
		b.WriteString(p.text)
		b.WriteString("\n")
	}
	return b.String()
}

// csvAttachment is the list of letters as CSV (RFC 4180), quoted-printable.
func csvAttachment(letters []preparedLetter) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.UseCRLF = true // RFC 4180
	if err := w.Write([]string{"received", "name", "address", "dkim_domain", "letter_id"}); err != nil {
		return nil, err
	}
	for i := range letters {
		p := &letters[i]
		err := w.Write([]string{p.received.Format(rfc3339UTC), csvSafe(p.name), csvSafe(p.address), p.dkim, p.id})
		if err != nil {
			return nil, err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, err
	}
	return qpEncode(buf.String())
}

// csvSafe keeps a spreadsheet from running a supporter's name as a formula
// (CSV injection): organisers open this file in one. A leading apostrophe is
// the usual neutraliser and spreadsheets do not display it.
func csvSafe(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}
