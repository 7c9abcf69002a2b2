package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/petitiond/petitiond/internal/smtpclient"
)

// Options say where and how to send.
type Options struct {
	Addr     string // host:port of the SMTP server
	Rcpt     string // RCPT TO of every letter
	Sessions int    // concurrent SMTP sessions; 0 means 1
	// Timeout bounds each command and reply; 0 means 30s.
	Timeout time.Duration
	// Helo is the EHLO name; "" means "load.test".
	Helo string
	// Lockstep sends each command alone and waits for its reply. Without
	// it the client pipelines as sending servers do (RFC 2920): RSET (after
	// the first letter), MAIL, RCPT and DATA in one write, then the
	// message.
	Lockstep bool
}

// maxDialFailures is how many connection attempts in a row a session makes
// before it gives up, so a dead server ends the run instead of spinning.
const maxDialFailures = 5

// Result is what one run saw.
type Result struct {
	Sessions int
	Elapsed  time.Duration // from the first dial to the last reply
	// Sent counts the letters whose transaction was started; Accepted those
	// that got a 2xx at the end of DATA.
	Sent, Accepted int
	// Codes counts the reply that ended each transaction (the end-of-DATA
	// reply, or the refusal of MAIL, RCPT or DATA); Examples keeps one
	// reply text per code, to say what a refusal was.
	Codes    map[int]int
	Examples map[int]string
	// Errors counts connection and protocol failures by kind; a letter cut
	// off by one is in Sent but has no code.
	Errors map[string]int
	// Latencies are the end-of-DATA reply times, from the first byte of the
	// message to the reply, sorted.
	Latencies []time.Duration
}

// Rate is accepted letters per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Accepted) / r.Elapsed.Seconds()
}

// Percentile is the nearest-rank p-quantile (0 < p <= 1) of the end-of-DATA
// latencies, 0 when there are none.
func (r *Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(r.Latencies)))) - 1
	return r.Latencies[min(max(i, 0), len(r.Latencies)-1)]
}

// Send sends every letter once, over opt.Sessions concurrent sessions that
// each take the next unsent letter until none is left: one session carries
// many letters, with RSET between them, as a busy client would. It stops
// early when ctx ends (open connections are closed at once).
func Send(ctx context.Context, letters []Letter, opt Options) *Result {
	if opt.Sessions < 1 {
		opt.Sessions = 1
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.Helo == "" {
		opt.Helo = "load.test"
	}
	var next atomic.Int64
	parts := make([]*Result, opt.Sessions)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range parts {
		wg.Go(func() { parts[i] = session(ctx, letters, &next, opt) })
	}
	wg.Wait()
	res := &Result{Sessions: opt.Sessions, Elapsed: time.Since(start),
		Codes: map[int]int{}, Examples: map[int]string{}, Errors: map[string]int{}}
	for _, p := range parts {
		res.Sent += p.Sent
		res.Accepted += p.Accepted
		for c, n := range p.Codes {
			res.Codes[c] += n
		}
		for c, t := range p.Examples {
			res.Examples[c] = t
		}
		for e, n := range p.Errors {
			res.Errors[e] += n
		}
		res.Latencies = append(res.Latencies, p.Latencies...)
	}
	slices.Sort(res.Latencies)
	return res
}

// session is one client connection (reconnecting after a failure) taking
// letters from the shared counter.
func session(ctx context.Context, letters []Letter, next *atomic.Int64, opt Options) *Result {
	r := &Result{Codes: map[int]int{}, Examples: map[int]string{}, Errors: map[string]int{}}
	var c *conn
	defer func() {
		if c != nil {
			c.quit()
		}
	}()
	for failures := 0; ctx.Err() == nil; {
		if c == nil {
			var err error
			if c, err = dial(ctx, opt); err != nil {
				r.Errors[err.Error()]++
				if failures++; failures >= maxDialFailures {
					return r
				}
				// Back off a little: the server may be at its session
				// limit while closed sessions wind down.
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(failures) * 50 * time.Millisecond):
				}
				continue
			}
			failures = 0
		}
		i := int(next.Add(1) - 1)
		if i >= len(letters) {
			return r
		}
		r.Sent++
		transaction := c.pipelined
		if opt.Lockstep {
			transaction = c.transaction
		}
		if err := transaction(letters[i], opt.Rcpt, r); err != nil {
			r.Errors[kind(err)]++
			c.close()
			c = nil
		}
	}
	return r
}

// conn is an SMTP session that ctx can cut off.
type conn struct {
	*smtpclient.Conn
	stop func() bool // stops the context watcher
	// used is set once a transaction ran: the next pipelined one starts
	// with RSET.
	used bool
	cmds []byte // the pipelined group, reused
}

func dial(ctx context.Context, opt Options) (*conn, error) {
	sc, err := smtpclient.Dial(opt.Addr, opt.Timeout)
	if err != nil {
		return nil, fmt.Errorf("dial: %s", kind(err))
	}
	c := &conn{Conn: sc, stop: context.AfterFunc(ctx, func() { sc.Close() })}
	if sc.Banner.Code != 220 {
		c.close()
		return nil, fmt.Errorf("greeting %d", sc.Banner.Code)
	}
	if rep, err := sc.Hello(opt.Helo); err != nil || rep.Code != 250 {
		c.close()
		if err != nil {
			return nil, fmt.Errorf("EHLO: %s", kind(err))
		}
		return nil, fmt.Errorf("EHLO %d", rep.Code)
	}
	return c, nil
}

// transaction sends one letter and RSET, recording its outcome in r. An
// error means the connection is no longer usable.
func (c *conn) transaction(l Letter, rcpt string, r *Result) error {
	for _, cmd := range []struct {
		line string
		want int
	}{{"MAIL FROM:<" + l.From + ">", 250}, {"RCPT TO:<" + rcpt + ">", 250}, {"DATA", 354}} {
		rep, err := c.Cmd("%s", cmd.line)
		if err != nil {
			return err
		}
		if rep.Code != cmd.want {
			r.record(rep)
			return c.rset()
		}
	}
	if err := c.message(l, r); err != nil {
		return err
	}
	return c.rset()
}

// pipelined sends one letter as a pipelining client does: one write with
// RSET (from the second letter on), MAIL, RCPT and DATA, then their
// replies, then the message and its reply. The message goes when DATA got
// 354 (the server then waits for it); otherwise the transaction ends with
// the first refusal in the group.
func (c *conn) pipelined(l Letter, rcpt string, r *Result) error {
	b := c.cmds[:0]
	replies := 3
	if c.used {
		b = append(b, "RSET\r\n"...)
		replies++
	}
	c.used = true
	b = append(b, "MAIL FROM:<"...)
	b = append(b, l.From...)
	b = append(b, ">\r\nRCPT TO:<"...)
	b = append(b, rcpt...)
	b = append(b, ">\r\nDATA\r\n"...)
	c.cmds = b
	if err := c.Raw(b); err != nil {
		return err
	}
	// Every reply of the group is read, whatever the first ones said.
	var refused, data smtpclient.Reply
	for i := range replies {
		rep, err := c.ReadReply()
		if err != nil {
			return err
		}
		switch {
		case i == replies-1:
			data = rep
		case rep.Code != 250 && refused.Code == 0:
			refused = rep
		}
	}
	if data.Code != 354 {
		if refused.Code == 0 {
			refused = data
		}
		r.record(refused)
		return nil
	}
	return c.message(l, r)
}

// message sends the letter's message after DATA's 354 and records the
// end-of-DATA reply and how long it took.
func (c *conn) message(l Letter, r *Result) error {
	start := time.Now()
	if err := c.Raw(l.Data); err != nil {
		return err
	}
	rep, err := c.ReadReply()
	if err != nil {
		return err
	}
	r.Latencies = append(r.Latencies, time.Since(start))
	r.record(rep)
	if rep.Code/100 == 2 {
		r.Accepted++
	}
	return nil
}

// record counts a reply's code and keeps the first text seen for it.
func (r *Result) record(rep smtpclient.Reply) {
	r.Codes[rep.Code]++
	if _, ok := r.Examples[rep.Code]; !ok {
		r.Examples[rep.Code] = rep.Text
	}
}

func (c *conn) rset() error {
	rep, err := c.Cmd("RSET")
	if err != nil {
		return err
	}
	if rep.Code != 250 {
		return fmt.Errorf("RSET %d", rep.Code)
	}
	return nil
}

func (c *conn) close() {
	c.stop()
	c.Close()
}

func (c *conn) quit() {
	c.stop()
	_ = c.Quit()
}

// kind names an I/O error briefly, so errors can be counted by kind.
func kind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by server"
	case errors.Is(err, net.ErrClosed):
		return "connection closed (run cut short)"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	}
	return err.Error()
}
