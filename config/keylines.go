package config

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// keyLines maps every key in a TOML document, written as toml.Key.String()
// writes it ("smtp.listen"), to the line where it first appears; a table
// maps to its [header] line.
//
// BurntSushi/toml v1.6.0 records the position of every key but exports it
// only inside a ParseError (MetaData has Keys and Undecoded, no positions),
// so unknown keys and failed checks are located by scanning the text: table
// headers, keys (bare, quoted, dotted), and values, skipped with their
// strings, arrays and inline tables (whose keys are recorded too) so that a
// line inside a multi-line string is never taken for a key. It only runs on
// text the parser accepted; on anything it does not follow it stops, and
// the keys after that get line 0 (unknown) rather than a wrong line.
func keyLines(data []byte) map[string]int {
	sc := &keyScanner{s: strings.TrimPrefix(string(data), "\uFEFF"), line: 1, lines: make(map[string]int)}
	var table []string
	for {
		sc.skipBlank(true)
		if sc.eof() {
			break
		}
		line := sc.line
		if sc.peek() == '[' { // [table] or [[array.of.tables]]
			sc.i++
			if sc.peek() == '[' {
				sc.i++
			}
			key := sc.key()
			if key == nil {
				break
			}
			table = key
			sc.record(key, line)
		} else {
			key := sc.key()
			if key == nil {
				break
			}
			full := join(table, key)
			sc.record(full, line)
			sc.skipBlank(false)
			if sc.peek() != '=' {
				break
			}
			sc.i++
			sc.value(full)
		}
		sc.skipLine() // closing brackets, trailing comment
	}
	return sc.lines
}

type keyScanner struct {
	s     string
	i     int
	line  int
	lines map[string]int
}

func (sc *keyScanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *keyScanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.i]
}

// next moves one byte on, counting lines.
func (sc *keyScanner) next() {
	if sc.eof() {
		return
	}
	if sc.s[sc.i] == '\n' {
		sc.line++
	}
	sc.i++
}

// record notes key and each of its parent tables, first occurrence winning.
func (sc *keyScanner) record(key []string, line int) {
	for n := 1; n <= len(key); n++ {
		k := toml.Key(key[:n]).String()
		if _, ok := sc.lines[k]; !ok {
			sc.lines[k] = line
		}
	}
}

// skipBlank skips spaces, and with newlines also line ends and comments.
func (sc *keyScanner) skipBlank(newlines bool) {
	for !sc.eof() {
		switch sc.peek() {
		case ' ', '\t', '\r':
			sc.next()
		case '\n':
			if !newlines {
				return
			}
			sc.next()
		case '#':
			if !newlines {
				return
			}
			sc.skipLine()
		default:
			return
		}
	}
}

func (sc *keyScanner) skipLine() {
	for !sc.eof() && sc.peek() != '\n' {
		sc.next()
	}
	sc.next()
}

// key reads a possibly dotted key; nil if there is none here.
func (sc *keyScanner) key() []string {
	var parts []string
	for {
		sc.skipBlank(false)
		switch c := sc.peek(); {
		case c == '"' || c == '\'':
			parts = append(parts, sc.str())
		case isBare(c):
			start := sc.i
			for !sc.eof() && isBare(sc.peek()) {
				sc.i++
			}
			parts = append(parts, sc.s[start:sc.i])
		default:
			return nil
		}
		sc.skipBlank(false)
		if sc.peek() != '.' {
			return parts
		}
		sc.i++
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value skips one value; keys of inline tables are recorded under prefix
// (nil inside arrays, whose tables the config never has).
func (sc *keyScanner) value(prefix []string) {
	sc.skipBlank(false)
	switch sc.peek() {
	case '"', '\'':
		sc.str()
	case '[':
		sc.i++
		for {
			sc.skipBlank(true)
			switch sc.peek() {
			case 0:
				return
			case ']':
				sc.i++
				return
			case ',':
				sc.i++
				continue
			}
			start := sc.i
			sc.value(nil)
			if sc.i == start { // not understood: step over it
				sc.next()
			}
		}
	case '{':
		sc.i++
		for {
			sc.skipBlank(true) // TOML 1.1 allows newlines in inline tables
			switch sc.peek() {
			case 0:
				return
			case '}':
				sc.i++
				return
			case ',':
				sc.i++
				continue
			}
			line := sc.line
			key := sc.key()
			if key == nil {
				sc.next()
				continue
			}
			var full []string
			if prefix != nil {
				full = join(prefix, key)
				sc.record(full, line)
			}
			sc.skipBlank(false)
			if sc.peek() == '=' {
				sc.i++
			}
			sc.value(full)
		}
	default: // number, boolean, date-time (which may contain a space)
		for !sc.eof() && !strings.ContainsRune(",]}\n#", rune(sc.peek())) {
			sc.i++
		}
	}
}

// str reads a basic or literal string, single- or multi-line, and returns
// its content (decoded for single-line basic strings, which keys use).
func (sc *keyScanner) str() string {
	q := sc.peek()
	if triple := strings.Repeat(string(q), 3); strings.HasPrefix(sc.s[sc.i:], triple) {
		sc.i += 3
		for !sc.eof() {
			if q == '"' && sc.peek() == '\\' {
				sc.next()
				sc.next()
				continue
			}
			if strings.HasPrefix(sc.s[sc.i:], triple) {
				sc.i += 3
				// Up to two more quotes belong to the content ("""a"""").
				for n := 0; n < 2 && sc.peek() == q; n++ {
					sc.i++
				}
				return ""
			}
			sc.next()
		}
		return ""
	}
	start := sc.i
	sc.i++
	for !sc.eof() && sc.peek() != '\n' {
		switch sc.peek() {
		case '\\':
			if q == '"' {
				sc.i++
			}
		case q:
			sc.i++
			raw := sc.s[start:sc.i]
			if q == '\'' {
				return raw[1 : len(raw)-1]
			}
			if s, err := strconv.Unquote(raw); err == nil {
				return s
			}
			return raw[1 : len(raw)-1]
		}
		sc.next()
	}
	return sc.s[start:sc.i]
}

func join(a, b []string) []string {
	return append(append(make([]string, 0, len(a)+len(b)), a...), b...)
}
