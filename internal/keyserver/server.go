// Package keyserver runs a small authoritative DNS server on loopback that
// publishes DKIM keys and the other records mail checks read (SPF TXT
// records, MX, A), and makes and signs with such keys.
//
// It exists so that tests, the `petitiond demo` command and the load tool can
// exercise the real DKIM and SPF paths (real DNS packets over UDP and TCP,
// real signatures) without any outside network: point the verifier's
// dns_resolver at Server.Addr.
package keyserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// entryKind says how the server answers for one name.
type entryKind int

const (
	kindTXT      entryKind = iota // answer with the TXT records
	kindServFail                  // answer SERVFAIL
	kindTimeout                   // never answer
)

type entry struct {
	kind entryKind
	txt  [][]string // one element per TXT record, each split into <=255-byte strings
	rrs  []dns.RR   // other records (MX, A, AAAA) added with AddRecord
}

// Server is an authoritative DNS server for whatever names it is given,
// listening on UDP and TCP on the same loopback port. Unknown names get
// NXDOMAIN. All methods are safe for concurrent use.
type Server struct {
	// Addr is "host:port" where the server listens, for UDP and TCP.
	Addr string

	mu      sync.RWMutex
	entries map[string]entry // keyed by lower-case FQDN with trailing dot

	qmu     sync.Mutex
	queries map[string]int // questions received per name, any type

	udp, tcp  *dns.Server
	served    sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// txtTTL is zero so that nothing between the server and a verifier may cache
// a key that a test is about to change or remove.
const txtTTL = 0

// Start listens on addr (for example "127.0.0.1:0") for UDP and TCP on the
// same port and serves until Close.
func Start(addr string) (*Server, error) {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:    pc.LocalAddr().String(),
		entries: make(map[string]entry),
		queries: make(map[string]int),
	}
	handler := dns.HandlerFunc(s.serveDNS)

	// Wait until both servers run: Shutdown on a server that has not
	// started yet fails, and would leave its goroutine serving.
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: handler, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: handler, NotifyStartedFunc: notify}

	errc := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.served.Add(1)
		go func() {
			defer s.served.Done()
			if err := srv.ActivateAndServe(); err != nil {
				errc <- err
			}
		}()
	}
	for range 2 {
		select {
		case <-started:
		case err := <-errc:
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("keyserver: serve %s: %w", s.Addr, err)
		}
	}
	return s, nil
}

// listenBoth opens a UDP socket and a TCP listener on the same port. With
// port 0 the kernel picks the UDP port, which may be taken for TCP; then try
// another.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("keyserver: address %q: %w", addr, err)
	}
	attempts := 1
	if port == "0" {
		attempts = 10
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("keyserver: listen udp %s: %w", addr, err)
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("keyserver: listen tcp %s: %w", addr, lastErr)
}

// canonical makes names compare case-insensitively, with or without the
// trailing dot.
func canonical(name string) string {
	return dns.CanonicalName(name)
}

// SetTXT publishes one TXT record per value under name, replacing whatever
// name had. Values longer than 255 bytes are split into several strings of
// one record, as DNS requires; resolvers join them again.
func (s *Server) SetTXT(name string, values ...string) {
	recs := make([][]string, 0, len(values))
	for _, v := range values {
		recs = append(recs, splitTXT(v))
	}
	s.set(name, entry{kind: kindTXT, txt: recs})
}

// AddRecord adds one record in zone-file syntax, e.g.
// "ofapp.test. MX 10 mx.ofapp.test." or "mx.ofapp.test. A 127.0.0.2", so
// tests and the demo can stand in for recipients' mail hosts too.
func (s *Server) AddRecord(zoneLine string) error {
	rr, err := dns.NewRR(zoneLine)
	if err != nil {
		return fmt.Errorf("keyserver: parse record %q: %w", zoneLine, err)
	}
	if rr == nil {
		return fmt.Errorf("keyserver: empty record %q", zoneLine)
	}
	rr.Header().Ttl = txtTTL
	name := canonical(rr.Header().Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[name]
	e.kind = kindTXT
	e.rrs = append(e.rrs, rr)
	s.entries[name] = e
	return nil
}

// SetKey publishes k's DKIM key record at <selector>._domainkey.<domain>.
func (s *Server) SetKey(k *Key) {
	s.SetTXT(k.Selector+"._domainkey."+k.Domain, k.TXT())
}

// SetServFail makes the server answer SERVFAIL for name: a temporary failure
// in the eyes of a resolver.
func (s *Server) SetServFail(name string) {
	s.set(name, entry{kind: kindServFail})
}

// SetTimeout makes the server drop queries for name, so clients time out.
func (s *Server) SetTimeout(name string) {
	s.set(name, entry{kind: kindTimeout})
}

// Remove forgets name: it gets NXDOMAIN again.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.entries, canonical(name))
}

func (s *Server) set(name string, e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[canonical(name)] = e
}

// Queries returns how many questions for name (of any type, over UDP or
// TCP) the server has received, so tests can tell whether a client asked
// again or used what it already had.
func (s *Server) Queries(name string) int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.queries[canonical(name)]
}

// Close stops serving and releases the sockets. It is safe to call more
// than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		// Bounded, so a client holding a TCP connection open cannot hang Close.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.closeErr = errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
		s.served.Wait()
	})
	return s.closeErr
}

func splitTXT(v string) []string {
	if v == "" {
		return []string{""}
	}
	var parts []string
	for len(v) > 255 {
		parts = append(parts, v[:255])
		v = v[255:]
	}
	return append(parts, v)
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	if len(req.Question) != 1 {
		resp.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(resp)
		return
	}
	q := req.Question[0]

	s.qmu.Lock()
	s.queries[canonical(q.Name)]++
	s.qmu.Unlock()

	s.mu.RLock()
	e, ok := s.entries[canonical(q.Name)]
	s.mu.RUnlock()

	switch {
	case !ok:
		resp.SetRcode(req, dns.RcodeNameError)
	case e.kind == kindTimeout:
		return
	case e.kind == kindServFail:
		resp.SetRcode(req, dns.RcodeServerFailure)
	default:
		resp.SetReply(req)
		if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
			for _, txt := range e.txt {
				resp.Answer = append(resp.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: txtTTL},
					Txt: txt,
				})
			}
		}
		for _, rr := range e.rrs {
			if q.Qtype == rr.Header().Rrtype || q.Qtype == dns.TypeANY {
				rr = dns.Copy(rr)
				rr.Header().Name = q.Name
				resp.Answer = append(resp.Answer, rr)
			}
		}
		// Other types: NOERROR with no answer (NODATA), as a real server would.
	}
	// Go's resolver calls a NOERROR answer without these bits a lame
	// referral; we are the authority for every name we know.
	resp.Authoritative = true
	resp.RecursionAvailable = true

	// Truncate to what the client can take over UDP, setting TC so that it
	// retries over TCP (big TXT sets, several long keys).
	size := dns.MaxMsgSize
	if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
		size = dns.MinMsgSize
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(opt.UDPSize(), false)
		if size == dns.MinMsgSize {
			size = int(opt.UDPSize())
		}
	}
	resp.Truncate(size)
	_ = w.WriteMsg(resp)
}
