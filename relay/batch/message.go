// Package batch builds the message that carries a batch of letters to the
// campaign's recipients (SPEC section 7) and DKIM-signs it.
package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	// Registers the common charsets (latin-1, windows-1252, ...) with
	// go-message, so letters in them are decoded to UTF-8.
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/html"
	"golang.org/x/net/idna"

	"github.com/petitiond/petitiond/crlf"
	"github.com/petitiond/petitiond/oneline"
)

// Letter is one counted letter as it goes into a batch.
type Letter struct {
	ID         string // e.g. "L0000001A"
	Received   time.Time
	Name       string // sender display name, decoded; may contain anything: it is data
	Address    string // sender address
	DKIMDomain string // d= of the passing signature; "" means unverified
	Raw        []byte // the original message, CRLF line endings, exactly as received
}

// Spec is everything a batch message is built from. The same Spec always
// gives the same bytes, so a rebuilt batch is the batch that was recorded.
type Spec struct {
	Number       uint64
	CampaignName string    // may be non-ASCII
	From         string    // campaign.from
	Recipients   []string  // the first is To:, the others Cc:
	MessageID    string    // "<...@...>", chosen when the batch closed; the same on every retry
	Date         time.Time // when the batch closed
	RunningTotal uint64    // letters counted so far, this batch included
	Letters      []Letter  // in received order
}

// unverifiedLabel stands where a DKIM domain would be for a letter that had
// no aligned passing signature (verify.unverified = "relay").
const unverifiedLabel = "UNVERIFIED"

// NewMessageID returns the Message-ID of batch number, "<batch-N.UNIXNANO@domain>".
// It is made once, when the batch closes, and stored, so that every retry and
// both recipients see the same ID.
func NewMessageID(number uint64, fromAddress string, created time.Time) string {
	return fmt.Sprintf("<batch-%d.%d@%s>", number, created.UnixNano(), messageIDDomain(fromAddress))
}

// messageIDDomain is the domain of the campaign's From address in the ASCII
// form a msg-id needs; "localhost" when there is none to be had, because a
// Message-ID must still be produced.
func messageIDDomain(from string) string {
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return "localhost"
	}
	addr := a.Address
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "localhost"
	}
	domain, err := idna.Lookup.ToASCII(strings.ToLower(strings.TrimSuffix(addr[at+1:], ".")))
	if err != nil || domain == "" || !isDotAtom(domain) {
		return "localhost"
	}
	return domain
}

// isDotAtom reports whether s may stand as a msg-id's right-hand side.
func isDotAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>[]:;@\,"`, c) >= 0 {
			return false
		}
	}
	return true
}

// Build returns the batch message for s, CRLF line endings throughout. It is
// deterministic: its MIME boundaries are derived from a hash of the content
// (and checked not to occur in it) rather than drawn at random, so the
// message can be rebuilt byte for byte, e.g. for "batches export".
//
// Build fails only for a Spec that cannot make a message (no letters, a bad
// From, recipient or Message-ID); a letter it cannot read is still batched,
// with a note in the summary.
func Build(s Spec) ([]byte, error) {
	if err := validate(s); err != nil {
		return nil, err
	}

	letters := make([]preparedLetter, len(s.Letters))
	eightBit := false
	for i := range s.Letters {
		letters[i] = prepareLetter(&s.Letters[i])
		eightBit = eightBit || letters[i].eightBit
	}

	summary, err := qpEncode(summaryText(s, letters))
	if err != nil {
		return nil, fmt.Errorf("batch %d: summary: %w", s.Number, err)
	}
	csvBody, err := csvAttachment(letters)
	if err != nil {
		return nil, fmt.Errorf("batch %d: csv: %w", s.Number, err)
	}
	digest, digestSeed, digestBoundary, err := digestBody(letters)
	if err != nil {
		return nil, fmt.Errorf("batch %d: digest: %w", s.Number, err)
	}

	// The parts' headers, in the order they are written (see addFields).
	var summaryHdr, csvHdr, digestHdr textproto.Header
	addFields(&summaryHdr,
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: quoted-printable",
		"Content-Disposition: inline")
	addFields(&csvHdr,
		"Content-Type: text/csv; charset=utf-8",
		"Content-Transfer-Encoding: quoted-printable",
		fmt.Sprintf(`Content-Disposition: attachment; filename="batch-%d.csv"`, s.Number))
	digestFields := []string{
		`Content-Type: multipart/digest; boundary="` + digestBoundary + `"`,
		fmt.Sprintf("Content-Description: the %d letters as received", len(letters)),
	}
	if eightBit {
		// A multipart is labelled with the widest encoding found inside it.
		digestFields = append(digestFields, "Content-Transfer-Encoding: 8bit")
	}
	addFields(&digestHdr, digestFields...)

	var headerBytes bytes.Buffer
	for _, h := range []textproto.Header{summaryHdr, csvHdr, digestHdr} {
		if err := textproto.WriteHeader(&headerBytes, h); err != nil {
			return nil, fmt.Errorf("batch %d: part header: %w", s.Number, err)
		}
	}
	// The digest is determined by its seed, so hashing the seed rather
	// than the digest again still makes the boundary follow the content.
	mixedSeed := contentHash(headerBytes.Bytes(), summary, csvBody, digestSeed)
	mixedBoundary := pickBoundary("=_petitiond-mixed-", mixedSeed, headerBytes.Bytes(), summary, csvBody, digest)

	var top message.Header
	if eightBit {
		top.Add("Content-Transfer-Encoding", "8bit")
	}
	top.AddRaw([]byte(`Content-Type: multipart/mixed; boundary="` + mixedBoundary + "\"\r\n"))
	top.AddRaw([]byte("MIME-Version: 1.0\r\n"))
	// Fields added last are written first: this puts From at the top.
	topOrdered(&top, s)

	out := bytes.NewBuffer(make([]byte, 0, len(summary)+len(csvBody)+len(digest)+4096))
	if err := textproto.WriteHeader(out, top.Header); err != nil {
		return nil, fmt.Errorf("batch %d: header: %w", s.Number, err)
	}
	mw := textproto.NewMultipartWriter(out)
	if err := mw.SetBoundary(mixedBoundary); err != nil {
		return nil, fmt.Errorf("batch %d: %w", s.Number, err)
	}
	for _, p := range []struct {
		h    textproto.Header
		body []byte
	}{{summaryHdr, summary}, {csvHdr, csvBody}, {digestHdr, digest}} {
		// textproto's part writer copies bytes as they are: unlike
		// message.Writer it applies no transfer encoding or line wrapping.
		w, err := mw.CreatePart(p.h)
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", s.Number, err)
		}
		if _, err := w.Write(p.body); err != nil {
			return nil, fmt.Errorf("batch %d: %w", s.Number, err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("batch %d: %w", s.Number, err)
	}
	return out.Bytes(), nil
}

// validate checks what Build cannot do without.
func validate(s Spec) error {
	if len(s.Letters) == 0 {
		return fmt.Errorf("batch %d: no letters", s.Number)
	}
	if s.Date.IsZero() {
		return fmt.Errorf("batch %d: no date", s.Number)
	}
	if _, err := parseAddress(s.From); err != nil {
		return fmt.Errorf("batch %d: from %q: %w", s.Number, s.From, err)
	}
	if len(s.Recipients) == 0 {
		return fmt.Errorf("batch %d: no recipients", s.Number)
	}
	for _, r := range s.Recipients {
		if _, err := parseAddress(r); err != nil {
			return fmt.Errorf("batch %d: recipient %q: %w", s.Number, r, err)
		}
	}
	if err := checkMessageID(s.MessageID); err != nil {
		return fmt.Errorf("batch %d: message-id %q: %w", s.Number, s.MessageID, err)
	}
	return nil
}

// topOrdered adds From, To, Cc, Subject, Date and Message-ID so that they are
// written in that order above the MIME fields. Values were checked by
// validate.
func topOrdered(h *message.Header, s Spec) {
	mh := mail.Header{Header: *h}
	mh.AddRaw([]byte("Message-ID: " + s.MessageID + "\r\n"))
	// In UTC, so that a Spec rebuilt from a stored time (same instant,
	// another Location) gives the same bytes.
	mh.Add("Date", s.Date.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	// The campaign name is cleaned first so the subject stays one line.
	subject := fmt.Sprintf("[%s] batch %d: %d letters", oneline.Clean(s.CampaignName), s.Number, len(s.Letters))
	if encoded := mime.QEncoding.Encode("utf-8", subject); encoded != subject {
		// RFC 2047 encoded-words hold no spaces and may be folded between
		// them; go-message's folder only looks for spaces within 76
		// characters, which a 75-character word defeats.
		mh.AddRaw([]byte("Subject: " + strings.ReplaceAll(encoded, " ", "\r\n ") + "\r\n"))
	} else {
		mh.Add("Subject", subject)
	}
	if len(s.Recipients) > 1 {
		mh.Add("Cc", formatAddresses(s.Recipients[1:]))
	}
	mh.Add("To", formatAddresses(s.Recipients[:1]))
	mh.Add("From", formatAddresses([]string{s.From}))
	*h = mh.Header
}

func parseAddress(s string) (*netmail.Address, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("contains a line break")
	}
	return netmail.ParseAddress(s)
}

// formatAddresses formats checked addresses the way go-message would, keeping
// a display name if the configuration gave one.
func formatAddresses(list []string) string {
	addrs := make([]*mail.Address, 0, len(list))
	for _, s := range list {
		a, _ := parseAddress(s)
		addrs = append(addrs, a)
	}
	var h mail.Header
	h.SetAddressList("X", addrs)
	return h.Get("X")
}

func checkMessageID(id string) error {
	if len(id) < 5 || id[0] != '<' || id[len(id)-1] != '>' || !strings.Contains(id, "@") {
		return errors.New(`want "<left@right>"`)
	}
	if !isDotAtom(strings.ReplaceAll(id[1:len(id)-1], "@", ".")) || strings.Count(id, "@") != 1 {
		return errors.New("invalid characters")
	}
	return nil
}

// addFields adds literal "Key: value" fields so that they are written in
// the order given (textproto writes the last added field first).
func addFields(h *textproto.Header, fields ...string) {
	for i := len(fields) - 1; i >= 0; i-- {
		h.AddRaw([]byte(fields[i] + "\r\n"))
	}
}

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

// qpEncode encodes text (LF line breaks) as quoted-printable with CRLF line
// breaks. Quoted-printable output never contains "=_", which is why the
// boundaries start with it.
func qpEncode(text string) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(text) + len(text)/8)
	w := quotedprintable.NewWriter(&buf)
	if _, err := w.Write([]byte(text)); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

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

// digestBody writes the multipart/digest body (without its header) and
// returns it with the seed of its boundary and the boundary. Each letter is written as it is: go-message's
// message.Writer would wrap 7bit/8bit lines at 998 bytes, which changes the
// bytes and breaks the letter's signature.
func digestBody(letters []preparedLetter) ([]byte, []byte, string, error) {
	raws := make([][]byte, len(letters))
	size := 0
	for i := range letters {
		raws[i] = letters[i].raw
		size += len(raws[i]) + 128
	}
	seed := contentHash(raws...)
	boundary := pickBoundary("=_petitiond-digest-", seed, raws...)
	var buf bytes.Buffer
	buf.Grow(size)
	mw := textproto.NewMultipartWriter(&buf)
	if err := mw.SetBoundary(boundary); err != nil {
		return nil, nil, "", err
	}
	for i := range letters {
		cte := "7bit"
		if letters[i].eightBit {
			cte = "8bit"
		}
		var h textproto.Header
		// message/rfc822 is the default in a digest; it is written anyway
		// for readers that do not know the default.
		addFields(&h, "Content-Type: message/rfc822", "Content-Transfer-Encoding: "+cte)
		w, err := mw.CreatePart(h)
		if err != nil {
			return nil, nil, "", err
		}
		if _, err := w.Write(letters[i].raw); err != nil {
			return nil, nil, "", err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, nil, "", err
	}
	return buf.Bytes(), seed, boundary, nil
}

// contentHash is the seed a boundary is derived from.
func contentHash(pieces ...[]byte) []byte {
	h := sha256.New()
	var n [8]byte
	for _, p := range pieces {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// pickBoundary derives a boundary from seed, rehashing until it occurs in
// none of content. No CR or LF is in a boundary, so it cannot straddle two
// pieces of content either: those are always separated by a line break.
func pickBoundary(prefix string, seed []byte, content ...[]byte) string {
	var n [8]byte
	for i := uint64(0); ; i++ {
		binary.BigEndian.PutUint64(n[:], i)
		sum := sha256.Sum256(append(seed[:len(seed):len(seed)], n[:]...))
		boundary := prefix + hex.EncodeToString(sum[:12])
		b := []byte(boundary)
		found := false
		for _, c := range content {
			if bytes.Contains(c, b) {
				found = true
				break
			}
		}
		if !found {
			return boundary
		}
	}
}

// needs8bit reports whether raw may not be labelled 7bit (RFC 2045 2.7):
// a byte over 127, a NUL, or a line over 998 bytes. 8bit is the label we
// can honestly use for all of these without re-encoding (which RFC 2046
// 5.2.1 forbids for message/rfc822); "binary" would need BINARYMIME.
func needs8bit(raw []byte) bool {
	lineLen := 0
	for _, c := range raw {
		switch {
		case c > 127 || c == 0:
			return true
		case c == '\n':
			lineLen = 0
		default:
			lineLen++
			if lineLen > 999 { // 998 plus the CR of the CRLF
				return true
			}
		}
	}
	return false
}

// maxLetterText caps one letter's text in the summary, so that a huge
// letter cannot crowd out the others; the digest keeps the whole letter.
const maxLetterText = 64 << 10

// maxMIMEDepth bounds how deep readLetter follows nested multiparts.
const maxMIMEDepth = 16

// readLetter returns a letter's decoded Subject and the text to show for it:
// its first inline text/plain part decoded to UTF-8, else its HTML with the
// tags removed, else a note in parentheses. It never fails: one bad letter
// must not stop a batch.
func readLetter(raw []byte) (subject, text string) {
	defer func() {
		// A safety net around a third-party parser fed hostile input: a
		// parser bug costs this letter its text, not the whole batch.
		if r := recover(); r != nil {
			text = "(could not be read: the MIME parser failed)"
		}
	}()
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return "", couldNotRead(err)
	}
	// On a decoding error Subject still returns the raw value, which is
	// better than nothing once cleaned.
	s, _ := (&mail.Header{Header: e.Header}).Subject()
	subject = oneline.Clean(s)

	var f textFinder
	f.walk(e, err, "text/plain", 0)
	switch {
	case f.plainFound:
		text = f.plain
	case f.htmlFound:
		text = "(this letter has no plain text part; its HTML is shown with the tags removed)\n\n" + f.html
	case f.err != nil:
		return subject, couldNotRead(f.err)
	default:
		return subject, "(no plain text part)"
	}
	if strings.TrimSpace(text) == "" {
		text = "(empty)"
	}
	if f.note != "" {
		text += "\n\n" + f.note
	}
	return subject, text
}

func couldNotRead(err error) string {
	return "(could not be read: " + oneline.Clean(err.Error()) + ")"
}

// textFinder walks a letter's MIME tree looking for its text.
type textFinder struct {
	plain, html           string
	plainFound, htmlFound bool
	note                  string // about the text found (charset, truncation, decoding)
	err                   error  // the first structural error met
}

// walk visits e and its children in order and reports whether the search
// is over. entityErr is the error go-message gave when it made e (unknown
// charset or transfer encoding); defaultType is what e is without a
// Content-Type (RFC 2046 5.1.5: message/rfc822 inside a digest).
func (f *textFinder) walk(e *message.Entity, entityErr error, defaultType string, depth int) bool {
	if depth > maxMIMEDepth {
		f.setErr(errors.New("MIME parts nested too deeply"))
		return true
	}
	mediaType := defaultType
	if v := e.Header.Get("Content-Type"); v != "" {
		// mime.ParseMediaType still gives the type when only a parameter
		// is bad; a field that cannot be parsed at all means text/plain
		// (RFC 2045 5.2).
		t, _, err := mime.ParseMediaType(v)
		if err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter) {
			t = "text/plain"
		}
		mediaType = t
	}
	if mr := e.MultipartReader(); mr != nil {
		childDefault := "text/plain"
		if mediaType == "multipart/digest" {
			childDefault = "message/rfc822"
		}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return false
			}
			if err != nil && (part == nil || !(message.IsUnknownCharset(err) || message.IsUnknownEncoding(err))) {
				f.setErr(err)
				return true
			}
			if f.walk(part, err, childDefault, depth+1) {
				return true
			}
		}
	}
	if disp, _, _ := e.Header.ContentDisposition(); strings.EqualFold(disp, "attachment") {
		return false
	}
	switch mediaType {
	case "text/plain":
		body, note := readBody(e, entityErr)
		f.plain, f.plainFound, f.note = cleanText(body), true, note
		return true
	case "text/html":
		if !f.htmlFound {
			body, note := readBody(e, entityErr)
			f.html, f.htmlFound = cleanText(htmlToText(body)), true
			if f.note == "" {
				f.note = note
			}
		}
	}
	return false
}

func (f *textFinder) setErr(err error) {
	if f.err == nil {
		f.err = err
	}
}

// readBody reads up to maxLetterText decoded bytes of e's body, with a note
// on anything the reader should know about how it was decoded.
func readBody(e *message.Entity, entityErr error) (string, string) {
	var notes []string
	switch {
	case message.IsUnknownEncoding(entityErr):
		notes = append(notes, "(its transfer encoding is unknown here; shown as received)")
	case message.IsUnknownCharset(entityErr):
		notes = append(notes, "(its charset is unknown here; shown as received)")
	}
	body, err := io.ReadAll(io.LimitReader(e.Body, maxLetterText+1))
	if err != nil {
		notes = append(notes, "(the rest could not be decoded: "+oneline.Clean(err.Error())+")")
	}
	if len(body) > maxLetterText {
		body = body[:maxLetterText]
		// Do not cut a character in half.
		for i := 0; i < utf8.UTFMax && len(body) > 0; i++ {
			if r, size := utf8.DecodeLastRune(body); r != utf8.RuneError || size != 1 {
				break
			}
			body = body[:len(body)-1]
		}
		notes = append(notes, "(cut here; the whole letter is in the attached digest)")
	}
	return string(body), strings.Join(notes, "\n")
}

// cleanText makes a letter's text safe to show: valid UTF-8, LF line
// breaks, no control characters but tabs, no leading or trailing blank
// lines. It is one pass over the bytes because every letter's text goes
// through it.
func cleanText(s string) string {
	buf := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\r':
				buf = append(buf, '\n')
				if i+1 < len(s) && s[i+1] == '\n' {
					i++
				}
			case c == '\n' || c == '\t' || c >= ' ' && c != 0x7f:
				buf = append(buf, c)
			default:
				buf = append(buf, ' ')
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, "\uFFFD"...)
		case r == '\u2028' || r == '\u2029':
			buf = append(buf, '\n')
		case unicode.IsControl(r):
			buf = append(buf, ' ')
		default:
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return strings.Trim(string(buf), "\n")
}

// htmlToText strips tags crudely: text outside script, style and head, with
// a line break at each block element. It is only for letters that came
// without a plain text part.
func htmlToText(src string) string {
	z := html.NewTokenizer(strings.NewReader(src))
	var b strings.Builder
	hidden := 0
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return collapseBlankLines(b.String())
		case html.TextToken:
			if hidden == 0 {
				b.WriteString(strings.Join(strings.Fields(string(z.Text())), " "))
				if t := z.Raw(); len(t) > 0 && unicode.IsSpace(rune(t[len(t)-1])) {
					b.WriteByte(' ')
				}
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			switch string(name) {
			case "script", "style", "head", "title":
				if tt == html.StartTagToken {
					hidden++
				} else if tt == html.EndTagToken && hidden > 0 {
					hidden--
				}
			case "br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table":
				b.WriteByte('\n')
			}
		}
	}
}

func collapseBlankLines(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	blank := 0
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
