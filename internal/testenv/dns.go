package testenv

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/petitiond/petitiond/internal/keyserver"
)

// Domain is a supporters' mail domain that signs its letters (DKIM).
type Domain struct {
	Name string
	Algo string // "rsa" (2048 bits) or "ed25519"
}

// DNS is a DNS server on loopback publishing the DKIM keys of its signing
// domains, the daemon's verify.dns_resolver. Its keyserver methods add other
// records (MX, A, SERVFAIL, timeouts).
//
// A domain's key is made the first time it is asked for: an RSA-2048 key
// takes a tenth of a second, and most environments sign with few domains.
type DNS struct {
	*keyserver.Server
	selector string

	mu    sync.Mutex
	algos map[string]string
	keys  map[string]*keyserver.Key
}

// StartDNS listens on 127.0.0.1 for domains whose keys sit at selector.
func StartDNS(selector string, domains ...Domain) (*DNS, error) {
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testenv: DNS server: %w", err)
	}
	d := &DNS{Server: ks, selector: selector, algos: map[string]string{}, keys: map[string]*keyserver.Key{}}
	for _, dom := range domains {
		d.algos[dom.Name] = dom.Algo
	}
	return d, nil
}

// Domains are the signing domains' names, sorted.
func (d *DNS) Domains() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.algos))
}

// Key is domain's published key, made and published on first use.
func (d *DNS) Key(domain string) (*keyserver.Key, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k, ok := d.keys[domain]; ok {
		return k, nil
	}
	algo, ok := d.algos[domain]
	if !ok {
		return nil, fmt.Errorf("testenv: %s is not a signing domain of this DNS server", domain)
	}
	k, err := keyserver.NewKey(domain, d.selector, algo)
	if err != nil {
		return nil, fmt.Errorf("testenv: key for %s: %w", domain, err)
	}
	d.Server.SetKey(k)
	d.keys[domain] = k
	return k, nil
}

// PublishAll makes and publishes every signing domain's key now, for a
// caller that tells people which keys are served.
func (d *DNS) PublishAll() error {
	for _, name := range d.Domains() {
		if _, err := d.Key(name); err != nil {
			return err
		}
	}
	return nil
}

// Sign signs msg with domain's published key.
func (d *DNS) Sign(domain string, msg []byte, opt keyserver.SignOptions) ([]byte, error) {
	k, err := d.Key(domain)
	if err != nil {
		return nil, err
	}
	out, err := k.Sign(msg, opt)
	if err != nil {
		return nil, fmt.Errorf("testenv: sign for %s: %w", domain, err)
	}
	return out, nil
}
