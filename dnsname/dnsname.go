// Package dnsname holds the one rule for the DNS names petitiond is given:
// its own host name, smarthosts, the DKIM signing domain and selector. The
// configuration check, `petitiond dkim-keygen` and the batch signer all ask
// it, so a name one of them accepts is never refused by another.
//
// The rule is RFC 1035's preferred syntax as RFC 1123 relaxed it: labels of
// letters, digits and '-', not beginning or ending with '-', 1 to 63 bytes,
// at most 253 bytes in all. A DKIM selector is one or more such labels (RFC
// 6376 3.1). Internationalised names must be given in their ASCII (xn--)
// form, and '_' is refused: it has no place in a host name, a signing domain
// or a selector, and it would be the first thing to break a DKIM tag list
// or a zone file if the rule were looser.
package dnsname

import (
	"errors"
	"fmt"
	"strings"
)

// maxName is the longest name DNS can carry, without the final dot
// (RFC 1035 2.3.4: 255 bytes on the wire).
const maxName = 253

// maxLabel is the longest label (RFC 1035 2.3.4).
const maxLabel = 63

// CheckDomain reports why s cannot be used as a domain or host name, or nil.
// One trailing dot (the fully qualified form) is allowed.
func CheckDomain(s string) error {
	return check(s, strings.TrimSuffix(s, "."))
}

// CheckSelector reports why s cannot be used as a DKIM selector, or nil.
// A selector is relative (it goes before "._domainkey."), so it takes no
// trailing dot.
func CheckSelector(s string) error {
	return check(s, s)
}

// Absolute returns name with the root's final dot, so a resolver looks it
// up as given and never tries the search domains of resolv.conf (which
// could turn "example.org" into "example.org.corp.internal"). An empty name
// stays empty.
func Absolute(name string) string {
	if name == "" || strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

func check(orig, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("%q is not a DNS name: %w", orig, err)
	}
	return nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("it is empty")
	}
	if len(name) > maxName {
		return fmt.Errorf("it is longer than %d bytes", maxName)
	}
	whole := !strings.Contains(name, ".")
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return errors.New("an empty label (two dots in a row, or a dot at the start or end)")
		}
		if err := checkLabel(label); err != nil {
			if whole {
				return fmt.Errorf("it %w", err)
			}
			return fmt.Errorf("label %q %w", label, err)
		}
	}
	return nil
}

// checkLabel's reasons follow "label X" or stand alone.
func checkLabel(label string) error {
	switch {
	case len(label) > maxLabel:
		return fmt.Errorf("is longer than %d bytes", maxLabel)
	case label[0] == '-' || label[len(label)-1] == '-':
		return errors.New("begins or ends with '-'")
	}
	for i := range len(label) {
		switch c := label[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
		case c >= 0x80:
			return errors.New("has non-ASCII letters: write internationalised names in their ASCII (xn--) form")
		default:
			return fmt.Errorf("has %q (only letters, digits and '-' are allowed)", c)
		}
	}
	return nil
}
