package inbound

import (
	"context"
	"sync"
	"time"

	"github.com/petitiond/petitiond/config"
)

// Limits are the front end's defences against abuse, beyond smtp.*; a
// zero field takes its default.
type Limits struct {
	// SessionLifetime bounds a whole session; 0 means 10 × smtp.timeout.
	SessionLifetime time.Duration
	// MinDataRate is the least a client must send, in bytes per second
	// averaged over its session once smtp.timeout has passed; 0 means
	// DefaultMinDataRate.
	MinDataRate int
	// InFlightBytes bounds the bytes of letters held in memory at once,
	// across every session, while they are read, checked and stored; 0
	// means DefaultInFlightLetters × smtp.max_message_bytes.
	InFlightBytes int64
	// InFlightWait is how long a letter waits for room in InFlightBytes
	// before it gets 451 4.3.1; 0 means DefaultInFlightWait.
	InFlightWait time.Duration
	// UnverifiedBytesPerHour caps the unverified letters stored (held, or
	// counted unverified under policy relay, postmaster mail included) per
	// sender domain and per client network (/24, /64) over the last hour;
	// past it they get 451 4.7.1. 0 means DefaultUnverifiedBytesPerHour.
	UnverifiedBytesPerHour int64
	// FreeBytes reports the free space where the store keeps its data;
	// nil means a statfs of store.dir. Below store.min_free_bytes, letters
	// get 452 4.3.1.
	FreeBytes func() (uint64, error)
}

// Defaults for Limits.
const (
	// DefaultMinDataRate is far below any real client, far above one that
	// drips a byte every few seconds.
	DefaultMinDataRate = 256
	// DefaultInFlightLetters is how many letters of the largest size may
	// be in memory at once; smaller letters share the same bytes.
	DefaultInFlightLetters        = 32
	DefaultInFlightWait           = 10 * time.Second
	DefaultUnverifiedBytesPerHour = 16 << 20
)

// sessionPace is the lifetime and data rate every session must keep.
func sessionPace(cfg *config.Config, l Limits) pace {
	p := pace{lifetime: l.SessionLifetime, grace: cfg.SMTP.Timeout.Duration, minRate: l.MinDataRate}
	if p.lifetime <= 0 {
		p.lifetime = 10 * cfg.SMTP.Timeout.Duration
	}
	if p.minRate <= 0 {
		p.minRate = DefaultMinDataRate
	}
	return p
}

// budget is a number of bytes that sessions take from and give back, so
// that letters in flight across every session fit in a bounded amount of
// memory. One taking waits until enough is given back, or gives up.
type budget struct {
	mu      sync.Mutex
	total   int64
	free    int64
	changed chan struct{} // closed (and replaced) whenever bytes come back
}

func newBudget(total int64) *budget {
	return &budget{total: total, free: total, changed: make(chan struct{})}
}

// take takes n bytes, waiting up to wait for them; false if they did not
// come (or ctx ended). More than the whole budget is never granted.
func (b *budget) take(ctx context.Context, n int64, wait time.Duration) bool {
	if n > b.total {
		return false
	}
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		if n <= b.free {
			b.free -= n
			b.mu.Unlock()
			return true
		}
		changed := b.changed
		b.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// give returns n bytes.
func (b *budget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.free += n
	close(b.changed)
	b.changed = make(chan struct{})
}

// window sums what was added under each key over the last span, in
// slots of span/windowSlots. It is in memory only: a restart forgets the
// last hour, which at worst lets one more hour's worth in.
type window struct {
	span time.Duration

	mu        sync.Mutex
	keys      map[string]*[windowSlots]slot
	lastSweep time.Time
}

const windowSlots = 60

type slot struct {
	n     int64 // slot number: time / (span / windowSlots)
	bytes int64
}

func newWindow(span time.Duration) *window {
	return &window{span: span, keys: map[string]*[windowSlots]slot{}}
}

func (w *window) slotOf(t time.Time) int64 { return t.UnixNano() / int64(w.span/windowSlots) }

// sum is what key added over the last span before now.
func (w *window) sum(key string, now time.Time) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	slots := w.keys[key]
	if slots == nil {
		return 0
	}
	cur := w.slotOf(now)
	var total int64
	for _, s := range slots {
		if age := cur - s.n; age >= 0 && age < windowSlots {
			total += s.bytes
		}
	}
	return total
}

// add records n bytes under key at now, and now and then forgets keys
// that added nothing during the last span.
func (w *window) add(key string, now time.Time, n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.slotOf(now)
	slots := w.keys[key]
	if slots == nil {
		slots = new([windowSlots]slot)
		w.keys[key] = slots
	}
	s := &slots[cur%windowSlots]
	if s.n != cur {
		*s = slot{n: cur}
	}
	s.bytes += n
	if now.Sub(w.lastSweep) >= w.span/windowSlots {
		w.lastSweep = now
		for k, ss := range w.keys {
			newest := int64(0)
			for _, s := range ss {
				newest = max(newest, s.n)
			}
			if cur-newest >= windowSlots {
				delete(w.keys, k)
			}
		}
	}
}

// unverifiedCap holds the last hour's unverified bytes per sender domain
// and per client network.
type unverifiedCap struct {
	limit    int64
	byDomain *window
	byNet    *window
}

func newUnverifiedCap(limit int64) *unverifiedCap {
	return &unverifiedCap{limit: limit, byDomain: newWindow(time.Hour), byNet: newWindow(time.Hour)}
}

// networkKey is the client network the cap counts: the /24 of an IPv4
// address, the /64 of an IPv6 one.
func networkKey(ip string) string { return netKey(ip, 24, 64) }

// over reports which key, if any, n more bytes would take past the cap.
func (c *unverifiedCap) over(domain, ip string, n int64, now time.Time) string {
	if c.byDomain.sum(domain, now)+n > c.limit {
		return "sender domain " + domain
	}
	if net := networkKey(ip); c.byNet.sum(net, now)+n > c.limit {
		return "client network " + net
	}
	return ""
}

func (c *unverifiedCap) add(domain, ip string, n int64, now time.Time) {
	c.byDomain.add(domain, now, n)
	c.byNet.add(networkKey(ip), now, n)
}
