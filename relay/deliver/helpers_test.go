package deliver

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/internal/wait"
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
	mailReply         string // default "250 2.1.0 ok"
	rcptReply         string // default "250 2.1.5 ok"
	stallInData       bool   // after 354: stop reading, never answer
	injectAfterTLS    bool   // send an extra line with the STARTTLS reply
	starttlsReply     string // a refusal to send instead of "220 go ahead"
	starttlsGoAhead   string // the 220 reply to STARTTLS; default "220 go ahead"
	ehloAfterTLSReply string // reply to EHLO once TLS is up instead of the extensions
	greeting          string // default "220 fake.test ESMTP"
	closeAfterGreet   bool
	ehloKeywords      []string      // nil: 8BITMIME, SIZE 67108864, ENHANCEDSTATUSCODES (and STARTTLS); "" last: a bare "250"
	dataReply         string        // reply to the final dot, lines split by "\r\n"; default "250 2.0.0 queued"
	dataReplyDelay    time.Duration // wait this long before answering the final dot

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
			keywords := f.ehloKeywords
			if keywords == nil {
				keywords = []string{"8BITMIME", "SIZE 67108864", "ENHANCEDSTATUSCODES"}
			}
			if f.tlsConfig != nil && !tlsOn {
				keywords = append(slices.Clone(keywords), "STARTTLS")
			}
			lines := []string{"fake.test"}
			lines = append(lines, keywords...)
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				if l == "" {
					sep = strings.TrimSpace(sep) // a bare "250" ends the reply
				}
				_ = tp.PrintfLine("250%s%s", sep, l)
			}
		case "STARTTLS":
			if f.starttlsReply != "" {
				_ = tp.PrintfLine("%s", f.starttlsReply)
				continue
			}
			if f.injectAfterTLS {
				_ = tp.PrintfLine("220 go ahead\r\n250 injected")
				continue
			}
			goAhead := f.starttlsGoAhead
			if goAhead == "" {
				goAhead = "220 go ahead"
			}
			_ = tp.PrintfLine("%s", goAhead)
			tc := tls.Server(conn, f.tlsConfig)
			if err := tc.Handshake(); err != nil {
				return
			}
			tp = textproto.NewConn(tc)
			tlsOn = true
		case "MAIL":
			reply := f.mailReply
			if reply == "" {
				reply = "250 2.1.0 ok"
			}
			_ = tp.PrintfLine("%s", reply)
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
			if f.dataReplyDelay > 0 {
				select {
				case <-f.done:
					return
				case <-time.After(f.dataReplyDelay):
				}
			}
			reply := f.dataReply
			if reply == "" {
				reply = "250 2.0.0 queued"
			}
			_ = tp.PrintfLine("%s", reply)
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

// needTool returns the path of a program from software we did not write
// that a test checks against (found on PATH or at one of paths). When it
// is missing the test skips, except under PETITIOND_CI=1, where CI has
// installed it and its absence is a failure.
func needTool(t *testing.T, name string, paths ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := name + " is not installed (Debian package: see .ci/run); this test checks against it"
	if os.Getenv("PETITIOND_CI") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// postfixSink is Postfix's smtp-sink(1) running on loopback, started with
// -v so its log shows every command it received.
type postfixSink struct {
	Addr string
	log  syncbuf.Buffer // its stdout and stderr
}

// Commands returns the SMTP commands smtp-sink logged, in order.
func (p *postfixSink) Commands() []string {
	var cmds []string
	for _, line := range strings.Split(p.log.String(), "\n") {
		// "/usr/sbin/smtp-sink: MAIL FROM:<a@b> BODY=8BITMIME"
		_, rest, ok := strings.Cut(line, "smtp-sink: ")
		if !ok {
			continue
		}
		verb, _, _ := strings.Cut(rest, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO", "MAIL", "RCPT", "DATA", ".", "RSET", "QUIT":
			cmds = append(cmds, rest)
		}
	}
	return cmds
}

// CommandsAfterQuit returns Commands once smtp-sink has logged a QUIT (its
// log reaches us through a pipe, after its replies), or after 5 s.
func (p *postfixSink) CommandsAfterQuit() []string {
	_ = wait.Until(context.Background(), 5*time.Second, func() (bool, error) {
		return slices.Contains(p.Commands(), "QUIT"), nil
	})
	return p.Commands()
}

// startPostfixSink runs smtp-sink with flags (e.g. "-8": no 8BITMIME) on a
// free loopback port until the test ends.
func startPostfixSink(t *testing.T, flags ...string) *postfixSink {
	t.Helper()
	bin := needTool(t, "smtp-sink", "/usr/sbin/smtp-sink")
	for try := 0; try < 3; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()

		p := &postfixSink{Addr: addr}
		args := append([]string{"-v"}, flags...)
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody") // smtp-sink refuses to run as root
		}
		cmd := exec.Command(bin, append(args, addr, "10")...)
		cmd.Stdout, cmd.Stderr = &p.log, &p.log
		if err := cmd.Start(); err != nil {
			t.Fatalf("smtp-sink: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
		if p.waitListening(addr, exited) {
			return p
		}
		// Exited early: most likely another process took the port.
	}
	t.Fatal("smtp-sink did not start listening")
	return nil
}

// waitListening polls until smtp-sink accepts connections (true) or has
// exited (false); it gives up after 10 s.
func (p *postfixSink) waitListening(addr string, exited <-chan struct{}) bool {
	errExited := errors.New("smtp-sink exited")
	err := wait.Until(context.Background(), 10*time.Second, func() (bool, error) {
		select {
		case <-exited:
			return false, errExited
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
	return err == nil
}
