package inbound

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/crlf"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// session is one SMTP session; go-smtp calls it from one goroutine, and
// Shutdown looks at it from another (busy, closed).
type session struct {
	s  *Server
	id string
	// ctx ends with the session (Logout) or when a shutdown gives up on
	// it: DNS lookups and the store write of its letters run under it.
	ctx        context.Context
	cancel     context.CancelFunc
	ip         string
	conn       net.Conn
	mailFrom   string
	rcpts      int
	postmaster bool

	mu     sync.Mutex
	busy   bool // a recipient accepted: the transaction is not yet answered
	closed bool
}

func (ss *session) Reset() {
	ss.mailFrom, ss.rcpts, ss.postmaster = "", 0, false
	ss.mu.Lock()
	ss.busy = false
	ss.mu.Unlock()
}

func (ss *session) Logout() error {
	ss.cancel()
	ss.s.untrack(ss)
	return nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.s.draining.Load() {
		return ss.reply(replyShuttingDown)
	}
	if opts != nil && opts.Size > ss.s.cfg.SMTP.MaxMessageBytes {
		return ss.reply(replyTooBig)
	}
	ss.mailFrom = from
	return nil
}

// closeIfIdle ends the session with a 421 unless a transaction is in
// progress; go-smtp has no way to do this between commands, so the line is
// written on the connection directly.
func (ss *session) closeIfIdle() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.busy {
		return false
	}
	if !ss.closed {
		ss.closed = true
		_ = ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = ss.conn.Write([]byte("421 4.3.2 " + ss.s.cfg.SMTP.Hostname + " shutting down, try again later\r\n"))
		_ = ss.conn.Close()
	}
	return true
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	addr := strings.ToLower(to)
	var postmaster bool
	switch {
	case ss.s.addresses[addr]:
	case ss.isPostmaster(addr), addr == ss.s.bounceAddr:
		// RFC 5321 4.5.1: postmaster must be accepted; so must bounces of
		// batches, which come back to campaign.from. Such mail is kept for
		// an admin and never counted.
		postmaster = true
	default:
		ss.s.log.Info("recipient refused: not a campaign address", "session", ss.id, "ip", ss.ip, "rcpt", to)
		return ss.reply(replyNotCampaign)
	}
	// A letter is either counted or kept for an admin, never both: the
	// other kind of recipient waits for its own transaction (the sending
	// server retries a 452).
	if ss.rcpts > 0 && postmaster != ss.postmaster {
		return ss.reply(replyOneKindOfRecipient)
	}
	// From the first accepted recipient the transaction is in progress: a
	// shutdown lets it finish. go-smtp writes 354 before it calls Data, so
	// marking it there would let a shutdown cut off a client already
	// sending its letter.
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return ss.reply(replyShuttingDown)
	}
	ss.busy = true
	ss.mu.Unlock()
	ss.postmaster = postmaster
	ss.rcpts++
	return nil
}

func (ss *session) isPostmaster(addr string) bool {
	if addr == "postmaster" {
		return true
	}
	local, domain, ok := strings.Cut(addr, "@")
	return ok && local == "postmaster" && ss.s.domains[domain]
}

// Data reads the whole letter, then decides. Reading to the end first matters
// for smuggling: the reply must come after the real end of data.
func (ss *session) Data(r io.Reader) error {
	// Rcpt marked the session busy: until go-smtp has written the reply
	// and called Reset, a shutdown lets the letter finish.
	msg, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 552 {
			ss.reject(store.RejectSize, ss.mailFrom, "message over smtp.max_message_bytes")
			return ss.reply(replyTooBig)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			ss.s.log.Warn("timeout reading the message", "session", ss.id, "ip", ss.ip)
			return ss.reply(replyTimeout)
		}
		ss.s.log.Warn("reading the message failed", "session", ss.id, "ip", ss.ip, "err", err)
		return ss.reply(replyReadFailed)
	}
	return ss.letter(msg)
}

// letter takes a complete message through the checks of SPEC 4 in order.
func (ss *session) letter(msg []byte) error {
	ctx := ss.ctx
	if where := crlf.IndexBare(msg); where >= 0 {
		ss.reject(store.RejectBareLineEnding, ss.mailFrom, "bare CR or LF at byte "+strconv.Itoa(where)+" (SMTP smuggling?)")
		return ss.reply(replyBareLineEnding)
	}
	received := ss.s.now()
	sender, ferr := verify.ParseFrom(msg)
	if ss.postmaster {
		// Postmaster mail is kept even with a broken From:, since bounces
		// and complaints are exactly what may arrive there.
		from := sender.Address
		if ferr != nil {
			from = ss.mailFrom
		}
		return ss.store(ctx, store.NewLetter{Received: received, From: from, Name: sender.Name,
			RemoteIP: ss.ip, Session: ss.id, Hold: store.HeldPostmaster, Body: msg})
	}
	if ferr != nil {
		ss.reject(store.RejectFrom, ss.mailFrom, ferr.Error())
		return ss.reply(replyBadFrom)
	}
	verdict := ss.s.verifier.Verify(ctx, msg, sender)
	kind := store.VerdictUnverified
	switch {
	case verdict.Pass:
		kind = store.VerdictDKIM
		ss.s.metrics.Verdict(DKIMPass)
	case verdict.TempFail:
		ss.s.metrics.Verdict(DKIMTempError)
		ss.s.log.Warn("DKIM key lookup failed temporarily; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"sender", sender.Address, "domain", verdict.Domain, "reason", verdict.Reason)
		return ss.reply(replyDNSTemporary)
	case verdict.Unsigned:
		ss.s.metrics.Verdict(DKIMNone)
	default:
		ss.s.metrics.Verdict(DKIMFail)
	}
	dedup, err := verify.NormalizeAddress(sender.Address, ss.s.fold)
	if err != nil {
		ss.reject(store.RejectFrom, sender.Address, "From address cannot be normalised: "+err.Error())
		return ss.reply(replyBadFrom)
	}
	nl := store.NewLetter{
		Received: received, From: sender.Address, Name: sender.Name, RemoteIP: ss.ip, Session: ss.id,
		Verdict:      store.Verdict{Kind: kind, Domain: verdict.Domain, Selector: verdict.Selector, Reason: verdict.Reason},
		DedupAddress: dedup, Body: msg,
	}
	if !nl.Verdict.Verified() {
		switch ss.s.cfg.Verify.Unverified {
		case config.UnverifiedReject:
			ss.reject(store.RejectUnverified, sender.Address, "unverified: "+verdict.Reason)
			return ss.reply(replyUnverified)
		case config.UnverifiedQuarantine:
			nl.Hold = store.HeldUnverified
		case config.UnverifiedRelay:
			// Counted, marked unverified in its verdict.
		}
	}
	return ss.store(ctx, nl)
}

func (ss *session) store(ctx context.Context, nl store.NewLetter) error {
	res, err := ss.s.store.Accept(ctx, nl)
	if err != nil {
		ss.s.log.Error("storing a letter failed; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"sender", nl.From, "err", err)
		return ss.reply(replyStoreFailed)
	}
	if res.Duplicate {
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
			Message: "already counted, thank you"}
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0},
		Message: "queued as " + res.ID}
}

// reject records a letter refused at the end of DATA. A store failure here
// only loses a tally entry, never a letter, so it is logged and the
// rejection goes out anyway.
func (ss *session) reject(class store.RejectClass, from, reason string) {
	r := store.Rejection{Class: class, From: from, RemoteIP: ss.ip, Session: ss.id, Reason: reason}
	if err := ss.s.store.Reject(ss.ctx, r); err != nil {
		ss.s.log.Error("recording a rejection failed", "session", ss.id, "ip", ss.ip, "err", err)
	}
}
