package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/relay/verify"
)

func testKeys(t *testing.T) []*keyserver.Key {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := NewKeys(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if keys[0].Algo != "rsa" || keys[1].Algo != "ed25519" || keys[0].Domain == keys[1].Domain {
		t.Fatalf("keys: %s %s, %s %s", keys[0].Domain, keys[0].Algo, keys[1].Domain, keys[1].Algo)
	}
	return keys
}

// Letters are distinct, about the asked size, from distinct supporters, and
// their signatures verify against the published keys.
func TestMakeLetters(t *testing.T) {
	t.Parallel()
	keys := testKeys(t)
	txt := map[string][]string{}
	for _, k := range keys {
		txt[k.Selector+"._domainkey."+k.Domain] = []string{k.TXT()}
	}
	v := verify.New(verify.Options{LookupTXT: func(_ context.Context, name string) ([]string, error) {
		return txt[strings.TrimSuffix(name, ".")], nil
	}})
	letters, err := MakeLetters(context.Background(), keys, 10, 3000, "libertad@campaign.test")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, l := range letters {
		if seen[l.From] {
			t.Errorf("letter %d: sender %s twice", i, l.From)
		}
		seen[l.From] = true
		if size := l.Size(); size < 2700 || size > 3300 {
			t.Errorf("letter %d: %d bytes, want about 3000", i, size)
		}
		if !bytes.HasSuffix(l.Data, []byte("\r\n.\r\n")) {
			t.Errorf("letter %d does not end with the end-of-data line", i)
		}
		msg := bytes.TrimSuffix(l.Data, []byte(".\r\n"))
		from, err := verify.ParseFrom(msg)
		if err != nil || from.Address != l.From {
			t.Fatalf("letter %d: From %+v, %v; want %s", i, from, err, l.From)
		}
		if got := v.Verify(context.Background(), msg, from); !got.Pass {
			t.Errorf("letter %d from %s: %+v", i, l.From, got)
		}
	}
	if _, err := MakeLetters(context.Background(), nil, 1, 3000, "x@y.test"); err == nil {
		t.Error("MakeLetters without keys succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := MakeLetters(ctx, keys, 10, 3000, "x@y.test"); err == nil {
		t.Error("MakeLetters with a cancelled context succeeded")
	}
}

func TestSendToDiscard(t *testing.T) {
	t.Parallel()
	keys := testKeys(t)
	letters, err := MakeLetters(context.Background(), keys, 40, 3000, "libertad@campaign.test")
	if err != nil {
		t.Fatal(err)
	}
	d, err := StartDiscard("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := Send(ctx, letters, Options{Addr: d.Addr(), Rcpt: "libertad@campaign.test", Sessions: 4})
	if res.Sent != 40 || res.Accepted != 40 || res.Codes[250] != 40 || len(res.Codes) != 1 || len(res.Errors) != 0 {
		t.Fatalf("result: sent %d accepted %d codes %v errors %v", res.Sent, res.Accepted, res.Codes, res.Errors)
	}
	if len(res.Latencies) != 40 || res.Percentile(0.5) <= 0 || res.Percentile(1) != res.Latencies[39] {
		t.Errorf("latencies: %d, p50 %v", len(res.Latencies), res.Percentile(0.5))
	}
	if res.Rate() <= 0 || res.Sessions != 4 {
		t.Errorf("rate %v, sessions %d", res.Rate(), res.Sessions)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// A server that is not there ends the run after a few tries per session,
// with the failures counted and no letter sent.
func TestSendNoServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := Send(ctx, make([]Letter, 5), Options{Addr: addr, Rcpt: "x@y.test", Sessions: 2, Timeout: time.Second})
	if res.Sent != 0 || res.Errors["dial: connection refused"] != 2*maxDialFailures {
		t.Errorf("sent %d, errors %v", res.Sent, res.Errors)
	}
}

// serveOne accepts one connection on a loopback listener and hands it to
// handle, which has 30 seconds; it returns the address.
func serveOne(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		handle(c)
	}()
	return ln.Addr().String()
}

// scriptedServer accepts one connection, writes script at once and reads
// until the client goes; it returns the address.
func scriptedServer(t *testing.T, script string) string {
	t.Helper()
	return serveOne(t, func(c net.Conn) {
		_, _ = c.Write([]byte(script))
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
}

// Refusals are counted by code, with an example text, and the session goes
// on with the next letter, in either way of sending.
func TestSendRefusals(t *testing.T) {
	t.Parallel()
	// Scripted servers: EHLO ok, then letter 1 refused at RCPT, letter 2
	// refused at the end of DATA.
	for name, c := range map[string]struct {
		lockstep bool
		script   string
	}{
		"lockstep": {true, "220 hi\r\n" +
			"250 ok\r\n" + // EHLO
			"250 ok\r\n550 5.7.1 not here\r\n250 reset\r\n" +
			"250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 try later\r\n250 reset\r\n" +
			"221 bye\r\n"}, // QUIT
		"pipelined": {false, "220 hi\r\n" +
			"250 ok\r\n" + // EHLO
			"250 ok\r\n550 5.7.1 not here\r\n503 5.5.1 no recipient\r\n" +
			"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 try later\r\n" +
			"221 bye\r\n"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr := scriptedServer(t, c.script)
			letters := []Letter{{From: "a@x.test", Data: []byte("x\r\n.\r\n")}, {From: "b@x.test", Data: []byte("y\r\n.\r\n")}}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res := Send(ctx, letters, Options{Addr: addr, Rcpt: "r@x.test", Timeout: 10 * time.Second, Lockstep: c.lockstep})
			if res.Sent != 2 || res.Accepted != 0 || res.Codes[550] != 1 || res.Codes[451] != 1 || len(res.Codes) != 2 {
				t.Fatalf("sent %d accepted %d codes %v errors %v", res.Sent, res.Accepted, res.Codes, res.Errors)
			}
			if res.Examples[451] != "4.3.0 try later" || len(res.Latencies) != 1 {
				t.Errorf("examples %v, %d latencies", res.Examples, len(res.Latencies))
			}
		})
	}
}

// A pipelining client sends RSET, MAIL, RCPT and DATA in one write: the
// server's first read after EHLO, made before it answers anything, holds
// the whole group.
func TestSendPipelines(t *testing.T) {
	t.Parallel()
	groups := make(chan string, 2)
	addr := serveOne(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		read := func() string {
			buf := make([]byte, 4096)
			n, _ := r.Read(buf)
			return string(buf[:n])
		}
		_, _ = c.Write([]byte("220 hi\r\n"))
		if _, err := r.ReadString('\n'); err != nil { // EHLO
			return
		}
		_, _ = c.Write([]byte("250 ok\r\n"))
		groups <- read()
		_, _ = c.Write([]byte("250 ok\r\n250 ok\r\n354 go\r\n"))
		for { // the message
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == ".\r\n" {
				break
			}
		}
		_, _ = c.Write([]byte("250 queued\r\n"))
		groups <- read()
		_, _ = c.Write([]byte("421 enough\r\n421 enough\r\n421 enough\r\n421 enough\r\n"))
	})
	letters := []Letter{{From: "a@x.test", Data: []byte("x\r\n.\r\n")}, {From: "b@x.test", Data: []byte("y\r\n.\r\n")}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := Send(ctx, letters, Options{Addr: addr, Rcpt: "r@x.test", Timeout: 10 * time.Second})
	if res.Accepted != 1 {
		t.Errorf("accepted %d, codes %v, errors %v", res.Accepted, res.Codes, res.Errors)
	}
	for _, want := range []string{"MAIL FROM:<a@x.test>\r\nRCPT TO:<r@x.test>\r\nDATA\r\n",
		"RSET\r\nMAIL FROM:<b@x.test>\r\nRCPT TO:<r@x.test>\r\nDATA\r\n"} {
		select {
		case got := <-groups:
			if got != want {
				t.Errorf("first read of a group = %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatal("the server never read a group")
		}
	}
}

func TestPercentile(t *testing.T) {
	r := &Result{}
	if r.Percentile(0.99) != 0 || r.Rate() != 0 {
		t.Error("empty result has a percentile or rate")
	}
	for i := 1; i <= 100; i++ {
		r.Latencies = append(r.Latencies, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{0.5: 50 * time.Millisecond, 0.9: 90 * time.Millisecond,
		0.99: 99 * time.Millisecond, 1: 100 * time.Millisecond, 0.001: time.Millisecond} {
		if got := r.Percentile(p); got != want {
			t.Errorf("Percentile(%v) = %v, want %v", p, got, want)
		}
	}
}
