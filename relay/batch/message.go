// Package batch closes batches of counted letters and builds the message
// that carries each to the campaign's recipients (SPEC section 7),
// DKIM-signed. This file assembles the MIME message and decides how each
// letter is carried in its digest; summary.go gives the parts organisers
// read their facts (their words come from relay/catalog, in
// campaign.language), with every field made safe to print; lettertext.go
// finds the text of each letter for the summary; sign.go signs.
package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/idna"

	"github.com/petitiond/petitiond/oneline"
	"github.com/petitiond/petitiond/relay/catalog"
)

// Letter is one counted letter as it goes into a batch.
type Letter struct {
	ID       string // e.g. "L0000001A"
	Received time.Time
	Name     string // sender display name, decoded; may contain anything: it is data
	Address  string // sender address
	// Verified is how the letter verified: one of the verdict words
	// VerifiedDKIM ... VerifiedUnverified. "" reads as dkim when DKIMDomain
	// is set and unverified otherwise; a word not in the list as unverified.
	Verified   string
	DKIMDomain string // d= of the passing signature, for dkim
	SPFDomain  string // the MAIL FROM domain SPF passed for, for spf
	Raw        []byte // the original message, CRLF line endings, exactly as received
}

// Spec is everything a batch message is built from.
type Spec struct {
	Number       uint64
	CampaignName string    // may be non-ASCII
	From         string    // campaign.from
	Recipients   []string  // the first is To:, the others Cc:
	MessageID    string    // "<...@...>", chosen when the batch closed; the same on every retry
	Date         time.Time // when the batch closed
	RunningTotal uint64    // letters counted so far, this batch included
	Letters      []Letter  // in received order
	// Language is campaign.language, the language of the subject and the
	// summary: "es" or "en"; "" means "en".
	Language string
	// Location is campaign.timezone: every time in the message is shown in
	// it; nil means UTC.
	Location *time.Location
	// Part is set when the message is one part of a batch that a
	// recipient's server refused as one message (too big); Letters are
	// then the part's letters only.
	Part *Part
}

// Part says which part of a batch a message is. Its subject and summary
// say "part N of Of", and number each letter by its place in the batch.
type Part struct {
	N, Of int
	// First is the place (0-based) of the part's first letter in the
	// batch, whose letters number BatchLetters.
	First, BatchLetters int
}

// NewMessageID returns the Message-ID of batch number, "<batch-N.UNIXNANO@domain>".
// It is made once, when the batch closes, and stored, so that every retry and
// both recipients see the same ID.
func NewMessageID(number uint64, fromAddress string, created time.Time) string {
	return fmt.Sprintf("<batch-%d.%d@%s>", number, created.UnixNano(), messageIDDomain(fromAddress))
}

// NewPartMessageID returns the Message-ID of part n of batch number for
// the recipient at index rcpt, "<batch-N.rI.part-K.UNIXNANO@domain>": made
// once, when the part is made, and stored like the batch's.
func NewPartMessageID(number uint64, rcpt, n int, fromAddress string, created time.Time) string {
	return fmt.Sprintf("<batch-%d.r%d.part-%d.%d@%s>", number, rcpt, n, created.UnixNano(), messageIDDomain(fromAddress))
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

// Build returns the batch message for s, CRLF line endings throughout. The
// same Spec gives the same bytes: the MIME boundaries are derived from a
// hash of the content (and checked not to occur in it) rather than drawn at
// random, so tests and fuzzing are reproducible. Delivery and "batches
// export" use the signed message stored when the batch closed, not a new
// build.
//
// Build fails only for a Spec that cannot make a message (no letters, a bad
// From, recipient or Message-ID, a language without a catalogue); a letter
// it cannot read is still batched, with a note in the summary.
func Build(s Spec) ([]byte, error) { return build(s, nil, nil) }

// scratch is the builder's working space: the summary, the CSV list and
// the digest, each megabytes in a batch of a thousand letters, before they
// are copied into the message. The closer keeps one across builds, because
// fresh memory of that size costs page faults and garbage collection on
// the cores that the letters arriving meanwhile need. The message returned
// never shares it.
type scratch struct {
	summaryText, summary, csvList, csvBody, digest bytes.Buffer
}

// build is Build calling yield, when not nil, after each letter it
// prepares and each it writes into the digest: the closer paces the build
// there (see pacer). It works in sc, or in buffers of its own when sc is
// nil.
func build(s Spec, yield func(), sc *scratch) ([]byte, error) {
	if sc == nil {
		sc = new(scratch)
	}
	for _, b := range []*bytes.Buffer{&sc.summaryText, &sc.summary, &sc.csvList, &sc.csvBody, &sc.digest} {
		b.Reset()
	}
	if err := validate(s); err != nil {
		return nil, err
	}
	cat, err := catalogOf(s)
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", s.Number, err)
	}

	letters := make([]preparedLetter, len(s.Letters))
	eightBit := false
	for i := range s.Letters {
		letters[i] = prepareLetter(&s.Letters[i])
		eightBit = eightBit || letters[i].carry.cte == "8bit"
		if yield != nil {
			yield()
		}
	}
	data := batchData(s, letters)
	var texts struct{ subject, csvName, digestDesc string }
	// The file name first: the summary names it.
	for _, m := range []struct {
		key string
		out *string
	}{
		{"batch.csv_filename", &texts.csvName},
		{"batch.subject", &texts.subject},
		{"batch.digest_description", &texts.digestDesc},
	} {
		if *m.out, err = cat.Text(m.key, data); err != nil {
			return nil, fmt.Errorf("batch %d: %w", s.Number, err)
		}
	}
	data.CSVName = texts.csvName
	sc.summaryText.Grow(summarySize(&data))
	if err := cat.Write(&sc.summaryText, "batch.summary", data); err != nil {
		return nil, fmt.Errorf("batch %d: %w", s.Number, err)
	}
	summary, err := qpEncode(&sc.summary, sc.summaryText.Bytes())
	if err != nil {
		return nil, fmt.Errorf("batch %d: summary: %w", s.Number, err)
	}
	csvList, err := csvList(&sc.csvList, letters, cat.Location())
	if err != nil {
		return nil, fmt.Errorf("batch %d: csv: %w", s.Number, err)
	}
	csvBody, err := qpEncode(&sc.csvBody, csvList)
	if err != nil {
		return nil, fmt.Errorf("batch %d: csv: %w", s.Number, err)
	}
	digest, digestSeed, digestBoundary, err := digestBody(&sc.digest, letters, yield)
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
		"Content-Type: text/csv; charset=utf-8; header=present",
		"Content-Transfer-Encoding: quoted-printable",
		"Content-Disposition: "+mime.FormatMediaType("attachment", map[string]string{"filename": oneline.Clean(texts.csvName)}))
	digestFields := []string{
		`Content-Type: multipart/digest; boundary="` + digestBoundary + `"`,
		encodedField("Content-Description", oneline.Clean(texts.digestDesc)),
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
	topOrdered(&top, s, cat.Location(), oneline.Clean(texts.subject))

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

// catalogOf is the catalogue of the batch's language and time zone.
func catalogOf(s Spec) (*catalog.Catalog, error) {
	lang := s.Language
	if lang == "" {
		lang = "en"
	}
	return catalog.New(lang, s.Location)
}

// validate checks what Build cannot do without.
func validate(s Spec) error {
	if len(s.Letters) == 0 {
		return fmt.Errorf("batch %d: no letters", s.Number)
	}
	if p := s.Part; p != nil && (p.N < 1 || p.N > p.Of || p.First < 0 || p.First+len(s.Letters) > p.BatchLetters) {
		return fmt.Errorf("batch %d: part %d of %d with letters %d to %d of %d", s.Number, p.N, p.Of,
			p.First+1, p.First+len(s.Letters), p.BatchLetters)
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
// validate; subject is on one line.
func topOrdered(h *message.Header, s Spec, loc *time.Location, subject string) {
	mh := mail.Header{Header: *h}
	mh.AddRaw([]byte("Message-ID: " + s.MessageID + "\r\n"))
	// In the campaign's zone, like every time in the batch; never the
	// server's own.
	mh.Add("Date", s.Date.In(loc).Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	if encoded := encodedField("Subject", subject); encoded != "Subject: "+subject {
		mh.AddRaw([]byte(encoded + "\r\n"))
	} else {
		mh.Add("Subject", subject) // folded by go-message
	}
	if len(s.Recipients) > 1 {
		mh.Add("Cc", formatAddresses(s.Recipients[1:]))
	}
	mh.Add("To", formatAddresses(s.Recipients[:1]))
	mh.Add("From", formatAddresses([]string{s.From}))
	*h = mh.Header
}

// encodedField is "Key: value" with a non-ASCII value as RFC 2047
// encoded-words, folded between them (go-message's folder only looks for
// spaces within 76 characters, which a 75-character encoded-word defeats).
// An ASCII value is left as it is: short ones only come here.
func encodedField(key, value string) string {
	if encoded := mime.QEncoding.Encode("utf-8", value); encoded != value {
		return key + ": " + strings.ReplaceAll(encoded, " ", "\r\n ")
	}
	return key + ": " + value
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

// qpEncode encodes text (LF line breaks) as quoted-printable with CRLF line
// breaks, into buf, and returns buf's bytes. Quoted-printable output never
// contains "=_", which is why the boundaries start with it.
func qpEncode(buf *bytes.Buffer, text []byte) ([]byte, error) {
	buf.Grow(len(text) + len(text)/8)
	w := quotedprintable.NewWriter(buf)
	if _, err := w.Write(text); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// digestBody writes the multipart/digest body (without its header) and
// returns it with the seed of its boundary and the boundary. Each letter is
// written as it is, or base64-encoded where carriageOf says so: go-message's
// message.Writer would wrap 7bit/8bit lines at 998 bytes, which changes the
// bytes and breaks the letter's signature. It writes into buf; yield, when
// not nil, is called after each letter.
func digestBody(buf *bytes.Buffer, letters []preparedLetter, yield func()) ([]byte, []byte, string, error) {
	raws := make([][]byte, len(letters))
	bodies := make([][]byte, len(letters))
	size := 0
	for i := range letters {
		raws[i] = letters[i].raw
		bodies[i] = raws[i]
		if letters[i].carry.cte == "base64" {
			bodies[i] = base64Lines(raws[i])
		}
		size += len(bodies[i]) + 128
	}
	seed := contentHash(raws...)
	boundary := pickBoundary("=_petitiond-digest-", seed, bodies...)
	buf.Grow(size)
	mw := textproto.NewMultipartWriter(buf)
	if err := mw.SetBoundary(boundary); err != nil {
		return nil, nil, "", err
	}
	for i := range letters {
		var h textproto.Header
		// message/rfc822 is the default in a digest; it is written anyway
		// for readers that do not know the default.
		c := letters[i].carry
		addFields(&h, "Content-Type: "+c.mediaType, "Content-Transfer-Encoding: "+c.cte)
		w, err := mw.CreatePart(h)
		if err != nil {
			return nil, nil, "", err
		}
		if _, err := w.Write(bodies[i]); err != nil {
			return nil, nil, "", err
		}
		if yield != nil {
			yield()
		}
	}
	if err := mw.Close(); err != nil {
		return nil, nil, "", err
	}
	return buf.Bytes(), seed, boundary, nil
}

// base64Lines is b in base64, in lines of 76 characters ending with CRLF
// (RFC 2045 6.8).
func base64Lines(b []byte) []byte {
	const perLine = 76 / 4 * 3 // input bytes per line
	n := base64.StdEncoding.EncodedLen(len(b))
	out := make([]byte, 0, n+2*(n/76+1))
	for len(b) > 0 {
		chunk := b[:min(perLine, len(b))]
		out = base64.StdEncoding.AppendEncode(out, chunk)
		out = append(out, '\r', '\n')
		b = b[len(chunk):]
	}
	return out
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

// carriage is how a letter travels in the digest.
type carriage struct {
	mediaType string // message/rfc822 or message/global
	cte       string // 7bit, 8bit or base64
}

// maxLine is the longest line 7bit and 8bit data may hold, in octets
// without the CRLF (RFC 2045 2.7, 2.8; RFC 5321 4.5.3.1.6).
const maxLine = 998

// carriageOf decides how raw (CRLF line endings) is carried in the digest,
// keeping its bytes and labelling them truthfully:
//
//   - with an ASCII header, as message/rfc822 in 7bit, or 8bit when its
//     body has bytes over 127;
//   - with raw UTF-8 (or other 8-bit bytes) in its header (RFC 6532), as
//     message/global in 8bit: message/rfc822 promises an ASCII header;
//   - with a line over 998 octets or a NUL, as message/global in base64.
//     Such bytes are "binary" (RFC 2045 2.9), a label only a BINARYMIME
//     transaction may carry, and the SMTP line limit forbids them anyway;
//     message/rfc822 allows no encoding but 7bit, 8bit and binary (RFC
//     2046 5.2.1), while message/global allows any (RFC 6532 3.7). The
//     reader's mail app decodes base64 to the very bytes received, so the
//     letter's own DKIM signature still verifies.
func carriageOf(raw []byte) carriage {
	headerEnd := bytes.Index(raw, []byte("\r\n\r\n"))
	switch {
	case bytes.HasPrefix(raw, []byte("\r\n")):
		headerEnd = 0
	case headerEnd < 0:
		headerEnd = len(raw)
	}
	lineLen := 0
	eightBitHeader, eightBit := false, false
	for i, c := range raw {
		switch {
		case c == '\n':
			lineLen = 0
			continue
		case c == 0:
			return carriage{"message/global", "base64"}
		case c > 127:
			eightBit = true
			eightBitHeader = eightBitHeader || i < headerEnd
		}
		if c != '\r' {
			lineLen++
			if lineLen > maxLine {
				return carriage{"message/global", "base64"}
			}
		}
	}
	switch {
	case eightBitHeader:
		return carriage{"message/global", "8bit"}
	case eightBit:
		return carriage{"message/rfc822", "8bit"}
	}
	return carriage{"message/rfc822", "7bit"}
}
