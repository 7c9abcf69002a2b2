// Outbound STARTTLS: the policies, the upgrade (run by hand on the raw
// connection, see startTLS) and the check of the certificate.

package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/petitiond/petitiond/loopback"
)

// STARTTLS policies for SMTPOptions.StartTLS.
const (
	// StartTLSOpportunistic encrypts whenever the server offers STARTTLS
	// (RFC 7435): the certificate is checked but a failed check does not stop
	// the delivery, because unauthenticated encryption still beats plain text
	// against passive eavesdroppers, and public MX hosts often have
	// certificates for names we cannot know. If the TLS handshake itself
	// fails, the same address is tried once more in plain text, as other MTAs
	// do, unless credentials are to be sent to a remote smarthost. AUTH runs
	// only over a verified certificate or to a loopback smarthost (see
	// Username).
	StartTLSOpportunistic = "opportunistic"
	// StartTLSRequired delivers only over TLS with a verified certificate for
	// the host name; anything less is a temporary failure, so an operator can
	// fix the remote side before the recipient's copy gives up.
	StartTLSRequired = "required"
	// StartTLSOff never sends STARTTLS.
	StartTLSOff = "off"
)

// startTLS runs STARTTLS per policy. ok=false means stop with out.
//
// go-smtp's own STARTTLS (NewClientStartTLS) sends "EHLO localhost" before
// the upgrade and cannot be asked first whether STARTTLS is offered, so the
// command is sent here on the raw connection after our own EHLO.
func (s *session) startTLS() (out outcome, ok bool) {
	policy := s.t.opt.StartTLS
	if policy == "" {
		policy = StartTLSOpportunistic
	}
	if policy == StartTLSOff {
		return outcome{}, true
	}
	required := policy == StartTLSRequired
	// Credentials for a remote smarthost must not fall back to plain text
	// after a failed handshake: fail temporarily instead.
	noFallback := required || (s.t.opt.Username != "" && !loopback.Host(s.host))

	if offered, _ := s.c.Extension("STARTTLS"); !offered {
		if required {
			return outcome{err: temporary(s.where+": STARTTLS not offered (starttls = required)", nil), next: true, quit: true}, false
		}
		return outcome{}, true
	}

	timeout := s.t.opt.Timeout
	_ = s.raw.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(s.raw, "STARTTLS\r\n"); err != nil {
		return outcome{err: s.netErr("STARTTLS", err), next: true}, false
	}
	br := bufio.NewReader(&replyConn{Conn: s.raw}) // reads only; mends a bare "220"
	_, _, err := textproto.NewReader(br).ReadResponse(220)
	if err != nil {
		var pe *textproto.Error
		if !errors.As(err, &pe) {
			return outcome{err: s.netErr("STARTTLS", err), next: true}, false
		}
		if required {
			return outcome{err: &Error{Code: pe.Code, Msg: s.where + ": STARTTLS refused (starttls = required)", Err: err}, next: true, quit: true}, false
		}
		// The session is still in its plain state after a refusal.
		_ = s.raw.SetDeadline(time.Time{})
		return outcome{}, true
	}
	if br.Buffered() > 0 {
		// Data sent before our handshake would be read as if it had come
		// over TLS (CVE-2011-0411 class): treat it as a failed handshake.
		e := temporary(s.where+": STARTTLS: server sent data before the TLS handshake", nil)
		return outcome{err: e, next: true, retryPlain: !noFallback}, false
	}

	cfg := s.tlsConfig()
	tc := tls.Client(s.raw, cfg)
	hctx, cancel := context.WithTimeout(s.ctx, timeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		e := s.netErr("TLS handshake", err)
		return outcome{err: e, next: true, retryPlain: !noFallback && s.ctx.Err() == nil}, false
	}
	_ = s.raw.SetDeadline(time.Time{})
	s.tlsOn = true

	if cfg.InsecureSkipVerify {
		s.tlsVerified = !s.baseInsecure() && verifyPeer(tc.ConnectionState(), cfg.RootCAs, s.host) == nil
	} else {
		s.tlsVerified = true // the handshake verified it
	}

	// go-smtp's client always reads a greeting first; after STARTTLS there
	// is none (RFC 3207), so hand it a synthetic one and EHLO again.
	s.c = s.newClient(&greetedConn{Conn: tc, r: io.MultiReader(strings.NewReader("220 "+s.host+" TLS started\r\n"), tc)})
	if err := s.c.Hello(s.t.opt.Hostname); err != nil {
		e := s.replyErr("EHLO after STARTTLS", err)
		e.Permanent = false
		return outcome{err: e, next: true, quit: e.Code != 0}, false
	}
	return outcome{}, true
}

func (s *session) baseInsecure() bool {
	return s.t.opt.TLSConfig != nil && s.t.opt.TLSConfig.InsecureSkipVerify
}

// tlsConfig clones the base config for this host. For opportunistic TLS the
// handshake does not verify (so a bad certificate still gets encryption);
// the result is checked afterwards and only decides whether AUTH may run.
func (s *session) tlsConfig() *tls.Config {
	var cfg *tls.Config
	if s.t.opt.TLSConfig != nil {
		cfg = s.t.opt.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.ServerName = s.host
	if s.t.opt.StartTLS != StartTLSRequired {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// verifyPeer checks the peer's chain against roots (nil: system roots) for
// name, as the handshake would have.
func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: name})
	return err
}

// greetedConn replays a greeting before the real stream.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }
