package verify

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// FoldOptions says which spellings of one mailbox count as the same
// supporter (SPEC 6, [dedup]).
type FoldOptions struct {
	Subaddress bool // "ana+x@d" is "ana@d"
	GmailDots  bool // dots in gmail.com local parts are ignored; googlemail.com is gmail.com
}

// NormalizeAddress returns the dedup form of addr (SPEC 6): local part and
// domain lower-cased, the domain in ASCII (IDNA), then the folds in opt.
func NormalizeAddress(addr string, opt FoldOptions) (string, error) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", fmt.Errorf("verify: normalize %q: no @", addr)
	}
	local, domainPart := addr[:at], addr[at+1:]
	if local == "" {
		return "", fmt.Errorf("verify: normalize %q: empty local part", addr)
	}
	domain, err := asciiDomain(domainPart)
	if err != nil {
		return "", fmt.Errorf("verify: normalize %q: %w", addr, err)
	}

	local = strings.ToLower(local)
	if opt.Subaddress {
		// "+tag" alone is someone's whole local part, not a tag: keep it.
		if i := strings.IndexByte(local, '+'); i > 0 {
			local = local[:i]
		}
	}
	if opt.GmailDots && (domain == "gmail.com" || domain == "googlemail.com") {
		domain = "gmail.com"
		if undotted := strings.ReplaceAll(local, ".", ""); undotted != "" {
			local = undotted
		}
	}
	return local + "@" + domain, nil
}

// asciiDomain returns domain lower-cased and, if it has non-ASCII labels, in
// their IDNA (punycode) form, so "Bücher.example" and "xn--bcher-kva.example"
// are one domain. One trailing dot is dropped; empty labels are errors, so
// the result is stable under a second call.
func asciiDomain(domain string) (string, error) {
	if !isASCII(domain) {
		// ASCII names skip this: they need no mapping, and idna's strict
		// rules would refuse names that mail still uses (underscores).
		a, err := idna.Lookup.ToASCII(domain)
		if err != nil {
			return "", fmt.Errorf("domain %q: %w", domain, err)
		}
		domain = a
	}
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return "", errors.New("empty domain")
	}
	if strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return "", fmt.Errorf("domain %q has an empty label", domain)
	}
	return domain, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// canonDomain is asciiDomain for comparisons: on error it keeps the
// lower-cased input, which then only equals itself.
func canonDomain(domain string) string {
	if a, err := asciiDomain(domain); err == nil {
		return a
	}
	return strings.ToLower(strings.TrimSuffix(domain, "."))
}

// OrganizationalDomain is the registrable part of domain: the public suffix
// plus one label (SPEC 5). A TLD not on the list counts as a one-label
// suffix, so campaign.test is its own organisational domain. A name that is
// itself a public suffix, or not a proper name at all, is its own
// organisational domain: it then aligns only with itself.
func OrganizationalDomain(domain string) string {
	d := canonDomain(domain)
	// publicsuffix applies the implicit "*" rule, so unknown TLDs already
	// behave as one-label suffixes; it errors only for suffixes themselves
	// and malformed names.
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return org
	}
	return d
}

// Aligned reports DMARC relaxed alignment: sigDomain (DKIM d=) and
// fromDomain have the same organisational domain. Case and a trailing dot
// do not matter; empty domains never align.
func Aligned(sigDomain, fromDomain string) bool {
	s, f := canonDomain(sigDomain), canonDomain(fromDomain)
	if s == "" || f == "" {
		return false
	}
	return s == f || OrganizationalDomain(s) == OrganizationalDomain(f)
}
