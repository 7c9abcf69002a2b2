// Package loopback holds the one rule for "this address only reaches this
// machine": where credentials may travel in clear, where the admin listener
// may go without a token, and where the load tool may aim.
package loopback

import (
	"net"
	"net/netip"
	"strings"
)

// Host reports whether host is a loopback IP (127.0.0.0/8, ::1, or an
// IPv4-mapped 127.x) or the name "localhost" in any case, with or without
// its final dot. No other name counts: it could resolve anywhere, and an
// empty host means every interface.
func Host(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// HostPort is Host for a "host:port" address; false when s is not one.
func HostPort(s string) bool {
	host, _, err := net.SplitHostPort(s)
	return err == nil && Host(host)
}
