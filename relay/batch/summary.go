// The parts of a batch that organisers read: the summary and the CSV list.
// Their words come from the campaign language's catalogue (relay/catalog);
// this file gives it the facts. Every field that comes from a letter or the
// configuration is printed through oneline.Clean (one line, no control or
// bidi characters); each letter's own text is quoted line by line, so no
// letter can pass its words off as the summary's; every CSV cell is made
// safe from spreadsheets' formulas by csvSafe.

package batch

import (
	"bytes"
	"encoding/csv"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/petitiond/petitiond/crlf"
	"github.com/petitiond/petitiond/oneline"
	"github.com/petitiond/petitiond/relay/catalog"
)

// The verdict words of SPEC 5: how a letter verified. They are the values
// of Letter.Verified and of the CSV's verified column, in every language.
const (
	VerifiedDKIM       = "dkim"
	VerifiedSPF        = "spf"
	VerifiedConfirmed  = "confirmed"
	VerifiedAdmin      = "admin"
	VerifiedUnverified = "unverified"
)

// QuoteMark starts every line of a letter's own text in the summary ("|"
// alone on an empty line, "| " before text), and nothing else there: so a
// letter that writes "Letter 2 of 6 … DKIM: gmail.com" shows it as its own
// words, never as a line of the summary.
const QuoteMark = "|"

// CSVHeader is the first row of the CSV list, the same in every language.
var CSVHeader = []string{"received", "name", "address", "dkim_domain", "letter_id", "verified"}

// preparedLetter is a Letter with its fields made safe to print and its
// text extracted.
type preparedLetter struct {
	id, name, address string
	verified          string // a verdict word, never ""
	domain            string // of the DKIM signature or the SPF check, "" for other verdicts
	received          time.Time
	text              letterText
	raw               []byte // what goes into the digest, as the letter was received
	repaired          bool   // raw had bare CR or LF, normalised to CRLF
	carry             carriage
}

func prepareLetter(l *Letter) preparedLetter {
	p := prepareFields(l)
	p.raw = l.Raw
	// Inbound rejects bare CR and LF (SMTP smuggling), so this is a guard:
	// the batch must stay well-formed MIME and safe to send whatever is in
	// the store, even if the letter's own signature then no longer verifies.
	if crlf.IndexBare(p.raw) >= 0 {
		p.raw = crlf.Normalize(p.raw)
		p.repaired = true
	}
	p.carry = carriageOf(p.raw)
	p.text = readLetter(p.raw)
	return p
}

// prepareFields is a letter's fields made safe to print, without its
// text: what a CSV row needs.
func prepareFields(l *Letter) preparedLetter {
	p := preparedLetter{
		id:       oneline.Clean(l.ID),
		name:     oneline.Clean(l.Name),
		address:  oneline.Clean(l.Address),
		received: l.Received,
	}
	p.verified, p.domain = verdictOf(l)
	p.domain = oneline.Clean(p.domain)
	return p
}

// verdictOf is the letter's verdict word and the domain that goes with it.
// A Letter without Verified is read the way Letters were before verdicts
// had kinds: DKIM when it names a DKIM domain, else unverified. A word
// petitiond does not know claims nothing: unverified.
func verdictOf(l *Letter) (string, string) {
	switch l.Verified {
	case "":
		if l.DKIMDomain != "" {
			return VerifiedDKIM, l.DKIMDomain
		}
		return VerifiedUnverified, ""
	case VerifiedDKIM:
		return VerifiedDKIM, l.DKIMDomain
	case VerifiedSPF:
		return VerifiedSPF, l.SPFDomain
	case VerifiedConfirmed, VerifiedAdmin:
		return l.Verified, ""
	}
	return VerifiedUnverified, ""
}

// proven reports whether the sender proved the address (SPEC 5): an
// admin's release counts a letter but proves nothing.
func (p *preparedLetter) proven() bool {
	switch p.verified {
	case VerifiedDKIM, VerifiedSPF, VerifiedConfirmed:
		return true
	}
	return false
}

// who is "Name <address>", or the address alone, on one line with no run
// of spaces that could push words onto a line of their own.
func (p *preparedLetter) who() string {
	if p.name == "" {
		return collapseBlanks(p.address, 1)
	}
	return collapseBlanks(p.name, 1) + " <" + collapseBlanks(p.address, 1) + ">"
}

// batchData is the facts the catalogue's batch messages are made from.
func batchData(s Spec, letters []preparedLetter) catalog.Batch {
	d := catalog.Batch{
		Campaign:     oneline.Clean(s.CampaignName),
		Number:       s.Number,
		Count:        len(letters),
		RunningTotal: s.RunningTotal,
		First:        letters[0].received,
		Last:         letters[0].received,
		QuoteMark:    QuoteMark,
		Letters:      make([]catalog.BatchLetter, len(letters)),
		BatchCount:   len(letters),
	}
	first := 0
	if p := s.Part; p != nil {
		d.Part, d.Parts, d.BatchCount, first = p.N, p.Of, p.BatchLetters, p.First
		d.FirstN, d.LastN = first+1, first+len(letters)
	}
	for i := range letters {
		p := &letters[i]
		if t := p.received; t.Before(d.First) {
			d.First = t
		} else if t.After(d.Last) {
			d.Last = t
		}
		if p.proven() {
			d.Verified++
		}
		bl := catalog.BatchLetter{
			N: first + i + 1, ID: p.id, Who: p.who(), Received: p.received,
			Verdict: catalog.Verdict{Kind: p.verified, Domain: p.domain},
			Subject: collapseBlanks(p.text.subject, 1),
			Quoted:  quote(p.text.text),
			After:   p.text.after,
		}
		if p.repaired {
			bl.Before = append(bl.Before, catalog.Note{Kind: "repaired"})
		}
		bl.Before = append(bl.Before, p.text.before...)
		d.Letters[i] = bl
	}
	return d
}

// summarySize is about how long the summary of d is, so that it is
// written into a buffer grown once.
func summarySize(d *catalog.Batch) int {
	n := 2048
	for i := range d.Letters {
		l := &d.Letters[i]
		n += 400 + len(l.Quoted) + 2*len(l.Who) + len(l.Subject)
	}
	return n
}

// quote prefixes every line of a letter's text with QuoteMark. Runs of
// blanks are cut to four spaces, enough for an indented line, too few to
// push a line of the letter's own across a phone's screen so that its next
// words seem to start a line of the summary.
func quote(text string) string {
	if text == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(text) + 2*strings.Count(text, "\n") + 2)
	for i, line := range strings.SplitAfter(text, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		line = strings.TrimRightFunc(collapseBlanks(strings.TrimSuffix(line, "\n"), 4), unicode.IsSpace)
		b.WriteString(QuoteMark)
		if line != "" {
			b.WriteByte(' ')
			b.WriteString(line)
		}
	}
	return b.String()
}

// collapseBlanks replaces every run of blank characters in s (spaces, tabs,
// the wide Unicode spaces, and the fillers that print as nothing but take
// room) with at most max ASCII spaces.
func collapseBlanks(s string, max int) string {
	if !needsCollapse(s, max) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	run := 0
	for _, r := range s {
		if isBlank(r) {
			if run < max {
				b.WriteByte(' ')
			}
			run++
			continue
		}
		run = 0
		b.WriteRune(r)
	}
	return b.String()
}

// needsCollapse reports whether collapseBlanks would change s: most text
// has single ASCII spaces only, and is returned without a copy.
func needsCollapse(s string, max int) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
			if run++; run > max {
				return true
			}
		case c < ' ' && c != '\n':
			return true // a tab
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRuneInString(s[i:])
			if isBlank(r) {
				return true
			}
			i += size - 1
			run = 0
		default:
			run = 0
		}
	}
	return false
}

func isBlank(r rune) bool {
	switch r {
	case '\u115f', '\u1160', '\u2800', '\u3164', '\uffa0': // Hangul and Braille blanks
		return true
	}
	return r != '\n' && unicode.IsSpace(r)
}

// utf8BOM starts the CSV: without it, spreadsheets read UTF-8 as their
// local 8-bit charset ("MarÃ­a").
const utf8BOM = "\ufeff"

// csvList is the list of letters as CSV (RFC 4180) with a byte order mark,
// written into buf; times are RFC 3339 in loc.
func csvList(buf *bytes.Buffer, letters []preparedLetter, loc *time.Location) ([]byte, error) {
	buf.Grow(len(utf8BOM) + 64 + 128*len(letters))
	cw := NewCSVWriter(buf, loc)
	for i := range letters {
		if err := cw.row(&letters[i]); err != nil {
			return nil, err
		}
	}
	if err := cw.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CSVWriter writes letters in the format of a batch's CSV list (SPEC 7):
// a byte order mark and CSVHeader first, then one row a letter, every cell
// safe from spreadsheets' formulas, times RFC 3339 in the campaign's zone.
// The batch message and the organisers' /signers.csv both use it.
type CSVWriter struct {
	w       *csv.Writer
	out     io.Writer
	loc     *time.Location
	started bool
}

// NewCSVWriter writes to w, with times in loc (nil means UTC).
func NewCSVWriter(w io.Writer, loc *time.Location) *CSVWriter {
	if loc == nil {
		loc = time.UTC
	}
	cw := &CSVWriter{w: csv.NewWriter(w), out: w, loc: loc}
	cw.w.UseCRLF = true // RFC 4180
	return cw
}

// Write adds l's row; only its fields are read, never its text.
func (c *CSVWriter) Write(l *Letter) error {
	p := prepareFields(l)
	return c.row(&p)
}

// Flush writes the header even when no row was written, and whatever is
// buffered; it returns the first error of any write.
func (c *CSVWriter) Flush() error {
	if err := c.start(); err != nil {
		return err
	}
	c.w.Flush()
	return c.w.Error()
}

func (c *CSVWriter) start() error {
	if c.started {
		return nil
	}
	c.started = true
	if _, err := io.WriteString(c.out, utf8BOM); err != nil {
		return err
	}
	return c.w.Write(CSVHeader)
}

func (c *CSVWriter) row(p *preparedLetter) error {
	if err := c.start(); err != nil {
		return err
	}
	dkim := ""
	if p.verified == VerifiedDKIM {
		dkim = p.domain
	}
	row := []string{p.received.In(c.loc).Format(time.RFC3339), p.name, p.address, dkim, p.id, p.verified}
	for j := range row {
		row[j] = csvSafe(row[j])
	}
	return c.w.Write(row)
}

// csvSafe keeps a spreadsheet from running a cell as a formula (CSV
// injection): organisers open this file in one, which may split lines at
// ',' (as the file is written), at ';' (Excel with Chilean regional
// settings) or at tabs. So wherever a cell can begin, at the start of the
// field and right after each of those characters inside it, a value whose
// next visible character starts a formula gets an apostrophe in front:
// "Pepa;=1+1;" becomes "Pepa;'=1+1;". Spreadsheets show the apostrophe as
// text, never as a formula, whether or not they trim spaces or honour
// quotes. The alternative, replacing separators inside values, would change
// names and addresses that are merely unusual; an apostrophe only shows up
// in values built to attack.
func csvSafe(s string) string {
	var b strings.Builder
	copied := 0 // s[:copied] is in b
	cell := 0   // where the cell a spreadsheet may see begins
	for i := 0; i <= len(s); i++ {
		if i < len(s) && !isCellSeparator(s[i]) {
			continue
		}
		if startsFormula(s[cell:i]) {
			b.WriteString(s[copied:cell])
			b.WriteByte('\'')
			copied = cell
		}
		cell = i + 1
	}
	if b.Len() == 0 {
		return s
	}
	b.WriteString(s[copied:])
	return b.String()
}

// isCellSeparator reports whether a spreadsheet may start a new cell after c.
func isCellSeparator(c byte) bool {
	return c == ',' || c == ';' || c == '\t' || c == '\r' || c == '\n'
}

// startsFormula reports whether a cell holding s would be read as a formula
// by some spreadsheet: its first character after spaces and quotes (which
// an importer may strip) is one that starts a formula in Excel or
// LibreOffice, in its ASCII or full-width form.
func startsFormula(s string) bool {
	for _, r := range s {
		switch r {
		case '=', '+', '-', '@', '\uff1d', '\uff0b', '\uff0d', '\uff20':
			return true
		case '"':
			continue
		}
		if !unicode.IsSpace(r) {
			return false
		}
	}
	return false
}
