// Package verify decides whether a letter really comes from its From
// address (SPEC 5) and what counts as the same supporter (SPEC 6).
//
// It does no I/O but DNS lookups (DKIM keys, SPF records), which go through
// a resolver the caller chooses, each with a deadline.
package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/petitiond/petitiond/dnsname"
)

// Verdict is the outcome of checking a letter's DKIM signatures against its
// From domain. It is kept with the letter and shown in batches.
type Verdict struct {
	Pass     bool
	Domain   string // d= of the passing signature, or of the first failing one ("" if no signature)
	Selector string // s= of that signature
	Reason   string // "pass", or why not: short, for logs and batches
	// TempFail is set when nothing passed and a signature that could have
	// passed (aligned, covering From) failed on a temporary DNS error
	// (timeout, SERVFAIL): the sender should retry (451 4.7.5).
	TempFail bool
	// Unsigned is set when the message carries no DKIM signature at all,
	// apart from one whose signatures failed.
	Unsigned bool
}

// Options configure a Verifier.
type Options struct {
	// Resolver is the "host:port" of the DNS server for every lookup; ""
	// uses the system resolver.
	Resolver string
	// Timeout bounds each DNS lookup (a DKIM key, an SPF record or name
	// it refers to); 0 means DefaultTimeout.
	Timeout time.Duration
	// LookupTXT, if set, replaces DNS for DKIM key lookups (SPF still uses
	// Resolver). It gets "<selector>._domainkey.<domain>". Return a
	// *net.DNSError (or another net.Error) with Timeout or Temporary set for
	// a temporary failure.
	LookupTXT func(ctx context.Context, name string) ([]string, error)
	// SPF turns on CheckSPF (verify.spf); when off, CheckSPF asks no DNS
	// and gives none.
	SPF bool
	// MaxVerifications caps the signatures checked per message (each may
	// cost a DNS lookup and an RSA operation); 0 means
	// DefaultMaxVerifications. Signatures past the cap are ignored.
	MaxVerifications int
	// KeyCache keeps successfully fetched key records this long, so a
	// burst of letters from one provider costs one lookup; 0 disables it.
	// Failures are never cached: a temporary one must be retried.
	KeyCache time.Duration
}

// Defaults for Options fields left zero.
const (
	DefaultTimeout          = 5 * time.Second
	DefaultMaxVerifications = 5
)

// Verifier checks DKIM signatures and SPF. It is safe for concurrent use.
type Verifier struct {
	lookupTXT func(ctx context.Context, name string) ([]string, error)
	resolver  *net.Resolver // Options.Resolver, for SPF and for keys
	timeout   time.Duration
	max       int
	cache     *keyCache // nil: no caching
	spf       bool
}

// New returns a Verifier for opt.
func New(opt Options) *Verifier {
	v := &Verifier{
		lookupTXT: opt.LookupTXT,
		resolver:  newResolver(opt.Resolver),
		timeout:   opt.Timeout,
		max:       opt.MaxVerifications,
		spf:       opt.SPF,
	}
	if v.timeout <= 0 {
		v.timeout = DefaultTimeout
	}
	if v.max <= 0 {
		v.max = DefaultMaxVerifications
	}
	if opt.KeyCache > 0 {
		v.cache = newKeyCache(opt.KeyCache, keyCacheSize, time.Now)
	}
	if v.lookupTXT == nil {
		v.lookupTXT = func(ctx context.Context, name string) ([]string, error) {
			// A key name is absolute: the trailing dot keeps the resolver
			// from trying resolv.conf search domains after an NXDOMAIN.
			return v.resolver.LookupTXT(ctx, dnsname.Absolute(name))
		}
	}
	return v
}

// newResolver returns the system resolver for "", else one that sends
// every query to addr, whatever resolv.conf lists.
func newResolver(addr string) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	addr = resolverAddr(addr)
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// resolverAddr adds the DNS port to a bare host: a bare host would fail
// every dial, and so defer every letter forever.
func resolverAddr(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return net.JoinHostPort(addr, "53")
	}
	return addr
}

// Verify checks msg's DKIM signatures against from (as ParseFrom returned
// it). A signature is valid when go-msgauth verifies it (which already
// refuses l= and expired x=), it covers From, and its d= aligns with
// from.Domain. One valid signature is enough.
func (v *Verifier) Verify(ctx context.Context, msg []byte, from Sender) Verdict {
	vd, lk := v.verify(ctx, msg, from, true)
	if !vd.Pass && lk.cached {
		// A key may have been replaced under the same selector since it
		// was cached: fetch afresh before calling the letter unverified.
		vd, _ = v.verify(ctx, msg, from, false)
	}
	return vd
}

func (v *Verifier) verify(ctx context.Context, msg []byte, from Sender, useCache bool) (Verdict, *lookups) {
	lk := &lookups{errs: make(map[string]error), records: make(map[string][]string), useCache: useCache}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return v.lookup(ctx, lk, name) },
		MaxVerifications: v.max,
	})
	// ErrTooManySignatures comes with the verifications of the first max
	// signatures; the rest are ignored.
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return Verdict{Reason: "cannot verify: " + strings.TrimPrefix(err.Error(), "dkim: ")}, lk
	}
	if len(verifs) == 0 {
		return Verdict{Reason: "no signature", Unsigned: true}, lk
	}
	selectors := signatureSelectors(msg)

	var first *Verdict
	tempFail := false
	for i, vf := range verifs {
		sel := ""
		if i < len(selectors) {
			sel = selectors[i]
		}
		domain := strings.ToLower(vf.Domain) // as signed, in the canonical case
		aligned := Aligned(domain, from.Domain)
		var reason string
		switch {
		case vf.Err != nil:
			reason = failReason(vf.Err, lk.get(sel, domain))
			// Retrying helps only a signature that would count if its
			// key could be fetched.
			if dkim.IsTempFail(vf.Err) && aligned {
				tempFail = true
			}
		case subdomainRefused(lk.record(sel, domain), vf.Identifier, vf.Domain):
			// go-msgauth does not read key flags; the record it verified
			// with is the one this lookup fetched.
			reason = "unauthorized subdomain"
		case !coversFrom(vf.HeaderKeys):
			reason = "from not signed"
		case !aligned:
			reason = fmt.Sprintf("not aligned: d=%s From %s", domain, from.Domain)
		default:
			return Verdict{Pass: true, Domain: domain, Selector: sel, Reason: "pass"}, lk
		}
		if first == nil {
			first = &Verdict{Domain: domain, Selector: sel, Reason: reason}
		}
	}
	first.TempFail = tempFail
	return *first, lk
}

// lookup fetches a key record with a deadline, and returns errors in the
// shape go-msgauth needs: it tells a temporary failure only by a type
// assertion to net.Error (no unwrapping), so the error must be a bare
// net.Error.
func (v *Verifier) lookup(ctx context.Context, lk *lookups, name string) ([]string, error) {
	if lk.useCache {
		if txts, ok := v.cache.get(name); ok {
			lk.set(name, txts, nil)
			lk.mu.Lock()
			lk.cached = true
			lk.mu.Unlock()
			return txts, nil
		}
	}
	lctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	txts, err := v.lookupTXT(lctx, name)
	if err != nil {
		err = asNetError(err, name, lctx.Err() != nil)
	} else {
		v.cache.put(name, txts)
	}
	lk.set(name, txts, err)
	return txts, err
}

// asNetError flattens err into a *net.DNSError that keeps its temporary or
// not-found nature. A lookup cut short by its deadline or by the caller
// counts as a timeout: the key may well exist.
func asNetError(err error, name string, ctxDone bool) error {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if ctxDone && !dnsErr.Temporary() {
			d := *dnsErr
			d.IsTimeout = true
			return &d
		}
		return dnsErr
	}
	d := &net.DNSError{Err: err.Error(), Name: name}
	var netErr net.Error
	if errors.As(err, &netErr) {
		d.IsTimeout = netErr.Timeout()
		// Deprecated in net, but it is what go-msgauth reads.
		d.IsTemporary = netErr.Temporary()
	}
	if ctxDone {
		d.IsTimeout = true
	}
	return d
}

// lookups remembers each key lookup's error, to tell "key not found" from
// other failures in a Verdict, and each record fetched, to read the key
// flags go-msgauth ignores without asking DNS again. go-msgauth runs lookups
// of several signatures in parallel, hence the lock.
type lookups struct {
	useCache bool // may keys come from the cache
	mu       sync.Mutex
	errs     map[string]error
	records  map[string][]string
	cached   bool // some key came from the cache
}

func keyName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func (l *lookups) set(name string, txts []string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs[keyName(name)] = err
	l.records[keyName(name)] = txts
}

func (l *lookups) get(selector, domain string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs[keyName(selector+"._domainkey."+domain)]
}

// record returns the key record fetched for selector and domain, or "" when
// there was not exactly one (go-msgauth fails a signature then).
func (l *lookups) record(selector, domain string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if txts := l.records[keyName(selector+"._domainkey."+domain)]; len(txts) == 1 {
		return txts[0]
	}
	return ""
}

// failReason turns a go-msgauth verification error into a short reason.
func failReason(err, lookupErr error) string {
	// go-msgauth reports a failed lookup as a temporary failure or as "no
	// key for signature"; only then is the lookup error the reason (another
	// signature may have used the same key name and failed before looking).
	if lookupErr != nil && (dkim.IsTempFail(err) || strings.Contains(err.Error(), "no key for signature")) {
		var dnsErr *net.DNSError
		switch {
		case errors.As(lookupErr, &dnsErr) && dnsErr.IsNotFound:
			return "key not found"
		case errors.As(lookupErr, &dnsErr) && dnsErr.Timeout():
			return "key lookup timed out"
		case errors.As(lookupErr, &dnsErr) && dnsErr.Temporary():
			return "key lookup failed temporarily"
		default:
			return "key lookup failed"
		}
	}
	msg := strings.TrimPrefix(err.Error(), "dkim: ")
	switch {
	case strings.Contains(msg, "body hash did not verify"):
		return "body hash mismatch"
	case strings.Contains(msg, "signature did not verify"):
		return "bad signature"
	case strings.Contains(msg, "signature has expired"):
		return "expired"
	case strings.Contains(msg, "body length tag"):
		return "body length limit (l=)"
	case strings.Contains(msg, "From field not signed"):
		return "from not signed"
	case strings.Contains(msg, "key revoked"):
		return "key revoked"
	}
	return msg
}

func coversFrom(keys []string) bool {
	for _, k := range keys {
		if strings.EqualFold(strings.TrimSpace(k), "from") {
			return true
		}
	}
	return false
}

// signatureSelectors returns the s= tag of each DKIM-Signature field, in
// header order: the order of go-msgauth's verifications, which do not carry
// the selector.
func signatureSelectors(msg []byte) []string {
	var sels []string
	for _, f := range headerFields(msg) {
		name, value := splitField(f)
		if !strings.EqualFold(name, "DKIM-Signature") {
			continue
		}
		sel := ""
		for tag := range strings.SplitSeq(unfold(value), ";") {
			k, val, ok := strings.Cut(tag, "=")
			if ok && strings.TrimSpace(k) == "s" {
				sel = strings.Join(strings.Fields(val), "")
				break
			}
		}
		sels = append(sels, sel)
	}
	return sels
}
