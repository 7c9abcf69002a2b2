package inbound

import (
	"net"
	"testing"
	"time"
)

func TestNetKey(t *testing.T) {
	cases := []struct {
		ip             string
		v4bits, v6bits int
		want           string
	}{
		{"192.0.2.17", 32, 64, "192.0.2.17"},
		{"192.0.2.17", 24, 64, "192.0.2.0/24"},
		{"::ffff:192.0.2.17", 24, 64, "192.0.2.0/24"}, // IPv4-mapped counts as IPv4
		{"2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::1", 24, 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", 32, 64, "2001:db8:1:3::/64"},
		{"::1", 32, 128, "::1"},
		{"not an ip", 24, 64, "not an ip"},
	}
	for _, c := range cases {
		if got := netKey(c.ip, c.v4bits, c.v6bits); got != c.want {
			t.Errorf("netKey(%q, %d, %d) = %q, want %q", c.ip, c.v4bits, c.v6bits, got, c.want)
		}
	}
}

// TestMaxPerIPCountsIPv6Per64: addresses of one /64 share max_per_ip, as
// one client usually has the whole /64; another /64 is another client.
// (Loopback has one IPv6 address, so the table is driven directly.)
func TestMaxPerIPCountsIPv6Per64(t *testing.T) {
	var refused []RefusalClass
	table := newConns("mx.test", 10, 2, pace{}, func(_, _ string, why RefusalClass) { refused = append(refused, why) })
	admit := func(ip string) (*limitedConn, RefusalClass) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return table.admit(a, ip, "id")
	}
	first, why := admit("2001:db8:1:2::1")
	if why != "" {
		t.Fatalf("first connection refused: %s", why)
	}
	if _, why := admit("2001:db8:1:2::2"); why != "" {
		t.Fatalf("second connection from the /64 refused: %s", why)
	}
	if _, why := admit("2001:db8:1:2:ffff:ffff:ffff:ffff"); why != RefusedMaxPerIP {
		t.Errorf("third connection from the /64: %q, want %q", why, RefusedMaxPerIP)
	}
	if _, why := admit("2001:db8:1:3::1"); why != "" {
		t.Errorf("connection from the next /64 refused: %s", why)
	}
	first.Close()
	if _, why := admit("2001:db8:1:2::3"); why != "" {
		t.Errorf("connection from the /64 after one closed refused: %s", why)
	}
}

// TestPaceDeadline: received bytes buy time at the minimum rate after the
// grace, and the lifetime caps it all.
func TestPaceDeadline(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	table := &conns{pace: pace{lifetime: time.Minute, grace: 10 * time.Second, minRate: 100}}
	c := &limitedConn{table: table, start: start, end: start.Add(time.Minute)}
	for _, tc := range []struct {
		read int64
		want time.Time
		why  RefusalClass
	}{
		{0, start.Add(10*time.Second + 10*time.Millisecond), CutTooSlow},
		{999, start.Add(20 * time.Second), CutTooSlow},
		{100000, start.Add(time.Minute), CutLifetime},
	} {
		c.read = tc.read
		got, why := c.paceDeadline()
		if !got.Equal(tc.want) || why != tc.why {
			t.Errorf("after %d bytes: %v %s, want %v %s", tc.read, got.Sub(start), why, tc.want.Sub(start), tc.why)
		}
	}
}
