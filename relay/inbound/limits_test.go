package inbound

import (
	"context"
	"testing"
	"time"
)

// TestBudget: takings wait for bytes given back, give up after their wait,
// and never exceed the total.
func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	if !b.take(ctx, 60, 0) || !b.take(ctx, 40, 0) {
		t.Fatal("takings within the budget refused")
	}
	if b.take(ctx, 1, time.Millisecond) {
		t.Fatal("a taking past the budget granted")
	}
	if b.take(ctx, 101, time.Hour) {
		t.Fatal("a taking larger than the whole budget granted")
	}
	got := make(chan bool)
	go func() { got <- b.take(ctx, 50, time.Minute) }()
	b.give(60)
	if !<-got {
		t.Fatal("a waiting taking not granted once bytes came back")
	}
	if b.free != 10 {
		t.Errorf("free %d, want 10", b.free)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if b.take(cancelled, 50, time.Minute) {
		t.Error("a taking granted after its context ended")
	}
}

// TestWindow: sums cover the last hour only, per key, and old keys are
// forgotten.
func TestWindow(t *testing.T) {
	w := newWindow(time.Hour)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	w.add("a", t0, 100)
	w.add("a", t0.Add(30*time.Minute), 50)
	w.add("b", t0.Add(30*time.Minute), 7)
	for _, c := range []struct {
		key  string
		at   time.Duration
		want int64
	}{
		{"a", 0, 100},
		{"a", 59 * time.Minute, 150},
		{"a", 61 * time.Minute, 50},
		{"a", 91 * time.Minute, 0},
		{"b", 45 * time.Minute, 7},
		{"c", 45 * time.Minute, 0},
	} {
		if got := w.sum(c.key, t0.Add(c.at)); got != c.want {
			t.Errorf("sum(%s) at +%v = %d, want %d", c.key, c.at, got, c.want)
		}
	}
	w.add("c", t0.Add(3*time.Hour), 1)
	if _, ok := w.keys["a"]; ok {
		t.Error("a key idle for over an hour is still kept")
	}
}

func TestUnverifiedCapKeys(t *testing.T) {
	c := newUnverifiedCap(1000)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	c.add("flood.test", "192.0.2.1", 900, now)
	c.add("v6.test", "2001:db8:1:2::1", 900, now)
	for _, tc := range []struct {
		domain, ip, want string
	}{
		{"flood.test", "198.51.100.1", "sender domain flood.test"},
		{"other.test", "192.0.2.200", "client network 192.0.2.0/24"},
		{"other.test", "192.0.3.1", ""},
		// IPv6 is counted per /64: another address in it shares the cap,
		// the next /64 does not.
		{"other.test", "2001:db8:1:2:ffff::7", "client network 2001:db8:1:2::/64"},
		{"other.test", "2001:db8:1:3::1", ""},
	} {
		if got := c.over(tc.domain, tc.ip, 200, now); got != tc.want {
			t.Errorf("over(%s, %s) = %q, want %q", tc.domain, tc.ip, got, tc.want)
		}
	}
	if got := c.over("flood.test", "192.0.2.1", 100, now); got != "" {
		t.Errorf("exactly at the cap: %q", got)
	}
}
