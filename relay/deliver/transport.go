// Package deliver puts a batch message into each recipient's mail host
// (SMTP, through MX lookup or a smarthost) or mailbox (Maildir), one
// recipient per call, and classifies failures as permanent or temporary so
// the scheduler knows whether to retry.
package deliver

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Transport puts one message into one recipient's mailbox or mail host.
// On success the Receipt says where the copy went.
type Transport interface {
	Deliver(ctx context.Context, from, rcpt string, msg []byte) (Receipt, error)
}

// Receipt says what happened to a delivered copy, for the delivered event
// and the log: the mail host and its final reply (SMTP), or the file
// written (Maildir).
type Receipt struct {
	// Host is the mail host that accepted the copy: the MX or smarthost
	// name, or an address when that is all there was (a literal).
	Host string
	// Addr is the address and port the copy was sent to.
	Addr netip.AddrPort
	// Reply is the host's final reply, code first, on one line ("250 2.0.0
	// Ok: queued as ABC"). It came from the network: control characters
	// are replaced and its length is bounded.
	Reply string
	// TLS is true when the copy travelled over TLS.
	TLS bool
	// Path is the Maildir file written; "" for SMTP.
	Path string
}

// String is the receipt as the event and log say it, e.g.
// "mx1.ofapp.example [192.0.2.1] said: 250 2.0.0 Ok: queued as ABC".
func (r Receipt) String() string {
	if r.Path != "" {
		return "written to " + r.Path
	}
	var b strings.Builder
	hostIsAddr := r.Addr.IsValid() && r.Host == r.Addr.Addr().String()
	if r.Host != "" && !hostIsAddr {
		b.WriteString(r.Host + " ")
	}
	if r.Addr.IsValid() {
		b.WriteString("[" + r.Addr.Addr().String() + "]")
		if p := r.Addr.Port(); p != 25 {
			b.WriteString(":" + strconv.Itoa(int(p)))
		}
		b.WriteByte(' ')
	}
	b.WriteString("said: " + r.Reply)
	if r.TLS {
		b.WriteString(" (over TLS)")
	}
	return b.String()
}

// maxReplyText bounds a remote reply kept in a Receipt.
const maxReplyText = 512

// cleanReply makes remote reply text safe to store and print: one line,
// no control characters, valid UTF-8, at most maxReplyText bytes.
func cleanReply(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case r == '\n' || r == '\r' || r == '\t' || r == ' ':
			// Lines of a multi-line reply join with one space.
			space = b.Len() > 0
			continue
		case r == utf8.RuneError || unicode.IsControl(r) || r == 0x2028 || r == 0x2029:
			r = '?'
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+utf8.RuneLen(r) > maxReplyText {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Kind names a failure that calls for more than a plain retry, so the
// scheduler and the organisers' page can say what happened without reading
// the text.
type Kind int

const (
	// KindOther is any failure not named below.
	KindOther Kind = iota
	// KindNo8BitMIME: the message has 8-bit content and the recipient's
	// host does not offer 8BITMIME (RFC 6152 3). Converting the letters
	// would break their own DKIM signatures, so the copy is not sent; the
	// failure is temporary (the host may be fixed, another MX may take it)
	// and becomes permanent at give-up like any temporary failure.
	KindNo8BitMIME
	// KindTooBig: the message is larger than the recipient's host accepts:
	// its EHLO SIZE is smaller, or it refused the message as too big (552,
	// or enhanced code X.3.4 / X.2.3). Permanent for this message; smaller
	// messages carrying the same letters may go. Error.SizeLimit holds the
	// advertised limit when there was one.
	KindTooBig
)

func (k Kind) String() string {
	switch k {
	case KindNo8BitMIME:
		return "no-8bitmime"
	case KindTooBig:
		return "too-big"
	default:
		return "other"
	}
}

// Error classifies a failed delivery.
type Error struct {
	// Permanent means retrying cannot help (a 5xx reply, a null MX, a
	// configuration that forbids the delivery); otherwise retry later.
	Permanent bool
	// Kind names failures that need their own handling (see Kind).
	Kind Kind
	// SizeLimit is the largest message the host said it accepts (its EHLO
	// SIZE), 0 when unknown; set with KindTooBig.
	SizeLimit int64
	// Code is the SMTP reply code that caused the failure, 0 when the failure
	// was not an SMTP reply (network, DNS, TLS, local disk, our own refusal).
	Code int
	// Msg says what failed: host and step, or the local reason.
	Msg string
	// Err is the underlying error, e.g. a *smtp.SMTPError or a net.Error.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Msg
	case e.Msg == "":
		return e.Err.Error()
	default:
		return e.Msg + ": " + e.Err.Error()
	}
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is an *Error marked permanent. Everything
// else (network errors, timeouts, 4xx replies, cancellation) is temporary:
// when in doubt, retry rather than give up on a recipient's copy.
func IsPermanent(err error) bool {
	var de *Error
	return errors.As(err, &de) && de.Permanent
}

// KindOf returns the Kind of err's *Error, KindOther for anything else.
func KindOf(err error) Kind {
	var de *Error
	if errors.As(err, &de) {
		return de.Kind
	}
	return KindOther
}

func permanent(msg string, err error) *Error { return &Error{Permanent: true, Msg: msg, Err: err} }

func temporary(msg string, err error) *Error { return &Error{Msg: msg, Err: err} }
