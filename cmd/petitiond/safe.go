package main

// Terminal-safe output. Values the commands print came, many of them, from
// the network: a sender's address, a Subject, a remote server's reply. A
// control character in one (an ESC starting an OSC 52 sequence that writes
// the admin's clipboard, a CR that draws a forged line over the real one)
// must reach the admin's terminal as visible text, never as a command to it.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/petitiond/petitiond/oneline"
)

// safe escapes what a terminal would act on in s: C0 and C1 controls (ESC,
// CR, LF and tab among them), DEL, the line and paragraph separators and
// the bidi controls, as \x1b or \u202e; a byte that is not UTF-8 as \xff.
// Text without any of them comes back as it was.
func safe(s string) string { return escape(s, nil) }

// escape is safe, but leaves alone the runes keep accepts.
func escape(s string, keep func(rune) bool) string {
	unsafe := func(r rune) bool { return oneline.Unsafe(r) && (keep == nil || !keep(r)) }
	if utf8.ValidString(s) && strings.IndexFunc(s, unsafe) < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unsafe(r):
			b.WriteString(s[i : i+size])
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// safeLines is safe for text that keeps its line breaks (an error listing
// several problems): each line escaped on its own.
func safeLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = safe(l)
	}
	return strings.Join(lines, "\n")
}

// jsonSafe writes JSON with the characters encoding/json leaves raw but a
// terminal may act on (C1 controls, DEL, bidi controls) escaped as \uXXXX:
// the same JSON to a parser, inert on a screen. encoding/json already
// escapes C0 controls and the line separators inside strings, and outside
// strings JSON has only ASCII punctuation and white space.
type jsonSafe struct{ w io.Writer }

func (j jsonSafe) Write(p []byte) (int, error) {
	if !bytes.ContainsFunc(p, func(r rune) bool { return r >= 0x7f && oneline.Unsafe(r) }) {
		return j.w.Write(p)
	}
	n := len(p)
	var b bytes.Buffer
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		if r >= 0x7f && oneline.Unsafe(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
		} else {
			b.Write(p[:size])
		}
		p = p[size:]
	}
	if _, err := j.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return n, nil
}

// isTerminal reports whether w is a terminal, where raw message bytes
// could act as commands.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// messageOut is where a message's bytes go: exactly as they are, unless w
// is a terminal, where each line is escaped (CRLF shown as a line break) so
// that a hostile message cannot drive the terminal. Redirect to a file or
// a pipe for the exact bytes.
func messageOut(w io.Writer) io.Writer {
	if !isTerminal(w) {
		return w
	}
	return messageEscaper{w}
}

type messageEscaper struct{ w io.Writer }

func (m messageEscaper) Write(p []byte) (int, error) {
	var b strings.Builder
	for line := range strings.Lines(string(p)) {
		text, nl := strings.CutSuffix(line, "\n")
		text = strings.TrimSuffix(text, "\r")
		// Tabs lay out a message's text without moving anything.
		b.WriteString(escape(text, func(r rune) bool { return r == '\t' }))
		if nl {
			b.WriteByte('\n')
		}
	}
	if _, err := io.WriteString(m.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}
