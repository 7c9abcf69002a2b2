package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/petitiond/petitiond/internal/sinkserver"
)

const (
	envFrom = "relay@campaign.test"
	rcptTo  = "familias@petition.test"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deliverOne runs Deliver and checks the outcome class.
func deliverOne(t *testing.T, tr Transport, rcpt string, wantErr, wantPermanent bool) error {
	t.Helper()
	_, err := tr.Deliver(testCtx(t), envFrom, rcpt, []byte(testMsg))
	switch {
	case !wantErr && err != nil:
		t.Fatalf("Deliver: %v", err)
	case wantErr && err == nil:
		t.Fatal("Deliver succeeded, want an error")
	case wantErr && IsPermanent(err) != wantPermanent:
		t.Fatalf("Deliver: %v: permanent = %v, want %v", err, IsPermanent(err), wantPermanent)
	}
	return err
}

func wantCode(t *testing.T, err error, code int) {
	t.Helper()
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("%v is not a *deliver.Error", err)
	}
	if de.Code != code {
		t.Fatalf("Code = %d, want %d (%v)", de.Code, code, err)
	}
}

func checkReceived(t *testing.T, s *sinkserver.Server, rcpt string) {
	t.Helper()
	msgs := s.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink has %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != envFrom || len(m.To) != 1 || m.To[0] != rcpt {
		t.Errorf("envelope = %q -> %q", m.From, m.To)
	}
	if string(m.Data) != testMsg {
		t.Errorf("body changed in transit:\n got %q\nwant %q", m.Data, testMsg)
	}
}

func TestSmarthostPlain(t *testing.T) {
	sink := startSink(t, sinkserver.Options{})
	tr := NewSMTP(SMTPOptions{Hostname: "relay.test", Smarthost: sink.Addr, StartTLS: StartTLSOff, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, false, false)
	checkReceived(t, sink, rcptTo)
	if sink.SawTLS() {
		t.Error("TLS used with starttls = off")
	}
}

func TestAuthOverVerifiedTLS(t *testing.T) {
	// A non-loopback name (resolved by the test DNS to 127.0.0.1), so only
	// verified TLS allows the credentials.
	sink, pool := tlsSink(t, sinkserver.Options{AuthUser: "relay", AuthPass: "s3cret"}, "smarthost.test")
	z := startDNS(t, "smarthost.test. 60 IN A 127.0.0.1")
	tr := NewSMTP(SMTPOptions{
		Smarthost: "smarthost.test:" + portOf(t, sink.Addr),
		Username:  "relay", Password: "s3cret",
		StartTLS:  StartTLSRequired,
		TLSConfig: &tls.Config{RootCAs: pool},
		Resolver:  z.Addr,
		Timeout:   5 * time.Second,
	})
	deliverOne(t, tr, rcptTo, false, false)
	checkReceived(t, sink, rcptTo)
	if u := sink.SawAuth(); u != "relay" {
		t.Errorf("SawAuth = %q", u)
	}
	if !sink.SawTLS() {
		t.Error("no TLS")
	}
}

func TestAuthRefusedWithoutTLSToRemoteSmarthost(t *testing.T) {
	z := startDNS(t, "smarthost.test. 60 IN A 127.0.0.1")
	t.Run("no STARTTLS", func(t *testing.T) {
		sink := startSink(t, sinkserver.Options{AuthUser: "relay", AuthPass: "s3cret"})
		tr := NewSMTP(SMTPOptions{Smarthost: "smarthost.test:" + portOf(t, sink.Addr), Username: "relay", Password: "s3cret", Resolver: z.Addr, Timeout: 5 * time.Second})
		err := deliverOne(t, tr, rcptTo, true, true)
		if !strings.Contains(err.Error(), "refusing to send credentials") {
			t.Errorf("error = %v", err)
		}
		if sink.SawAuth() != "" || len(sink.Messages()) != 0 {
			t.Error("credentials or message sent")
		}
	})
	t.Run("unverified certificate", func(t *testing.T) {
		sink, _ := tlsSink(t, sinkserver.Options{AuthUser: "relay", AuthPass: "s3cret"}, "smarthost.test")
		tr := NewSMTP(SMTPOptions{Smarthost: "smarthost.test:" + portOf(t, sink.Addr), Username: "relay", Password: "s3cret",
			TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}, Resolver: z.Addr, Timeout: 5 * time.Second})
		deliverOne(t, tr, rcptTo, true, true)
		if sink.SawAuth() != "" {
			t.Error("credentials sent over unverified TLS")
		}
	})
	t.Run("starttls off is a config error", func(t *testing.T) {
		tr := NewSMTP(SMTPOptions{Smarthost: "smarthost.test:25", Username: "relay", Password: "s3cret", StartTLS: StartTLSOff, Resolver: z.Addr})
		err := deliverOne(t, tr, rcptTo, true, true)
		if !strings.Contains(err.Error(), "plain text") {
			t.Errorf("error = %v", err)
		}
	})
}

func TestAuthLoopbackPlain(t *testing.T) {
	sink := startSink(t, sinkserver.Options{AuthUser: "relay", AuthPass: "s3cret"})
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Username: "relay", Password: "s3cret", StartTLS: StartTLSOff, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, false, false)
	if u := sink.SawAuth(); u != "relay" {
		t.Errorf("SawAuth = %q", u)
	}

	bad := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Username: "relay", Password: "wrong", StartTLS: StartTLSOff, Timeout: 5 * time.Second})
	err := deliverOne(t, bad, rcptTo, true, true)
	wantCode(t, err, 535)
}

func TestAuthAllowedDecision(t *testing.T) {
	lo4 := netip.MustParseAddr("127.0.0.1")
	lo6 := netip.MustParseAddr("::1")
	remote := netip.MustParseAddr("192.0.2.10")
	tests := []struct {
		host     string
		remote   netip.Addr
		verified bool
		want     bool
	}{
		{"127.0.0.1", lo4, false, true},
		{"127.8.9.10", netip.MustParseAddr("127.8.9.10"), false, true},
		{"::1", lo6, false, true},
		{"localhost", lo4, false, true},
		{"LOCALHOST.", lo6, false, true},
		{"localhost", remote, false, false}, // "localhost" that resolved elsewhere
		{"smtp.example.org", remote, false, false},
		{"192.0.2.10", remote, false, false},
		{"smtp.example.org", lo4, false, false}, // a remote name is not loopback
		{"smtp.example.org", remote, true, true},
		{"192.0.2.10", remote, true, true},
	}
	for _, tc := range tests {
		err := authAllowed(tc.host, tc.remote, tc.verified)
		if (err == nil) != tc.want {
			t.Errorf("authAllowed(%q, %v, %v) = %v, want allowed=%v", tc.host, tc.remote, tc.verified, err, tc.want)
		}
	}
}

func TestReplyClassification(t *testing.T) {
	t.Run("451 at RCPT is temporary", func(t *testing.T) {
		sink := startSink(t, sinkserver.Options{})
		sink.FailRcpt(&sinkserver.Fault{Code: 451, Enhanced: [3]int{4, 3, 0}, Msg: "greylisted"})
		tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})
		err := deliverOne(t, tr, rcptTo, true, false)
		wantCode(t, err, 451)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Message != "greylisted" {
			t.Errorf("underlying error = %v", err)
		}
	})
	t.Run("550 at RCPT is permanent", func(t *testing.T) {
		sink := startSink(t, sinkserver.Options{})
		sink.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no such user"})
		tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})
		wantCode(t, deliverOne(t, tr, rcptTo, true, true), 550)
	})
	t.Run("550 at DATA is permanent", func(t *testing.T) {
		sink := startSink(t, sinkserver.Options{})
		sink.FailData(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 7, 1}, Msg: "rejected"})
		tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})
		wantCode(t, deliverOne(t, tr, rcptTo, true, true), 550)
	})
	t.Run("451 after the remote stored it is temporary", func(t *testing.T) {
		// The remote has the message but says it failed: we retry, and the
		// recipient may get a second copy with the same Message-ID (SPEC 7).
		sink := startSink(t, sinkserver.Options{})
		sink.FailDataAfterReceive(&sinkserver.Fault{Code: 451, Msg: "local error"})
		tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})
		wantCode(t, deliverOne(t, tr, rcptTo, true, false), 451)
		if n := len(sink.Messages()); n != 1 {
			t.Errorf("sink stored %d", n)
		}
	})
	t.Run("421 greeting is temporary", func(t *testing.T) {
		f := startFake(t, "127.0.0.1:0", &fakeSMTP{greeting: "421 4.3.2 busy", closeAfterGreet: true})
		tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 5 * time.Second})
		wantCode(t, deliverOne(t, tr, rcptTo, true, false), 421)
	})
	t.Run("554 greeting is temporary: it is about the host, not the message", func(t *testing.T) {
		f := startFake(t, "127.0.0.1:0", &fakeSMTP{greeting: "554 5.3.2 no service", closeAfterGreet: true})
		tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 5 * time.Second})
		wantCode(t, deliverOne(t, tr, rcptTo, true, false), 554)
	})
}

func TestConnectionRefusedIsTemporary(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tr := NewSMTP(SMTPOptions{Smarthost: addr, Timeout: 5 * time.Second})
	err = deliverOne(t, tr, rcptTo, true, false)
	wantCode(t, err, 0)
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Errorf("want the dial error inside, got %v", err)
	}
}

func TestStallInDataTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		step string
	}{
		{"waiting for the reply", len(testMsg), "end of DATA"},
		{"writing the body", 16 << 20, "message body"}, // more than the socket buffers hold
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, "127.0.0.1:0", &fakeSMTP{stallInData: true})
			timeout := 300 * time.Millisecond
			tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: timeout})
			msg := []byte(testMsg)
			if tc.size > len(msg) {
				msg = []byte(testMsg + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", tc.size/65))
			}
			// The test's context allows 20s; a timeout error (not a
			// cancellation) shows the step's own deadline fired first.
			_, err := tr.Deliver(testCtx(t), envFrom, rcptTo, msg)
			if err == nil || IsPermanent(err) {
				t.Fatalf("Deliver = %v, want a temporary error", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("want a timeout inside, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.step) {
				t.Errorf("error %q does not name step %q", err, tc.step)
			}
		})
	}
}

func TestCancelInterruptsStalledDelivery(t *testing.T) {
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{stallInData: true})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	// Timeout is a minute: only the cancellation can end the stall, and
	// the error says so.
	_, err := tr.Deliver(ctx, envFrom, rcptTo, []byte(testMsg))
	if !errors.Is(err, context.Canceled) || IsPermanent(err) {
		t.Fatalf("Deliver = %v, want temporary context.Canceled", err)
	}
}

func TestMXDelivery(t *testing.T) {
	sink := startSink(t, sinkserver.Options{})
	z := startDNS(t,
		"petition.test. 60 IN MX 10 mx1.petition.test.",
		"mx1.petition.test. 60 IN A 127.0.0.1",
		"bare.test. 60 IN A 127.0.0.1", // no MX: implicit MX
		"nullmx.test. 60 IN MX 0 .",
		"dangling.test. 60 IN MX 10 gone.dangling.test.",
		"dangling.test. 60 IN TXT \"v=spf1 -all\"",
		"broken.test. 60 IN MX 10 mx1.petition.test.",
		"nomail.test. 60 IN TXT \"exists, but neither MX nor A\"",
	)
	z.failName("broken.test")
	tr := NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Port: portOf(t, sink.Addr), Resolver: z.Addr, Timeout: 5 * time.Second})

	t.Run("MX", func(t *testing.T) {
		deliverOne(t, tr, "familias@petition.test", false, false)
		if _, err := sink.Wait(testCtx(t), 1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no MX falls back to A", func(t *testing.T) {
		deliverOne(t, tr, "copias@Bare.Test", false, false)
		msgs := sink.Messages()
		if len(msgs) != 2 || msgs[1].To[0] != "copias@Bare.Test" {
			t.Fatalf("messages = %+v", msgs)
		}
	})
	t.Run("null MX is permanent", func(t *testing.T) {
		before := sink.Sessions()
		err := deliverOne(t, tr, "x@nullmx.test", true, true)
		if !strings.Contains(err.Error(), "null MX") {
			t.Errorf("error = %v", err)
		}
		if sink.Sessions() != before {
			t.Error("connected despite null MX")
		}
	})
	t.Run("NXDOMAIN is permanent", func(t *testing.T) {
		err := deliverOne(t, tr, "x@nowhere.test", true, true)
		if !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("neither MX nor A is permanent", func(t *testing.T) {
		deliverOne(t, tr, "x@nomail.test", true, true)
	})
	t.Run("SERVFAIL is temporary", func(t *testing.T) {
		deliverOne(t, tr, "x@broken.test", true, false)
	})
	t.Run("MX host without address is temporary", func(t *testing.T) {
		deliverOne(t, tr, "x@dangling.test", true, false)
	})
}

func TestMXOrderAndFallback(t *testing.T) {
	// 127.0.0.2 is loopback too (Linux routes 127/8 to lo): a second
	// "host" on the same port as the sink.
	for _, tc := range []struct {
		name      string
		rcptReply string
		wantErr   bool
		wantPerm  bool
		wantSink  int
	}{
		{"refused connection: next MX", "", false, false, 1},
		{"4xx: next MX", "451 4.7.1 greylisted", false, false, 1},
		{"5xx: stop", "550 5.1.1 no such user", true, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := startSink(t, sinkserver.Options{})
			port := portOf(t, sink.Addr)
			var first *fakeSMTP
			if tc.rcptReply != "" {
				first = startFake(t, "127.0.0.2:"+port, &fakeSMTP{rcptReply: tc.rcptReply})
			}
			z := startDNS(t,
				// Listed out of order: preference decides, not position.
				"order.test. 60 IN MX 20 second.order.test.",
				"order.test. 60 IN MX 10 first.order.test.",
				"first.order.test. 60 IN A 127.0.0.2",
				"second.order.test. 60 IN A 127.0.0.1",
			)
			tr := NewSMTP(SMTPOptions{Port: port, Resolver: z.Addr, Timeout: 5 * time.Second})
			_, err := tr.Deliver(testCtx(t), envFrom, "x@order.test", []byte(testMsg))
			if (err != nil) != tc.wantErr || (err != nil && IsPermanent(err) != tc.wantPerm) {
				t.Fatalf("Deliver = %v (permanent %v)", err, IsPermanent(err))
			}
			if n := len(sink.Messages()); n != tc.wantSink {
				t.Errorf("second MX got %d messages, want %d", n, tc.wantSink)
			}
			if first != nil {
				if _, _, _, sessions := first.snapshot(); sessions != 1 {
					t.Errorf("first MX saw %d sessions, want 1 (tried first)", sessions)
				}
			}
		})
	}
}

func TestAddressChecks(t *testing.T) {
	tr := NewSMTP(SMTPOptions{Smarthost: "127.0.0.1:1"})
	for _, rcpt := range []string{"", "nobody", "@example.org", "x@", "a\r\nRCPT TO:<b@c>@x.test", "<x@y.test>", "ana@exämple.test"} {
		if _, err := tr.Deliver(testCtx(t), envFrom, rcpt, []byte(testMsg)); !IsPermanent(err) {
			t.Errorf("rcpt %q: %v, want permanent", rcpt, err)
		}
	}
	if _, err := tr.Deliver(testCtx(t), "a\nb@x.test", rcptTo, []byte(testMsg)); !IsPermanent(err) {
		t.Errorf("bad sender: %v, want permanent", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		opt SMTPOptions
		ok  bool
	}{
		{SMTPOptions{}, true},
		{SMTPOptions{StartTLS: "required"}, true},
		{SMTPOptions{StartTLS: "always"}, false},
		{SMTPOptions{Smarthost: "smtp.example.org"}, false},
		{SMTPOptions{Smarthost: "smtp.example.org:587"}, true},
		{SMTPOptions{Username: "u", Password: "p"}, false}, // no smarthost: never to MX hosts
		{SMTPOptions{Smarthost: "smtp.example.org:587", Password: "p"}, false},
		{SMTPOptions{Smarthost: "smtp.example.org:587", Username: "u", Password: "p", StartTLS: "off"}, false},
		{SMTPOptions{Smarthost: "127.0.0.1:25", Username: "u", Password: "p", StartTLS: "off"}, true},
		{SMTPOptions{Smarthost: "localhost:25", Username: "u", Password: "p", StartTLS: "off"}, true},
		{SMTPOptions{Smarthost: "smtp.example.org:587", Username: "u", Password: "p"}, true},
		{SMTPOptions{Hostname: "bad name"}, false},
	}
	for _, tc := range tests {
		if err := tc.opt.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.opt, err, tc.ok)
		}
	}
}

func TestErrorAndIsPermanent(t *testing.T) {
	inner := errors.New("boom")
	e := &Error{Permanent: true, Code: 550, Msg: "mx.test: RCPT TO", Err: inner}
	if e.Error() != "mx.test: RCPT TO: boom" {
		t.Errorf("Error() = %q", e.Error())
	}
	if !errors.Is(e, inner) {
		t.Error("Unwrap lost the cause")
	}
	wrapped := errors.Join(errors.New("batch 7"), e)
	if !IsPermanent(wrapped) {
		t.Error("IsPermanent must see through wrapping")
	}
	for _, err := range []error{nil, inner, &Error{Code: 451}, context.DeadlineExceeded, &net.OpError{Op: "dial", Err: errors.New("refused")}} {
		if IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = true", err)
		}
	}
	if (&Error{Msg: "only msg"}).Error() != "only msg" || (&Error{Err: inner}).Error() != "boom" {
		t.Error("Error() with missing parts")
	}
}

// testMsg7bit is testMsg without its 8-bit letter.
const testMsg7bit = "From: relay@campaign.test\r\n" +
	"To: familias@petition.test\r\n" +
	"Subject: batch 2: 1 letter\r\n" +
	"Message-ID: <batch-2@campaign.test>\r\n" +
	"\r\n" +
	"Libertad a los presos politicos.\r\n" +
	".a line starting with a dot\r\n"

func wantKind(t *testing.T, err error, kind Kind, permanent bool) *Error {
	t.Helper()
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("%v is not a *deliver.Error", err)
	}
	if de.Kind != kind || KindOf(err) != kind || de.Permanent != permanent {
		t.Fatalf("%v: kind %v permanent %v, want %v %v", err, de.Kind, de.Permanent, kind, permanent)
	}
	return de
}

// TestNo8BitMIME: RFC 6152 3. An 8-bit batch is not sent to a host
// without 8BITMIME (converting would break the letters' signatures); the
// failure is temporary and typed. A 7-bit batch still goes.
func TestNo8BitMIME(t *testing.T) {
	sink := startSink(t, sinkserver.Options{No8BitMIME: true})
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})

	_, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
	wantKind(t, err, KindNo8BitMIME, false)
	if !strings.Contains(err.Error(), "does not accept 8-bit mail (no 8BITMIME") {
		t.Errorf("error does not tell the admin: %v", err)
	}
	if n := sink.MailCommands(); n != 0 {
		t.Errorf("sent %d MAIL commands to a host without 8BITMIME", n)
	}

	if _, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg7bit)); err != nil {
		t.Fatalf("7-bit batch: %v", err)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || string(msgs[0].Data) != testMsg7bit || msgs[0].Body != "" {
		t.Fatalf("sink got %+v", msgs)
	}
}

// TestNo8BitMIMETriesNextMX: another MX of the domain that offers 8BITMIME
// takes the copy at once.
func TestNo8BitMIMETriesNextMX(t *testing.T) {
	good := startSink(t, sinkserver.Options{})
	port := portOf(t, good.Addr)
	old := startSink(t, sinkserver.Options{Addr: "127.0.0.2:" + port, No8BitMIME: true})
	z := startDNS(t,
		"petition.test. 60 IN MX 10 old.petition.test.",
		"petition.test. 60 IN MX 20 good.petition.test.",
		"old.petition.test. 60 IN A 127.0.0.2",
		"good.petition.test. 60 IN A 127.0.0.1",
	)
	tr := NewSMTP(SMTPOptions{Port: port, Resolver: z.Addr, Timeout: 5 * time.Second})
	r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	if old.Sessions() != 1 || old.MailCommands() != 0 {
		t.Errorf("first MX: %d sessions, %d MAIL; want 1 and 0", old.Sessions(), old.MailCommands())
	}
	checkReceived(t, good, rcptTo)
	if m := good.Messages()[0]; m.Body != "8BITMIME" {
		t.Errorf("BODY=%q, want 8BITMIME", m.Body)
	}
	if r.Host != "good.petition.test" {
		t.Errorf("receipt names %q", r.Host)
	}
}

// TestPostfixSmtpSinkNo8BitMIME checks the same against Postfix's
// smtp-sink: with -8 it does not offer 8BITMIME.
func TestPostfixSmtpSinkNo8BitMIME(t *testing.T) {
	t.Run("8-bit batch is not sent", func(t *testing.T) {
		ps := startPostfixSink(t, "-8")
		tr := NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Smarthost: ps.Addr, Timeout: 10 * time.Second})
		_, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
		wantKind(t, err, KindNo8BitMIME, false)
		cmds := ps.CommandsAfterQuit()
		if got := strings.Join(cmds, " | "); got != "EHLO mx.campaign.test | QUIT" {
			t.Errorf("smtp-sink saw %q, want EHLO then QUIT", got)
		}
	})
	t.Run("7-bit batch goes", func(t *testing.T) {
		ps := startPostfixSink(t, "-8")
		tr := NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Smarthost: ps.Addr, Timeout: 10 * time.Second})
		r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg7bit))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"EHLO mx.campaign.test", "MAIL FROM:<" + envFrom + ">", "RCPT TO:<" + rcptTo + ">", "DATA", ".", "QUIT"}
		if got := ps.CommandsAfterQuit(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("smtp-sink saw %q, want %q", got, want)
		}
		if r.Reply != "250 2.0.0 Ok" {
			t.Errorf("receipt reply %q, want smtp-sink's %q", r.Reply, "250 2.0.0 Ok")
		}
	})
	t.Run("8-bit batch goes where 8BITMIME is offered", func(t *testing.T) {
		ps := startPostfixSink(t)
		tr := NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Smarthost: ps.Addr, Timeout: 10 * time.Second})
		if _, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg)); err != nil {
			t.Fatal(err)
		}
		if cmds := ps.CommandsAfterQuit(); len(cmds) < 2 || cmds[1] != "MAIL FROM:<"+envFrom+"> BODY=8BITMIME" {
			t.Errorf("smtp-sink saw %q, want MAIL with BODY=8BITMIME", cmds)
		}
	})
}

// TestSizeAdvertisedTooSmall: RFC 1870 6.1. A message larger than the
// host's SIZE is not sent; the error is typed and carries the limit.
func TestSizeAdvertisedTooSmall(t *testing.T) {
	limit := int64(len(testMsg) - 1)
	sink := startSink(t, sinkserver.Options{MaxMessageBytes: limit})
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})
	_, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
	de := wantKind(t, err, KindTooBig, true)
	if de.SizeLimit != limit {
		t.Errorf("SizeLimit = %d, want %d", de.SizeLimit, limit)
	}
	if n := sink.MailCommands(); n != 0 {
		t.Errorf("sent %d MAIL commands for a message over the limit", n)
	}

	// Exactly at the limit it goes, declaring its size. (A scripted server:
	// go-smtp's own refuses a message of exactly its limit.)
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{ehloKeywords: []string{"8BITMIME", fmt.Sprintf("SIZE %d", len(testMsg))}})
	tr = NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 5 * time.Second})
	if _, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg)); err != nil {
		t.Fatal(err)
	}
	_, cmds, got, _ := f.snapshot()
	if wantMail := fmt.Sprintf("MAIL FROM:<%s> BODY=8BITMIME SIZE=%d", envFrom, len(testMsg)); len(got) != 1 || !slices.Contains(cmds, wantMail) {
		t.Errorf("got %d messages, commands %q; want one, with %q", len(got), cmds, wantMail)
	}
}

// TestRefusedAsTooBig: replies that refuse a message for its size are
// KindTooBig; other refusals are not, and 552 to RCPT is temporary (RFC
// 5321 4.5.3.1.10).
func TestRefusedAsTooBig(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fail      func(*sinkserver.Server, *sinkserver.Fault)
		fault     sinkserver.Fault
		kind      Kind
		permanent bool
	}{
		{"552 5.3.4 to the final dot", (*sinkserver.Server).FailData, sinkserver.Fault{Code: 552, Enhanced: [3]int{5, 3, 4}}, KindTooBig, true},
		{"552 5.0.0 to the final dot", (*sinkserver.Server).FailData, sinkserver.Fault{Code: 552}, KindTooBig, true},
		{"552 5.3.4 to MAIL", (*sinkserver.Server).FailMail, sinkserver.Fault{Code: 552, Enhanced: [3]int{5, 3, 4}}, KindTooBig, true},
		{"554 5.2.3 to the final dot", (*sinkserver.Server).FailData, sinkserver.Fault{Code: 554, Enhanced: [3]int{5, 2, 3}}, KindTooBig, true},
		{"552 5.2.2 mailbox full", (*sinkserver.Server).FailData, sinkserver.Fault{Code: 552, Enhanced: [3]int{5, 2, 2}}, KindOther, true},
		{"550 5.7.1 to the final dot", (*sinkserver.Server).FailData, sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 7, 1}}, KindOther, true},
		{"552 5.5.3 to RCPT", (*sinkserver.Server).FailRcpt, sinkserver.Fault{Code: 552, Enhanced: [3]int{5, 5, 3}}, KindOther, false},
		{"452 4.3.4 to the final dot", (*sinkserver.Server).FailData, sinkserver.Fault{Code: 452, Enhanced: [3]int{4, 3, 4}}, KindOther, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := startSink(t, sinkserver.Options{MaxMessageBytes: 1 << 20})
			tc.fail(sink, &tc.fault)
			tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second})
			_, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
			de := wantKind(t, err, tc.kind, tc.permanent)
			if de.Code != tc.fault.Code {
				t.Errorf("Code = %d, want %d", de.Code, tc.fault.Code)
			}
			if tc.kind == KindTooBig && de.SizeLimit != 1<<20 {
				t.Errorf("SizeLimit = %d, want the advertised %d", de.SizeLimit, 1<<20)
			}
		})
	}
	t.Run("552 without enhanced code to MAIL", func(t *testing.T) {
		// RFC 1870's own reply to a SIZE= over the limit.
		f := startFake(t, "127.0.0.1:0", &fakeSMTP{mailReply: "552 Message size exceeds fixed maximum message size"})
		tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 5 * time.Second})
		_, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
		if de := wantKind(t, err, KindTooBig, true); de.SizeLimit != 67108864 {
			t.Errorf("SizeLimit = %d", de.SizeLimit)
		}
	})
}

// TestQuitAfterFailure: RFC 5321 4.1.1.10, the client sends QUIT before
// closing, even after an error reply or its own refusal.
func TestQuitAfterFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		fake *fakeSMTP
		msg  string
		last string // the command before QUIT
	}{
		{"550 to RCPT", &fakeSMTP{rcptReply: "550 5.1.1 no such user"}, testMsg, "RCPT TO:<" + rcptTo + ">"},
		{"451 to RCPT", &fakeSMTP{rcptReply: "451 4.7.1 greylisted"}, testMsg, "RCPT TO:<" + rcptTo + ">"},
		{"554 to the final dot", &fakeSMTP{dataReply: "554 5.7.1 rejected"}, testMsg, "DATA"},
		{"no 8BITMIME", &fakeSMTP{ehloKeywords: []string{"SIZE 1000000"}}, testMsg, "EHLO localhost"},
		{"over SIZE", &fakeSMTP{ehloKeywords: []string{"8BITMIME", "SIZE 10"}}, testMsg, "EHLO localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, "127.0.0.1:0", tc.fake)
			tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 5 * time.Second})
			if _, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(tc.msg)); err == nil {
				t.Fatal("Deliver succeeded")
			}
			_, cmds, _, _ := f.snapshot()
			if len(cmds) < 2 || cmds[len(cmds)-1] != "QUIT" || cmds[len(cmds)-2] != tc.last {
				t.Errorf("commands %q, want %q then QUIT", cmds, tc.last)
			}
		})
	}
}

// TestSlowFinalReply: RFC 5321 4.5.3.2.6 gives the reply to the final dot
// 10 minutes against 5 for a command (the receiver may be scanning the
// message): it may take longer than Timeout.
func TestSlowFinalReply(t *testing.T) {
	timeout := time.Second
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{dataReplyDelay: timeout * 3 / 2})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: timeout})
	if _, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg)); err != nil {
		t.Fatal(err)
	}
}

// TestReceipt: a delivery says which host took it and what it said.
func TestReceipt(t *testing.T) {
	t.Run("MX name, address and reply", func(t *testing.T) {
		sink := startSink(t, sinkserver.Options{})
		port := portOf(t, sink.Addr)
		z := startDNS(t,
			"petition.test. 60 IN MX 10 mx1.petition.test.",
			"mx1.petition.test. 60 IN A 127.0.0.1",
		)
		tr := NewSMTP(SMTPOptions{Port: port, Resolver: z.Addr, Timeout: 5 * time.Second})
		r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		// go-smtp's server answers "250 2.0.0 OK: queued".
		want := "mx1.petition.test [127.0.0.1]:" + port + " said: 250 2.0.0 OK: queued"
		if r.String() != want || r.Host != "mx1.petition.test" || r.Addr.String() != "127.0.0.1:"+port || r.TLS {
			t.Errorf("receipt %+v says %q, want %q", r, r, want)
		}
	})
	t.Run("over TLS", func(t *testing.T) {
		sink, pool := tlsSink(t, sinkserver.Options{})
		tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
		r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		// The smarthost is an address: named once.
		if want := "[" + sink.Addr[:strings.LastIndexByte(sink.Addr, ':')] + "]:" + portOf(t, sink.Addr) + " said: 250 2.0.0 OK: queued (over TLS)"; r.String() != want {
			t.Errorf("receipt says %q, want %q", r, want)
		}
	})
	t.Run("multi-line reply with control characters", func(t *testing.T) {
		f := startFake(t, "127.0.0.1:0", &fakeSMTP{dataReply: "250-2.0.0 Ok\r\n250 2.0.0 queued as \x1b]52;c;AAAA\x07ABC"})
		tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 5 * time.Second})
		r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
		if err != nil {
			t.Fatal(err)
		}
		if want := "250 2.0.0 Ok queued as ?]52;c;AAAA?ABC"; r.Reply != want {
			t.Errorf("reply %q, want %q", r.Reply, want)
		}
	})
}

func TestCleanReply(t *testing.T) {
	for in, want := range map[string]string{
		"2.0.0 Ok":      "2.0.0 Ok",
		"a\nb\r\nc\td":  "a b c d",
		"bad \xff utf8": "bad ? utf8",
		"esc \x1b[2J del \x7f c1 \u0085 ls \u2028": "esc ?[2J del ? c1 ? ls ?",
		"  leading and trailing  ":                 "leading and trailing",
		strings.Repeat("é", 300):                   strings.Repeat("é", maxReplyText/2),
	} {
		if got := cleanReply(in); got != want {
			t.Errorf("cleanReply(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindOther: "other", KindNo8BitMIME: "no-8bitmime", KindTooBig: "too-big"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q", k, k.String())
		}
	}
	if KindOf(errors.New("x")) != KindOther || KindOf(errors.Join(errors.New("batch 7"), &Error{Kind: KindTooBig})) != KindTooBig {
		t.Error("KindOf does not see through wrapping")
	}
}

// TestEHLOKeywordsAnyCase: RFC 5321 2.4, EHLO keywords are
// case-insensitive; a host that spells them in lower case still gets 8-bit
// mail with BODY=8BITMIME and SIZE, and STARTTLS.
func TestEHLOKeywordsAnyCase(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{
		ehloKeywords: []string{"8bitmime", "Size 67108864", "enhancedstatuscodes", "starttls"},
		tlsConfig:    &tls.Config{Certificates: []tls.Certificate{cert}},
	})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
	r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	_, cmds, got, _ := f.snapshot()
	wantMail := fmt.Sprintf("MAIL FROM:<%s> BODY=8BITMIME SIZE=%d", envFrom, len(testMsg))
	if len(got) != 1 || !slices.Contains(cmds, wantMail) || !slices.Contains(cmds, "STARTTLS") || !r.TLS {
		t.Errorf("got %d messages, commands %q, TLS %v; want one, over TLS, with %q", len(got), cmds, r.TLS, wantMail)
	}
}

func TestReplyMender(t *testing.T) {
	reply := "250-mx.Example.org greets you\r\n250-8bitmime\r\n250-size 1000\r\n250-auth plain login\r\n250-starttls\r\n250\r\n" +
		"250 2.1.0 sender ok\r\n250\r\n354-go\r\n354\r\n" // later replies keep their case
	want := "250-mx.Example.org greets you\r\n250-8BITMIME\r\n250-SIZE 1000\r\n250-AUTH plain login\r\n250-STARTTLS\r\n250 \n" +
		"250 2.1.0 sender ok\r\n250 \n354-go\r\n354 \n"
	for _, chunk := range []int{1, 2, 3, 7, len(reply)} {
		b := []byte(reply)
		var m replyMender
		m.startEHLO()
		for off := 0; off < len(b); off += chunk {
			m.apply(b[off:min(off+chunk, len(b))])
		}
		if string(b) != want {
			t.Errorf("chunks of %d:\n got %q\nwant %q", chunk, b, want)
		}
	}
	// A one-line reply, and an error reply, end the EHLO reply too.
	for _, in := range []string{"250 mx.example\r\n250 size\r\n", "550 5.7.1 go away\r\n250 size\r\n"} {
		b := []byte(in)
		var m replyMender
		m.startEHLO()
		m.apply(b)
		if string(b) != in || m.ehlo {
			t.Errorf("%q became %q (still in EHLO: %v)", in, b, m.ehlo)
		}
	}
}

// TestBareReplyCodes: RFC 5321 4.2, the text of a reply line is optional.
func TestBareReplyCodes(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{greeting: "220", ehloKeywords: []string{"8BITMIME", ""},
		tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, starttlsGoAhead: "220",
		mailReply: "250", rcptReply: "250", dataReply: "250"})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
	r, err := tr.Deliver(testCtx(t), envFrom, rcptTo, []byte(testMsg))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, got, _ := f.snapshot(); len(got) != 1 || r.Reply != "250" || !r.TLS {
		t.Errorf("got %d messages, reply %q, TLS %v", len(got), r.Reply, r.TLS)
	}
}
