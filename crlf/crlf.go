// Package crlf holds the one definition of a bare line ending: a CR not
// followed by LF, or an LF not preceded by CR. Inbound refuses letters that
// have one (SMTP smuggling hides a second message behind a bare LF), and the
// batch builder repairs any that reached the store anyway.
package crlf

import "bytes"

// IndexBare returns the offset of the first bare CR or bare LF in b, or -1.
func IndexBare(b []byte) int {
	for i := 0; i < len(b); {
		j := bytes.IndexAny(b[i:], "\r\n")
		if j < 0 {
			return -1
		}
		i += j
		if b[i] == '\n' || i+1 >= len(b) || b[i+1] != '\n' {
			return i
		}
		i += 2
	}
	return -1
}

// Normalize returns b with every CR, LF and CRLF turned into CRLF. It
// returns b itself when there is nothing to change.
func Normalize(b []byte) []byte {
	if IndexBare(b) < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			out = append(out, '\r', '\n')
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}
