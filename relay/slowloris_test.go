package relay_test

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
)

// dripper is a client that sends its commands a byte at a time, slowly
// (slowloris), and records what the server says until it hangs up.
type dripper struct {
	conn net.Conn
	mu   sync.Mutex
	last string // the last reply line read
	done bool   // the server closed the connection
}

// startDripper connects, reads the greeting and sends text, chunk bytes
// every interval, at most writes times, until the server hangs up.
func startDripper(t *testing.T, addr, text string, chunk int, interval time.Duration, writes int) *dripper {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := &dripper{conn: c}
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220") {
		t.Fatalf("greeting: %q %v", line, err)
	}
	go func() {
		for {
			line, err := r.ReadString('\n')
			d.mu.Lock()
			if line != "" {
				d.last = strings.TrimRight(line, "\r\n")
			}
			if err != nil {
				d.done = true
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
		}
	}()
	go func() {
		stream := strings.Repeat(text, chunk*writes/len(text)+1)
		for i := 0; i < writes; i++ {
			if _, err := c.Write([]byte(stream[i*chunk : (i+1)*chunk])); err != nil {
				return
			}
			time.Sleep(interval)
		}
	}()
	return d
}

func (d *dripper) state() (done bool, last string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.done, d.last
}

// TestSlowlorisClientsCut: clients that drip a byte at a time are cut once
// their average rate falls under the minimum, a client that keeps a good
// rate is cut at the session's lifetime, each with a 421 naming its
// session; a legitimate client is served meanwhile, and the slots come
// back (issue 9 point 6).
func TestSlowlorisClientsCut(t *testing.T) {
	const drippers = 6
	// smtp.timeout 500ms: the rate counts after 500ms, the lifetime is 5s.
	e := testenv.Start(t, func(c *config.Config) {
		c.SMTP.Timeout = config.Duration{Duration: 500 * time.Millisecond}
		c.SMTP.MaxConnections, c.SMTP.MaxPerIP = drippers+2, drippers+2
	})
	var slow []*dripper
	for range drippers {
		slow = append(slow, startDripper(t, e.SMTPAddr(), "NOOP\r\n", 1, 50*time.Millisecond, 600))
	}
	// Fast enough for the rate (5 KB/s), so only the lifetime ends it.
	chatty := startDripper(t, e.SMTPAddr(), "NOOP "+strings.Repeat("x", 93)+"\r\n", 100, 20*time.Millisecond, 1500)

	// The legitimate client, while they drip.
	r := e.Send(e.Signed("ed.test", "bo@ed.test"))
	expectReply(t, "a letter while clients drip", r, "250 2.0.0 queued as L")

	testenv.WaitFor(t, "dripping clients cut", 20*time.Second, func() bool {
		for _, d := range slow {
			if done, _ := d.state(); !done {
				return false
			}
		}
		return true
	})
	for i, d := range slow {
		_, last := d.state()
		if !strings.HasPrefix(last, "421 ") || !strings.Contains(last, "(session ") {
			t.Errorf("dripper %d: last reply %q, want a 421 naming the session", i, last)
		}
	}
	testenv.WaitFor(t, "a client over its lifetime cut", 30*time.Second, func() bool {
		done, _ := chatty.state()
		return done
	})
	if _, last := chatty.state(); !strings.HasPrefix(last, "421 ") || !strings.Contains(last, "(session ") {
		t.Errorf("client over its lifetime: last reply %q, want a 421 naming the session", last)
	}

	// Every slot is free again.
	var open []*smtpclient.Conn
	for range drippers + 2 {
		c, err := smtpclient.Dial(e.SMTPAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		expectReply(t, "a new session after the cuts", c.Banner, "220")
	}
	for _, c := range open {
		c.Quit()
	}
}
