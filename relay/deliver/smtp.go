package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/dnsname"
	"github.com/petitiond/petitiond/loopback"
)

const (
	// defaultTimeout is RFC 5321 4.5.3.2's command timeout.
	defaultTimeout = 5 * time.Minute
	// maxAddrAttempts caps the connections one Deliver call opens, across all
	// MX hosts and their addresses, so a domain with many broken MX hosts
	// cannot hold a worker for long.
	maxAddrAttempts = 10
	// bodyChunk is how much of the message is written per deadline refresh:
	// a stalled peer is detected within Timeout, while a slow but moving
	// transfer of a large message is not cut off.
	bodyChunk = 64 << 10
	// quitTimeout bounds the wait for the reply to QUIT, which changes
	// nothing and is worth no more than a few seconds.
	quitTimeout = 10 * time.Second
)

// The steps of a transaction, as errors name them.
const (
	stepMail    = "MAIL FROM"
	stepRcpt    = "RCPT TO"
	stepData    = "DATA"
	stepEndData = "end of DATA"
)

// no8BitMIME is what the admin reads when a host lacks 8BITMIME.
const no8BitMIME = "the recipient's server does not accept 8-bit mail (no 8BITMIME in its EHLO reply); " +
	"converting the letters would break their DKIM signatures, so this copy waits until the server offers 8BITMIME (ask its admin)"

// SMTPOptions says where SMTP delivery sends copies (MX hosts or one
// smarthost), as whom, and how it protects the connection.
type SMTPOptions struct {
	// Hostname is our EHLO name; "" means "localhost".
	Hostname string
	// Smarthost is "host:port" to deliver every message to; "" means look up
	// the MX of each recipient's domain.
	Smarthost string
	// Port is the port of MX hosts; "" means "25". Tests set a sink's port.
	Port string
	// Username and Password enable AUTH PLAIN at the smarthost (never at MX
	// hosts). They are sent only over TLS with a verified certificate, or to
	// a loopback smarthost; any other case is a permanent configuration error.
	Username, Password string
	// StartTLS is StartTLSOpportunistic (the default when ""),
	// StartTLSRequired or StartTLSOff.
	StartTLS string
	// TLSConfig is the base TLS configuration (RootCAs in tests); ServerName
	// is set per host.
	TLSConfig *tls.Config
	// Resolver is "host:port" of the DNS server for MX and address lookups;
	// "" means the system resolver.
	Resolver string
	// Timeout bounds each step: DNS lookup, connect, TLS handshake, every
	// command and every chunk of the body; the reply to the final dot may
	// take twice as long (RFC 5321 4.5.3.2.6 gives it 10 minutes against 5
	// for commands: the receiver may be scanning the message). 0 means 5
	// minutes.
	Timeout time.Duration
	// Dial opens connections; nil means a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Validate reports configuration mistakes that would make every delivery
// fail, so they can be caught when the configuration is loaded.
func (o SMTPOptions) Validate() error {
	switch o.StartTLS {
	case "", StartTLSOpportunistic, StartTLSRequired, StartTLSOff:
	default:
		return fmt.Errorf("deliver: starttls %q: want %q, %q or %q", o.StartTLS, StartTLSOpportunistic, StartTLSRequired, StartTLSOff)
	}
	if strings.ContainsAny(o.Hostname, " \t\r\n") {
		return fmt.Errorf("deliver: hostname %q contains white space", o.Hostname)
	}
	var host string
	if o.Smarthost != "" {
		h, port, err := net.SplitHostPort(o.Smarthost)
		if err != nil || h == "" || port == "" {
			return fmt.Errorf("deliver: smarthost %q: want host:port", o.Smarthost)
		}
		host = h
	}
	if o.Username != "" || o.Password != "" {
		if o.Smarthost == "" {
			// Credentials meant for a smarthost must not go to whatever MX
			// host a recipient domain names.
			return errors.New("deliver: username/password need a smarthost")
		}
		if o.Username == "" {
			return errors.New("deliver: password set without username")
		}
		if o.StartTLS == StartTLSOff && !loopback.Host(host) {
			return fmt.Errorf("deliver: credentials for %s would travel in plain text: set starttls = %q", host, StartTLSRequired)
		}
	}
	return nil
}

// SMTP delivers over SMTP, one transaction per recipient. It implements
// Transport and is safe for concurrent use.
type SMTP struct {
	opt      SMTPOptions
	resolver *net.Resolver
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewSMTP returns an SMTP transport. Configuration errors (see Validate)
// surface as permanent errors from Deliver.
func NewSMTP(opt SMTPOptions) *SMTP {
	if opt.Hostname == "" {
		opt.Hostname = "localhost"
	}
	if opt.Port == "" {
		opt.Port = "25"
	}
	if opt.Timeout <= 0 {
		opt.Timeout = defaultTimeout
	}
	r := &net.Resolver{PreferGo: true}
	if opt.Resolver != "" {
		server := opt.Resolver
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}
	}
	dial := opt.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return &SMTP{opt: opt, resolver: r, dial: dial}
}

// Deliver sends msg (CRLF line ends; go-smtp's DATA writer dot-stuffs it
// and would turn a bare LF into CRLF) to rcpt with envelope sender from.
// Once a server answered 250 to the final dot it returns the host and its
// reply; otherwise an *Error.
//
// msg is never changed on the way: 8-bit content goes only to a host that
// offers 8BITMIME (KindNo8BitMIME otherwise), and a message larger than the
// host's SIZE is not sent (KindTooBig).
func (t *SMTP) Deliver(ctx context.Context, from, rcpt string, msg []byte) (Receipt, error) {
	if err := t.opt.Validate(); err != nil {
		return Receipt{}, permanent("configuration", err)
	}
	if err := checkPath(from); err != nil {
		return Receipt{}, permanent("sender "+from, err)
	}
	domain, err := rcptDomain(rcpt)
	if err != nil {
		return Receipt{}, permanent("recipient "+rcpt, err)
	}
	if err := ctx.Err(); err != nil {
		return Receipt{}, temporary("delivery to "+rcpt, err)
	}

	hosts, port, implicit, derr := t.route(ctx, domain)
	if derr != nil {
		return Receipt{}, derr
	}

	var last *Error
	attempts := 0
	for _, host := range hosts {
		if attempts >= maxAddrAttempts {
			break
		}
		addrs, aerr := t.lookupAddrs(ctx, host, implicit)
		if aerr != nil {
			if aerr.Permanent {
				return Receipt{}, aerr
			}
			last = aerr
			continue
		}
		for _, ip := range addrs {
			if attempts >= maxAddrAttempts {
				break
			}
			attempts++
			addr := net.JoinHostPort(ip.String(), port)
			out := t.attempt(ctx, host, addr, from, rcpt, msg, true)
			if out.retryPlain && attempts < maxAddrAttempts {
				attempts++
				out = t.attempt(ctx, host, addr, from, rcpt, msg, false)
			}
			if out.err == nil {
				return out.receipt, nil
			}
			last = out.err
			if out.err.Permanent || !out.next || ctx.Err() != nil {
				return Receipt{}, out.err
			}
		}
	}
	if last == nil {
		last = temporary("no mail host to try for "+domain, nil)
	}
	return Receipt{}, last
}

// route returns the hosts to try in order and their port. implicit is true
// when the domain itself is the only host (no MX, RFC 5321 5.1).
func (t *SMTP) route(ctx context.Context, domain string) (hosts []string, port string, implicit bool, err *Error) {
	if t.opt.Smarthost != "" {
		host, port, _ := net.SplitHostPort(t.opt.Smarthost) // checked by Validate
		return []string{host}, port, false, nil
	}
	if strings.HasPrefix(domain, "[") {
		// Address literal (RFC 5321 4.1.3): no DNS, deliver to the address.
		lit := strings.TrimPrefix(strings.TrimSuffix(strings.TrimPrefix(domain, "["), "]"), "ipv6:")
		ip, perr := netip.ParseAddr(lit)
		if perr != nil {
			return nil, "", false, permanent("address literal "+domain, perr)
		}
		return []string{ip.String()}, t.opt.Port, true, nil
	}

	lctx, cancel := context.WithTimeout(ctx, t.opt.Timeout)
	mxs, lerr := t.resolver.LookupMX(lctx, dnsname.Absolute(domain))
	cancel()
	if lerr != nil && len(mxs) == 0 {
		var dnsErr *net.DNSError
		if errors.As(lerr, &dnsErr) && dnsErr.IsNotFound {
			// Go reports NXDOMAIN and "no MX records" alike. Both lead to the
			// implicit MX, the domain's own address, whose lookup then fails
			// permanently for a domain that does not exist.
			return []string{domain}, t.opt.Port, true, nil
		}
		return nil, "", false, temporary("MX lookup for "+domain, lerr)
	}

	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	nullMX := false
	for _, mx := range mxs {
		h := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		if h == "" {
			nullMX = true // RFC 7505: "." means the domain accepts no mail
			continue
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 && nullMX {
		return nil, "", false, &Error{Permanent: true, Msg: "domain " + domain + " accepts no mail (null MX, RFC 7505)"}
	}
	if len(hosts) == 0 {
		return nil, "", false, temporary("MX lookup for "+domain+": no usable MX host", lerr)
	}
	return hosts, t.opt.Port, false, nil
}

// lookupAddrs resolves host with the configured resolver. Not finding the
// domain itself (implicit MX) is permanent; not finding a named MX host is
// temporary, as its owner may be fixing DNS.
func (t *SMTP) lookupAddrs(ctx context.Context, host string, implicit bool) ([]netip.Addr, *Error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, t.opt.Timeout)
	addrs, err := t.resolver.LookupNetIP(lctx, "ip", dnsname.Absolute(host))
	cancel()
	if err != nil {
		var dnsErr *net.DNSError
		if implicit && errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, &Error{Permanent: true, Msg: "domain " + host + " does not exist or has neither MX nor address records", Err: err}
		}
		return nil, temporary("address lookup for "+host, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap())
	}
	return out, nil
}

// outcome is the result of one connection attempt.
type outcome struct {
	receipt Receipt // on success
	err     *Error
	// next: the failure concerns this host or this moment (connection, TLS,
	// 4xx), so another host may be tried now.
	next bool
	// retryPlain: an opportunistic TLS handshake failed; try the same address
	// again without STARTTLS.
	retryPlain bool
	// quit: the session is still in step with the server (it replied, or
	// we refused before sending), so QUIT is sent before closing.
	quit bool
}

// session is one connection to one address.
type session struct {
	t     *SMTP
	ctx   context.Context
	host  string // the name the certificate must match (or an IP)
	where string // "host (addr)", for messages
	raw   net.Conn
	c     *smtp.Client

	tlsOn       bool // STARTTLS succeeded
	tlsVerified bool // TLS is up and its certificate verified: AUTH may run
}

func (t *SMTP) attempt(ctx context.Context, host, addr, from, rcpt string, msg []byte, allowTLS bool) outcome {
	s := &session{t: t, ctx: ctx, host: host, where: host + " (" + addr + ")"}
	if _, err := netip.ParseAddr(host); err == nil {
		s.where = addr // the host is the address: say it once
	}

	dctx, cancel := context.WithTimeout(ctx, t.opt.Timeout)
	conn, err := t.dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return outcome{err: s.netErr("connect", err), next: true}
	}
	s.raw = conn
	defer conn.Close()
	// go-smtp takes no context: closing the connection is how cancellation
	// interrupts a blocked read or write.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	s.c = s.newClient(conn)
	if err := s.c.Hello(t.opt.Hostname); err != nil {
		// A refusing greeting or EHLO says nothing about this message: try
		// the next host, and retry later if none takes it.
		e := s.replyErr("greeting/EHLO", err)
		e.Permanent = false
		return outcome{err: e, next: true}
	}

	out := s.transact(from, rcpt, msg, allowTLS)
	if out.err != nil && out.quit && ctx.Err() == nil {
		s.quit()
	}
	return out
}

// transact runs STARTTLS and AUTH as configured and sends the message.
func (s *session) transact(from, rcpt string, msg []byte, allowTLS bool) outcome {
	if allowTLS {
		if out, ok := s.startTLS(); !ok {
			return out
		}
	}
	if s.t.opt.Username != "" {
		if out, ok := s.auth(); !ok {
			return out
		}
	}
	return s.send(from, rcpt, msg)
}

func (s *session) newClient(conn net.Conn) *smtp.Client {
	c := smtp.NewClient(&replyConn{Conn: conn})
	c.CommandTimeout = s.t.opt.Timeout
	c.SubmissionTimeout = 2 * s.t.opt.Timeout
	return c
}

// quit ends a session that is still in step with the server: RFC 5321
// 4.1.1.10 has the client send QUIT before closing, even after an error
// reply. Its reply changes nothing, so it is waited for only briefly: a
// host that never answers QUIT must not hold a worker for minutes after
// the copy was delivered.
func (s *session) quit() {
	s.c.CommandTimeout = min(s.t.opt.Timeout, quitTimeout)
	_ = s.c.Quit()
}

func (s *session) auth() (outcome, bool) {
	if err := authAllowed(s.host, remoteIP(s.raw), s.tlsVerified); err != nil {
		return outcome{err: permanent(s.where+": AUTH", err), quit: true}, false
	}
	if !s.c.SupportsAuth(sasl.Plain) {
		return outcome{err: permanent(s.where+": AUTH", errors.New("server does not offer AUTH PLAIN")), quit: true}, false
	}
	if err := s.c.Auth(sasl.NewPlainClient("", s.t.opt.Username, s.t.opt.Password)); err != nil {
		return s.failed("AUTH", err), false
	}
	return outcome{}, true
}

// authAllowed decides whether credentials may be sent: over TLS with a
// verified certificate, or to a loopback smarthost (a loopback name that the
// connection really reached), where there is no wire to listen on.
func authAllowed(host string, remote netip.Addr, tlsVerified bool) error {
	if tlsVerified {
		return nil
	}
	if loopback.Host(host) && (!remote.IsValid() || remote.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("refusing to send credentials to %s without verified TLS: set starttls = %q and make its certificate verifiable", host, StartTLSRequired)
}

func remoteIP(c net.Conn) netip.Addr {
	return remoteAddrPort(c).Addr()
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// send runs MAIL, RCPT, DATA and QUIT, after checking that the host takes
// this message as it is (size, 8-bit content, non-ASCII addresses).
func (s *session) send(from, rcpt string, msg []byte) outcome {
	opts := &smtp.MailOptions{}
	size := int64(len(msg))
	if limit := s.sizeLimit(); limit > 0 && size > limit {
		// RFC 1870 6.1: a message over the advertised limit is not sent.
		return outcome{err: &Error{Permanent: true, Kind: KindTooBig, SizeLimit: limit,
			Msg: fmt.Sprintf("%s: the message (%d bytes) is larger than the recipient's server accepts (SIZE %d)", s.where, size, limit)},
			quit: true}
	}
	if ok, _ := s.c.Extension("SIZE"); ok {
		opts.Size = size
	}
	// A batch carries letters byte for byte (their DKIM signatures depend on
	// it), so 8-bit letters make an 8-bit batch: say so, and never convert.
	// Without 8BITMIME it must not be sent at all (RFC 6152 3); another MX
	// of the domain may offer it.
	if has8bit(msg) {
		if ok, _ := s.c.Extension("8BITMIME"); !ok {
			return outcome{err: &Error{Kind: KindNo8BitMIME, Msg: s.where + ": " + no8BitMIME}, next: true, quit: true}
		}
		opts.Body = smtp.Body8BitMIME
	}
	if has8bit(from) || has8bit(rcpt) {
		if ok, _ := s.c.Extension("SMTPUTF8"); !ok {
			return outcome{err: permanent(s.where+": "+stepMail, errors.New("non-ASCII address needs SMTPUTF8, which the server does not offer")), quit: true}
		}
		opts.UTF8 = true
	}
	if err := s.c.Mail(from, opts); err != nil {
		return s.failed(stepMail, err)
	}
	if err := s.c.Rcpt(rcpt, nil); err != nil {
		return s.failed(stepRcpt, err)
	}
	w, err := s.c.Data()
	if err != nil {
		return s.failed(stepData, err)
	}
	// go-smtp sets no deadline while the body is written: refresh one per
	// chunk so a peer that stops reading cannot block us forever.
	for off := 0; off < len(msg); off += bodyChunk {
		end := min(off+bodyChunk, len(msg))
		_ = s.raw.SetDeadline(time.Now().Add(s.t.opt.Timeout))
		if _, err := w.Write(msg[off:end]); err != nil {
			return outcome{err: s.netErr("message body", err), next: true}
		}
	}
	_ = s.raw.SetDeadline(time.Now().Add(s.t.opt.Timeout)) // covers the final flush and dot
	resp, err := w.CloseWithResponse()
	if err != nil {
		out := s.failed(stepEndData, err)
		// Without a reply the remote may already hold the message: retry
		// later rather than hand a second copy to another MX right now.
		out.next = out.next && out.err.Code != 0
		return out
	}
	s.quit() // the message is delivered; a failed QUIT changes nothing
	return outcome{receipt: Receipt{
		Host:  s.host,
		Addr:  remoteAddrPort(s.raw),
		Reply: finalReply(resp.StatusText),
		TLS:   s.tlsOn,
	}}
}

// sizeLimit is the host's EHLO SIZE; 0 when it names none (RFC 1870: "SIZE
// 0" means no fixed limit).
func (s *session) sizeLimit() int64 {
	if n, ok := s.c.MaxMessageSize(); ok && n > 0 {
		return int64(n)
	}
	return 0
}

// finalReply is the 250 reply to the final dot as one clean line. go-smtp
// hands over the text without the code, lines joined by "\n", each still
// starting with the enhanced code (RFC 2034): keep that code once.
func finalReply(text string) string {
	if first, _, ok := strings.Cut(text, " "); ok && isEnhancedCode(first) {
		text = strings.ReplaceAll(text, "\n"+first+" ", "\n")
	}
	return cleanReply("250 " + text)
}

func isEnhancedCode(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// failed ends the attempt at step with err. After a reply the session is
// in step (QUIT follows) and the next host may be tried unless the reply
// was permanent.
func (s *session) failed(step string, err error) outcome {
	e := s.replyErr(step, err)
	return outcome{err: e, next: !e.Permanent, quit: e.Code != 0}
}

// replyErr classifies err from step: SMTP replies by code (5xx permanent,
// with the exceptions below), everything else temporary.
func (s *session) replyErr(step string, err error) *Error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) || s.ctx.Err() != nil {
		return s.netErr(step, err)
	}
	e := &Error{Permanent: se.Code >= 500 && se.Code <= 599, Code: se.Code, Msg: s.where + ": " + step, Err: se}
	switch {
	case tooBigReply(step, se):
		e.Permanent, e.Kind, e.SizeLimit = true, KindTooBig, s.sizeLimit()
	case step == stepRcpt && se.Code == 552:
		// RFC 5321 4.5.3.1.10: a 552 to RCPT is treated as 452 (too many
		// recipients or no room for now), a temporary failure.
		e.Permanent = false
	}
	return e
}

// tooBigReply reports whether a reply refuses the message for its size:
// enhanced code X.3.4 (too big for the system) or X.2.3 (over the
// mailbox's limit) at any step, or a 552 to MAIL (RFC 1870's answer to a
// SIZE over the limit) or to the final dot (RFC 5321: "exceeded storage
// allocation") that names no other reason.
func tooBigReply(step string, se *smtp.SMTPError) bool {
	if se.Code < 500 || se.Code > 599 {
		return false
	}
	enh := se.EnhancedCode
	if enh == (smtp.EnhancedCode{5, 3, 4}) || enh == (smtp.EnhancedCode{5, 2, 3}) {
		return true
	}
	generic := enh == (smtp.EnhancedCode{}) || enh == (smtp.EnhancedCode{5, 0, 0})
	return se.Code == 552 && generic && (step == stepMail || step == stepEndData)
}

func (s *session) netErr(step string, err error) *Error {
	if cerr := s.ctx.Err(); cerr != nil {
		// Report the cancellation, not the "use of closed connection" it caused.
		return temporary(s.where+": "+step, fmt.Errorf("%w (%v)", cerr, err))
	}
	return temporary(s.where+": "+step, err)
}

// checkPath rejects what cannot go inside "<...>" on one command line.
func checkPath(addr string) error {
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f || c == '<' || c == '>' {
			return fmt.Errorf("invalid character %q in address", c)
		}
	}
	return nil
}

func rcptDomain(rcpt string) (string, error) {
	if err := checkPath(rcpt); err != nil {
		return "", err
	}
	at := strings.LastIndexByte(rcpt, '@')
	if at <= 0 || at == len(rcpt)-1 {
		return "", errors.New("not an address (want local@domain)")
	}
	domain := strings.ToLower(strings.TrimSuffix(rcpt[at+1:], "."))
	if has8bit(domain) {
		// The configuration is expected to hold A-labels; converting here
		// would pull in golang.org/x/text for a case the campaign lacks.
		return "", errors.New("internationalised domain must be given in its ASCII (xn--) form")
	}
	return domain, nil
}

// has8bit reports whether s has a byte over 127: 8-bit text in a message,
// or UTF-8 in an address. It takes the message as it is, without copying it
// into a string.
func has8bit[T string | []byte](s T) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

// replyConn mends two things in the replies go-smtp reads, in place:
//   - a reply line that is a bare code ("250" CRLF, valid by RFC 5321 4.2)
//     would be a "short response" to Go's textproto, or leave it waiting
//     for more lines: its CR becomes a space ("250 " LF reads the same);
//   - EHLO keywords are case-insensitive (RFC 5321 2.4) but go-smtp looks
//     them up as spelled, so a host that says "8bitmime" or "starttls"
//     would seem to lack them: they are upper-cased.
//
// go-smtp writes each command with one Write, and reads and writes from
// one goroutine.
type replyConn struct {
	net.Conn
	r replyMender
}

func (c *replyConn) Write(p []byte) (int, error) {
	if len(p) >= 5 && strings.EqualFold(string(p[:5]), "EHLO ") {
		c.r.startEHLO()
	}
	return c.Conn.Write(p)
}

func (c *replyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.r.apply(p[:n])
	return n, err
}

// replyMender follows replies through the chunks they arrive in (see
// replyConn); it changes no length and no parameter.
type replyMender struct {
	pos     int  // bytes seen of the current line
	ehlo    bool // inside an EHLO reply
	line    int  // lines seen of the EHLO reply
	last    bool // the current line ends its reply
	keyword bool // inside an EHLO line's keyword
}

func (m *replyMender) startEHLO() { m.ehlo, m.line = true, 0 }

func (m *replyMender) apply(b []byte) {
	for i, ch := range b {
		switch {
		case ch == '\n':
			if m.last {
				m.ehlo = false
			}
			m.pos, m.line, m.last, m.keyword = 0, m.line+1, false, false
			continue
		case m.pos == 3:
			// "250-" continues a reply; "250 " or a bare "250" ends it.
			m.last = ch != '-'
			if ch == '\r' {
				b[i] = ' '
			}
			m.keyword = m.ehlo && m.line > 0 && ch != '\r'
		case m.keyword && (ch == ' ' || ch == '\r'):
			m.keyword = false
		case m.keyword && 'a' <= ch && ch <= 'z':
			b[i] = ch - 'a' + 'A'
		}
		m.pos++
	}
}
