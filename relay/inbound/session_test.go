package inbound

import (
	"bytes"
	"testing"
)

func TestBareLineEnding(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"", -1},
		{"a\r\nb\r\n", -1},
		{"no line ending", -1},
		{"a\nb", 1},
		{"a\rb", 1},
		{"a\r\n\n", 3},
		{"a\r\r\n", 1},
		{"ends in CR\r", 10},
		{"hello\r\n\n.\nMAIL FROM:<x>\r\n", 7},
	} {
		if got := bareLineEnding([]byte(c.in)); got != c.want {
			t.Errorf("bareLineEnding(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// naiveBare is the definition, byte by byte, to check the fast version.
func naiveBare(b []byte) int {
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 >= len(b) || b[i+1] != '\n'):
			return i
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return i
		}
	}
	return -1
}

func FuzzBareLineEnding(f *testing.F) {
	for _, s := range []string{"a\r\nb", "\n", "\r", "x\r\r\n\n", "hello\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := bareLineEnding(b), naiveBare(b); got != want {
			t.Fatalf("bareLineEnding(%q) = %d, want %d", b, got, want)
		}
		if bytes.Count(b, []byte("\r\n"))*2 == bytes.Count(b, []byte("\r"))+bytes.Count(b, []byte("\n")) && bareLineEnding(b) != -1 {
			t.Fatalf("only CRLF pairs in %q, yet reported bare", b)
		}
	})
}
