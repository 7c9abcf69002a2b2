// Package verify decides whether a letter really comes from its From
// address (SPEC 5) and what counts as the same supporter (SPEC 6).
//
// It does no I/O but DNS lookups (DKIM keys, SPF records), which go through
// a resolver the caller chooses, each with a deadline.
package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

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
	keys      keyRecords
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
// it). A signature is valid when it verifies (as go-msgauth verifies it,
// which refuses l= and expired x=), it covers From, and its d= aligns with
// from.Domain. One valid signature is enough: the signatures that could be
// one (aligned, covering From) are checked first, in header order, and the
// first valid one ends the check. When none is, every signature is
// checked, so the verdict names the first failure in header order.
func (v *Verifier) Verify(ctx context.Context, msg []byte, from Sender) Verdict {
	vd, cached := v.verify(ctx, msg, from, true)
	if !vd.Pass && cached {
		// A key may have been replaced under the same selector since it
		// was cached: fetch afresh before calling the letter unverified.
		vd, _ = v.verify(ctx, msg, from, false)
	}
	return vd
}

// verify checks msg once; cached says whether a key came from the cache.
func (v *Verifier) verify(ctx context.Context, msg []byte, from Sender, useCache bool) (Verdict, bool) {
	h, err := splitHeader(withoutBareLF(msg))
	if err != nil {
		return Verdict{Reason: "cannot verify: " + err.Error()}, false
	}
	fields := h.signatureFields()
	if len(fields) == 0 {
		return Verdict{Reason: "no signature", Unsigned: true}, false
	}
	// Signatures past the cap are ignored.
	fields = fields[:min(len(fields), v.max)]
	now := time.Now()
	sigs := make([]*dkimSignature, len(fields))
	aligned := make([]bool, len(fields))
	var order []int // the signatures to check: those that can count first
	for i, f := range fields {
		sigs[i] = h.parseSignature(f, now)
		aligned[i] = Aligned(strings.ToLower(sigs[i].domain), from.Domain)
		if sigs[i].err == nil && aligned[i] {
			order = append(order, i)
		}
	}
	for i, s := range sigs {
		if s.err == nil && !aligned[i] {
			order = append(order, i)
		}
	}
	lk := &lookups{v: v, ctx: ctx, useCache: useCache, fetches: make(map[string]*keyFetch, len(order))}
	records := make([]string, len(sigs))
	for n, i := range order {
		if n == 1 {
			// The first signature did not settle it: fetch the other
			// keys at once, so slow lookups take one timeout, not one each.
			lk.prefetch(sigs, order[1:])
		}
		s := sigs[i]
		records[i], s.err = h.check(s, lk.get, &v.keys)
		if s.err == nil && aligned[i] && !subdomainRefused(records[i], s.identifier, s.domain) {
			return Verdict{Pass: true, Domain: strings.ToLower(s.domain), Selector: verdictSelector(h, s), Reason: "pass"}, lk.cached
		}
	}

	var first *Verdict
	tempFail := false
	for i, s := range sigs {
		domain := strings.ToLower(s.domain) // as signed, in the canonical case
		var reason string
		switch {
		case s.err != nil:
			reason = s.err.reason
			// Retrying helps only a signature that would count if its
			// key could be fetched.
			if s.err.temp && aligned[i] {
				tempFail = true
			}
		case subdomainRefused(records[i], s.identifier, s.domain):
			// The key's flag s: i= must not name a subdomain of d=.
			reason = "unauthorized subdomain"
		default:
			reason = fmt.Sprintf("not aligned: d=%s From %s", domain, from.Domain)
		}
		if first == nil {
			first = &Verdict{Domain: domain, Selector: verdictSelector(h, s), Reason: reason}
		}
	}
	first.TempFail = tempFail
	return *first, lk.cached
}

// verdictSelector is a signature's s= for its verdict, read leniently (its
// tags may not parse): the first tag named s, white space removed, its
// bytes kept as they are (stripSpace would make invalid UTF-8 U+FFFD).
func verdictSelector(h *dkimHeader, s *dkimSignature) string {
	_, value, _ := strings.Cut(string(h.field(s.index)), ":")
	for t := range strings.SplitSeq(value, ";") {
		k, val, ok := strings.Cut(t, "=")
		if ok && strings.TrimSpace(k) == "s" {
			return strings.Join(strings.Fields(val), "")
		}
	}
	return ""
}

// lookups fetches the key records of one verification, each name once,
// and remembers whether one came from the cache.
type lookups struct {
	v        *Verifier
	ctx      context.Context
	useCache bool // may keys come from the cache

	mu      sync.Mutex
	fetches map[string]*keyFetch // by lower-case name
	cached  bool                 // some key came from the cache
}

type keyFetch struct {
	done chan struct{} // closed when res is set
	res  keyLookup
}

// get fetches name's key record, or waits for the fetch already started.
func (l *lookups) get(name string) keyLookup {
	key := keyName(name)
	l.mu.Lock()
	f, ok := l.fetches[key]
	if !ok {
		f = &keyFetch{done: make(chan struct{})}
		l.fetches[key] = f
	}
	l.mu.Unlock()
	if ok {
		<-f.done
		return f.res
	}
	var cached bool
	f.res, cached = l.v.lookup(l.ctx, name, l.useCache)
	close(f.done)
	if cached {
		l.mu.Lock()
		l.cached = true
		l.mu.Unlock()
	}
	return f.res
}

// prefetch starts the key lookups of the signatures at idx (those whose
// tags parsed) and waits for them.
func (l *lookups) prefetch(sigs []*dkimSignature, idx []int) {
	var wg sync.WaitGroup
	for _, i := range idx {
		if sigs[i].err == nil {
			name := sigs[i].selector + "._domainkey." + sigs[i].domain
			wg.Go(func() { l.get(name) })
		}
	}
	wg.Wait()
}

// lookup fetches a key record with a deadline (or from the cache when
// useCache), and returns errors as asNetError shapes them.
func (v *Verifier) lookup(ctx context.Context, name string, useCache bool) (res keyLookup, cached bool) {
	if useCache {
		if txts, ok := v.cache.get(name); ok {
			return keyLookup{txts: txts}, true
		}
	}
	lctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	txts, err := v.lookupTXT(lctx, name)
	if err != nil {
		return keyLookup{err: asNetError(err, name, lctx.Err() != nil)}, false
	}
	v.cache.put(name, txts)
	return keyLookup{txts: txts}, false
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
		// Deprecated in net, but a resolver may still say so.
		d.IsTemporary = netErr.Temporary()
	}
	if ctxDone {
		d.IsTimeout = true
	}
	return d
}

func keyName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func coversFrom(keys []string) bool {
	for _, k := range keys {
		if strings.EqualFold(strings.TrimSpace(k), "from") {
			return true
		}
	}
	return false
}
