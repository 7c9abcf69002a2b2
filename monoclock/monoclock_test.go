package monoclock

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSystem is a system clock whose wall time the test steps apart from
// the monotonic time.
type fakeSystem struct {
	mu      sync.Mutex
	wall    time.Time
	elapsed time.Duration
}

func (f *fakeSystem) read() (time.Time, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall, f.elapsed
}

// pass lets d go by; step moves only the wall time.
func (f *fakeSystem) pass(d time.Duration) {
	f.mu.Lock()
	f.wall, f.elapsed = f.wall.Add(d), f.elapsed+d
	f.mu.Unlock()
}

func (f *fakeSystem) step(d time.Duration) {
	f.mu.Lock()
	f.wall = f.wall.Add(d)
	f.mu.Unlock()
}

func TestStepsDoNotMoveTheClock(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sys := &fakeSystem{wall: t0}
	var log bytes.Buffer
	c := newClock(t0, sys.read, slog.New(slog.NewTextHandler(&log, nil)))

	sys.pass(10 * time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("after 10 minutes: %v", got)
	}
	if log.Len() != 0 {
		t.Errorf("logged without a step: %s", log.String())
	}
	// Five days forward: ages measured with the clock must not jump.
	sys.step(120 * time.Hour)
	sys.pass(time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(11 * time.Minute)) {
		t.Errorf("after a step forward: %v, want %v", got, t0.Add(11*time.Minute))
	}
	if n := strings.Count(log.String(), "stepped"); n != 1 || !strings.Contains(log.String(), "step=120h0m0s") {
		t.Errorf("the step is logged %d times: %s", n, log.String())
	}
	c.Now()
	if n := strings.Count(log.String(), "stepped"); n != 1 {
		t.Errorf("the same step logged again: %s", log.String())
	}
	// Back by a day: the clock runs on.
	sys.step(-24 * time.Hour)
	sys.pass(time.Minute)
	if got := c.Now(); !got.Equal(t0.Add(12 * time.Minute)) {
		t.Errorf("after a step back: %v", got)
	}
	if n := strings.Count(log.String(), "stepped"); n != 2 || !strings.Contains(log.String(), "step=-24h0m0s") {
		t.Errorf("the second step: %s", log.String())
	}
	// A few seconds of slew is not worth a line.
	sys.step(5 * time.Second)
	c.Now()
	if n := strings.Count(log.String(), "stepped"); n != 2 {
		t.Errorf("a small adjustment logged: %s", log.String())
	}
}

// The real clock reads the system's while nothing steps it, and never goes
// back.
func TestNewFollowsTheSystemClock(t *testing.T) {
	c := New(nil)
	before := time.Now().Round(0)
	got := c.Now()
	after := time.Now().Round(0)
	// The clock started before "before": it may lag it by the rounding of
	// the start, never by more.
	if got.Before(before.Add(-time.Millisecond)) || got.After(after) {
		t.Errorf("Now() = %v, system clock %v..%v", got, before, after)
	}
	if next := c.Now(); next.Before(got) {
		t.Errorf("the clock went back: %v then %v", got, next)
	}
}
