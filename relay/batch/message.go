// Package batch closes batches of counted letters and builds the message
// that carries each to the campaign's recipients (SPEC section 7),
// DKIM-signed. This file assembles the MIME message; summary.go writes the
// parts organisers read, with every field made safe to print; lettertext.go
// finds the text of each letter for the summary; sign.go signs.
package batch

import (
	"bytes"
	"crypto/sha256"
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
}

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

// Build returns the batch message for s, CRLF line endings throughout. The
// same Spec gives the same bytes: the MIME boundaries are derived from a
// hash of the content (and checked not to occur in it) rather than drawn at
// random, so tests and fuzzing are reproducible. Delivery and "batches
// export" use the signed message stored when the batch closed, not a new
// build.
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
	// In UTC, so the field does not depend on the server's time zone.
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
