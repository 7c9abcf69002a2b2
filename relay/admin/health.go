package admin

import (
	"context"
	"errors"
	"sync"
	"time"
)

var errHealthTimeout = errors.New("store write check timed out")

// healthCheck runs the store's write check for /healthz. Probes share one
// check in flight and reuse a result for a short while, so frequent probes
// cannot turn into a stream of fsyncs; and a probe gives up after a timeout
// rather than hang behind a stuck disk (the check itself goes on, alone).
type healthCheck struct {
	check   func(context.Context) error
	now     func() time.Time
	reuse   time.Duration
	timeout time.Duration

	mu       sync.Mutex
	inflight chan struct{} // closed when the running check ends
	last     time.Time     // when the last check ended
	lastErr  error
}

// result returns the outcome of a recent or fresh check.
func (h *healthCheck) result(ctx context.Context) error {
	h.mu.Lock()
	if !h.last.IsZero() && h.now().Sub(h.last) < h.reuse && h.inflight == nil {
		err := h.lastErr
		h.mu.Unlock()
		return err
	}
	done := h.inflight
	if done == nil {
		done = make(chan struct{})
		h.inflight = done
		go h.run(done)
	}
	h.mu.Unlock()
	timer := time.NewTimer(h.timeout)
	defer timer.Stop()
	select {
	case <-done:
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.lastErr
	case <-timer.C:
		return errHealthTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *healthCheck) run(done chan struct{}) {
	// Not the probe's context: the write is queued either way, and its
	// verdict serves the probes that come next.
	err := h.check(context.Background())
	h.mu.Lock()
	h.last, h.lastErr, h.inflight = h.now(), err, nil
	h.mu.Unlock()
	close(done)
}
