package inbound

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// conns is the daemon-wide table of open SMTP connections: it enforces the
// total and per-client limits across every listener before go-smtp sees a
// connection (go-smtp has no limit of its own and would start a goroutine
// per accepted connection), and it can close them all at shutdown (go-smtp
// cannot once its Shutdown has begun).
type conns struct {
	hostname string
	maxTotal int
	maxPerIP int
	pace     pace
	onReject func(ip, session string, why RefusalClass)

	mu    sync.Mutex
	perIP map[string]int // by clientKey
	open  map[*limitedConn]struct{}
}

// pace is what a connection must keep up: a lifetime for the whole session
// and a minimum average data rate once grace has passed. A client that
// drips a byte every few seconds (slowloris) would otherwise hold its slot
// for as long as it likes, since each command line only has to arrive
// within smtp.timeout.
type pace struct {
	lifetime time.Duration
	grace    time.Duration
	minRate  int // bytes per second, averaged since the session began
}

func newConns(hostname string, maxTotal, maxPerIP int, p pace, onReject func(ip, session string, why RefusalClass)) *conns {
	return &conns{hostname: hostname, maxTotal: maxTotal, maxPerIP: maxPerIP, pace: p, onReject: onReject,
		perIP: map[string]int{}, open: map[*limitedConn]struct{}{}}
}

// clientKey is what max_per_ip counts: the IPv4 address, or the /64 an
// IPv6 address belongs to (one host usually has a whole /64 to pick from).
func clientKey(ip string) string { return netKey(ip, 32, 64) }

// netKey names the network of ip: its first v4bits bits for IPv4 (and
// IPv4-mapped IPv6), v6bits for IPv6. A string that is no IP is its own key.
func netKey(ip string, v4bits, v6bits int) string {
	a := net.ParseIP(ip)
	if a == nil {
		return ip
	}
	if v4 := a.To4(); v4 != nil {
		if v4bits >= 32 {
			return v4.String()
		}
		return (&net.IPNet{IP: v4.Mask(net.CIDRMask(v4bits, 32)), Mask: net.CIDRMask(v4bits, 32)}).String()
	}
	if v6bits >= 128 {
		return a.String()
	}
	return (&net.IPNet{IP: a.Mask(net.CIDRMask(v6bits, 128)), Mask: net.CIDRMask(v6bits, 128)}).String()
}

// admit counts a connection in, or says which limit keeps it out.
func (t *conns) admit(c net.Conn, ip, id string) (*limitedConn, RefusalClass) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.open) >= t.maxTotal {
		return nil, RefusedMaxConnections
	}
	key := clientKey(ip)
	if t.perIP[key] >= t.maxPerIP {
		return nil, RefusedMaxPerIP
	}
	// Wall-clock time, not the daemon's clock: these become socket
	// deadlines.
	start := time.Now()
	lc := &limitedConn{Conn: c, ip: ip, key: key, id: id, table: t, start: start}
	if t.pace.lifetime > 0 {
		lc.end = start.Add(t.pace.lifetime)
	}
	t.perIP[key]++
	t.open[lc] = struct{}{}
	return lc, ""
}

func (t *conns) release(lc *limitedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open, lc)
	if t.perIP[lc.key]--; t.perIP[lc.key] <= 0 {
		delete(t.perIP, lc.key)
	}
}

// closeAll closes every open connection; their sessions end with a read error.
func (t *conns) closeAll() {
	t.mu.Lock()
	open := make([]*limitedConn, 0, len(t.open))
	for lc := range t.open {
		open = append(open, lc)
	}
	t.mu.Unlock()
	for _, lc := range open {
		_ = lc.Close()
	}
}

// count is the number of open connections.
func (t *conns) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// limitListener admits connections through the shared table. Connections
// over a limit get a 421 and are closed; Accept goes on with the next one.
type limitListener struct {
	net.Listener
	table *conns
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		// The session ID is the connection's from the start, so that even
		// a refusal here names one the log knows.
		ip, id := remoteIP(c.RemoteAddr()), newSessionID()
		lc, why := l.table.admit(c, ip, id)
		if why != "" {
			l.table.onReject(ip, id, why)
			go refuse(c, fmt.Sprintf("421 4.7.0 %s %s, try again later (session %s)\r\n", l.table.hostname, why.text(), id))
			continue
		}
		return lc, nil
	}
}

func refuse(c net.Conn, line string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte(line))
	_ = c.Close()
}

// limitedConn is one admitted connection: it gives its slot back when
// closed, and holds the client to the session's pace. go-smtp sets a read
// deadline before each command; limitedConn moves it earlier when the
// session's lifetime ends or its average rate would fall below the
// minimum, and from then on every read fails as a timeout.
type limitedConn struct {
	net.Conn
	ip    string
	key   string // clientKey(ip)
	id    string // the session ID, in every reply that refuses something
	table *conns
	once  sync.Once
	start time.Time
	end   time.Time // the lifetime's end; zero: none

	mu       sync.Mutex
	deadline time.Time // the deadline go-smtp asked for
	read     int64     // bytes received so far
	cut      RefusalClass
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.table.release(c) })
	return c.Conn.Close()
}

// SetReadDeadline keeps go-smtp's deadline; Read applies it together with
// the pace's.
func (c *limitedConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *limitedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *limitedConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.cut != "" {
		c.mu.Unlock()
		return 0, errCut
	}
	deadline, why := c.paceDeadline()
	if !c.deadline.IsZero() && (deadline.IsZero() || c.deadline.Before(deadline)) {
		deadline, why = c.deadline, ""
	}
	c.mu.Unlock()
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.read += int64(n)
	if n == 0 && why != "" && errors.Is(err, os.ErrDeadlineExceeded) {
		c.cut = why
	}
	cut := c.cut
	c.mu.Unlock()
	if cut != "" && n == 0 {
		c.table.onReject(c.ip, c.id, cut)
		return 0, errCut
	}
	return n, err
}

// paceDeadline is when the session must have received more: the end of
// its lifetime, or the moment its average rate since the start would drop
// below the minimum without another byte, whichever comes first; zero for
// none. c.mu is held.
func (c *limitedConn) paceDeadline() (time.Time, RefusalClass) {
	var d time.Time
	var why RefusalClass
	if !c.end.IsZero() {
		d, why = c.end, CutLifetime
	}
	if p := c.table.pace; p.minRate > 0 {
		// Received bytes buy time at minRate, after the grace.
		byRate := c.start.Add(p.grace + time.Duration(float64(c.read+1)/float64(p.minRate)*float64(time.Second)))
		if d.IsZero() || byRate.Before(d) {
			d, why = byRate, CutTooSlow
		}
	}
	return d, why
}

// errCut is the read error of a connection cut for its pace: a timeout, so
// go-smtp closes the session with its 421 and a session inside DATA gets
// the timeout reply.
var errCut error = cutError{}

type cutError struct{}

func (cutError) Error() string {
	return "inbound: session cut: over its lifetime or under the minimum data rate"
}
func (cutError) Timeout() bool   { return true }
func (cutError) Temporary() bool { return true }

// connOf finds the admitted connection under c, which may be a TLS
// connection over it after STARTTLS.
func connOf(c net.Conn) *limitedConn {
	for {
		switch cc := c.(type) {
		case *limitedConn:
			return cc
		case *tls.Conn:
			c = cc.NetConn()
		default:
			return nil
		}
	}
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
