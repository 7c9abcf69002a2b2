package keyserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// resolverFor is how the daemon reaches a configured dns_resolver: Go's own
// resolver, every query sent to addr.
func resolverFor(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

func lookup(t *testing.T, s *Server, name string, timeout time.Duration) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return resolverFor(s.Addr).LookupTXT(ctx, name)
}

func TestStartAddr(t *testing.T) {
	s := startServer(t)
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr = %q, want 127.0.0.1:<port>", s.Addr)
	}
}

func TestRSAKeyRoundTrip(t *testing.T) {
	s := startServer(t)
	k := rsaKey(t)
	if n := len(k.TXT()); n <= 255 {
		t.Fatalf("2048-bit RSA TXT is %d bytes; the test needs > 255", n)
	}
	s.SetKey(k)
	got, err := lookup(t, s, "sel._domainkey.example.org.", 5*time.Second)
	if err != nil {
		t.Fatalf("LookupTXT: %v", err)
	}
	if len(got) != 1 || got[0] != k.TXT() {
		t.Fatalf("LookupTXT = %q\nwant [%q]", got, k.TXT())
	}
}

func TestLongValueSplitInOneRecord(t *testing.T) {
	s := startServer(t)
	long := strings.Repeat("0123456789", 70) // 700 bytes: three strings
	s.SetTXT("long.example.org", long)

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			c := &dns.Client{Net: network, Timeout: 5 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion("long.example.org.", dns.TypeTXT)
			m.SetEdns0(1232, false)
			r, _, err := c.Exchange(m, s.Addr)
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
				t.Fatalf("rcode %s, %d answers; want NOERROR with one record", dns.RcodeToString[r.Rcode], len(r.Answer))
			}
			txt := r.Answer[0].(*dns.TXT)
			if len(txt.Txt) != 3 {
				t.Errorf("record has %d strings, want 3", len(txt.Txt))
			}
			for i, part := range txt.Txt {
				if len(part) > 255 {
					t.Errorf("string %d is %d bytes", i, len(part))
				}
			}
			if strings.Join(txt.Txt, "") != long {
				t.Errorf("joined strings differ from the value set")
			}
		})
	}
}

func TestNamesCaseInsensitiveTrailingDotOptional(t *testing.T) {
	s := startServer(t)
	s.SetTXT("Sel._DomainKey.Example.ORG.", "v=DKIM1; p=")
	for _, name := range []string{"sel._domainkey.example.org", "SEL._domainkey.example.org."} {
		got, err := lookup(t, s, name, 5*time.Second)
		if err != nil || len(got) != 1 || got[0] != "v=DKIM1; p=" {
			t.Errorf("LookupTXT(%q) = %q, %v", name, got, err)
		}
	}
}

func TestSeveralValuesAreSeveralRecords(t *testing.T) {
	s := startServer(t)
	s.SetTXT("multi.example.org", "one", "two")
	got, err := lookup(t, s, "multi.example.org.", 5*time.Second)
	if err != nil || len(got) != 2 {
		t.Fatalf("LookupTXT = %q, %v; want two records", got, err)
	}
}

// A reply bigger than the client's UDP buffer must come back with TC set, so
// Go's resolver retries over TCP and still gets everything.
func TestBigAnswerFallsBackToTCP(t *testing.T) {
	s := startServer(t)
	var values []string
	for i := range 6 {
		values = append(values, fmt.Sprintf("%d-%s", i, strings.Repeat("x", 500)))
	}
	s.SetTXT("big.example.org", values...)

	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("big.example.org.", dns.TypeTXT)
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatalf("UDP exchange: %v", err)
	}
	if !r.Truncated {
		t.Errorf("UDP answer without EDNS0 not truncated (%d answers)", len(r.Answer))
	}

	got, err := lookup(t, s, "big.example.org.", 5*time.Second)
	if err != nil || len(got) != len(values) {
		t.Fatalf("LookupTXT: %d records, %v; want %d", len(got), err, len(values))
	}
}

func TestNXDOMAINIsNotFound(t *testing.T) {
	s := startServer(t)
	_, err := lookup(t, s, "nothing._domainkey.example.org.", 5*time.Second)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Fatalf("err = %v (%T), want *net.DNSError", err, err)
	}
	if !dnsErr.IsNotFound || dnsErr.Temporary() || dnsErr.Timeout() {
		t.Errorf("NXDOMAIN: IsNotFound=%v Temporary=%v Timeout=%v; want not found, permanent", dnsErr.IsNotFound, dnsErr.Temporary(), dnsErr.Timeout())
	}
}

func TestServFailIsTemporary(t *testing.T) {
	s := startServer(t)
	s.SetServFail("broken._domainkey.example.org")
	_, err := lookup(t, s, "broken._domainkey.example.org.", 5*time.Second)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Fatalf("err = %v (%T), want *net.DNSError", err, err)
	}
	if !dnsErr.Temporary() || dnsErr.IsNotFound {
		t.Errorf("SERVFAIL: Temporary=%v IsNotFound=%v; want temporary", dnsErr.Temporary(), dnsErr.IsNotFound)
	}
}

func TestTimeoutTimesOut(t *testing.T) {
	s := startServer(t)
	s.SetTimeout("slow._domainkey.example.org")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_, err := resolverFor(s.Addr).LookupTXT(ctx, "slow._domainkey.example.org.")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Fatalf("err = %v (%T), want *net.DNSError", err, err)
	}
	if !dnsErr.Timeout() || !dnsErr.Temporary() {
		t.Errorf("no answer: Timeout=%v Temporary=%v; want both", dnsErr.Timeout(), dnsErr.Temporary())
	}
	// The server got the question and let the lookup run to its deadline,
	// rather than answering (or refusing) it.
	if time.Now().Before(deadline) {
		t.Error("the lookup ended before its deadline: the server answered")
	}
	if n := s.Queries("slow._domainkey.example.org"); n == 0 {
		t.Error("the server saw no query for the name")
	}
}

func TestRemoveAndReplace(t *testing.T) {
	s := startServer(t)
	const name = "r._domainkey.example.org"
	s.SetServFail(name)
	s.SetTXT(name, "v=DKIM1; p=AAAA")
	if got, err := lookup(t, s, name+".", 5*time.Second); err != nil || len(got) != 1 {
		t.Fatalf("after SetTXT: %q, %v", got, err)
	}
	s.Remove(name)
	_, err := lookup(t, s, name+".", 5*time.Second)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("after Remove: %v, want not found", err)
	}
}

func TestOtherTypeIsNoData(t *testing.T) {
	s := startServer(t)
	s.SetTXT("txtonly.example.org", "hello")
	c := &dns.Client{Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("txtonly.example.org.", dns.TypeA)
	r, _, err := c.Exchange(m, s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || !r.Authoritative {
		t.Errorf("A query: rcode %s, %d answers, AA=%v; want authoritative NOERROR/NODATA", dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := startServer(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			name := fmt.Sprintf("c%d.example.org", i)
			for j := range 20 {
				s.SetTXT(name, fmt.Sprint(j))
				if _, err := lookup(t, s, name+".", 5*time.Second); err != nil {
					t.Errorf("lookup %s: %v", name, err)
					return
				}
				s.Remove(name)
			}
		})
	}
	wg.Wait()
}

func TestCloseTwice(t *testing.T) {
	s, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The port is free again: nothing is left serving.
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("x.example.org.", dns.TypeTXT)
	if _, _, err := c.Exchange(m, s.Addr); err == nil {
		t.Errorf("query after Close was answered")
	}
}

func TestStartBadAddr(t *testing.T) {
	if s, err := Start("not an address"); err == nil {
		s.Close()
		t.Fatal("Start accepted a bad address")
	}
}

func TestQueriesCounted(t *testing.T) {
	s := startServer(t)
	s.SetTXT("count.example.org", "v=spf1 -all")
	if n := s.Queries("count.example.org"); n != 0 {
		t.Fatalf("Queries before any lookup = %d", n)
	}
	for range 2 {
		if _, err := lookup(t, s, "count.example.org.", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Names compare as the server stores them: any case, dot or not.
	if n := s.Queries("COUNT.example.org."); n != 2 {
		t.Errorf("Queries after two lookups = %d, want 2", n)
	}
	_, _ = lookup(t, s, "absent.example.org.", 5*time.Second)
	if n := s.Queries("absent.example.org"); n == 0 {
		t.Error("a question for an unknown name was not counted")
	}
}

// An SPF domain needs its TXT record and the addresses its a/mx mechanisms
// name under one name; AddRecord after SetTXT keeps both.
func TestTXTAndAddressAtOneName(t *testing.T) {
	s := startServer(t)
	s.SetTXT("spf.example.org", "v=spf1 a -all")
	if err := s.AddRecord("spf.example.org. A 127.0.0.7"); err != nil {
		t.Fatal(err)
	}
	if got, err := lookup(t, s, "spf.example.org.", 5*time.Second); err != nil || len(got) != 1 || got[0] != "v=spf1 a -all" {
		t.Fatalf("TXT = %q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := resolverFor(s.Addr).LookupIPAddr(ctx, "spf.example.org.")
	if err != nil || len(ips) != 1 || !ips[0].IP.Equal(net.ParseIP("127.0.0.7")) {
		t.Fatalf("addresses = %v, %v", ips, err)
	}
}
