// Package oneline holds the one rule for showing text that came from
// outside (a supporter's display name, a letter's subject, an error from a
// parser) on a single line of a log, a table, a batch summary or a header:
// relay/verify applies it to the names it parses, relay/batch to every
// field it prints.
package oneline

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s made safe to print on one line: invalid UTF-8 becomes
// U+FFFD, one per bad byte; control characters (tab, CR and LF among them),
// the line and paragraph separators, and the bidi embeddings, overrides and
// isolates (which could make "UNVERIFIED" or an address read differently)
// become spaces; spaces at either end are trimmed.
func Clean(s string) string {
	if isPlain(s) {
		return strings.TrimSpace(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteRune(utf8.RuneError)
		case Unsafe(r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
}

// isPlain reports whether s is printable ASCII, which Clean leaves alone.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// Unsafe reports whether Clean replaces r: a control character, a line or
// paragraph separator, or a bidi embedding, override or isolate. Text that
// keeps its line breaks (a letter's body) uses it for the rest.
func Unsafe(r rune) bool {
	switch {
	case unicode.IsControl(r), r == '\u2028', r == '\u2029':
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true // bidi embeddings, overrides and isolates
	}
	return false
}
