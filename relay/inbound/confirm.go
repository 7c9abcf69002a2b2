package inbound

import (
	"errors"

	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/relay/notify"
	"github.com/petitiond/petitiond/relay/verify"
	"github.com/petitiond/petitiond/store"
)

// Replies to confirmation requests (SPEC 11). The confirmation address of
// a request is a campaign address with the request's token as its
// subaddress; RCPT takes it only while the request is live, and the
// message sent to it counts the letter it was for. The message itself is
// read to its end (the same limits as a letter) and not kept.

// confirmation reads to as the confirmation address of one of the
// campaign's addresses.
func (s *Server) confirmation(to string) (store.ConfirmToken, bool) {
	via, tok, ok := notify.ParseConfirmAddress(asciiLower(to))
	if !ok || !s.addresses[via] {
		return store.ConfirmToken{}, false
	}
	return tok, true
}

// confirmRcpt takes a confirmation address as the transaction's one
// recipient, if its request is live.
func (ss *session) confirmRcpt(tok store.ConfirmToken) error {
	live, err := ss.s.store.ConfirmLive(tok)
	if err != nil {
		ss.s.log.Error("looking up a confirmation token failed; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"token", tok.ID, "err", err)
		return ss.reply(replyStoreFailed)
	}
	if !live {
		ss.s.log.Info("recipient refused: confirmation address unknown, used or expired", "session", ss.id, "ip", ss.ip,
			"token", tok.ID)
		return ss.reply(replyConfirmUnknown)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.env.rcpts > 0 {
		return ss.reply(replyConfirmAlone)
	}
	if ss.closed {
		return ss.reply(replyShuttingDown)
	}
	ss.busy = true
	ss.env.confirm = &tok
	ss.env.rcpts++
	return nil
}

// confirmReply counts the letter a reply confirms, once the reply was
// read to its end. A token that died meanwhile (another reply, its
// expiry) gets the same 550 as at RCPT.
func (ss *session) confirmReply(l *inFlight) error {
	res, err := ss.s.store.Confirm(ss.ctx, store.ConfirmReply{Token: *l.confirm, Session: ss.id, IP: ss.ip})
	switch {
	case errors.Is(err, store.ErrNotFound):
		ss.s.log.Info("confirmation reply refused: the request is no longer live", "session", ss.id, "ip", ss.ip,
			"token", l.confirm.ID)
		return ss.reply(replyConfirmUnknown)
	case err != nil:
		ss.s.log.Error("recording a confirmation reply failed; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"err", err)
		return ss.reply(replyStoreFailed)
	}
	ss.s.log.Debug("confirmation reply taken", "session", ss.id, "counted", res.Counted, "duplicates", len(res.Duplicates))
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "confirmation received, thank you"}
}

// noConfirmation says why an unverified letter under policy "confirm" may
// not have a request sent, "" when it may: a request must never go to an
// address that a forged envelope names, nor in answer to a null sender
// (SPEC 11: no backscatter).
func noConfirmation(mailFrom string, dec decision) string {
	switch {
	case mailFrom == "":
		return "null MAIL FROM"
	case dec.spf.Status == verify.SPFFail:
		return "SPF fails for MAIL FROM, whose address may be forged"
	}
	return ""
}
