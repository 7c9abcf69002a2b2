package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message/charset"

	"github.com/petitiond/petitiond/oneline"
)

// Sender is the one From address of a letter.
type Sender struct {
	Name    string // display name, RFC 2047 decoded, made one safe line (oneline.Clean)
	Address string // local@domain as written
	Domain  string // lower-case ASCII (IDNA), what DKIM d= must align with
}

// ErrFrom is wrapped by every ParseFrom error: the message does not have
// exactly one From field holding exactly one mailbox (SPEC 4: 550 5.6.0).
var ErrFrom = errors.New("verify: bad From")

// ParseFrom returns the single author of msg. The header must have exactly
// one From field, and it exactly one mailbox: DKIM covers the last From while
// mail readers show the first, and a group or a list would leave "the
// sender" ambiguous.
func ParseFrom(msg []byte) (Sender, error) {
	var froms []string
	for _, f := range headerFields(msg, "From") {
		_, value := splitField(f)
		froms = append(froms, value)
	}
	switch len(froms) {
	case 0:
		return Sender{}, fmt.Errorf("%w: no From header field", ErrFrom)
	case 1:
	default:
		return Sender{}, fmt.Errorf("%w: %d From header fields, want one", ErrFrom, len(froms))
	}

	value := unfold(froms[0])
	if strings.TrimSpace(value) == "" {
		return Sender{}, fmt.Errorf("%w: empty From header field", ErrFrom)
	}
	if hasGroup(value) {
		return Sender{}, fmt.Errorf("%w: group syntax in From", ErrFrom)
	}
	addrs, err := parseAddressList(value)
	if err != nil {
		return Sender{}, fmt.Errorf("%w: %v", ErrFrom, err)
	}
	if len(addrs) != 1 {
		return Sender{}, fmt.Errorf("%w: %d addresses in From, want one", ErrFrom, len(addrs))
	}
	a := addrs[0]

	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 || at == len(a.Address)-1 {
		return Sender{}, fmt.Errorf("%w: address %q has no local part or domain", ErrFrom, a.Address)
	}
	domain, err := asciiDomain(a.Address[at+1:])
	if err != nil {
		return Sender{}, fmt.Errorf("%w: %v", ErrFrom, err)
	}
	return Sender{Name: oneline.Clean(a.Name), Address: a.Address, Domain: domain}, nil
}

// parseAddressList parses with RFC 2047 decoding of names in any charset
// go-message knows. Should a charset be unknown, it parses again keeping the
// encoded-word's bytes undecoded by charset: a name we cannot render is no
// reason to refuse a letter.
func parseAddressList(value string) ([]*mail.Address, error) {
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: charset.Reader}}
	addrs, err := p.ParseList(value)
	if err == nil {
		return addrs, nil
	}
	raw := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
	}}
	if addrs, err2 := raw.ParseList(value); err2 == nil {
		return addrs, nil
	}
	return nil, err
}

// headerFields returns the fields of msg's header named name (any case),
// continuation lines included, the way go-msgauth's DKIM verifier reads
// them, so that "the one From field" we find is the one its signature
// check picks. The header ends at the first empty line, or at the end of
// msg. Only the fields asked for are copied: a header of a megabyte in
// fifty thousand fields costs nothing else.
func headerFields(msg []byte, name string) []string {
	var fields []string
	var field []string // the lines of the wanted field being read, if any
	inField := false   // a field is being read (wanted or not)
	flush := func() {
		if field != nil {
			fields = append(fields, strings.Join(field, "\r\n"))
			field = nil
		}
	}
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if inField && (line[0] == ' ' || line[0] == '\t') {
			if field != nil {
				field = append(field, string(line))
			}
			continue
		}
		flush()
		inField = true
		if n, _, _ := bytes.Cut(line, []byte(":")); strings.EqualFold(strings.TrimSpace(string(n)), name) {
			field = []string{string(line)}
		}
	}
	flush()
	return fields
}

// splitField returns a field's name and value, trimmed as go-msgauth does.
func splitField(f string) (name, value string) {
	name, value, _ = strings.Cut(f, ":")
	return strings.TrimSpace(name), strings.TrimSpace(value)
}

// unfold undoes header folding (RFC 5322 2.2.3).
func unfold(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\r' && c != '\n' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// hasGroup reports whether an address list uses group syntax
// ("name: a@b, c@d;"), which net/mail flattens into plain addresses. A colon
// can only appear outside quotes, comments, angle brackets and domain
// literals as a group's display-name separator.
func hasGroup(s string) bool {
	depth := 0 // comment nesting
	inQuote, inAngle, inLiteral := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (inQuote || depth > 0 || inLiteral):
			i++ // quoted-pair
		case inQuote:
			if c == '"' {
				inQuote = false
			}
		case depth > 0:
			switch c {
			case '(':
				depth++
			case ')':
				depth--
			}
		case inLiteral:
			if c == ']' {
				inLiteral = false
			}
		case c == '"':
			inQuote = true
		case c == '(':
			depth++
		case c == '[':
			inLiteral = true
		case c == '<':
			inAngle = true
		case c == '>':
			inAngle = false
		case (c == ':' || c == ';') && !inAngle:
			return true
		}
	}
	return false
}
