// Package smtpclient is a small SMTP client that speaks raw protocol lines and
// returns every reply as it came. Tests, the demo and the load tool use it to
// drive petitiond, including with input a polite client would never send.
package smtpclient

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Reply is one SMTP reply: its code and its text lines joined by "\n".
type Reply struct {
	Code int
	Text string
}

func (r Reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// LetterID is the word after "queued as" in a 250 reply, which petitiond
// gives every letter it stored (SPEC 2), or "" when there is none.
func (r Reply) LetterID() string {
	_, after, ok := strings.Cut(r.Text, "queued as ")
	if r.Code != 250 || !ok {
		return ""
	}
	words := strings.Fields(after)
	if len(words) == 0 {
		return ""
	}
	return strings.TrimRight(words[0], ",.;")
}

// Conn is one SMTP session.
type Conn struct {
	c       net.Conn
	r       *bufio.Reader
	timeout time.Duration
	// Banner is the server's greeting.
	Banner Reply
}

// Dial connects and reads the greeting.
func Dial(addr string, timeout time.Duration) (*Conn, error) {
	return DialFrom("", addr, timeout)
}

// DialFrom is Dial from a given local IP ("" for any), so one machine can
// stand for several clients on the loopback range.
func DialFrom(localIP, addr string, timeout time.Duration) (*Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := &Conn{c: c, r: bufio.NewReader(c), timeout: timeout}
	conn.Banner, err = conn.ReadReply()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	return conn, nil
}

// Close closes the connection without QUIT.
func (c *Conn) Close() error { return c.c.Close() }

// Raw writes bytes as they are.
func (c *Conn) Raw(b []byte) error {
	_ = c.c.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := c.c.Write(b)
	return err
}

// ReadReply reads one (possibly multi-line) reply.
func (c *Conn) ReadReply() (Reply, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(c.timeout))
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return Reply{}, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return Reply{}, fmt.Errorf("short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return Reply{}, fmt.Errorf("bad reply line %q", line)
		}
		if len(line) > 4 {
			lines = append(lines, line[4:])
		}
		if len(line) == 3 || line[3] == ' ' {
			return Reply{Code: code, Text: strings.Join(lines, "\n")}, nil
		}
	}
}

// Cmd sends one command line (CRLF added) and reads its reply.
func (c *Conn) Cmd(format string, args ...any) (Reply, error) {
	if err := c.Raw([]byte(fmt.Sprintf(format, args...) + "\r\n")); err != nil {
		return Reply{}, err
	}
	return c.ReadReply()
}

// Hello sends EHLO.
func (c *Conn) Hello(name string) (Reply, error) { return c.Cmd("EHLO %s", name) }

// Send runs one mail transaction: MAIL, each RCPT, DATA with msg
// dot-stuffed as it is (line endings untouched, so callers can send broken
// ones), and returns the first reply that was not a success, or the reply to
// the end of data.
func (c *Conn) Send(from string, rcpts []string, msg []byte) (Reply, error) {
	r, err := c.Cmd("MAIL FROM:<%s>", from)
	if err != nil || r.Code != 250 {
		return r, err
	}
	ok := 0
	var last Reply
	for _, rcpt := range rcpts {
		last, err = c.Cmd("RCPT TO:<%s>", rcpt)
		if err != nil {
			return last, err
		}
		if last.Code == 250 {
			ok++
		}
	}
	if ok == 0 {
		return last, nil
	}
	r, err = c.Cmd("DATA")
	if err != nil || r.Code != 354 {
		return r, err
	}
	if err := c.Raw(DotStuff(msg)); err != nil {
		return Reply{}, err
	}
	return c.ReadReply()
}

// SendMail runs a whole session: greeting, EHLO helo, one transaction as
// Send runs it, QUIT. It returns the final reply of the transaction; an
// error means the session broke or a step before MAIL was refused.
func SendMail(addr, helo, from string, rcpts []string, msg []byte, timeout time.Duration) (Reply, error) {
	c, err := Dial(addr, timeout)
	if err != nil {
		return Reply{}, err
	}
	defer c.Quit()
	if c.Banner.Code != 220 {
		return c.Banner, fmt.Errorf("greeting: %s", c.Banner)
	}
	if r, err := c.Hello(helo); err != nil || r.Code != 250 {
		return r, fmt.Errorf("EHLO: %v %v", r, err)
	}
	return c.Send(from, rcpts, msg)
}

// DotStuff doubles a leading dot on every line that starts after a CRLF and
// appends the end-of-data marker. Bare LFs are left as they are, on purpose.
func DotStuff(msg []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(msg) + 64)
	atLineStart := true
	for i := 0; i < len(msg); i++ {
		if atLineStart && msg[i] == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(msg[i])
		atLineStart = msg[i] == '\n' && i > 0 && msg[i-1] == '\r'
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

// Quit sends QUIT and closes.
func (c *Conn) Quit() error {
	_, _ = c.Cmd("QUIT")
	return c.c.Close()
}
