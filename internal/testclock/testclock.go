// Package testclock has the clocks tests move by hand, for the parts that
// take a Now func (the store, the batch closer, the schedulers, the
// notifier, the admin listener).
package testclock

import (
	"sync"
	"time"
)

// Manual reads a time that stands still until Advance moves it.
type Manual struct {
	mu sync.Mutex
	t  time.Time
}

// NewManual is a clock that reads t.
func NewManual(t time.Time) *Manual { return &Manual{t: t} }

// Now is the clock's time. Safe for concurrent use.
func (c *Manual) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d and returns its new time.
func (c *Manual) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// Skewed reads the system clock plus an offset that Advance moves: time
// passes as usual, and jumps when a test says so.
type Skewed struct {
	mu     sync.Mutex
	offset time.Duration
}

// Now is the system time plus the offset. Safe for concurrent use.
func (c *Skewed) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance adds d to the offset.
func (c *Skewed) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
