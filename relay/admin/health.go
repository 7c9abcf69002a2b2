package admin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

var errHealthTimeout = errors.New("store write check timed out")

// ErrLowSpace is a store disk with less free space than
// store.min_free_bytes: the SMTP front end refuses new letters (452), so
// the daemon is not healthy although it still writes.
var ErrLowSpace = errors.New("low on disk space")

// healthCheck runs the store's write check for /healthz. Probes share one
// check in flight and reuse a result for a short while, so frequent probes
// cannot turn into a stream of fsyncs; and a probe gives up after a timeout
// rather than hang behind a stuck disk (the check itself goes on, alone).
type healthCheck struct {
	check func(context.Context) error
	// free reports the store disk's free bytes; nil, or minFree 0, skips
	// the space check.
	free    func() (uint64, error)
	minFree uint64
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
	err := h.lowSpace()
	if err == nil {
		err = h.check(context.Background())
	}
	h.mu.Lock()
	h.last, h.lastErr, h.inflight = h.now(), err, nil
	h.mu.Unlock()
	close(done)
}

// lowSpace fails when the store's disk has less than minFree bytes free.
// A system where free space cannot be read passes.
func (h *healthCheck) lowSpace() error {
	if h.free == nil || h.minFree == 0 {
		return nil
	}
	n, err := h.free()
	if errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return err
	}
	if n < h.minFree {
		return fmt.Errorf("%w: %d MiB free on the store's disk, below store.min_free_bytes (%d MiB); "+
			"new letters get 452 until space is freed", ErrLowSpace, n>>20, h.minFree>>20)
	}
	return nil
}
