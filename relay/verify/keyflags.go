package verify

import (
	"strings"
	"unicode"
)

// keyFlags returns the flags of a DKIM key record's t= tag (RFC 6376
// 3.6.1), in order, or nil when it has none. It reads the record the way
// go-msgauth reads it (tags split at ";", names and values trimmed), so that
// the record whose key verified a signature is the one whose flags count.
// Flags are case-sensitive; unknown ones are returned too and callers ignore
// them, as the RFC requires.
func keyFlags(record string) []string {
	for tag := range strings.SplitSeq(record, ";") {
		name, value, ok := strings.Cut(tag, "=")
		if !ok || strings.TrimSpace(name) != "t" {
			continue
		}
		var flags []string
		for f := range strings.SplitSeq(value, ":") {
			if f = stripSpace(f); f != "" {
				flags = append(flags, f)
			}
		}
		return flags
	}
	return nil
}

// stripSpace removes all white space, as folding may leave it anywhere in a
// tag value.
func stripSpace(s string) string {
	// Most values are ASCII without white space: returned as they are
	// after one pass over the bytes, rather than a call per rune.
	plain := true
	for i := 0; i < len(s) && plain; i++ {
		switch c := s[i]; {
		case c >= 0x80, c == ' ', c == '\t', c == '\n', c == '\v', c == '\f', c == '\r':
			plain = false
		}
	}
	if plain {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// subdomainRefused reports whether a key record with flag "s" forbids a
// signature whose i= names a subdomain of d= (RFC 6376 3.6.1: the i= domain
// must then equal d=). identifier is i= as go-msgauth read it ("@d=" when
// the tag is absent).
func subdomainRefused(record, identifier, domain string) bool {
	strict := false
	for _, f := range keyFlags(record) {
		if f == "s" {
			strict = true
		}
	}
	if !strict {
		return false
	}
	idDomain := identifier
	if at := strings.LastIndexByte(identifier, '@'); at >= 0 {
		idDomain = identifier[at+1:]
	}
	return !strings.EqualFold(idDomain, domain)
}
