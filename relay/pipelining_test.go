package relay_test

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay"
)

// writeCounter is the daemon's SMTP listener, counting the writes on each
// connection it accepts: each is one write system call on the socket.
type writeCounter struct {
	mu    sync.Mutex
	conns []*countedConn
}

func (w *writeCounter) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return countingListener{Listener: ln, w: w}, nil
}

// last is the connection accepted last.
func (w *writeCounter) last(t *testing.T) *countedConn {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.conns) == 0 {
		t.Fatal("the daemon accepted no connection")
	}
	return w.conns[len(w.conns)-1]
}

type countingListener struct {
	net.Listener
	w *writeCounter
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countedConn{Conn: c}
	l.w.mu.Lock()
	l.w.conns = append(l.w.conns, cc)
	l.w.mu.Unlock()
	return cc, nil
}

type countedConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countedConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// startCounted starts a daemon for the test campaign whose SMTP writes are
// counted; timeout is smtp.timeout.
func startCounted(t *testing.T, timeout time.Duration) (*testenv.Test, *writeCounter) {
	t.Helper()
	w := &writeCounter{}
	e := testenv.PrepareWith(t, testenv.Options{
		Domains: testenv.SigningDomains(),
		Daemon:  relay.Options{Listen: w.listen},
		Configure: func(c *config.Config) {
			testenv.UseCampaign(c)
			c.SMTP.Timeout = config.Duration{Duration: timeout}
		},
	})
	e.Start()
	return e, w
}

// readReplies reads n replies and returns their codes.
func readReplies(t *testing.T, c *smtpclient.Conn, n int) []int {
	t.Helper()
	var codes []int
	for range n {
		r, err := c.ReadReply()
		if err != nil {
			t.Fatalf("after replies %v: %v", codes, err)
		}
		codes = append(codes, r.Code)
	}
	return codes
}

func sameCodes(a []int, b ...int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Replies to a pipelined group (RFC 2920) leave in one write when the
// commands arrived together: a letter costs the daemon two writes, one for
// the group's replies and one for the reply to the message.
func TestPipelinedRepliesLeaveTogether(t *testing.T) {
	t.Parallel()
	e, w := startCounted(t, 10*time.Second)
	c := e.Dial()
	defer c.Close()
	if r, err := c.Hello("client.test"); err != nil || r.Code != 250 || !strings.Contains(r.Text, "PIPELINING") {
		t.Fatalf("EHLO: %v %v", r, err)
	}
	conn := w.last(t)
	for i, from := range []string{"ana@rsa.test", "bea@ed.test"} {
		group := "MAIL FROM:<" + from + ">\r\nRCPT TO:<" + e.CampaignAddr() + ">\r\nDATA\r\n"
		want := []int{250, 250, 354}
		if i > 0 {
			group = "RSET\r\n" + group
			want = append([]int{250}, want...)
		}
		before := conn.writes.Load()
		if err := c.Raw([]byte(group)); err != nil {
			t.Fatal(err)
		}
		if got := readReplies(t, c, len(want)); !sameCodes(got, want...) {
			t.Fatalf("letter %d: replies %v, want %v", i, got, want)
		}
		if n := conn.writes.Load() - before; n != 1 {
			t.Errorf("letter %d: the group's %d replies took %d writes, want 1", i, len(want), n)
		}
		before = conn.writes.Load()
		domain := from[strings.IndexByte(from, '@')+1:]
		if err := c.Raw(smtpclient.DotStuff(e.Signed(domain, from))); err != nil {
			t.Fatal(err)
		}
		r, err := c.ReadReply()
		if err != nil || r.LetterID() == "" {
			t.Fatalf("letter %d: %v %v, want 250 queued as", i, r, err)
		}
		if n := conn.writes.Load() - before; n != 1 {
			t.Errorf("letter %d: the reply to the message took %d writes, want 1", i, n)
		}
	}
}

// A client that sends a command and waits gets its reply, whatever it sent
// before: alone, after a pipelined group, or with the next command only
// half sent. The client's read deadline (5s) fails the test rather than
// letting it hang.
func TestRepliesNeverWaitForClient(t *testing.T) {
	t.Parallel()
	e, _ := startCounted(t, 10*time.Second)
	c, err := smtpclient.Dial(e.SMTPAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rcpt := e.CampaignAddr()
	letter := string(smtpclient.DotStuff(e.Signed("rsa.test", "ana@rsa.test")))
	for _, s := range []struct {
		what, send string
		want       []int
	}{
		{"EHLO alone", "EHLO client.test\r\n", []int{250}},
		{"NOOP alone", "NOOP\r\n", []int{250}},
		{"MAIL alone", "MAIL FROM:<ana@rsa.test>\r\n", []int{250}},
		{"RCPT alone", "RCPT TO:<" + rcpt + ">\r\n", []int{250}},
		{"DATA alone", "DATA\r\n", []int{354}},
		{"the message", letter, []int{250}},
		{"a group, then a command half sent", "RSET\r\nMAIL FROM:<ana@rsa.test>\r\nRCPT TO:<" + rcpt, []int{250, 250}},
		{"the rest of it", ">\r\n", []int{250}},
		{"BDAT, a chunk that is not the last", "BDAT 5\r\nFrom:", []int{250}},
		{"a command line cut before its end", "NO", nil},
		{"its end", "OP\r\n", []int{250}},
		{"RSET", "RSET\r\n", []int{250}},
		{"a group ending in VRFY", "NOOP\r\nNOOP\r\nVRFY postmaster\r\n", []int{250, 250, 252}},
		{"QUIT", "QUIT\r\n", []int{221}},
	} {
		if err := c.Raw([]byte(s.send)); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if got := readReplies(t, c, len(s.want)); !sameCodes(got, s.want...) {
			t.Fatalf("%s: replies %v, want %v", s.what, got, s.want)
		}
	}
}

// The reply the session owes when it ends on an idle timeout is sent too.
func TestTimeoutReplyIsSent(t *testing.T) {
	t.Parallel()
	e, _ := startCounted(t, time.Second)
	c, err := smtpclient.Dial(e.SMTPAddr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Raw([]byte("EHLO client.test\r\nNOOP\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readReplies(t, c, 3); !sameCodes(got, 250, 250, 421) {
		t.Fatalf("replies %v, want EHLO's and NOOP's 250 and then the timeout's 421", got)
	}
}
