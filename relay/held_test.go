package relay_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/store"
)

// TestHeldLettersBounded: the same unsigned letter sent again over SMTP is
// answered 250 like the first but kept once, and a held letter nobody
// decided on goes after store.held_retention (event purged).
func TestHeldLettersBounded(t *testing.T) {
	e := testenv.Start(t, func(c *config.Config) {
		c.Store.HeldRetention = config.Duration{Duration: 300 * time.Millisecond}
	})
	first := e.Queued(e.Letter("ana@ed.test", "Libertad", testenv.Body))
	again := e.Queued(e.Letter("ana@ed.test", "Libertad", testenv.Body)) // a new Message-ID, the same letter
	if again == first {
		t.Errorf("the repeat got the first letter's ID %s: it would tell the sender the letter was sent before", first)
	}
	if held, _ := e.Store().Held(); len(held) != 1 || held[0].ID != first {
		t.Errorf("held = %+v, want only %s", held, first)
	}
	testenv.WaitFor(t, "the held letter and its repeat purged", 15*time.Second, func() bool {
		_, err1 := e.Store().Letter(first)
		_, err2 := e.Store().Letter(again)
		return errors.Is(err1, store.ErrNotFound) && errors.Is(err2, store.ErrNotFound)
	})
	purged := map[string]bool{}
	events, _ := e.Store().LastEvents(50)
	for _, ev := range events {
		if ev.Event == store.EventPurged {
			purged[ev.Letter] = true
		}
	}
	if !purged[first] || !purged[again] {
		t.Errorf("purged events for %v, want %s and %s", purged, first, again)
	}
}

// TestHealthzLowDisk: with less free space on the store's disk than
// store.min_free_bytes, /healthz answers 503 and says why.
func TestHealthzLowDisk(t *testing.T) {
	for _, c := range []struct {
		minFree int64
		code    int
	}{{1, http.StatusOK}, {1 << 62, http.StatusServiceUnavailable}} {
		e := testenv.Start(t, func(cfg *config.Config) {
			cfg.Admin.Listen = "127.0.0.1:0"
			cfg.Store.MinFreeBytes = c.minFree
		})
		resp, err := http.Get(e.AdminURL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("min_free_bytes %d: healthz %d %s, want %d", c.minFree, resp.StatusCode, body, c.code)
		}
		if c.code != http.StatusOK && !strings.Contains(string(body), "store.min_free_bytes") {
			t.Errorf("healthz does not say why: %s", body)
		}
		e.Stop()
	}
}
