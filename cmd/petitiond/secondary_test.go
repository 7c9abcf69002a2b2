package main

import (
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/admin"
)

// TestAdminStatsSecondary: on a secondary MX, stats shows the letters
// waiting to be forwarded and those forwarded (SPEC 12), here with its
// primary unreachable.
func TestAdminStatsSecondary(t *testing.T) {
	primary := freePortOn(t, "127.0.0.2") // nothing listens there
	e := startAdm(t, func(c *config.Config) {
		c.Secondary.Primary = primary
		c.Delivery.RetryMin = config.Duration{Duration: time.Hour}
	})
	for _, from := range []string{"ana@ed.test", "bo@ed.test"} {
		if id := e.Queued(e.Signed("ed.test", from)); !strings.HasPrefix(id, "S") {
			t.Fatalf("letter ID %s on a secondary, want S…", id)
		}
	}
	var st admin.Stats
	cliJSON(t, &st, "stats", "-json", "-admin", e.AdminURL())
	if st.Forwarding == nil || *st.Forwarding != (admin.ForwardCounts{Waiting: 2}) || st.Counted != 0 {
		t.Errorf("stats -json on a secondary: %+v (forwarding %+v)", st, st.Forwarding)
	}
	out := cliOK(t, "stats", "-admin", e.AdminURL())
	for _, line := range []string{"waiting     2", "forwarded   0", "counted     0"} {
		if !strings.Contains(out, line) {
			t.Errorf("stats output lacks %q:\n%s", line, out)
		}
	}
	testenv.WaitFor(t, "a forwarding attempt deferred", 10*time.Second, func() bool {
		return strings.Contains(cliOK(t, "tail", "-n", "20", "-admin", e.AdminURL()), "forwarding attempt 1")
	})
}
