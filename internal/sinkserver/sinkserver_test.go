package sinkserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const testMsg = "From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n.dot line\r\n"

func startSink(t *testing.T, opt Options) *Server {
	t.Helper()
	s, err := Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// send runs one transaction and returns the first error.
func send(t *testing.T, c *smtp.Client, from, to, body string) error {
	t.Helper()
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

func dial(t *testing.T, s *Server) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.CommandTimeout = 5 * time.Second
	c.SubmissionTimeout = 5 * time.Second
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestReceiveAndWait(t *testing.T) {
	s := startSink(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	done := make(chan []Message, 1)
	go func() {
		msgs, err := s.Wait(ctx, 2)
		if err != nil {
			t.Error(err)
		}
		done <- msgs
	}()

	c := dial(t, s)
	for i := 0; i < 2; i++ {
		if err := send(t, c, "a@example.org", "b@example.net", testMsg); err != nil {
			t.Fatal(err)
		}
	}
	msgs := <-done
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want 2", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@example.org" || len(m.To) != 1 || m.To[0] != "b@example.net" {
		t.Errorf("envelope = %q %q", m.From, m.To)
	}
	if string(m.Data) != testMsg {
		t.Errorf("data = %q, want %q", m.Data, testMsg)
	}
	if m.Received.IsZero() {
		t.Error("Received not set")
	}
	if s.Sessions() != 1 {
		t.Errorf("Sessions = %d, want 1", s.Sessions())
	}

	// Messages returns copies: changing one must not change the server's.
	msgs[0].Data[0] = 'X'
	if s.Messages()[0].Data[0] != 'F' {
		t.Error("Messages shares memory with the server")
	}
}

func TestWaitTimesOut(t *testing.T) {
	s := startSink(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	msgs, err := s.Wait(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) || len(msgs) != 0 {
		t.Fatalf("Wait = %v, %v; want deadline exceeded and no messages", msgs, err)
	}
}

func TestFaults(t *testing.T) {
	s := startSink(t, Options{})
	c := dial(t, s)

	s.FailRcpt(&Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "try later"})
	err := send(t, c, "a@example.org", "b@example.net", testMsg)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) || se.Message != "try later" {
		t.Fatalf("RCPT fault: got %v", err)
	}
	s.FailRcpt(nil)
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}

	s.FailData(&Fault{Code: 550, Msg: "no thanks"})
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); smtpCode(err) != 550 {
		t.Fatalf("DATA fault: got %v", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("FailData stored %d messages", n)
	}
	s.FailData(nil)

	s.FailDataAfterReceive(&Fault{Code: 451, Msg: "lost it"})
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); smtpCode(err) != 451 {
		t.Fatalf("DATA-after-receive fault: got %v", err)
	}
	if msgs := s.Messages(); len(msgs) != 1 || string(msgs[0].Data) != testMsg {
		t.Fatalf("FailDataAfterReceive should store the message, got %d", len(msgs))
	}
	s.FailDataAfterReceive(nil)

	if err := send(t, c, "a@example.org", "b@example.net", testMsg); err != nil {
		t.Fatalf("after clearing faults: %v", err)
	}
	if n := len(s.Messages()); n != 2 {
		t.Fatalf("got %d messages, want 2", n)
	}
}

func TestStartTLSAndAuth(t *testing.T) {
	cert, pool, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	s := startSink(t, Options{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		AuthUser:  "relay",
		AuthPass:  "secret",
	})

	c, err := smtp.DialStartTLS(s.Addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CommandTimeout = 5 * time.Second

	if err := send(t, c, "a@example.org", "b@example.net", testMsg); smtpCode(err) != 502 {
		t.Fatalf("MAIL without AUTH: got %v, want 502", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "wrong")); smtpCode(err) != 535 {
		t.Fatalf("bad password: got %v, want 535", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "secret")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); err != nil {
		t.Fatal(err)
	}
	if !s.SawTLS() {
		t.Error("SawTLS = false")
	}
	if u := s.SawAuth(); u != "relay" {
		t.Errorf("SawAuth = %q", u)
	}
}

func TestNoTLSNoAuthAdvertised(t *testing.T) {
	s := startSink(t, Options{Hostname: "mx.sink.test"})
	c := dial(t, s)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered without TLSConfig")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered without credentials")
	}
	if s.SawTLS() || s.SawAuth() != "" {
		t.Error("SawTLS/SawAuth set without TLS/AUTH")
	}
}

func TestCloseTwiceAndRefuses(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSelfSignedNames(t *testing.T) {
	cert, pool, err := SelfSigned("mx.example.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if err := leaf.VerifyHostname("mx.example.test"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("other.test"); err == nil {
		t.Error("certificate valid for an unlisted name")
	}
	if _, err := leaf.Verify(x509VerifyOptions(pool, "mx.example.test")); err != nil {
		t.Errorf("verify against its pool: %v", err)
	}
	if !strings.Contains(leaf.Subject.CommonName, "mx.example.test") {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
}

func x509VerifyOptions(pool *x509.CertPool, name string) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: pool, DNSName: name}
}

func TestMailParametersRecorded(t *testing.T) {
	s := startSink(t, Options{})
	c := dial(t, s)
	if ok, _ := c.Extension("8BITMIME"); !ok {
		t.Fatal("8BITMIME not offered by default")
	}
	if err := c.Mail("a@example.org", &smtp.MailOptions{Size: int64(len(testMsg))}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.net", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(testMsg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := s.Messages()[0]
	// go-smtp's client says BODY=8BITMIME whenever the server offers it.
	if m.Body != "8BITMIME" || m.Size != int64(len(testMsg)) {
		t.Errorf("Body, Size = %q, %d", m.Body, m.Size)
	}
	if n := s.MailCommands(); n != 1 {
		t.Errorf("MailCommands = %d, want 1", n)
	}
}

func TestNo8BitMIME(t *testing.T) {
	s := startSink(t, Options{No8BitMIME: true})
	c := dial(t, s)
	if ok, _ := c.Extension("8BITMIME"); ok {
		t.Fatal("8BITMIME offered with No8BitMIME")
	}
	for _, ext := range []string{"SIZE", "PIPELINING", "ENHANCEDSTATUSCODES"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s lost along with 8BITMIME", ext)
		}
	}
	// A client that sends BODY=8BITMIME anyway is refused, as RFC 6152
	// lets a server without the extension do.
	raw, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tp := textproto.NewConn(raw)
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	if err := tp.PrintfLine("EHLO client.test"); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := tp.ReadResponse(250); err != nil || strings.Contains(msg, "8BITMIME") {
		t.Fatalf("EHLO: %q, %v", msg, err)
	}
	if err := tp.PrintfLine("MAIL FROM:<a@example.org> BODY=8BITMIME"); err != nil {
		t.Fatal(err)
	}
	if code, msg, _ := tp.ReadResponse(250); code != 555 {
		t.Errorf("MAIL BODY=8BITMIME: %d %s, want 555", code, msg)
	}

	// 7-bit mail still goes, without a BODY parameter.
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || m[0].Body != "" {
		t.Fatalf("messages = %+v", m)
	}
}

func TestNo8BitMIMEWithTLSRefused(t *testing.T) {
	cert, _, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{No8BitMIME: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err == nil {
		s.Close()
		t.Fatal("Start accepted No8BitMIME with TLS")
	}
}

func TestMaxMessageBytes(t *testing.T) {
	s := startSink(t, Options{MaxMessageBytes: 40})
	c := dial(t, s)
	if n, ok := c.MaxMessageSize(); !ok || n != 40 {
		t.Fatalf("advertised SIZE = %d, %v; want 40", n, ok)
	}
	// Declared too big at MAIL (RFC 1870).
	err := c.Mail("a@example.org", &smtp.MailOptions{Size: 41})
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
		t.Fatalf("MAIL SIZE=41: %v, want 552 5.3.4", err)
	}
	// Undeclared, found too big after the data.
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); smtpCode(err) != 552 {
		t.Fatalf("oversized data: %v, want 552", err)
	}
	if n := len(s.Messages()); n != 0 {
		t.Errorf("stored %d oversized messages", n)
	}
}

// RefuseOver: no limit said (a bare SIZE), a larger message refused after
// its data, a smaller one taken.
func TestRefuseOver(t *testing.T) {
	s := startSink(t, Options{RefuseOver: int64(len(testMsg)) - 1})
	c := dial(t, s)
	if ok, param := c.Extension("SIZE"); !ok || param != "" {
		t.Fatalf("SIZE %v %q; want a bare SIZE", ok, param)
	}
	err := send(t, c, "a@example.org", "b@example.net", testMsg)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) {
		t.Fatalf("oversized data: %v, want 552 5.3.4", err)
	}
	if err := send(t, c, "a@example.org", "b@example.net", "Subject: x\r\n\r\nx\r\n"); err != nil {
		t.Fatalf("small message: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("stored %d messages, want the small one", n)
	}
}

func TestFailMail(t *testing.T) {
	s := startSink(t, Options{})
	c := dial(t, s)
	s.FailMail(&Fault{Code: 552, Enhanced: [3]int{5, 3, 4}, Msg: "too big"})
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); smtpCode(err) != 552 {
		t.Fatalf("MAIL fault: %v", err)
	}
	s.FailMail(nil)
	if err := send(t, c, "a@example.org", "b@example.net", testMsg); err != nil {
		t.Fatal(err)
	}
	if n := s.MailCommands(); n != 2 {
		t.Errorf("MailCommands = %d, want 2", n)
	}
}
