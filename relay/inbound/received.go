package inbound

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/petitiond/petitiond/dnsname"
)

// trace is what a letter's Received: field says about how it arrived.
type trace struct {
	host string // smtp.hostname
	helo string // the client's HELO/EHLO argument, as sent
	ip   string // the client's IP
	id   string // the letter ID
	tls  bool
	utf8 bool   // MAIL FROM had SMTPUTF8
	rcpt string // the one recipient, or ""
	when time.Time
}

// receivedField is the trace field (RFC 5321 4.4) put on top of a stored
// letter. Prepended, it leaves the letter's own DKIM signatures valid: a
// signature covers the header fields it names from the bottom up (RFC 6376
// 5.4.2), and none names a field added above the ones it signed.
//
//	Received: from client.example ([192.0.2.1])
//		by mx.campaign.example (petitiond) with ESMTPS id L0000002A
//		for <libertad@campaign.example>; Tue, 01 Dec 2026 10:00:00 +0000
func (t trace) receivedField() []byte {
	from := heloDomain(t.helo)
	var unknownHelo string
	if from == "" {
		from = "unknown"
		unknownHelo = fmt.Sprintf(" (HELO %q)", cleanHelo(t.helo))
	}
	protocol := "ESMTP"
	if t.utf8 {
		protocol = "UTF8SMTP" // RFC 6531 3.7.3
	}
	if t.tls {
		protocol += "S" // RFC 3848
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s (%s)%s\r\n", from, addressLiteral(t.ip), unknownHelo)
	fmt.Fprintf(&b, "\tby %s (petitiond) with %s id %s", t.host, protocol, t.id)
	if t.rcpt != "" {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", t.rcpt)
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", t.when.Format(time.RFC1123Z))
	return []byte(b.String())
}

// heloDomain is the client's HELO argument when it is a domain or an
// address literal (RFC 5321 4.1.1.1), as RFC 5321 4.4 wants it in the
// trace; "" when it is neither.
func heloDomain(helo string) string {
	if dnsname.CheckDomain(helo) == nil {
		return helo
	}
	inner, ok := strings.CutPrefix(helo, "[")
	if inner, ok = strings.CutSuffix(inner, "]"); !ok {
		return ""
	}
	if v6, isV6 := strings.CutPrefix(inner, "IPv6:"); isV6 {
		if ip := net.ParseIP(v6); ip != nil && strings.Contains(v6, ":") {
			return helo
		}
		return ""
	}
	if ip := net.ParseIP(inner); ip != nil && ip.To4() != nil && !strings.Contains(inner, ":") {
		return helo
	}
	return ""
}

// maxHeloShown bounds how much of a malformed HELO argument a trace field
// repeats.
const maxHeloShown = 64

// cleanHelo is a malformed HELO argument made safe for a quoted string in a
// header comment: printable ASCII only, without quotes, backslashes or
// parentheses, and short.
func cleanHelo(helo string) string {
	var b strings.Builder
	for i := 0; i < len(helo) && b.Len() < maxHeloShown; i++ {
		switch c := helo[i]; {
		case c < 0x21 || c > 0x7e, c == '"', c == '\\', c == '(', c == ')':
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// addressLiteral writes ip as RFC 5321 4.1.3 does.
func addressLiteral(ip string) string {
	a := net.ParseIP(ip)
	switch {
	case a == nil:
		return "[" + cleanHelo(ip) + "]"
	case a.To4() != nil:
		return "[" + a.To4().String() + "]"
	}
	return "[IPv6:" + a.String() + "]"
}
