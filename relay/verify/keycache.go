package verify

import (
	"strings"
	"sync"
	"time"
)

// keyCacheSize bounds the cache: a campaign's letters come from a few
// thousand signing keys at most; past that the cache starts afresh rather
// than growing without bound.
const keyCacheSize = 10000

// keyCache remembers DKIM key records for a fixed time. Go's resolver does
// not expose record TTLs, so the lifetime is the operator's choice, kept
// short enough that a revoked key stops verifying soon.
type keyCache struct {
	ttl  time.Duration
	size int
	now  func() time.Time

	mu      sync.Mutex
	entries map[string]cachedKey
}

type cachedKey struct {
	txts    []string
	expires time.Time
}

func newKeyCache(ttl time.Duration, size int, now func() time.Time) *keyCache {
	return &keyCache{ttl: ttl, size: size, now: now, entries: make(map[string]cachedKey)}
}

// get is safe on a nil cache (caching off).
func (c *keyCache) get(name string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	name = strings.ToLower(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	if !ok {
		return nil, false
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, name)
		return nil, false
	}
	return e.txts, true
}

func (c *keyCache) put(name string, txts []string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.size {
		clear(c.entries)
	}
	c.entries[strings.ToLower(name)] = cachedKey{txts: append([]string(nil), txts...), expires: c.now().Add(c.ttl)}
}
