package inbound

import (
	"bytes"
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
	ctx      context.Context
	cancel   context.CancelFunc
	ip       string
	conn     net.Conn
	smtpConn *smtp.Conn // for the client's HELO name and TLS state

	mu  sync.Mutex
	env envelope
	// busy is set once a recipient is accepted: the transaction is not yet
	// answered, and a shutdown lets it finish.
	busy   bool
	closed bool
}

// envelope is what the commands of a transaction said. go-smtp reads a
// BDAT message in a goroutine of its own, which may still run when RSET
// resets the envelope: Data works on a copy taken under mu.
type envelope struct {
	mailFrom   string
	utf8       bool  // MAIL FROM asked for SMTPUTF8
	size       int64 // MAIL FROM's SIZE, 0 if none
	rcpts      int
	rcpt       string // the first recipient, lower-case
	postmaster bool   // the recipients are postmaster or campaign.from
	// confirm is the token of a confirmation address, the transaction's
	// only recipient (SPEC 11); nil for a letter.
	confirm *store.ConfirmToken
}

// inFlight is one letter being read, checked and stored.
type inFlight struct {
	envelope
	// buf holds the letter after room for its Received: field
	// (receivedRoom); held is what it took from the in-flight budget.
	buf  []byte
	held int64
	// ip is the client the letter is accounted to: the connecting one, or
	// the one a trusted secondary names.
	ip string
	// authResults is the field a secondary puts on top (SPEC 12).
	authResults []byte
}

func (ss *session) Reset() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.env, ss.busy = envelope{}, false
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
	if opts != nil && opts.Size > ss.s.maxMessageBytes(ss.ip) {
		return ss.reply(replyTooBig)
	}
	if !ss.s.diskHasRoom(0) {
		ss.s.log.Warn("free disk space below store.min_free_bytes; sender asked to retry", "session", ss.id, "ip", ss.ip)
		return ss.reply(replyNoSpace)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.env.mailFrom = from
	if opts != nil {
		ss.env.utf8, ss.env.size = opts.UTF8, opts.Size
	}
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
		_, _ = ss.conn.Write([]byte("421 4.3.2 " + ss.s.cfg.SMTP.Hostname + " shutting down, try again later (session " + ss.id + ")\r\n"))
		_ = ss.conn.Close()
	}
	return true
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if tok, ok := ss.s.confirmation(to); ok {
		return ss.confirmRcpt(tok)
	}
	addr, postmaster, ok := ss.s.recipient(to)
	if !ok && ss.s.secondary && ss.s.confirmationAddress(to) {
		// Only the primary knows the confirmation tokens (SPEC 11): the
		// reply waits in the sender's queue until it is back.
		ss.s.log.Info("recipient deferred: a confirmation address, for the primary", "session", ss.id, "ip", ss.ip, "rcpt", to)
		return ss.reply(replyPrimaryOnly)
	}
	if !ok {
		ss.s.log.Info("recipient refused: not a campaign address", "session", ss.id, "ip", ss.ip, "rcpt", to)
		return ss.reply(replyNotCampaign)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	env := &ss.env
	if env.confirm != nil {
		return ss.reply(replyConfirmAlone)
	}
	// A letter is either counted or kept for an admin, never both: the
	// other kind of recipient waits for its own transaction (the sending
	// server retries a 452).
	if env.rcpts > 0 && postmaster != env.postmaster {
		return ss.reply(replyOneKindOfRecipient)
	}
	// From the first accepted recipient the transaction is in progress: a
	// shutdown lets it finish. go-smtp writes 354 before it calls Data, so
	// marking it there would let a shutdown cut off a client already
	// sending its letter.
	if ss.closed {
		return ss.reply(replyShuttingDown)
	}
	ss.busy = true
	env.postmaster = postmaster
	if env.rcpts == 0 {
		env.rcpt = addr
	}
	env.rcpts++
	return nil
}

// recipient says whether the front end takes mail for to (RCPT TO, as
// go-smtp parsed it), as whom (lower-case), and whether it is mail for an
// admin rather than a letter: postmaster (RFC 5321 4.5.1 requires it, with
// or without a campaign domain) and campaign.from, where bounces of
// batches come back, are kept for an admin and never counted. Case is
// folded for ASCII letters only, so no other character can stand in for
// one of an address.
func (s *Server) recipient(to string) (addr string, postmaster, ok bool) {
	addr = asciiLower(to)
	switch {
	case s.addresses[addr]:
		return addr, false, true
	case addr == "postmaster", addr == s.bounceAddr:
		return addr, true, true
	}
	local, domain, found := strings.Cut(addr, "@")
	if found && local == "postmaster" && s.domains[domain] {
		return addr, true, true
	}
	return "", false, false
}

// asciiLower lower-cases the ASCII letters of s and nothing else.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Data reads the whole letter, then decides. Reading to the end first matters
// for smuggling: the reply must come after the real end of data.
func (ss *session) Data(r io.Reader) error {
	// Rcpt marked the session busy; until go-smtp has written the reply
	// and called Reset, a shutdown lets the letter finish.
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return ss.reply(replyShuttingDown)
	}
	ss.busy = true
	l := &inFlight{envelope: ss.env}
	ss.mu.Unlock()
	// The letter's bytes stay taken from the budget until it is stored
	// and answered.
	defer func() { ss.s.inFlight.give(l.held) }()
	take := func(n int64) bool {
		if !ss.s.inFlight.take(ss.ctx, n, ss.s.inFlightWait) {
			return false
		}
		l.held += n
		return true
	}
	var err error
	limit := ss.s.maxMessageBytes(ss.ip)
	l.buf, err = readMessage(r, receivedRoom, l.size, limit, take)
	if err == nil && int64(len(l.buf)-receivedRoom) > limit {
		// go-smtp's limit has room for a trusted secondary's letters.
		err = smtp.ErrDataTooLarge
	}
	if errors.Is(err, errBusy) {
		ss.s.log.Warn("letters in flight over their memory budget; sender asked to retry", "session", ss.id, "ip", ss.ip)
		return ss.reply(replyBusy)
	}
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.Code == 552 {
			ss.reject(store.RejectSize, l.mailFrom, "message over smtp.max_message_bytes")
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
	if l.confirm != nil {
		return ss.confirmReply(l)
	}
	return ss.letter(l)
}

// letter takes a complete message through the checks of SPEC 4 in order.
func (ss *session) letter(l *inFlight) error {
	ctx, msg := ss.ctx, l.buf[receivedRoom:]
	if where := crlf.IndexBare(msg); where >= 0 {
		ss.reject(store.RejectBareLineEnding, l.mailFrom, "bare CR or LF at byte "+strconv.Itoa(where)+" (SMTP smuggling?)")
		return ss.reply(replyBareLineEnding)
	}
	if n := longestLine(msg); n > maxLineLength {
		ss.reject(store.RejectLineTooLong, l.mailFrom, "a line of "+strconv.Itoa(n)+" octets")
		return ss.reply(replyLineTooLong)
	}
	if c := foldCost(msg); c > maxFoldCost {
		ss.reject(store.RejectLineTooLong, l.mailFrom, "header fields folded over too many lines (cost "+strconv.FormatInt(c, 10)+")")
		return ss.reply(replyFoldedTooMuch)
	}
	rel := ss.authResults(l)
	msg = l.buf[receivedRoom:]
	received := ss.s.now()
	sender, ferr := verify.ParseFrom(msg)
	if l.postmaster {
		// Postmaster mail is kept even with a broken From:, since bounces
		// and complaints are exactly what may arrive there.
		from := sender.Address
		if ferr != nil {
			from = l.mailFrom
		}
		if ss.s.secondary {
			var spf verify.SPFResult
			if rel != nil {
				spf = rel.spf
			} else {
				spf = ss.s.verifier.CheckSPF(ctx, net.ParseIP(ss.ip), ss.smtpConn.Hostname(), l.mailFrom)
			}
			l.authResults = authResultsField(ss.s.cfg.SMTP.Hostname, nil, spf, l.mailFrom, l.ip)
		}
		return ss.store(ctx, l, store.NewLetter{Received: received, From: from, Name: sender.Name,
			RemoteIP: l.ip, Session: ss.id, Hold: store.HeldPostmaster, Body: msg})
	}
	if ferr != nil {
		ss.reject(store.RejectFrom, l.mailFrom, ferr.Error())
		return ss.reply(replyBadFrom)
	}
	dec := ss.verify(ctx, msg, sender, l.mailFrom, rel)
	if dec.tempFail {
		ss.s.log.Warn("a DNS lookup failed temporarily; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"sender", sender.Address, "mail_from", l.mailFrom, "reason", dec.verdict.Reason)
		return ss.reply(replyDNSTemporary)
	}
	dedup, err := verify.NormalizeAddress(sender.Address, ss.s.fold)
	if err != nil {
		ss.reject(store.RejectFrom, sender.Address, "From address cannot be normalised: "+err.Error())
		return ss.reply(replyBadFrom)
	}
	if ss.s.secondary {
		l.authResults = authResultsField(ss.s.cfg.SMTP.Hostname, &dec.dkim, dec.spf, l.mailFrom, l.ip)
	}
	nl := store.NewLetter{
		Received: received, From: sender.Address, Name: sender.Name, RemoteIP: l.ip, Session: ss.id,
		Verdict:      dec.verdict,
		DedupAddress: dedup, Body: msg,
	}
	if !nl.Verdict.Verified() {
		switch ss.s.cfg.Verify.Unverified {
		case config.UnverifiedReject:
			ss.reject(store.RejectUnverified, sender.Address, "unverified: "+dec.verdict.Reason)
			return ss.reply(replyUnverified)
		case config.UnverifiedQuarantine:
			nl.Hold = store.HeldUnverified
		case config.UnverifiedRelay:
			// Counted, marked unverified in its verdict.
		case config.UnverifiedConfirm:
			nl.Hold, nl.ConfirmVia = store.HeldConfirm, l.rcpt
			if why := noConfirmation(l.mailFrom, dec); why != "" {
				nl.Hold, nl.HoldNote = store.HeldUnconfirmed, "no confirmation request: "+why
			}
		}
	}
	return ss.store(ctx, l, nl)
}

// decision is a letter's verdict as the store keeps it, whether a
// temporary DNS failure kept it from verifying, and the checks it came
// from.
type decision struct {
	verdict  store.Verdict
	tempFail bool
	dkim     verify.Verdict
	spf      verify.SPFResult // zero when not checked
}

// verify checks the letter's DKIM signatures and, when none passes aligned
// and verify.spf is on, the SPF record of its envelope sender from the
// connecting IP (SPEC 5); for a letter a trusted secondary forwarded (rel),
// the SPF result it checked from the original client's IP. A secondary
// checks SPF even after a DKIM pass: the primary needs the result should
// the signature fail there.
func (ss *session) verify(ctx context.Context, msg []byte, sender verify.Sender, mailFrom string, rel *relayed) decision {
	dkim := ss.s.verifier.Verify(ctx, msg, sender)
	switch {
	case dkim.Pass:
		ss.s.metrics.Verdict(DKIMPass)
	case dkim.TempFail:
		ss.s.metrics.Verdict(DKIMTempError)
	case dkim.Unsigned:
		ss.s.metrics.Verdict(DKIMNone)
	default:
		ss.s.metrics.Verdict(DKIMFail)
	}
	var spf verify.SPFResult // zero: not checked
	switch {
	case rel != nil && ss.s.cfg.Verify.SPF:
		spf = rel.spf
	case ss.s.secondary, !dkim.Pass && ss.s.cfg.Verify.SPF:
		// With verify.spf off this asks no DNS and says so.
		spf = ss.s.verifier.CheckSPF(ctx, net.ParseIP(ss.ip), ss.smtpConn.Hostname(), mailFrom)
	}
	d := verify.Decide(dkim, spf, sender.Domain)
	v := store.Verdict{Kind: store.VerdictUnverified, Domain: dkim.Domain, Selector: dkim.Selector, Reason: d.Reason}
	switch d.Method {
	case verify.MethodDKIM:
		v = store.Verdict{Kind: store.VerdictDKIM, Domain: d.Domain, Selector: d.Selector, Reason: d.Reason}
	case verify.MethodSPF:
		v = store.Verdict{Kind: store.VerdictSPF, Domain: d.Domain, Reason: d.Reason}
	}
	return decision{verdict: v, tempFail: d.TempFail, dkim: dkim, spf: spf}
}

// store has the letter stored, with its Received: field on top, and
// answers for it.
func (ss *session) store(ctx context.Context, l *inFlight, nl store.NewLetter) error {
	size := int64(len(l.buf) - receivedRoom)
	if !ss.s.diskHasRoom(size) {
		ss.s.log.Warn("free disk space below store.min_free_bytes; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"sender", nl.From)
		return ss.reply(replyNoSpace)
	}
	// Letters that prove nothing are what a flood is made of: each sender
	// domain and client network may have only so many stored per hour.
	unverified := !nl.Verdict.Verified()
	domain := senderDomain(nl.From)
	if unverified {
		if over := ss.s.unverified.over(domain, l.ip, size, ss.s.now()); over != "" {
			ss.s.log.Warn("unverified mail over its hourly cap; sender asked to retry", "session", ss.id, "ip", ss.ip,
				"sender", nl.From, "over", over)
			return ss.reply(replyUnverifiedCap)
		}
	}
	reserve := ss.s.store.ReserveLetterID
	if ss.s.secondary {
		reserve = ss.s.store.ReserveForwardID
	}
	id, err := reserve()
	if err != nil {
		ss.s.log.Error("reserving a letter ID failed; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"sender", nl.From, "err", err)
		return ss.reply(replyStoreFailed)
	}
	_, tls := ss.smtpConn.TLSConnectionState()
	t := trace{host: ss.s.cfg.SMTP.Hostname, helo: ss.smtpConn.Hostname(), ip: ss.ip, id: id, tls: tls,
		utf8: l.utf8, when: nl.Received}
	if l.rcpts == 1 {
		t.rcpt = l.rcpt
	}
	// A secondary's Authentication-Results field goes above its Received:
	// field, where the primary looks for it.
	field := append(l.authResults, t.receivedField()...)
	nl.ID, nl.Body, nl.TraceLen = id, withField(l.buf, receivedRoom, field), len(field)
	var res store.Accepted
	if ss.s.secondary {
		// Counted by the primary alone: stored to forward, never "already
		// counted" here.
		res.ID, err = ss.s.store.QueueForward(ctx, nl, l.mailFrom, ss.s.forwardRcpt(l.rcpt))
	} else {
		res, err = ss.s.store.Accept(ctx, nl)
	}
	if err != nil {
		ss.s.log.Error("storing a letter failed; sender asked to retry", "session", ss.id, "ip", ss.ip,
			"sender", nl.From, "err", err)
		return ss.reply(replyStoreFailed)
	}
	if unverified {
		ss.s.unverified.add(domain, l.ip, size, ss.s.now())
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

// longestLine is the length of msg's longest line, its line ending
// included.
func longestLine(msg []byte) int {
	longest := 0
	for len(msg) > 0 {
		n := bytes.IndexByte(msg, '\n') + 1
		if n == 0 {
			n = len(msg)
		}
		longest = max(longest, n)
		msg = msg[n:]
	}
	return longest
}

// receivedRoom is the space left before a message as it is read, so its
// Received: field goes on top without copying the message.
const receivedRoom = 1024

// errBusy is readMessage's error when the in-flight budget had no room.
var errBusy = errors.New("inbound: letters in flight over their budget")

// readMessage reads a whole message into a buffer after room free bytes;
// sizeHint (MAIL FROM's SIZE, if any, up to max) sizes it at once. Every
// byte of the buffer's capacity is first taken with take; when take
// refuses, reading stops with errBusy (go-smtp then reads the rest of the
// message to its end, without keeping it).
func readMessage(r io.Reader, room int, sizeHint, max int64, take func(int64) bool) ([]byte, error) {
	size := int64(4096)
	if sizeHint > 0 {
		size = min(sizeHint, max) + 1 // the reader needs room to see the end
	}
	if !take(int64(room) + size) {
		return make([]byte, room), errBusy
	}
	buf := make([]byte, room, room+int(size))
	for {
		if len(buf) == cap(buf) {
			// Double, so a letter without SIZE costs about twice its size
			// in copies while read, and take the bytes first.
			grown := min(int64(cap(buf))*2, int64(room)+max+1)
			if grown <= int64(cap(buf)) {
				grown = int64(cap(buf)) + 4096
			}
			if !take(grown - int64(cap(buf))) {
				return buf, errBusy
			}
			buf = append(make([]byte, 0, grown), buf...)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// withField puts field before the message at buf[room:], in the room left
// for it when it fits.
func withField(buf []byte, room int, field []byte) []byte {
	if len(field) <= room {
		start := room - len(field)
		copy(buf[start:], field)
		return buf[start:]
	}
	return append(field, buf[room:]...)
}

// maxFoldCost bounds foldCost. Header parsers that append each
// continuation line to the field read so far, as go-msgauth's DKIM
// verifier does, copy the field once per line: a megabyte folded over
// 45,000 lines costs them gigabytes of copying, tens of seconds of CPU per
// letter. Real fields stay far below: a References: field of 500
// message IDs, one per line, costs about 6 MB.
const maxFoldCost = 32 << 20

// foldCost is what copying msg's header fields line by line costs: for
// every continuation line, the length of its field up to that line.
func foldCost(msg []byte) int64 {
	var cost, field int64
	for len(msg) > 0 {
		n := bytes.IndexByte(msg, '\n') + 1
		if n == 0 {
			n = len(msg)
		}
		line := msg[:n]
		msg = msg[n:]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // end of the header
		}
		if line[0] == ' ' || line[0] == '\t' {
			cost += field
		} else {
			field = 0
		}
		field += int64(len(line))
	}
	return cost
}

// senderDomain is the lower-case domain of addr, the key of the cap on
// unverified mail; "<>" for an address without one.
func senderDomain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || at == len(addr)-1 {
		return "<>"
	}
	return asciiLower(addr[at+1:])
}

// authResults takes the Authentication-Results fields that claim this host
// or its secondaries, but for the one believed, out of the letter
// (scrubAuthResults), and sets the client the letter is accounted to. It
// returns what a trusted secondary's topmost field says, nil when nothing
// is believed: then SPF and the per-IP limits go by the connecting IP.
func (ss *session) authResults(l *inFlight) *relayed {
	l.ip = ss.ip
	trusted := ss.s.trusts(ss.ip)
	msg, sc := scrubAuthResults(l.buf[receivedRoom:], ss.s.cfg.SMTP.Hostname, ss.s.cfg.Secondary.Names, trusted)
	l.buf = l.buf[:receivedRoom+len(msg)]
	if sc.removed > 0 {
		ss.s.log.Info("Authentication-Results fields claiming this host or its secondaries removed before verification",
			"session", ss.id, "ip", ss.ip, "removed", sc.removed)
	}
	if !trusted {
		return nil
	}
	var rel relayed
	ok := sc.top != nil
	if ok {
		rel, ok = relayedBy(sc.top)
	}
	if !ok {
		ss.s.log.Warn("letter from a trusted secondary ([secondary] trusted) without a readable Authentication-Results "+
			"field of its own on top; SPF and the per-IP limits go by the secondary's IP", "session", ss.id, "ip", ss.ip,
			"err", sc.topErr)
		return nil
	}
	if !strings.EqualFold(rel.mailFrom, l.mailFrom) {
		// The secondary forwards with the sender's MAIL FROM: a result
		// for another sender is not this letter's.
		rel.spf = verify.SPFResult{Status: verify.SPFNone, Reason: "by " + rel.servID + " for another MAIL FROM"}
	}
	l.ip = rel.clientIP
	return &rel
}

// forwardRcpt is the recipient a secondary forwards a letter to: the first
// the sender named, with a bare postmaster (RFC 5321 4.5.1) given the
// first campaign domain, as the primary's delivery needs a domain.
func (s *Server) forwardRcpt(rcpt string) string {
	if !strings.Contains(rcpt, "@") {
		first := s.cfg.Campaign.Addresses[0]
		return rcpt + first[strings.LastIndexByte(first, '@'):]
	}
	return rcpt
}

// confirmationAddress reports whether to has the shape of a confirmation
// address of a campaign address, <local>+confirm-<token>@<domain> (SPEC
// 11), which a secondary cannot check.
func (s *Server) confirmationAddress(to string) bool {
	addr := asciiLower(to)
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return false
	}
	local, tag, found := strings.Cut(addr[:at], "+confirm-")
	return found && tag != "" && s.addresses[local+addr[at:]]
}
