package verify

import (
	"strings"
	"testing"
)

// BenchmarkParseFromFolded: a header field folded over many lines costs
// ParseFrom linear time (a string += per line made a megabyte over 45,000
// lines take 40 s).
func BenchmarkParseFromFolded(b *testing.B) {
	msg := []byte("From: Ana <ana@example.org>\r\nX-Long: a\r\n" + strings.Repeat(" bbbbbbbbbbbbbbbbbbbb\r\n", 45000) + "\r\nbody\r\n")
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if s, err := ParseFrom(msg); err != nil || s.Address != "ana@example.org" {
			b.Fatalf("ParseFrom = %+v, %v", s, err)
		}
	}
}
