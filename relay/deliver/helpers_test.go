package deliver

import (
	"crypto/tls"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/petitiond/petitiond/internal/sinkserver"
)

// testMsg keeps CRLF, has a line that needs dot-stuffing and 8-bit text.
const testMsg = "From: relay@campaign.test\r\n" +
	"To: familias@petition.test\r\n" +
	"Subject: batch 1: 2 letters\r\n" +
	"Message-ID: <batch-1@campaign.test>\r\n" +
	"\r\n" +
	"Libertad a los presos pol\xc3\xadticos.\r\n" +
	".a line starting with a dot\r\n" +
	".\r\n" +
	"end\r\n"

func startSink(t *testing.T, opt sinkserver.Options) *sinkserver.Server {
	t.Helper()
	s, err := sinkserver.Start(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// testDNS is an authoritative DNS server on 127.0.0.1 for test domains.
// Names without records get NXDOMAIN; a name with records but none of the
// asked type gets an empty NOERROR answer.
type testDNS struct {
	Addr string

	mu       sync.Mutex
	rrs      map[string][]dns.RR // lower-case FQDN
	servfail map[string]bool
}

func startDNS(t *testing.T, records ...string) *testDNS {
	t.Helper()
	z := &testDNS{rrs: map[string][]dns.RR{}, servfail: map[string]bool{}}
	for _, r := range records {
		z.add(t, r)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.Addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	go srv.ActivateAndServe()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("DNS server did not start")
	}
	t.Cleanup(func() { srv.Shutdown() })
	return z
}

func (z *testDNS) add(t *testing.T, record string) {
	t.Helper()
	rr, err := dns.NewRR(record)
	if err != nil {
		t.Fatalf("bad test record %q: %v", record, err)
	}
	name := strings.ToLower(rr.Header().Name)
	z.mu.Lock()
	z.rrs[name] = append(z.rrs[name], rr)
	z.mu.Unlock()
}

func (z *testDNS) failName(name string) {
	z.mu.Lock()
	z.servfail[strings.ToLower(dns.Fqdn(name))] = true
	z.mu.Unlock()
}

func (z *testDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	// Go's resolver treats a non-authoritative empty answer without
	// recursion as a lame referral: answer like a real authority.
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		z.mu.Lock()
		switch rrs, ok := z.rrs[name]; {
		case z.servfail[name]:
			m.Rcode = dns.RcodeServerFailure
		case !ok:
			m.Rcode = dns.RcodeNameError
		default:
			for _, rr := range rrs {
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		z.mu.Unlock()
	}
	_ = w.WriteMsg(m)
}

// fakeSMTP is a scripted SMTP server for behaviour the sink does not
// model: recording EHLO names, stalling in DATA, misbehaving at STARTTLS.
type fakeSMTP struct {
	Addr string

	tlsConfig         *tls.Config
	rcptReply         string // default "250 2.1.5 ok"
	stallInData       bool   // after 354: stop reading, never answer
	injectAfterTLS    bool   // send an extra line with the STARTTLS reply
	starttlsReply     string // a refusal to send instead of "220 go ahead"
	ehloAfterTLSReply string // reply to EHLO once TLS is up instead of the extensions
	greeting          string // default "220 fake.test ESMTP"
	closeAfterGreet   bool

	ln   net.Listener
	wg   sync.WaitGroup
	done chan struct{} // closed at cleanup to release stalled sessions

	mu       sync.Mutex
	conns    []net.Conn
	ehlo     []string
	commands []string
	sessions int
	got      []string // message bodies
}

func startFake(t *testing.T, addr string, f *fakeSMTP) *fakeSMTP {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	f.ln = ln
	f.done = make(chan struct{})
	f.Addr = ln.Addr().String()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.sessions++
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				f.handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		close(f.done)
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeSMTP) record(dst *[]string, s string) {
	f.mu.Lock()
	*dst = append(*dst, s)
	f.mu.Unlock()
}

func (f *fakeSMTP) snapshot() (ehlo, commands, got []string, sessions int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ehlo...), append([]string(nil), f.commands...), append([]string(nil), f.got...), f.sessions
}

func (f *fakeSMTP) handle(conn net.Conn) {
	// Bound the whole session: a test must never hang on this server.
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	tp := textproto.NewConn(conn)
	greeting := f.greeting
	if greeting == "" {
		greeting = "220 fake.test ESMTP"
	}
	_ = tp.PrintfLine("%s", greeting)
	if f.closeAfterGreet {
		return
	}
	tlsOn := false
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		f.record(&f.commands, line)
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			f.record(&f.ehlo, arg)
			if tlsOn && f.ehloAfterTLSReply != "" {
				_ = tp.PrintfLine("%s", f.ehloAfterTLSReply)
				continue
			}
			ext := []string{"250-fake.test", "250-8BITMIME", "250-SIZE 10000000"}
			if f.tlsConfig != nil && !tlsOn {
				ext = append(ext, "250-STARTTLS")
			}
			ext = append(ext, "250 ENHANCEDSTATUSCODES")
			_ = tp.PrintfLine("%s", strings.Join(ext, "\r\n"))
		case "STARTTLS":
			if f.starttlsReply != "" {
				_ = tp.PrintfLine("%s", f.starttlsReply)
				continue
			}
			if f.injectAfterTLS {
				_ = tp.PrintfLine("220 go ahead\r\n250 injected")
				continue
			}
			_ = tp.PrintfLine("220 go ahead")
			tc := tls.Server(conn, f.tlsConfig)
			if err := tc.Handshake(); err != nil {
				return
			}
			tp = textproto.NewConn(tc)
			tlsOn = true
		case "MAIL":
			_ = tp.PrintfLine("250 2.1.0 ok")
		case "RCPT":
			reply := f.rcptReply
			if reply == "" {
				reply = "250 2.1.5 ok"
			}
			_ = tp.PrintfLine("%s", reply)
		case "DATA":
			_ = tp.PrintfLine("354 go ahead")
			if f.stallInData {
				// Stop reading and never answer, so the client's writes
				// block once buffers fill and its reply wait runs out.
				select {
				case <-f.done:
				case <-time.After(20 * time.Second):
				}
				return
			}
			body, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			f.record(&f.got, string(body))
			_ = tp.PrintfLine("250 2.0.0 queued")
		case "RSET", "NOOP":
			_ = tp.PrintfLine("250 2.0.0 ok")
		case "QUIT":
			_ = tp.PrintfLine("221 2.0.0 bye")
			return
		default:
			_ = tp.PrintfLine("502 5.5.1 unknown command")
		}
	}
}
