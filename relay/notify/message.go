package notify

import (
	"bufio"
	"bytes"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
	"time"
)

// mailSpec is one message to a supporter.
type mailSpec struct {
	purpose string // "confirm" or "receipt", in its Message-ID
	letter  string
	to      string // the supporter's address
	replyTo string // the confirmation address; "" for a receipt
	// inReplyTo is the letter's Message-ID, "" when it had none that can
	// be repeated safely.
	inReplyTo string
	subject   string
	body      string // LF line ends
	date      time.Time
}

// signedFields are the header fields a supporter's message's DKIM
// signature covers: what it says, who it is from and where a reply goes.
// From is oversigned, and Reply-To is listed even when absent, so that
// neither can be added on the way.
var signedFields = []string{"From", "From", "To", "Reply-To", "Reply-To", "Subject", "Date", "Message-ID",
	"In-Reply-To", "References", "Auto-Submitted", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

// compose writes a message to a supporter (SPEC 11): From campaign.from,
// Auto-Submitted: auto-replied (RFC 3834), In-Reply-To and References the
// letter's Message-ID, quoted-printable UTF-8 text so that it travels
// through any server; CRLF line ends. It is signed when [dkim] is set.
func (n *Notifier) compose(m mailSpec) ([]byte, error) {
	to, err := mail.ParseAddress(m.to)
	if err != nil || strings.ContainsAny(m.to, "\r\n") {
		return nil, fmt.Errorf("notify: supporter address %q: %v", m.to, err)
	}
	var h strings.Builder
	field := func(key, value string) { h.WriteString(key + ": " + value + "\r\n") }
	field("From", n.from)
	field("To", (&mail.Address{Address: to.Address}).String())
	if m.replyTo != "" {
		field("Reply-To", "<"+m.replyTo+">")
	}
	h.WriteString(encodedField("Subject", m.subject))
	field("Date", m.date.In(n.cat.Location()).Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	field("Message-ID", fmt.Sprintf("<%s-%s.%d@%s>", m.purpose, m.letter, m.date.UnixNano(), n.domain))
	if m.inReplyTo != "" {
		field("In-Reply-To", m.inReplyTo)
		field("References", m.inReplyTo)
	}
	field("Auto-Submitted", "auto-replied")
	field("MIME-Version", "1.0")
	field("Content-Type", "text/plain; charset=utf-8")
	field("Content-Transfer-Encoding", "quoted-printable")
	var out bytes.Buffer
	out.WriteString(h.String())
	out.WriteString("\r\n")
	w := quotedprintable.NewWriter(&out)
	if _, err := w.Write([]byte(m.body)); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("\r\n")) {
		out.WriteString("\r\n")
	}
	if n.signer == nil {
		return out.Bytes(), nil
	}
	return n.signer.SignFields(out.Bytes(), signedFields)
}

// encodedField is "Key: value" CRLF, a non-ASCII value written as RFC 2047
// encoded-words, one per line.
func encodedField(key, value string) string {
	value = mime.QEncoding.Encode("utf-8", value)
	if strings.HasPrefix(value, "=?") {
		value = strings.ReplaceAll(value, "?= =?", "?=\r\n =?")
	}
	return key + ": " + value + "\r\n"
}

// maxHead bounds how much of a letter is read for its Message-ID.
const maxHead = 64 << 10

// messageID is the Message-ID of a stored letter, when it has exactly one
// that is a plain msg-id, safe to repeat in a header: a letter's own
// header is the sender's text, and a forged letter's could carry anything.
func messageID(letter []byte) string {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(letter[:min(len(letter), maxHead)])))
	// A header cut short or broken further down still gives the fields
	// read before.
	h, _ := r.ReadMIMEHeader()
	ids := h.Values("Message-Id")
	if len(ids) != 1 {
		return ""
	}
	id := strings.TrimSpace(ids[0])
	if len(id) > 250 || len(id) < 5 || id[0] != '<' || id[len(id)-1] != '>' || strings.Count(id, "@") != 1 {
		return ""
	}
	for i := 1; i < len(id)-1; i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`<>()[]\,;:"`, c) >= 0 {
			return ""
		}
	}
	return id
}
