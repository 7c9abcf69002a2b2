// Package wait waits for a condition with a deadline, for tests and for the
// demo, which watch a daemon that works in the background. It imports
// nothing of petitiond, so every package's tests can use it.
package wait

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// interval is short next to every deadline in use and long enough that a
// condition reading the store or the admin API does not load the machine.
const interval = 20 * time.Millisecond

// ErrTimeout is what Until returns when its timeout passed first.
var ErrTimeout = errors.New("wait: timed out")

// Until calls cond every interval until it reports done or fails, ctx
// ends, or timeout passes. Then it returns nil, cond's error, ctx's error,
// or an error wrapping ErrTimeout.
func Until(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%w after %s", ErrTimeout, timeout)
		case <-tick.C:
		}
	}
}

// TB is the part of *testing.T that For uses; the package does not
// import testing, so the demo can link it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// For polls cond until it holds, and fails the test naming what it
// waited for when timeout passes first.
func For(t TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	err := Until(context.Background(), timeout, func() (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
