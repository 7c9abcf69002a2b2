package verify

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"

	"github.com/petitiond/petitiond/dnsname"
)

// SPFStatus is an SPF result (RFC 7208 2.6), named as in Received-SPF.
type SPFStatus string

// The SPF results. The zero SPFStatus means SPF was not checked.
const (
	SPFNone      SPFStatus = "none"
	SPFNeutral   SPFStatus = "neutral"
	SPFPass      SPFStatus = "pass"
	SPFFail      SPFStatus = "fail"
	SPFSoftFail  SPFStatus = "softfail"
	SPFTempError SPFStatus = "temperror"
	SPFPermError SPFStatus = "permerror"
)

// SPFResult is the outcome of checking whether the connecting IP may send
// mail for the MAIL FROM domain.
type SPFResult struct {
	Status SPFStatus
	// Domain is the MAIL FROM domain checked, lower-case ASCII; "" for a
	// null sender.
	Domain string
	// Reason says which mechanism decided, or why there is no result:
	// short, for logs and batches.
	Reason string
}

// AlignedWith reports whether the MAIL FROM domain aligns (relaxed, as for
// DKIM) with the letter's From domain. A null sender aligns with nothing.
func (r SPFResult) AlignedWith(fromDomain string) bool {
	return Aligned(r.Domain, fromDomain)
}

// spfCheckLimit bounds a whole SPF evaluation, however many lookups its
// records cause. RFC 7208 4.6.4 asks for at least 20 s before temperror.
const spfCheckLimit = 20 * time.Second

// CheckSPF checks the MAIL FROM identity (RFC 7208 2.4) of a client at ip
// that said helo. mailFrom is the reverse-path without angle brackets, ""
// for the null sender, which is never checked: such mail cannot verify by
// SPF (SPEC 5), and the HELO identity proves nothing about From.
//
// Every lookup goes to the resolver in Options, each with Options.Timeout;
// the library enforces RFC 7208's limits of 10 DNS-querying mechanisms and 2
// void lookups (permerror past them).
func (v *Verifier) CheckSPF(ctx context.Context, ip net.IP, helo, mailFrom string) SPFResult {
	if mailFrom == "" || mailFrom == "<>" {
		return SPFResult{Status: SPFNone, Reason: "null sender"}
	}
	at := strings.LastIndexByte(mailFrom, '@')
	if at <= 0 {
		return SPFResult{Status: SPFNone, Reason: "MAIL FROM has no domain"}
	}
	local := mailFrom[:at]
	domain, err := asciiDomain(mailFrom[at+1:])
	switch {
	case err != nil:
		return SPFResult{Status: SPFNone, Reason: "MAIL FROM " + err.Error()}
	case strings.HasPrefix(domain, "["):
		return SPFResult{Status: SPFNone, Domain: domain, Reason: "MAIL FROM domain is an address literal"}
	case !strings.Contains(domain, "."):
		// RFC 7208 4.3: none for a name that is not multi-label.
		return SPFResult{Status: SPFNone, Domain: domain, Reason: "MAIL FROM domain has one label"}
	case strings.Contains(local, "@"):
		// The library splits the sender at its first "@": a quoted local
		// part holding one would have it check another domain.
		return SPFResult{Status: SPFNone, Domain: domain, Reason: "MAIL FROM local part holds @"}
	case !v.spf:
		return SPFResult{Status: SPFNone, Domain: domain, Reason: "SPF checks off"}
	}

	ctx, cancel := context.WithTimeout(ctx, spfCheckLimit)
	defer cancel()
	res, err := spf.CheckHostWithSender(ip, helo, local+"@"+domain,
		spf.WithContext(ctx),
		spf.WithResolver(spfResolver{r: v.resolver, timeout: v.timeout}))
	status := SPFStatus(res)
	return SPFResult{Status: status, Domain: domain, Reason: spfReason(status, err)}
}

// spfReason says briefly why the library gave status; its errors carry the
// matching mechanism or what went wrong.
func spfReason(status SPFStatus, err error) string {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		if status == SPFNeutral {
			return "no mechanism matched"
		}
		return string(status)
	case errors.Is(err, spf.ErrNoResult):
		return "no SPF record"
	case errors.Is(err, spf.ErrLookupLimitReached):
		return "over 10 DNS-querying mechanisms"
	case errors.Is(err, spf.ErrVoidLookupLimitReached):
		return "over 2 void lookups"
	case errors.Is(err, spf.ErrMultipleRecords):
		return "several SPF records"
	case errors.As(err, &dnsErr):
		// Not dnsErr.Error(): it names the resolver's address.
		name := strings.TrimSuffix(dnsErr.Name, ".")
		switch {
		case dnsErr.Timeout():
			return "lookup of " + name + " timed out"
		case dnsErr.Temporary():
			return "lookup of " + name + " failed temporarily"
		case dnsErr.IsNotFound:
			return name + " not found"
		}
		return "lookup of " + name + " failed"
	}
	// The library's own errors are short fixed texts ("matched ip",
	// "invalid mask", "unknown field").
	return err.Error()
}

// spfResolver sends the SPF library's lookups to the verifier's resolver,
// each with its own deadline. Errors come back as bare *net.DNSError: the
// library tells temporary and not-found failures apart by type assertion,
// and calls anything else a permanent error.
type spfResolver struct {
	r       *net.Resolver
	timeout time.Duration
}

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return spfLookup(ctx, s.timeout, dnsname.Absolute(name), s.r.LookupTXT)
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return spfLookup(ctx, s.timeout, dnsname.Absolute(name), s.r.LookupMX)
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return spfLookup(ctx, s.timeout, dnsname.Absolute(host), s.r.LookupIPAddr)
}

func (s spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return spfLookup(ctx, s.timeout, addr, s.r.LookupAddr)
}

func spfLookup[T any](ctx context.Context, timeout time.Duration, name string, lookup func(context.Context, string) (T, error)) (T, error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := lookup(lctx, name)
	if err != nil {
		// lookup's results may still be used (the library keeps the valid
		// MX records of a partly bad answer).
		return res, asNetError(err, strings.TrimSuffix(name, "."), lctx.Err() != nil)
	}
	return res, nil
}
