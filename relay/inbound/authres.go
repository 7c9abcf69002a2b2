package inbound

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/petitiond/petitiond/relay/verify"
)

// A secondary MX tells its primary what it saw in an Authentication-Results
// field (RFC 8601) on top of each letter it forwards, with its
// smtp.hostname as authserv-id: its SPF result for MAIL FROM, checked from
// the original client's IP, and that IP, which the primary cannot see
// (SPEC 12). The primary believes that field only on a letter from an IP
// in [secondary] trusted. The client IP travels as smtp.remote-ip, the
// property RFC 8617 registers for the client's address.
//
//	Authentication-Results: mx2.campaign.example;
//		dkim=pass header.d=example.org header.s=sel;
//		spf=pass smtp.mailfrom=ana@example.org smtp.remote-ip=192.0.2.1

const authResultsName = "Authentication-Results"

// Limits on what the field repeats from a client, so it stays short: RFC
// 5321 4.5.3.1.3 bounds a path to 256 octets, and a reason is a few words.
const (
	maxMailFromShown = 256
	maxReasonShown   = 200
)

// relayed is what a secondary's field says about a letter.
type relayed struct {
	servID   string // the secondary's smtp.hostname
	clientIP string // the original client's IP
	spf      verify.SPFResult
	// mailFrom is the MAIL FROM the secondary checked ("" for the null
	// sender, or when not said).
	mailFrom string
}

// authResultsField is the field a secondary puts on top of a letter: its
// DKIM verdict (none for mail it did not verify, postmaster's), and its SPF
// result for mailFrom with the client's IP.
func authResultsField(host string, dkim *verify.Verdict, spf verify.SPFResult, mailFrom, ip string) []byte {
	var b strings.Builder
	b.WriteString(authResultsName + ": " + host)
	if dkim != nil {
		b.WriteString(";\r\n\tdkim=")
		switch {
		case dkim.Pass:
			b.WriteString("pass")
		case dkim.TempFail:
			b.WriteString("temperror")
		case dkim.Unsigned:
			b.WriteString("none")
		default:
			b.WriteString("fail")
		}
		if !dkim.Pass && dkim.Reason != "" {
			b.WriteString(" reason=" + quoted(dkim.Reason, maxReasonShown))
		}
		if dkim.Domain != "" {
			b.WriteString(" header.d=" + pvalue(dkim.Domain))
		}
		if dkim.Selector != "" {
			b.WriteString(" header.s=" + pvalue(dkim.Selector))
		}
	}
	status := spf.Status
	if status == "" || strings.IndexFunc(string(status), func(r rune) bool { return r > 0x7f || !isKeyword(byte(r)) }) >= 0 {
		status = verify.SPFNone
	}
	b.WriteString(";\r\n\tspf=" + string(status))
	if spf.Reason != "" && spf.Reason != string(status) {
		b.WriteString(" reason=" + quoted(spf.Reason, maxReasonShown))
	}
	if mailFrom != "" && len(mailFrom) <= maxMailFromShown {
		b.WriteString(" smtp.mailfrom=" + pvalue(mailFrom))
	}
	b.WriteString(" smtp.remote-ip=" + pvalue(ip) + "\r\n")
	return []byte(b.String())
}

// pvalue writes s as a property value: as it is when it is made of
// characters that need no quoting, else as a quoted string.
func pvalue(s string) string {
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-_+@:", c) >= 0
	}
	if plain {
		return s
	}
	return quoted(s, maxMailFromShown)
}

// quoted writes s, cut to max bytes, as a quoted string, with control
// characters replaced: a client's words never end the field or start
// another.
func quoted(s string, max int) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s) && i < max; i++ {
		switch c := s[i]; {
		case c < 0x20 || c == 0x7f:
			b.WriteByte('?')
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// authResults is a parsed Authentication-Results field.
type authResults struct {
	servID  string
	results []authResult
}

// authResult is one method's result: "spf=pass smtp.mailfrom=…".
type authResult struct {
	method, value, reason string
	// props maps "ptype.property", lower-case, to its value.
	props map[string]string
}

func (ar *authResults) result(method string) *authResult {
	for i := range ar.results {
		if ar.results[i].method == method {
			return &ar.results[i]
		}
	}
	return nil
}

var errAuthResults = errors.New("malformed Authentication-Results")

// parseAuthResults parses the value of an Authentication-Results field
// (RFC 8601 2.2), unfolded or not. Comments are skipped; a version other
// than 1 is refused, as the RFC says such a field must be ignored.
func parseAuthResults(value string) (*authResults, error) {
	p := &arParser{s: value}
	id, err := p.servID()
	if err != nil {
		return nil, err
	}
	ar := &authResults{servID: id}
	if err := p.skipCFWS(); err != nil {
		return nil, err
	}
	if v := p.run(isDigit); v != "" {
		if v != "1" {
			return nil, fmt.Errorf("%w: version %s", errAuthResults, v)
		}
		if err := p.skipCFWS(); err != nil {
			return nil, err
		}
	}
	for !p.eof() {
		if !p.take(';') {
			return nil, fmt.Errorf("%w: want ';' at %d", errAuthResults, p.i)
		}
		if err := p.skipCFWS(); err != nil {
			return nil, err
		}
		if p.eof() {
			break // a trailing ';', which many writers leave
		}
		r, err := p.resinfo()
		if err != nil {
			return nil, err
		}
		if r.method == "none" && r.value == "" {
			if len(ar.results) > 0 || !p.eof() {
				return nil, fmt.Errorf("%w: none among results", errAuthResults)
			}
			break
		}
		ar.results = append(ar.results, r)
	}
	return ar, nil
}

// authServID reads only the authserv-id of a field's value: enough to
// know whose the field claims to be, even when the rest is malformed.
func authServID(value string) (string, error) {
	p := &arParser{s: value}
	return p.servID()
}

// arParser reads RFC 8601's grammar from s.
type arParser struct {
	s string
	i int
}

func (p *arParser) eof() bool { return p.i >= len(p.s) }

func (p *arParser) take(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// run reads the longest run of bytes that ok accepts.
func (p *arParser) run(ok func(byte) bool) string {
	start := p.i
	for p.i < len(p.s) && ok(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// skipCFWS skips white space, line folds and (nested) comments.
func (p *arParser) skipCFWS() error {
	depth := 0
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '\\' && depth > 0:
			p.i++ // quoted-pair
		case depth > 0, c == ' ', c == '\t', c == '\r', c == '\n':
		default:
			return nil
		}
		p.i++
	}
	if depth > 0 {
		return fmt.Errorf("%w: unterminated comment", errAuthResults)
	}
	return nil
}

func (p *arParser) servID() (string, error) {
	if err := p.skipCFWS(); err != nil {
		return "", err
	}
	id, err := p.value()
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("%w: no authserv-id", errAuthResults)
	}
	return id, nil
}

// value is RFC 2045's token or quoted-string.
func (p *arParser) value() (string, error) {
	if p.i < len(p.s) && p.s[p.i] == '"' {
		return p.quotedString()
	}
	return p.run(isToken), nil
}

func (p *arParser) quotedString() (string, error) {
	p.i++ // the opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\' && p.i < len(p.s):
			b.WriteByte(p.s[p.i])
			p.i++
		case c == '\r' || c == '\n':
			// A fold inside the string.
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: unterminated quoted string", errAuthResults)
}

// resinfo reads "method[/version]=result [reason=…] [ptype.property=…]…".
func (p *arParser) resinfo() (authResult, error) {
	r := authResult{method: strings.ToLower(p.run(isKeyword))}
	if r.method == "" {
		return r, fmt.Errorf("%w: want a method at %d", errAuthResults, p.i)
	}
	if err := p.skipCFWS(); err != nil {
		return r, err
	}
	if r.method == "none" && (p.eof() || p.s[p.i] == ';') {
		return r, nil
	}
	if p.take('/') {
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
		if p.run(isDigit) == "" {
			return r, fmt.Errorf("%w: want a method version at %d", errAuthResults, p.i)
		}
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
	}
	if !p.take('=') {
		return r, fmt.Errorf("%w: want '=' after %s", errAuthResults, r.method)
	}
	if err := p.skipCFWS(); err != nil {
		return r, err
	}
	if r.value = strings.ToLower(p.run(isKeyword)); r.value == "" {
		return r, fmt.Errorf("%w: %s has no result", errAuthResults, r.method)
	}
	for {
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
		if p.eof() || p.s[p.i] == ';' {
			return r, nil
		}
		name := strings.ToLower(p.run(isKeyword))
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
		if name == "reason" && p.take('=') {
			if err := p.skipCFWS(); err != nil {
				return r, err
			}
			reason, err := p.value()
			if err != nil {
				return r, err
			}
			r.reason = reason
			continue
		}
		if name == "" || !p.take('.') {
			return r, fmt.Errorf("%w: want ptype.property at %d", errAuthResults, p.i)
		}
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
		property := strings.ToLower(p.run(isKeyword))
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
		if property == "" || !p.take('=') {
			return r, fmt.Errorf("%w: want property=value at %d", errAuthResults, p.i)
		}
		if err := p.skipCFWS(); err != nil {
			return r, err
		}
		v, err := p.pvalue()
		if err != nil {
			return r, err
		}
		if r.props == nil {
			r.props = map[string]string{}
		}
		r.props[name+"."+property] = v
	}
}

// pvalue is a property's value: a quoted string (perhaps a quoted local
// part followed by "@domain"), or everything up to white space, a comment
// or ';'.
func (p *arParser) pvalue() (string, error) {
	var v string
	if p.i < len(p.s) && p.s[p.i] == '"' {
		q, err := p.quotedString()
		if err != nil {
			return "", err
		}
		if p.i >= len(p.s) || p.s[p.i] != '@' {
			return q, nil // "" too: an empty value, said so
		}
		v = q
	}
	v += p.run(func(c byte) bool { return c > ' ' && c != ';' && c != '(' && c != '"' && c != 0x7f })
	if v == "" {
		return "", fmt.Errorf("%w: empty value at %d", errAuthResults, p.i)
	}
	return v, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isKeyword: letters, digits, '-' and '_' (method and property names,
// results).
func isKeyword(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || isDigit(c) || c == '-' || c == '_'
}

// isToken is RFC 2045's token character: printable ASCII but tspecials.
func isToken(c byte) bool {
	return c > ' ' && c < 0x7f && strings.IndexByte(`()<>@,;:\"/[]?=`, c) < 0
}

// relayedBy reads what a secondary's parsed field says: the client's IP
// (ok false when it gives none that parses) and its SPF result.
func relayedBy(ar *authResults) (relayed, bool) {
	r := relayed{servID: ar.servID}
	spf := ar.result("spf")
	if spf == nil {
		return r, false
	}
	ip, err := netip.ParseAddr(spf.props["smtp.remote-ip"])
	if err != nil {
		return r, false
	}
	r.clientIP = ip.Unmap().String()
	r.mailFrom = spf.props["smtp.mailfrom"]
	status := verify.SPFStatus(spf.value)
	switch status {
	case verify.SPFPass, verify.SPFFail, verify.SPFSoftFail, verify.SPFNeutral, verify.SPFPermError:
	default:
		// Unknown, or temperror: asking the secondary to send it again
		// would not change its word, so the letter goes on without SPF.
		status = verify.SPFNone
	}
	r.spf = verify.SPFResult{Status: status, Reason: "by " + ar.servID}
	if spf.reason != "" {
		r.spf.Reason += ": " + spf.reason
	}
	if at := strings.LastIndexByte(r.mailFrom, '@'); at >= 0 {
		r.spf.Domain = asciiLower(strings.TrimSuffix(r.mailFrom[at+1:], "."))
	}
	return r, true
}

// headerField is one field of a message's header: its bytes, folded lines
// and final CRLF included, at msg[start:end].
type headerField struct {
	start, end int
	name       []byte
	value      []byte // after the colon, folds included
}

// headerFields lists the fields of msg's header, up to the empty line.
func headerFields(msg []byte) []headerField {
	var out []headerField
	i := 0
	for i < len(msg) {
		if msg[i] == '\r' || msg[i] == '\n' {
			break // the empty line ending the header
		}
		start := i
		for {
			nl := bytes.IndexByte(msg[i:], '\n')
			if nl < 0 {
				i = len(msg)
				break
			}
			i += nl + 1
			if i >= len(msg) || (msg[i] != ' ' && msg[i] != '\t') {
				break
			}
		}
		field := msg[start:i]
		colon := bytes.IndexByte(field, ':')
		if colon < 0 {
			out = append(out, headerField{start: start, end: i})
			continue
		}
		out = append(out, headerField{start: start, end: i, name: bytes.TrimRight(field[:colon], " \t"),
			value: field[colon+1:]})
	}
	return out
}

// scrubbed is what scrubAuthResults did to a letter.
type scrubbed struct {
	// top is the topmost Authentication-Results field, parsed, when the
	// letter came from a trusted secondary and it names another host
	// than this one; nil otherwise.
	top *authResults
	// topErr is why the topmost field of a trusted secondary's letter
	// could not be read.
	topErr error
	// removed counts the fields taken out.
	removed int
}

// scrubAuthResults takes out of msg's header, in place, every
// Authentication-Results field claiming own (this host's smtp.hostname);
// every field claiming one of secondaries ([secondary] names) or, on a
// letter from a trusted secondary, the same host as the topmost field,
// but that topmost field itself. RFC 8601 5 wants fields of the trust
// boundary that did not come from a trusted host deleted before anything
// reads them, and a field naming a secondary is the secondary's only where
// it is believed. It returns the shortened message.
func scrubAuthResults(msg []byte, own string, secondaries []string, trusted bool) ([]byte, scrubbed) {
	var sc scrubbed
	var drop []headerField
	topID, first := "", true
	for _, f := range headerFields(msg) {
		if !bytes.EqualFold(f.name, []byte(authResultsName)) {
			continue
		}
		id, err := authServID(string(f.value))
		isFirst := first
		first = false
		switch {
		case err != nil:
			// Claims no one: kept as it is, believed by no one.
			if trusted && isFirst {
				sc.topErr = err
			}
		case sameHost(id, own):
			drop = append(drop, f)
		case trusted && isFirst:
			topID = id
			sc.top, sc.topErr = parseAuthResults(string(f.value))
		case topID != "" && sameHost(id, topID), slices.ContainsFunc(secondaries, func(n string) bool { return sameHost(id, n) }):
			drop = append(drop, f)
		}
	}
	if len(drop) == 0 {
		return msg, sc
	}
	// Close the gaps, moving what follows each one forward.
	out, from := drop[0].start, drop[0].start
	for i, f := range drop {
		out += copy(msg[out:], msg[from:f.start])
		from = f.end
		if i == len(drop)-1 {
			out += copy(msg[out:], msg[from:])
		}
	}
	sc.removed = len(drop)
	return msg[:out], sc
}

// sameHost compares host names as DNS does: case-insensitive, a final dot
// aside.
func sameHost(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
