package crlf

import (
	"bytes"
	"testing"
)

func TestIndexBare(t *testing.T) {
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
		{"\nstarts with LF", 0},
		{"hello\r\n\n.\nMAIL FROM:<x>\r\n", 7},
	} {
		if got := IndexBare([]byte(c.in)); got != c.want {
			t.Errorf("IndexBare(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"":                   "",
		"a\r\nb\r\n":         "a\r\nb\r\n",
		"a\nb\n":             "a\r\nb\r\n",
		"a\rb\r":             "a\r\nb\r\n",
		"a\r\r\n\n\r":        "a\r\n\r\n\r\n\r\n",
		"hello\n.\nMAIL\r\n": "hello\r\n.\r\nMAIL\r\n",
	} {
		if got := string(Normalize([]byte(in))); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
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

func FuzzIndexBare(f *testing.F) {
	for _, s := range []string{"a\r\nb", "\n", "\r", "x\r\r\n\n", "hello\n.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := IndexBare(b), naiveBare(b); got != want {
			t.Fatalf("IndexBare(%q) = %d, want %d", b, got, want)
		}
		if bytes.Count(b, []byte("\r\n"))*2 == bytes.Count(b, []byte("\r"))+bytes.Count(b, []byte("\n")) && IndexBare(b) != -1 {
			t.Fatalf("only CRLF pairs in %q, yet reported bare", b)
		}
		n := Normalize(b)
		if i := IndexBare(n); i >= 0 {
			t.Fatalf("Normalize(%q) = %q, bare at %d", b, n, i)
		}
		if IndexBare(b) < 0 && !bytes.Equal(n, b) {
			t.Fatalf("Normalize changed %q, which had no bare line ending", b)
		}
		if !bytes.Equal(bytes.ReplaceAll(bytes.ReplaceAll(n, []byte("\r\n"), nil), []byte("\r"), nil),
			bytes.ReplaceAll(bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\r"), nil), []byte("\n"), nil)) {
			t.Fatalf("Normalize(%q) = %q changed more than line endings", b, n)
		}
	})
}
