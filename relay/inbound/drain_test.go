package inbound

import (
	"bufio"
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
)

// TestSessionOpenedWhileDrainingNamesIt: a connection that reaches the
// server after its shutdown has begun (between the drain and the closing
// of the listeners) is answered 421 4.3.2 naming its session, as every
// other refusal is, and hung up on.
func TestSessionOpenedWhileDrainingNamesIt(t *testing.T) {
	cfg := config.Default()
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.Hostname = "mx.campaign.example"
	s, err := New(cfg, nil, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	// The moment Shutdown begins: draining, listeners not yet closed.
	s.draining.Store(true)

	c, err := net.DialTimeout("tcp", s.Addrs()[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("EHLO client.example\r\n")); err != nil {
		t.Fatal(err)
	}
	var lines []string
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			lines = append(lines, strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			break // hung up
		}
	}
	refusal := regexp.MustCompile(`^421 4\.3\.2 mx\.campaign\.example shutting down, try again later \(session [0-9a-f]{12}\)$`)
	found := false
	for _, l := range lines {
		found = found || refusal.MatchString(l)
	}
	if !found {
		t.Errorf("a session opened while draining got %q, want a 421 4.3.2 naming its session, then the hang-up", lines)
	}
}
