package loopback

import "testing"

func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:25", true},
		{"127.8.9.10:25", true},
		{"[::1]:25", true},
		{"[::ffff:127.0.0.1]:25", true},
		{"localhost:25", true},
		{"LOCALHOST.:25", true},
		{"localhost.localdomain:25", false},
		{"mylocalhost:25", false},
		{"smtp.example.org:587", false},
		{"192.0.2.10:25", false},
		{"[::ffff:192.0.2.10]:25", false},
		{"[fe80::1%lo]:25", false},
		{"0.0.0.0:25", false},
		{"[::]:25", false},
		{":25", false},       // every interface
		{"127.0.0.1", false}, // not host:port
		{"", false},
	} {
		if got := HostPort(tc.addr); got != tc.want {
			t.Errorf("HostPort(%q) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	// Host is the same rule without the port.
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "Localhost."} {
		if !Host(h) {
			t.Errorf("Host(%q) = false", h)
		}
	}
	for _, h := range []string{"", "127.0.0.1:25", "example.org", "10.0.0.1"} {
		if Host(h) {
			t.Errorf("Host(%q) = true", h)
		}
	}
}
