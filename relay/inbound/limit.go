package inbound

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// limitListener enforces the total and per-IP session limits before go-smtp
// sees a connection: go-smtp has no limit of its own and would start a
// goroutine per accepted connection. Connections over a limit get a 421 and
// are closed; Accept goes on with the next one.
type limitListener struct {
	net.Listener
	hostname string
	maxTotal int
	maxPerIP int
	onReject func(ip, why string)

	mu    sync.Mutex
	total int
	perIP map[string]int
}

func newLimitListener(ln net.Listener, hostname string, maxTotal, maxPerIP int, onReject func(ip, why string)) *limitListener {
	return &limitListener{Listener: ln, hostname: hostname, maxTotal: maxTotal, maxPerIP: maxPerIP,
		onReject: onReject, perIP: map[string]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		if why := l.admit(ip); why != "" {
			l.onReject(ip, why)
			go refuse(c, fmt.Sprintf("421 4.7.0 %s %s, try again later\r\n", l.hostname, why))
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

// admit counts the connection in, or says why it may not come in.
func (l *limitListener) admit(ip string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.maxTotal {
		return "too many connections"
	}
	if l.perIP[ip] >= l.maxPerIP {
		return "too many connections from your address"
	}
	l.total++
	l.perIP[ip]++
	return ""
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

func refuse(c net.Conn, line string) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte(line))
	_ = c.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
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
