package eventlog

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/store"
)

// TestWriterForwarding: a secondary's letter gets lines that speak of the
// primary, not of batch copies, at the levels of their kinds: queued INFO,
// deferred WARN, failed (held for an admin) ERROR, forwarded INFO.
func TestWriterForwarding(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out syncbuf.Buffer
	w, err := New(st, slog.New(slog.NewJSONHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	queue := func(from string) string {
		id, err := st.QueueForward(ctx, store.NewLetter{From: from, Body: []byte("Subject: x\r\n\r\nhola\r\n")}, from, "libertad@campaign.test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.StartForward(ctx, id, func(int) time.Time { return time.Now() }); err != nil {
			t.Fatal(err)
		}
		return id
	}
	a, b := queue("ana@ed.test"), queue("bo@ed.test")
	if err := st.DeferForward(ctx, a, time.Now().Add(time.Minute), "connection refused"); err != nil {
		t.Fatal(err)
	}
	if err := st.FailForward(ctx, a, "the primary refused it: 550"); err != nil {
		t.Fatal(err)
	}
	if err := st.Forwarded(ctx, b, "250 ok"); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	want := []struct{ event, level, msg string }{
		{"queued", "INFO", "letter stored, to be forwarded to the primary"},
		{"queued", "INFO", "letter stored, to be forwarded to the primary"},
		{"deferred", "WARN", "forwarding to the primary deferred; will retry"},
		{"failed", "ERROR", "letter not forwarded: the primary refused it, or forwarding gave up; held for an admin"},
		{"forwarded", "INFO", "letter forwarded to the primary"},
	}
	lines := out.JSONLines(t)
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %v", len(lines), len(want), lines)
	}
	for i, w := range want {
		if l := lines[i]; l["event"] != w.event || l["level"] != w.level || l["msg"] != w.msg {
			t.Errorf("line %d = %v; want %s at %s: %q", i, l, w.event, w.level, w.msg)
		}
	}
}
