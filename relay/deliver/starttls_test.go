package deliver

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/sinkserver"
)

func tlsSink(t *testing.T, opt sinkserver.Options, hosts ...string) (*sinkserver.Server, *x509.CertPool) {
	t.Helper()
	cert, pool, err := sinkserver.SelfSigned(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	opt.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	return startSink(t, opt), pool
}

func TestSmarthostStartTLS(t *testing.T) {
	for _, policy := range []string{StartTLSOpportunistic, StartTLSRequired} {
		t.Run(policy, func(t *testing.T) {
			sink, pool := tlsSink(t, sinkserver.Options{})
			tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, StartTLS: policy, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
			deliverOne(t, tr, rcptTo, false, false)
			checkReceived(t, sink, rcptTo)
			if !sink.SawTLS() {
				t.Error("message did not travel over TLS")
			}
		})
	}
}

func TestEHLONameBeforeAndAfterSTARTTLS(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	tr := NewSMTP(SMTPOptions{Hostname: "mx.campaign.test", Smarthost: f.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, false, false)
	ehlo, cmds, got, _ := f.snapshot()
	if strings.Join(ehlo, ",") != "mx.campaign.test,mx.campaign.test" {
		t.Errorf("EHLO names = %q, want ours before and after STARTTLS", ehlo)
	}
	// ReadDotBytes hands back LF line ends and undoes the dot-stuffing.
	if len(got) != 1 || got[0] != strings.ReplaceAll(testMsg, "\r\n", "\n") {
		t.Errorf("fake got %q", got)
	}
	if !strings.Contains(strings.Join(cmds, "\n"), "STARTTLS") {
		t.Errorf("no STARTTLS in %q", cmds)
	}
}

func TestRequiredTLSWithoutSTARTTLSIsTemporary(t *testing.T) {
	sink := startSink(t, sinkserver.Options{})
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, StartTLS: StartTLSRequired, Timeout: 5 * time.Second})
	err := deliverOne(t, tr, rcptTo, true, false)
	if !strings.Contains(err.Error(), "STARTTLS not offered") {
		t.Errorf("error = %v", err)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("sink got %d messages in plain text", n)
	}
}

func TestRequiredTLSUnverifiedCertIsTemporary(t *testing.T) {
	sink, _ := tlsSink(t, sinkserver.Options{})
	// An empty pool: the sink's certificate cannot be verified.
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, true, false)
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("sink got %d messages", n)
	}
}

func TestOpportunisticWithoutSTARTTLSDeliversPlain(t *testing.T) {
	sink := startSink(t, sinkserver.Options{})
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Timeout: 5 * time.Second}) // "" = opportunistic
	deliverOne(t, tr, rcptTo, false, false)
	checkReceived(t, sink, rcptTo)
}

func TestOpportunisticUnverifiedCertStillEncrypts(t *testing.T) {
	sink, _ := tlsSink(t, sinkserver.Options{})
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, StartTLS: StartTLSOpportunistic, TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, false, false)
	checkReceived(t, sink, rcptTo)
	if !sink.SawTLS() {
		t.Error("opportunistic TLS should encrypt even with an unverifiable certificate")
	}
}

func TestOpportunisticHandshakeFailureFallsBackToPlain(t *testing.T) {
	cert, _, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	sink := startSink(t, sinkserver.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12}})
	// The client insists on TLS 1.3, so the handshake cannot succeed.
	tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13}, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, false, false)
	checkReceived(t, sink, rcptTo)
	if sink.SawTLS() {
		t.Error("SawTLS after a failed handshake")
	}
	if n := sink.Sessions(); n != 2 {
		t.Errorf("sessions = %d, want 2 (TLS attempt, then plain)", n)
	}

	// With "required" the same failure is temporary and nothing is sent.
	tr = NewSMTP(SMTPOptions{Smarthost: sink.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13}, Timeout: 5 * time.Second})
	deliverOne(t, tr, rcptTo, true, false)
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("sink has %d messages, want still 1", n)
	}
}

func TestSTARTTLSResponseInjectionRefused(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, injectAfterTLS: true})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 2 * time.Second})
	err = deliverOne(t, tr, rcptTo, true, false)
	if !strings.Contains(err.Error(), "before the TLS handshake") {
		t.Errorf("error = %v", err)
	}
}

// A server that answers STARTTLS with a refusal leaves the session in plain
// text: opportunistic delivers there, required fails temporarily with the
// server's code.
func TestSTARTTLSRefused(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	t.Run(StartTLSOpportunistic, func(t *testing.T) {
		f := startFake(t, "127.0.0.1:0", &fakeSMTP{tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, starttlsReply: "454 4.7.0 TLS not available now"})
		tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
		deliverOne(t, tr, rcptTo, false, false)
		_, cmds, got, sessions := f.snapshot()
		if len(got) != 1 || sessions != 1 {
			t.Errorf("fake got %d messages in %d sessions, want 1 in 1", len(got), sessions)
		}
		if !strings.Contains(strings.Join(cmds, "\n"), "STARTTLS\nMAIL FROM:") {
			t.Errorf("commands %q: want MAIL right after the refused STARTTLS", cmds)
		}
	})
	t.Run(StartTLSRequired, func(t *testing.T) {
		f := startFake(t, "127.0.0.1:0", &fakeSMTP{tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, starttlsReply: "454 4.7.0 TLS not available now"})
		tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
		err := deliverOne(t, tr, rcptTo, true, false)
		wantCode(t, err, 454)
		if !strings.Contains(err.Error(), "STARTTLS refused") {
			t.Errorf("error = %v", err)
		}
		if _, _, got, _ := f.snapshot(); len(got) != 0 {
			t.Errorf("fake got %d messages in plain text", len(got))
		}
	})
}

// Under opportunistic TLS, data sent before the handshake counts as a
// failed handshake: the message goes again on a fresh plain connection,
// never over the tainted one.
func TestSTARTTLSResponseInjectionOpportunisticRetriesPlain(t *testing.T) {
	cert, _, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, injectAfterTLS: true})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, Timeout: 2 * time.Second})
	deliverOne(t, tr, rcptTo, false, false)
	_, cmds, got, sessions := f.snapshot()
	if len(got) != 1 || sessions != 2 {
		t.Errorf("fake got %d messages in %d sessions, want 1 in 2", len(got), sessions)
	}
	if n := strings.Count(strings.Join(cmds, "\n"), "STARTTLS"); n != 1 {
		t.Errorf("STARTTLS sent %d times, want once (the retry is plain)", n)
	}
}

// A refused EHLO after the upgrade is about this host, not the message:
// temporary.
func TestEHLORefusedAfterSTARTTLSIsTemporary(t *testing.T) {
	cert, pool, err := sinkserver.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	f := startFake(t, "127.0.0.1:0", &fakeSMTP{tlsConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ehloAfterTLSReply: "550 5.7.0 not you"})
	tr := NewSMTP(SMTPOptions{Smarthost: f.Addr, StartTLS: StartTLSRequired, TLSConfig: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
	err = deliverOne(t, tr, rcptTo, true, false)
	if !strings.Contains(err.Error(), "EHLO after STARTTLS") {
		t.Errorf("error = %v", err)
	}
}

// Whether TLS counts as verified decides whether AUTH may run. Under
// opportunistic TLS the certificate is checked after the handshake; a base
// config that skips verification never counts as verified, even when its
// roots would verify the certificate.
func TestSTARTTLSVerificationDecidesAuth(t *testing.T) {
	z := startDNS(t, "smarthost.test. 60 IN A 127.0.0.1")
	tests := []struct {
		name      string
		certHosts []string // the sink's certificate names
		policy    string
		base      func(pool *x509.CertPool) *tls.Config
		wantAuth  bool
	}{
		{"opportunistic, verifiable", []string{"smarthost.test"}, StartTLSOpportunistic,
			func(pool *x509.CertPool) *tls.Config { return &tls.Config{RootCAs: pool} }, true},
		{"opportunistic, certificate for another name", []string{"other.test"}, StartTLSOpportunistic,
			func(pool *x509.CertPool) *tls.Config { return &tls.Config{RootCAs: pool} }, false},
		{"required, base config skips verification", []string{"smarthost.test"}, StartTLSRequired,
			func(pool *x509.CertPool) *tls.Config { return &tls.Config{RootCAs: pool, InsecureSkipVerify: true} }, false},
		{"opportunistic, base config skips verification", []string{"smarthost.test"}, StartTLSOpportunistic,
			func(pool *x509.CertPool) *tls.Config { return &tls.Config{RootCAs: pool, InsecureSkipVerify: true} }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink, pool := tlsSink(t, sinkserver.Options{AuthUser: "relay", AuthPass: "s3cret"}, tc.certHosts...)
			tr := NewSMTP(SMTPOptions{
				Smarthost: "smarthost.test:" + portOf(t, sink.Addr), Username: "relay", Password: "s3cret",
				StartTLS: tc.policy, TLSConfig: tc.base(pool), Resolver: z.Addr, Timeout: 5 * time.Second,
			})
			if tc.wantAuth {
				deliverOne(t, tr, rcptTo, false, false)
				if u := sink.SawAuth(); u != "relay" {
					t.Errorf("SawAuth = %q", u)
				}
			} else {
				err := deliverOne(t, tr, rcptTo, true, true)
				if !strings.Contains(err.Error(), "refusing to send credentials") {
					t.Errorf("error = %v", err)
				}
				if sink.SawAuth() != "" || len(sink.Messages()) != 0 {
					t.Error("credentials or message sent")
				}
			}
			if !sink.SawTLS() {
				t.Error("no TLS")
			}
		})
	}
}

// A failed handshake falls back to plain text, except when credentials are
// to go to a remote smarthost: then it is a temporary failure and nothing is
// sent. To a loopback smarthost the fallback (and AUTH there) is allowed.
func TestHandshakeFailureWithCredentials(t *testing.T) {
	cert, _, err := sinkserver.SelfSigned("smarthost.test")
	if err != nil {
		t.Fatal(err)
	}
	// The client insists on TLS 1.3, so the handshake cannot succeed.
	sinkOpt := sinkserver.Options{AuthUser: "relay", AuthPass: "s3cret",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12}}
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS13}

	t.Run("remote smarthost", func(t *testing.T) {
		sink := startSink(t, sinkOpt)
		z := startDNS(t, "smarthost.test. 60 IN A 127.0.0.1")
		tr := NewSMTP(SMTPOptions{Smarthost: "smarthost.test:" + portOf(t, sink.Addr), Username: "relay", Password: "s3cret",
			TLSConfig: clientTLS, Resolver: z.Addr, Timeout: 5 * time.Second})
		err := deliverOne(t, tr, rcptTo, true, false)
		if !strings.Contains(err.Error(), "TLS handshake") {
			t.Errorf("error = %v", err)
		}
		if n := sink.Sessions(); n != 1 {
			t.Errorf("sessions = %d, want 1 (no plain retry)", n)
		}
		if sink.SawAuth() != "" || len(sink.Messages()) != 0 {
			t.Error("credentials or message sent")
		}
	})
	t.Run("loopback smarthost", func(t *testing.T) {
		sink := startSink(t, sinkOpt)
		tr := NewSMTP(SMTPOptions{Smarthost: sink.Addr, Username: "relay", Password: "s3cret",
			TLSConfig: clientTLS, Timeout: 5 * time.Second})
		deliverOne(t, tr, rcptTo, false, false)
		checkReceived(t, sink, rcptTo)
		if n := sink.Sessions(); n != 2 {
			t.Errorf("sessions = %d, want 2 (TLS attempt, then plain)", n)
		}
		if u := sink.SawAuth(); u != "relay" {
			t.Errorf("SawAuth = %q", u)
		}
	})
}
