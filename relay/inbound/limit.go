package inbound

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// conns is the daemon-wide table of open SMTP connections: it enforces the
// total and per-IP limits across every listener before go-smtp sees a
// connection (go-smtp has no limit of its own and would start a goroutine
// per accepted connection), and it can close them all at shutdown (go-smtp
// cannot once its Shutdown has begun).
type conns struct {
	hostname string
	maxTotal int
	maxPerIP int
	onReject func(ip string, why RefusalClass)

	mu    sync.Mutex
	perIP map[string]int
	open  map[*limitedConn]struct{}
}

func newConns(hostname string, maxTotal, maxPerIP int, onReject func(ip string, why RefusalClass)) *conns {
	return &conns{hostname: hostname, maxTotal: maxTotal, maxPerIP: maxPerIP, onReject: onReject,
		perIP: map[string]int{}, open: map[*limitedConn]struct{}{}}
}

// admit counts a connection in, or says which limit keeps it out.
func (t *conns) admit(c net.Conn, ip string) (*limitedConn, RefusalClass) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.open) >= t.maxTotal {
		return nil, RefusedMaxConnections
	}
	if t.perIP[ip] >= t.maxPerIP {
		return nil, RefusedMaxPerIP
	}
	lc := &limitedConn{Conn: c, ip: ip, table: t}
	t.perIP[ip]++
	t.open[lc] = struct{}{}
	return lc, ""
}

func (t *conns) release(lc *limitedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.open, lc)
	if t.perIP[lc.ip]--; t.perIP[lc.ip] <= 0 {
		delete(t.perIP, lc.ip)
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
		ip := remoteIP(c.RemoteAddr())
		lc, why := l.table.admit(c, ip)
		if why != "" {
			l.table.onReject(ip, why)
			go refuse(c, fmt.Sprintf("421 4.7.0 %s %s, try again later\r\n", l.table.hostname, why.text()))
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

type limitedConn struct {
	net.Conn
	ip    string
	table *conns
	once  sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() { c.table.release(c) })
	return c.Conn.Close()
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
