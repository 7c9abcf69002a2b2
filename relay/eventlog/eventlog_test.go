package eventlog

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/store"
)

// TestWriter: every event committed after New gets one line, in order, at
// the level SPEC 8 gives its kind (failed ERROR; rejected, deferred WARN;
// the rest INFO), and the last lines are written when the store closes.
func TestWriter(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Reject(ctx, store.Rejection{Class: store.RejectFrom, From: "before@ed.test", Reason: "not logged"}); err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	w, err := New(st, slog.New(slog.NewJSONHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	res, err := st.Accept(ctx, store.NewLetter{From: "ana@ed.test", DedupAddress: "ana@ed.test", Session: "abc123",
		Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"}, Body: []byte("Subject: x\r\n\r\nhola\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Reject(ctx, store.Rejection{Class: store.RejectSize, From: "bo@ed.test", Session: "def456", Reason: "too big"}); err != nil {
		t.Fatal(err)
	}
	b, err := st.CloseBatch(ctx, store.NewBatch{Number: 1, RunningTotal: 1, LetterIDs: []string{res.ID},
		MessageID: "<b1@campaign.test>", Message: []byte("Subject: b\r\n\r\nb\r\n"), Recipients: []string{"familias@ofapp.test", "copias@sr.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.StartAttempt(ctx, store.DeliveryRef{Batch: b.ID, Index: 0}, func(int) time.Time { return time.Now() }); err != nil {
		t.Fatal(err)
	}
	if err := st.Defer(ctx, store.DeliveryRef{Batch: b.ID, Index: 0}, time.Now().Add(time.Minute), "451 later"); err != nil {
		t.Fatal(err)
	}
	if err := st.Fail(ctx, store.DeliveryRef{Batch: b.ID, Index: 1}, "550 no such user"); err != nil {
		t.Fatal(err)
	}
	// Closing the store ends the writer after the last line.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("writer still running after the store closed")
	}
	want := []struct{ event, level, session string }{
		{"accepted", "INFO", "abc123"}, {"rejected", "WARN", "def456"}, {"batched", "INFO", ""},
		{"deferred", "WARN", ""}, {"failed", "ERROR", ""},
	}
	lines := out.JSONLines(t)
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %v", len(lines), len(want), lines)
	}
	for i, w := range want {
		l := lines[i]
		if l["event"] != w.event || l["level"] != w.level || (w.session != "" && l["session"] != w.session) {
			t.Errorf("line %d = %v; want event %s level %s session %q", i, l, w.event, w.level, w.session)
		}
		if l["msg"] == w.event {
			t.Errorf("line %d has no message of its own: %v", i, l)
		}
	}
	if lines[1]["class"] != "size" {
		t.Errorf("rejected line has class %v, want size", lines[1]["class"])
	}
}

// TestDuplicateMessages: a duplicate's line says what it repeats, from
// the event's typed field: a sender counted already, or the same unsigned
// letter held already (nothing counted).
func TestDuplicateMessages(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out syncbuf.Buffer
	w, err := New(st, slog.New(slog.NewJSONHandler(&out, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	body := []byte("Subject: x\r\n\r\nhola\r\n")
	signed := store.NewLetter{From: "ana@ed.test", DedupAddress: "ana@ed.test",
		Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "ed.test"}, Body: body}
	unsigned := store.NewLetter{From: "bo@ed.test", DedupAddress: "bo@ed.test", Hold: store.HeldUnverified,
		Verdict: store.Verdict{Kind: store.VerdictUnverified, Reason: "no signature"}, Body: body}
	for _, nl := range []store.NewLetter{signed, signed, unsigned, unsigned} {
		if _, err := st.Accept(ctx, nl); err != nil {
			t.Fatal(err)
		}
	}
	var lines []map[string]any
	if err := wait.Until(ctx, 10*time.Second, func() (bool, error) {
		lines = out.JSONLines(t)
		return len(lines) >= 4, nil
	}); err != nil {
		t.Fatalf("%d lines, want 4: %v: %v", len(lines), lines, err)
	}
	for i, want := range []struct{ of, msg string }{
		{"counted", "letter from a sender already counted; not counted again"},
		{"held", "the same letter is held already; not stored again"},
	} {
		l := lines[1+2*i]
		if l["event"] != "duplicate" || l["duplicate_of"] != want.of || l["msg"] != want.msg {
			t.Errorf("line %v; want a duplicate of %s saying %q", l, want.of, want.msg)
		}
	}
}
