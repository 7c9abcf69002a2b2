package deliver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
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
	err := tr.Deliver(testCtx(t), envFrom, rcpt, []byte(testMsg))
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
			start := time.Now()
			err := tr.Deliver(testCtx(t), envFrom, rcptTo, msg)
			elapsed := time.Since(start)
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
			if elapsed > 10*timeout {
				t.Errorf("took %v with Timeout %v", elapsed, timeout)
			}
		})
	}
}

func TestCancelInterruptsStalledDelivery(t *testing.T) {
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{stallInData: true})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	err := tr.Deliver(ctx, envFrom, rcptTo, []byte(testMsg))
	if !errors.Is(err, context.Canceled) || IsPermanent(err) {
		t.Fatalf("Deliver = %v, want temporary context.Canceled", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
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
			err := tr.Deliver(testCtx(t), envFrom, "x@order.test", []byte(testMsg))
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
		if err := tr.Deliver(testCtx(t), envFrom, rcpt, []byte(testMsg)); !IsPermanent(err) {
			t.Errorf("rcpt %q: %v, want permanent", rcpt, err)
		}
	}
	if err := tr.Deliver(testCtx(t), "a\nb@x.test", rcptTo, []byte(testMsg)); !IsPermanent(err) {
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
