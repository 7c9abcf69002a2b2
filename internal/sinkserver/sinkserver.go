// Package sinkserver runs a real receiving SMTP server on loopback that stands
// in for a recipient's mail host in tests and demos. It stores what it
// receives in memory and can be told to answer with faults, so callers can
// exercise their delivery error handling against real SMTP dialogues.
package sinkserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted (or, with FailDataAfterReceive,
// took in full before answering the fault).
type Message struct {
	From     string
	To       []string
	Data     []byte
	Received time.Time
	// Body and Size are the MAIL parameters BODY= ("" when absent, else
	// "7BIT" or "8BITMIME") and SIZE= (0 when absent).
	Body string
	Size int64
}

// Fault is an SMTP reply the server answers instead of 250.
// A zero Enhanced code makes the server send the generic X.0.0.
type Fault struct {
	Code     int
	Enhanced [3]int
	Msg      string
}

func (f *Fault) smtpError() *smtp.SMTPError {
	msg := f.Msg
	if msg == "" {
		msg = "injected fault"
	}
	return &smtp.SMTPError{Code: f.Code, EnhancedCode: smtp.EnhancedCode(f.Enhanced), Message: msg}
}

// Options configures a Server.
type Options struct {
	// TLSConfig, when non-nil, makes the server offer STARTTLS.
	TLSConfig *tls.Config
	// AuthUser and AuthPass, when both non-empty, make AUTH PLAIN required
	// before MAIL. AUTH is offered on plain connections too, because the
	// server only ever listens on loopback and tests need that case.
	AuthUser, AuthPass string
	// Hostname is the name in the greeting; "" means "sink.localhost".
	Hostname string
	// Addr is the loopback address to listen on; "" means "127.0.0.1:0".
	// Several sinks on one port and different 127.x addresses stand for
	// several recipients' mail hosts found by MX.
	Addr string
	// No8BitMIME makes the server a host without 8BITMIME (RFC 6152): the
	// keyword is left out of its EHLO reply and MAIL with BODY=8BITMIME is
	// refused with 555 5.5.4. Only on plain connections: Start refuses it
	// with TLSConfig, as the reply is edited below TLS.
	No8BitMIME bool
	// MaxMessageBytes is the size limit the EHLO reply advertises (SIZE)
	// and the server enforces: 552 5.3.4 to a larger SIZE= at MAIL, or
	// after the data. 0 means 32 MiB. go-smtp refuses a message of exactly
	// this size too (it needs one more byte to see the end of the data).
	MaxMessageBytes int64
	// RefuseOver makes the server a host that does not say its limit: its
	// EHLO names a bare SIZE, and a message of more than RefuseOver bytes
	// is refused after its data with 552 5.3.4 (and not stored). It
	// overrides MaxMessageBytes.
	RefuseOver int64
}

// ioTimeout bounds every read and write of a session so a client that goes
// silent cannot keep a test's server goroutine alive forever.
const ioTimeout = 30 * time.Second

// Server is a running sink. Addr is its "127.0.0.1:port".
type Server struct {
	Addr string

	opt    Options
	srv    *smtp.Server
	ln     net.Listener
	served chan struct{} // closed when Serve returned

	mu              sync.Mutex
	messages        []Message
	arrived         chan struct{} // closed and replaced on every stored message
	sessions        int
	sawTLS          bool
	authUser        string
	mailCommands    int
	failMail        *Fault
	failRcpt        *Fault
	failData        *Fault
	failDataReceive *Fault
	closed          bool
}

// Start listens on 127.0.0.1 with a free port and serves until Close.
func Start(opt Options) (*Server, error) {
	if opt.No8BitMIME && opt.TLSConfig != nil {
		return nil, errors.New("sinkserver: No8BitMIME works on plain connections only; leave TLSConfig nil")
	}
	addr := opt.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sinkserver: listen: %w", err)
	}
	s := &Server{
		Addr:    ln.Addr().String(),
		opt:     opt,
		served:  make(chan struct{}),
		arrived: make(chan struct{}),
	}
	s.ln = &countingListener{Listener: ln, s: s}

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = opt.Hostname
	if srv.Domain == "" {
		srv.Domain = "sink.localhost"
	}
	srv.TLSConfig = opt.TLSConfig
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = ioTimeout
	srv.WriteTimeout = ioTimeout
	srv.MaxMessageBytes = 32 << 20
	if opt.MaxMessageBytes > 0 {
		srv.MaxMessageBytes = opt.MaxMessageBytes
	}
	if opt.RefuseOver > 0 {
		srv.MaxMessageBytes = 0 // a bare SIZE: no limit said
	}
	srv.ErrorLog = log.New(io.Discard, "", 0)
	s.srv = srv

	go func() {
		defer close(s.served)
		_ = srv.Serve(s.ln) // returns when Close closes the listener
	}()
	return s, nil
}

// countingListener counts accepted connections: go-smtp creates sessions
// only after EHLO (and again after STARTTLS), so sessions are not connections.
type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.mu.Lock()
		l.s.sessions++
		l.s.mu.Unlock()
		if l.s.opt.No8BitMIME {
			c = &no8BitMIMEConn{Conn: c}
		}
	}
	return c, err
}

// no8BitMIMEConn drops the 8BITMIME line from the EHLO reply. go-smtp
// always offers 8BITMIME, never as the reply's last line, and writes a
// reply whole (with the replies before it, when pipelined), so the line
// arrives here whole, inside one Write.
type no8BitMIMEConn struct{ net.Conn }

func (c *no8BitMIMEConn) Write(p []byte) (int, error) {
	line := []byte("250-8BITMIME\r\n")
	if i := bytes.Index(p, line); i >= 0 && (i == 0 || p[i-1] == '\n') {
		out := append(append(make([]byte, 0, len(p)-len(line)), p[:i]...), p[i+len(line):]...)
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Messages returns a copy of every stored message, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copyMessagesLocked()
}

func (s *Server) copyMessagesLocked() []Message {
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = Message{
			From:     m.From,
			To:       slices.Clone(m.To),
			Data:     bytes.Clone(m.Data),
			Received: m.Received,
			Body:     m.Body,
			Size:     m.Size,
		}
	}
	return out
}

// Wait returns the stored messages once at least n have arrived, or ctx's
// error (with the messages so far) when ctx ends first.
func (s *Server) Wait(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if len(s.messages) >= n {
			msgs := s.copyMessagesLocked()
			s.mu.Unlock()
			return msgs, nil
		}
		arrived := s.arrived
		s.mu.Unlock()

		select {
		case <-arrived:
		case <-ctx.Done():
			return s.Messages(), fmt.Errorf("sinkserver: waiting for %d messages: %w", n, ctx.Err())
		}
	}
}

// FailMail makes every MAIL get f until cleared with nil.
func (s *Server) FailMail(f *Fault) { s.setFault(&s.failMail, f) }

// MailCommands returns the number of MAIL commands received so far, refused
// ones included: zero means no client began a transaction.
func (s *Server) MailCommands() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailCommands
}

// FailRcpt makes every RCPT get f until cleared with nil.
func (s *Server) FailRcpt(f *Fault) { s.setFault(&s.failRcpt, f) }

// FailData makes every DATA get f without storing the message.
func (s *Server) FailData(f *Fault) { s.setFault(&s.failData, f) }

// FailDataAfterReceive makes every DATA store the message and then answer
// f: the remote has the message while the sender believes it failed.
func (s *Server) FailDataAfterReceive(f *Fault) { s.setFault(&s.failDataReceive, f) }

func (s *Server) setFault(dst **Fault, f *Fault) {
	if f != nil {
		c := *f // the caller may reuse its value
		f = &c
	}
	s.mu.Lock()
	*dst = f
	s.mu.Unlock()
}

// Sessions returns the number of connections accepted so far.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// SawTLS reports whether any session got as far as a command after STARTTLS.
func (s *Server) SawTLS() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sawTLS
}

// SawAuth returns the user of the last successful AUTH, or "".
func (s *Server) SawAuth() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authUser
}

// Close stops the server, drops open connections and waits for the accept
// loop to end. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	err := s.srv.Close()
	// Serve may not have registered the listener with go-smtp yet (Close
	// right after Start), so close it here too or Serve would block forever.
	if lerr := s.ln.Close(); err == nil && !errors.Is(lerr, net.ErrClosed) {
		err = lerr
	}
	<-s.served
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *Server) authRequired() bool { return s.opt.AuthUser != "" && s.opt.AuthPass != "" }

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	if _, ok := c.TLSConnectionState(); ok {
		s.mu.Lock()
		s.sawTLS = true
		s.mu.Unlock()
	}
	return &session{s: s}, nil
}

// session is one SMTP transaction state; go-smtp calls it from one goroutine.
type session struct {
	s      *Server
	authed bool
	from   string
	to     []string
	body   string
	size   int64
}

func (ss *session) AuthMechanisms() []string {
	if !ss.s.authRequired() {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if !ss.s.authRequired() || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if (identity != "" && identity != user) || user != ss.s.opt.AuthUser || pass != ss.s.opt.AuthPass {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		ss.s.mu.Lock()
		ss.s.authUser = user
		ss.s.mu.Unlock()
		return nil
	}), nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.s.mu.Lock()
	ss.s.mailCommands++
	f := ss.s.failMail
	ss.s.mu.Unlock()
	if ss.s.authRequired() && !ss.authed {
		return smtp.ErrAuthRequired
	}
	if f != nil {
		return f.smtpError()
	}
	ss.body, ss.size = "", 0
	if opts != nil {
		ss.body, ss.size = string(opts.Body), opts.Size
	}
	if ss.s.opt.No8BitMIME && ss.body == string(smtp.Body8BitMIME) {
		return &smtp.SMTPError{Code: 555, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "BODY=8BITMIME not supported"}
	}
	ss.from = from
	ss.to = nil
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	f := ss.s.failRcpt
	ss.s.mu.Unlock()
	if f != nil {
		return f.smtpError()
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	ss.s.mu.Lock()
	failData, failAfter := ss.s.failData, ss.s.failDataReceive
	ss.s.mu.Unlock()
	if failData != nil {
		return failData.smtpError() // go-smtp drains the body itself
	}

	data, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se // e.g. message too large: keep its code
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "read error"}
	}

	if limit := ss.s.opt.RefuseOver; limit > 0 && int64(len(data)) > limit {
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "message too big"}
	}

	s := ss.s
	s.mu.Lock()
	s.messages = append(s.messages, Message{
		From:     ss.from,
		To:       slices.Clone(ss.to),
		Data:     data,
		Received: time.Now(),
		Body:     ss.body,
		Size:     ss.size,
	})
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.mu.Unlock()

	if failAfter != nil {
		return failAfter.smtpError()
	}
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
	ss.body, ss.size = "", 0
}

func (ss *session) Logout() error { return nil }
