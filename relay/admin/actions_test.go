package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/internal/testclock"
	"github.com/petitiond/petitiond/store"
)

func getHealth(t *testing.T, s *Server) (int, Health) {
	t.Helper()
	resp, err := http.Get(baseOf(s) + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("healthz is not JSON: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("healthz Content-Type %q", ct)
	}
	return resp.StatusCode, h
}

// TestHealthzJSON: /healthz says in JSON how the store, the SMTP listener
// and the pause are, and how old the oldest undelivered batch is; paused is
// healthy (200), a stopped SMTP listener is not (503).
func TestHealthzJSON(t *testing.T) {
	st := openStore(t)
	clk := testclock.NewManual(time.Now())
	var mu sync.Mutex
	var smtpErr error
	s := startServerWith(t, st, Options{Listen: "127.0.0.1:0", Now: clk.Now, SMTP: func() error {
		mu.Lock()
		defer mu.Unlock()
		return smtpErr
	}})
	code, h := getHealth(t, s)
	if code != http.StatusOK || h != (Health{Status: "ok", Store: "ok", SMTP: "ok", Parts: "ok"}) {
		t.Errorf("fresh daemon: %d %+v", code, h)
	}

	ctx := context.Background()
	if _, err := st.Accept(ctx, store.NewLetter{From: "ana@ed.test", DedupAddress: "ana@ed.test",
		Verdict: store.Verdict{Kind: store.VerdictDKIM}, Body: []byte("Subject: x\r\n\r\nx\r\n")}); err != nil {
		t.Fatal(err)
	}
	pb, err := st.NextBatch(10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseBatch(ctx, store.NewBatch{Number: 1, RunningTotal: 1, LetterIDs: []string{pb.Letters[0].ID},
		Created: clk.Now(), MessageID: "<b1@x>", Message: []byte("Subject: b\r\n\r\nb\r\n"), Recipients: []string{"familias@ofapp.test"}}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(90 * time.Second)
	if _, _, err := st.SetPause(ctx, true, "maintenance"); err != nil {
		t.Fatal(err)
	}
	code, h = getHealth(t, s)
	if code != http.StatusOK || h.Status != "paused" || !h.Paused || h.PausedSince == nil || h.OldestUndeliveredBatchAge != 90 {
		t.Errorf("paused, batch 90s old: %d %+v", code, h)
	}

	mu.Lock()
	smtpErr = errors.New("not listening: the SMTP listener stopped")
	mu.Unlock()
	code, h = getHealth(t, s)
	if code != http.StatusServiceUnavailable || h.Status != "failing" || h.SMTP != "not listening: the SMTP listener stopped" || h.Store != "ok" {
		t.Errorf("SMTP listener stopped: %d %+v", code, h)
	}
}

// logLines returns the JSON log lines in logs whose msg contains substr.
func logLines(t *testing.T, logs *syncbuf.Buffer, substr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range logs.JSONLines(t) {
		if strings.Contains(fmt.Sprint(m["msg"]), substr) {
			out = append(out, m)
		}
	}
	return out
}

// TestWrongTokenLogLimited: a flood of requests with a wrong token writes a
// few log lines a minute, not one each; the next line says how many were
// left out.
func TestWrongTokenLogLimited(t *testing.T) {
	var logs syncbuf.Buffer
	clk := testclock.NewManual(time.Now())
	s, err := New(openStore(t), Options{Listen: "127.0.0.1:0", Token: "s3cret", Now: clk.Now,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })

	c, err := NewClient(baseOf(s), "guess")
	if err != nil {
		t.Fatal(err)
	}
	const tries = 40
	for range tries {
		if _, err := c.Stats(context.Background()); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("wrong token: %v", err)
		}
	}
	const msg = "refused: missing or wrong"
	if got := logLines(t, &logs, msg); len(got) != wrongTokenBurst {
		t.Fatalf("%d wrong tokens logged %d lines, want %d", tries, len(got), wrongTokenBurst)
	}
	clk.Advance(wrongTokenWindow)
	if _, err := c.Stats(context.Background()); !errors.Is(err, ErrUnauthorized) {
		t.Fatal(err)
	}
	got := logLines(t, &logs, msg)
	if len(got) != wrongTokenBurst+1 || got[len(got)-1]["suppressed"] != float64(tries-wrongTokenBurst) {
		t.Errorf("after a minute: %d lines, last %v; want one more saying %d were suppressed", len(got), got[len(got)-1], tries-wrongTokenBurst)
	}
}

func TestSubjectOf(t *testing.T) {
	for head, want := range map[string]string{
		"From: a@b\r\nSubject: Libertad\r\n\r\nbody":                       "Libertad",
		"subject:  lower case key \r\n\r\n":                                "lower case key",
		"Subject: =?UTF-8?Q?Liberen_a_los_presos_pol=C3=ADticos?=\r\n\r\n": "Liberen a los presos políticos",
		"Subject: folded\r\n over two lines\r\n\r\n":                       "folded over two lines",
		"From: a@b\r\n\r\nSubject: in the body\r\n":                        "",
		"From: a@b\r\nSubject: before the cut\r\nX-Long: aaaaaaaaaa":       "before the cut",
		"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nSubject: cut in the mi": "",
		"": "",
		"Subject: \x1b]52;c;aGk=\x07 raw control\r\n\r\n":                     "\x1b]52;c;aGk=\x07 raw control",
		"Subject: =?x-unknown?Q?kept_raw?=\r\n\r\n":                           "=?x-unknown?Q?kept_raw?=",
		"Return-Path: <>\r\nSubject: Undelivered Mail Returned to Sender\r\n": "Undelivered Mail Returned to Sender",
	} {
		if got := subjectOf([]byte(head)); got != want {
			t.Errorf("subjectOf(%q) = %q, want %q", head, got, want)
		}
	}
}

// post sends a JSON (or other) body to the admin API with the test's admin
// token.
func post(t *testing.T, s *Server, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, baseOf(s)+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestActionRequests: the actions take only JSON, and refuse a request
// that is unclear about what it acts on.
func TestActionRequests(t *testing.T) {
	s := startServer(t, openStore(t), "127.0.0.1:0", "")
	for _, c := range []struct {
		path, ctype, body string
		want              int
		says              string
	}{
		{"/api/held/release", "text/plain", `{"all":true}`, http.StatusUnsupportedMediaType, "must be JSON"},
		{"/api/held/drop", "application/x-www-form-urlencoded", `all=true`, http.StatusUnsupportedMediaType, "must be JSON"},
		{"/api/pause", "text/plain", `{}`, http.StatusUnsupportedMediaType, "must be JSON"},
		{"/api/batches/flush", "", ``, http.StatusUnsupportedMediaType, "must be JSON"},
		{"/api/held/release", "application/json", `{"all":true,"ids":["L00000001"]}`, http.StatusBadRequest, "not both"},
		{"/api/held/release", "application/json", `{}`, http.StatusBadRequest, "not both"},
		{"/api/held/drop", "application/json", `{"ids":["L00000001"],"reason":"postmaster"}`, http.StatusBadRequest, "reason narrows all"},
		{"/api/held/drop", "application/json", `{"every":true}`, http.StatusBadRequest, "unknown field"},
		{"/api/resume", "application/json", `{"reason":"x"}`, http.StatusBadRequest, "takes no reason"},
		{"/api/held/drop", "application/json; charset=utf-8", `{"all":true}`, http.StatusOK, `"results":[]`},
	} {
		code, body := post(t, s, c.path, c.ctype, c.body)
		if code != c.want || !strings.Contains(body, c.says) {
			t.Errorf("POST %s (%s) %s: %d %s; want %d saying %q", c.path, c.ctype, c.body, code, body, c.want, c.says)
		}
	}
}
