// Package monoclock is the daemon's clock: the system's time when the
// process started plus the monotonic time elapsed since, so steps of the
// system clock (an admin's date command, NTP correcting a bad clock) do not
// move it. Every age petitiond measures, how long a letter waited for its
// batch, how long a copy has been retried before it is given up, is a
// difference of times from this clock, and stays true while the process
// runs. Across a restart it starts again from the system clock, the best a
// new process can know.
//
// The price: after a step, the times the daemon records drift from the
// system clock by the step until it restarts. Now says so in the log, once
// per step of over a minute.
package monoclock

import (
	"log/slog"
	"sync"
	"time"
)

// reportDrift is the drift from the system clock worth a log line.
const reportDrift = time.Minute

// Clock is a clock system clock steps do not move. Safe for concurrent use.
type Clock struct {
	start time.Time
	// read returns the system's wall time and the monotonic time elapsed
	// since start.
	read func() (wall time.Time, elapsed time.Duration)
	log  *slog.Logger

	mu       sync.Mutex
	reported time.Duration // the drift last logged
}

// New starts a clock now; log nil discards the drift reports.
func New(log *slog.Logger) *Clock {
	start := time.Now() // with its monotonic reading
	return newClock(start.Round(0), func() (time.Time, time.Duration) {
		now := time.Now()
		return now.Round(0), now.Sub(start)
	}, log)
}

func newClock(start time.Time, read func() (time.Time, time.Duration), log *slog.Logger) *Clock {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Clock{start: start, read: read, log: log}
}

// Now is the start time plus the monotonic time elapsed since.
func (c *Clock) Now() time.Time {
	wall, elapsed := c.read()
	now := c.start.Add(elapsed)
	c.noteDrift(wall.Sub(now))
	return now
}

// noteDrift logs a drift from the system clock that moved by over
// reportDrift since the last one logged.
func (c *Clock) noteDrift(drift time.Duration) {
	c.mu.Lock()
	moved := drift - c.reported
	if moved > -reportDrift && moved < reportDrift {
		c.mu.Unlock()
		return
	}
	c.reported = drift
	c.mu.Unlock()
	c.log.Warn("the system clock stepped; petitiond keeps its own clock, counted from its start, until it restarts",
		"step", moved.Round(time.Second).String(), "system_clock_ahead_by", drift.Round(time.Second).String())
}
