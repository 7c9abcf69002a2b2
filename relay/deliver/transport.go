// Package deliver puts a batch message into each recipient's mail host
// (SMTP, through MX lookup or a smarthost) or mailbox (Maildir), one
// recipient per call, and classifies failures as permanent or temporary so
// the scheduler knows whether to retry.
package deliver

import (
	"context"
	"errors"
)

// Transport puts one message into one recipient's mailbox or mail host.
type Transport interface {
	Deliver(ctx context.Context, from, rcpt string, msg []byte) error
}

// Error classifies a failed delivery.
type Error struct {
	// Permanent means retrying cannot help (a 5xx reply, a null MX, a
	// configuration that forbids the delivery); otherwise retry later.
	Permanent bool
	// Code is the SMTP reply code that caused the failure, 0 when the failure
	// was not an SMTP reply (network, DNS, TLS, local disk).
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

func permanent(msg string, err error) *Error { return &Error{Permanent: true, Msg: msg, Err: err} }

func temporary(msg string, err error) *Error { return &Error{Msg: msg, Err: err} }
