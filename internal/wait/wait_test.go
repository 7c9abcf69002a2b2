package wait

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	calls := 0
	err := Until(context.Background(), 5*time.Second, func() (bool, error) { calls++; return calls == 3, nil })
	if err != nil || calls != 3 {
		t.Errorf("done on the third call: err %v after %d calls", err, calls)
	}

	boom := errors.New("boom")
	if err := Until(context.Background(), 5*time.Second, func() (bool, error) { return false, boom }); err != boom {
		t.Errorf("cond's error: got %v", err)
	}

	if err := Until(context.Background(), 50*time.Millisecond, func() (bool, error) { return false, nil }); !errors.Is(err, ErrTimeout) {
		t.Errorf("never true: got %v, want ErrTimeout", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Until(ctx, 5*time.Second, func() (bool, error) { return false, nil }); err != context.Canceled {
		t.Errorf("ended context: got %v", err)
	}
}

// fakeT records a failure instead of ending the goroutine.
type fakeT struct{ failed string }

func (f *fakeT) Helper()                           {}
func (f *fakeT) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestFor(t *testing.T) {
	var ft fakeT
	For(&ft, "the impossible", 30*time.Millisecond, func() bool { return false })
	if !strings.Contains(ft.failed, "waiting for the impossible") {
		t.Errorf("failure %q does not name what it waited for", ft.failed)
	}
	ft = fakeT{}
	For(&ft, "the obvious", time.Second, func() bool { return true })
	if ft.failed != "" {
		t.Errorf("a true condition failed: %s", ft.failed)
	}
}
