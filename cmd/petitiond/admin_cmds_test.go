package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/relay"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/relay/deliver"
)

// The admin commands' tests run a real daemon in-process on loopback (real
// store, DNS server for DKIM keys, SMTP) and call the commands as main does.

const admCampaign = "libertad@campaign.test"

var admRecipients = []string{"familias@ofapp.test", "copias@sr.test"}

// admEnv is a running daemon for the admin command tests.
type admEnv struct {
	t        *testing.T
	cfg      *config.Config
	opt      relay.Options
	d        *relay.Daemon
	key      *keyserver.Key // signs for ed.test
	smtpAddr string
	url      string // the admin API
}

// startAdmEnv starts a daemon with an admin listener on loopback; mutate
// adjusts its config first.
func startAdmEnv(t *testing.T, mutate func(*config.Config)) *admEnv {
	t.Helper()
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	key, err := keyserver.NewKey("ed.test", "sel", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	ks.SetKey(key)
	cfg := config.Default()
	cfg.Campaign.Addresses = []string{admCampaign}
	cfg.Campaign.Recipients = admRecipients
	cfg.Campaign.From = "relay@campaign.test"
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.SMTP.Hostname = "mx.campaign.test"
	cfg.Verify.DNSResolver = ks.Addr
	cfg.Verify.DNSTimeout = config.Duration{Duration: time.Second}
	cfg.Store.Dir = filepath.Join(t.TempDir(), "data")
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Batch.MaxWait = config.Duration{Duration: 200 * time.Millisecond}
	if mutate != nil {
		mutate(cfg)
	}
	if p := cfg.Validate(); len(p) > 0 {
		t.Fatalf("test config: %v", p)
	}
	e := &admEnv{t: t, cfg: cfg, key: key}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *admEnv) start() {
	e.t.Helper()
	e.opt.Logger = slog.New(slog.NewTextHandler(admLogWriter{e.t}, nil))
	d, err := relay.New(e.cfg, e.opt)
	if err != nil {
		e.t.Fatalf("new daemon: %v", err)
	}
	if err := d.Start(); err != nil {
		e.t.Fatalf("start daemon: %v", err)
	}
	e.d = d
	e.smtpAddr = d.SMTPAddrs()[0].String()
	// A restart comes back on the same admin port, as a real one would.
	e.cfg.Admin.Listen = d.AdminAddr().String()
	e.url = "http://" + e.cfg.Admin.Listen
}

func (e *admEnv) stop() {
	if e.d == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.d.Shutdown(ctx); err != nil {
		e.t.Errorf("shutdown: %v", err)
	}
	e.d = nil
}

type admLogWriter struct{ t *testing.T }

func (w admLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// send delivers msg in its own SMTP session and returns the final reply.
func (e *admEnv) send(msg []byte) smtpclient.Reply {
	e.t.Helper()
	c, err := smtpclient.Dial(e.smtpAddr, 10*time.Second)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	defer c.Quit()
	if r, err := c.Hello("client.test"); err != nil || r.Code != 250 {
		e.t.Fatalf("EHLO: %v %v", r, err)
	}
	r, err := c.Send("bounce@client.test", []string{admCampaign}, msg)
	if err != nil {
		e.t.Fatalf("send: %v", err)
	}
	return r
}

// letter is a plain letter from addr; signed, it passes DKIM (for ed.test).
func (e *admEnv) letter(addr string, signed bool) []byte {
	e.t.Helper()
	msg := []byte(fmt.Sprintf("From: %s\r\nTo: <%s>\r\nSubject: Libertad\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"+
		"Message-ID: <%d@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"Free the political prisoners of the October 2019 revolt.\r\n", addr, admCampaign, time.Now().UnixNano()))
	if !signed {
		return msg
	}
	out, err := e.key.Sign(msg, keyserver.SignOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// queued sends msg, expects 250 and returns the letter ID from the reply.
func (e *admEnv) queued(msg []byte) string {
	e.t.Helper()
	r := e.send(msg)
	_, after, ok := strings.Cut(r.Text, "queued as ")
	if r.Code != 250 || !ok {
		e.t.Fatalf("reply %q, want 250 queued as", r.String())
	}
	return strings.Fields(after)[0]
}

// cli runs a petitiond command as main would.
func cli(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// cliOK runs a command that must succeed.
func (e *admEnv) cliOK(args ...string) string {
	e.t.Helper()
	code, out, errs := cli(context.Background(), args...)
	if code != 0 {
		e.t.Fatalf("petitiond %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// cliJSON runs a command with -json (after the action word, if any) and
// decodes its output.
func (e *admEnv) cliJSON(out any, args ...string) {
	e.t.Helper()
	raw := e.cliOK(args...)
	if err := json.Unmarshal([]byte(raw), out); err != nil {
		e.t.Fatalf("petitiond %s: output is not the JSON expected: %v\n%s", strings.Join(args, " "), err, raw)
	}
}

func admWait(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAdminStats: the tally matches the letters sent, in the SPEC 9 shape.
func TestAdminStats(t *testing.T) {
	e := startAdmEnv(t, func(c *config.Config) { c.Batch.MaxWait = config.Duration{Duration: time.Hour} })
	e.queued(e.letter("ana@ed.test", true))
	e.queued(e.letter("bo@ed.test", true))
	if r := e.send(e.letter("Ana+x@ed.test", true)); r.Code != 250 || !strings.Contains(r.Text, "already counted") {
		t.Fatalf("duplicate: %s", r.String())
	}
	e.queued(e.letter("dan@ed.test", false)) // unsigned: held
	if r := e.send([]byte("From: eva@ed.test\r\nSubject: x\n\r\nbody\r\n")); r.Code != 554 {
		t.Fatalf("bare LF: %s", r.String())
	}

	var raw map[string]any
	e.cliJSON(&raw, "stats", "-json", "-admin", e.url)
	want := map[string]any{
		"counted": 2.0, "duplicates": 1.0, "held": 1.0, "rejected": 1.0, "batches": 0.0, "pending": 2.0,
		"deliveries": map[string]any{"queued": 0.0, "deferred": 0.0, "delivered": 0.0, "failed": 0.0},
	}
	if fmt.Sprint(raw) != fmt.Sprint(want) {
		t.Errorf("stats -json = %v\nwant %v", raw, want)
	}
	out := e.cliOK("stats", "-admin", e.url)
	for _, line := range []string{"counted     2", "duplicates  1", "held        1", "rejected    1"} {
		if !strings.Contains(out, line) {
			t.Errorf("stats output lacks %q:\n%s", line, out)
		}
	}
}

// lockedBuffer collects a running command's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAdminTailFollow: tail -f shows events as they happen, and when the
// daemon restarts it reconnects and resumes, missing nothing and repeating
// nothing.
func TestAdminTailFollow(t *testing.T) {
	e := startAdmEnv(t, func(c *config.Config) { c.Batch.MaxWait = config.Duration{Duration: time.Hour} })
	first := e.queued(e.letter("ana@ed.test", true))

	// Without -f: the last events, human-readable.
	if out := e.cliOK("tail", "-n", "5", "-admin", e.url); !strings.Contains(out, "accepted") || !strings.Contains(out, "letter="+first) {
		t.Errorf("tail: %q", out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"tail", "-f", "-n", "1", "-json", "-admin", e.url}, &stdout, &stderr)
	}()
	events := func() []admin.Event {
		var out []admin.Event
		for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
			if line == "" {
				continue
			}
			var ev admin.Event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("tail -json line %q: %v", line, err)
			}
			out = append(out, ev)
		}
		return out
	}
	shows := func(letter string) func() bool {
		return func() bool {
			return slices.ContainsFunc(events(), func(ev admin.Event) bool { return ev.Letter == letter })
		}
	}
	admWait(t, "the backlog event", 5*time.Second, shows(first))
	second := e.queued(e.letter("bo@ed.test", true))
	admWait(t, "a new letter's event", 5*time.Second, shows(second))

	// The daemon restarts; a letter arrives before tail is back.
	e.stop()
	e.start()
	third := e.queued(e.letter("carla@ed.test", true))
	admWait(t, "the letter sent while tail reconnected", 10*time.Second, shows(third))
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("tail -f exit %d: %s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tail -f did not end with its context")
	}

	evs := events()
	for i, ev := range evs {
		if i > 0 && ev.Seq != evs[i-1].Seq+1 {
			t.Errorf("events skip or repeat: seq %d after %d", ev.Seq, evs[i-1].Seq)
		}
		if ev.Time.IsZero() || ev.Event == "" {
			t.Errorf("event %+v lacks time or kind", ev)
		}
	}
	if len(evs) != 3 || evs[2].Sender != "carla@ed.test" || evs[2].IP != "127.0.0.1" || evs[2].Event != "accepted" {
		t.Errorf("events %+v, want the three letters' accepted events", evs)
	}
	// Absent fields are omitted, not empty.
	if line := strings.SplitN(stdout.String(), "\n", 2)[0]; strings.Contains(line, `"batch"`) || strings.Contains(line, `""`) {
		t.Errorf("tail -json line with empty fields: %s", line)
	}
	if !strings.Contains(stderr.String(), "reconnecting") || !strings.Contains(stderr.String(), "reconnected") {
		t.Errorf("tail -f did not say it reconnected: %q", stderr.String())
	}
}

// TestAdminHeldRelease: a released letter joins the next batch; a dropped
// one goes; batches export writes the very bytes delivered.
func TestAdminHeldRelease(t *testing.T) {
	e := startAdmEnv(t, nil) // maildir delivery, max_wait 200ms
	id := e.queued(e.letter("dan@ed.test", false))
	other := e.queued(e.letter("eva@ed.test", false))

	var held []map[string]any
	e.cliJSON(&held, "held", "-json", "-admin", e.url)
	if len(held) != 2 || held[0]["id"] != id || held[0]["from"] != "dan@ed.test" ||
		!strings.HasPrefix(fmt.Sprint(held[0]["reason"]), "unverified") {
		t.Fatalf("held -json = %v", held)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(held[0]["received"])); err != nil {
		t.Errorf("received is not RFC 3339: %v", err)
	}
	if out := e.cliOK("held", "-admin", e.url); !strings.Contains(out, id) || !strings.Contains(out, "dan@ed.test") {
		t.Errorf("held: %q", out)
	}

	if out := e.cliOK("held", "release", "-admin", e.url, id); !strings.Contains(out, id+" released") {
		t.Errorf("held release: %q", out)
	}
	if out := e.cliOK("held", "drop", "-admin", e.url, other); !strings.Contains(out, other+" dropped") {
		t.Errorf("held drop: %q", out)
	}
	// Deciding twice is the admin's mistake: exit 1 with the reason.
	if code, _, errs := cli(context.Background(), "held", "release", "-admin", e.url, id); code != 1 || !strings.Contains(errs, "not held") {
		t.Errorf("release of a released letter: exit %d, %q", code, errs)
	}
	if code, _, errs := cli(context.Background(), "held", "drop", "-admin", e.url, "L0000FFFF"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("drop of no letter: exit %d, %q", code, errs)
	}

	// The release counted it: the closer batches it within max_wait, and
	// both copies are delivered.
	var b admin.Batch
	admWait(t, "the released letter's batch delivered", 10*time.Second, func() bool {
		var list []admin.Batch
		e.cliJSON(&list, "batches", "-json", "-admin", e.url)
		if len(list) == 0 {
			return false
		}
		e.cliJSON(&b, "batches", "show", "-json", "-admin", e.url, "1")
		return b.Recipients[0].State == "delivered" && b.Recipients[1].State == "delivered"
	})
	if !slices.Equal(b.LetterIDs, []string{id}) || b.Letters != 1 || b.MessageID == "" {
		t.Errorf("batch 1: %+v, want letter %s alone", b, id)
	}
	var raw []map[string]any
	e.cliJSON(&raw, "batches", "-json", "-admin", e.url)
	r0 := raw[0]["recipients"].([]any)[0].(map[string]any)
	for _, k := range []string{"address", "state", "attempts", "next_attempt", "last_error"} {
		if _, ok := r0[k]; !ok {
			t.Errorf("batches -json recipient lacks %q: %v", k, r0)
		}
	}
	if _, ok := raw[0]["letter_ids"]; ok {
		t.Errorf("batches -json lists letter IDs (only show does): %v", raw[0])
	}
	if out := e.cliOK("batches", "-admin", e.url); !strings.Contains(out, "familias@ofapp.test") || !strings.Contains(out, "delivered") {
		t.Errorf("batches: %q", out)
	}
	if out := e.cliOK("batches", "show", "-admin", e.url, "1"); !strings.Contains(out, id) || !strings.Contains(out, b.MessageID) {
		t.Errorf("batches show: %q", out)
	}

	exported := e.cliOK("batches", "export", "-admin", e.url, "1")
	md := deliver.Maildir{Root: e.cfg.DataPath(e.cfg.Delivery.Maildir)}
	for _, rcpt := range admRecipients {
		files, err := filepath.Glob(filepath.Join(md.Dir(rcpt), "new", "*"))
		if err != nil || len(files) != 1 {
			t.Fatalf("maildir of %s: %v %v", rcpt, files, err)
		}
		delivered, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		// The Maildir copy is the message with LF line ends, below Return-Path and Delivered-To.
		if _, body, _ := strings.Cut(string(delivered), "\nDelivered-To: "+rcpt+"\n"); strings.ReplaceAll(exported, "\r\n", "\n") != body {
			t.Errorf("batches export differs from the copy delivered to %s (%d vs %d bytes)", rcpt, len(exported), len(delivered))
		}
	}
	if !strings.Contains(exported, "Message-ID: "+b.MessageID) {
		t.Errorf("exported message lacks its Message-ID")
	}
	if code, _, errs := cli(context.Background(), "batches", "export", "-admin", e.url, "7"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("export of no batch: exit %d, %q", code, errs)
	}
}

// TestAdminRetry: a copy that failed (550 at RCPT) is delivered after the
// fault is cleared and an admin retries the batch.
func TestAdminRetry(t *testing.T) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	sink.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no such user"})
	e := startAdmEnv(t, func(c *config.Config) {
		c.Delivery.Mode = "smtp"
		c.Delivery.Smarthost = sink.Addr
		c.Delivery.StartTLS = "off"
	})
	e.queued(e.letter("ana@ed.test", true))

	batch := func() admin.Batch {
		var b admin.Batch
		e.cliJSON(&b, "batches", "show", "-json", "-admin", e.url, "1")
		return b
	}
	states := func(want string) func() bool {
		return func() bool {
			var list []admin.Batch
			e.cliJSON(&list, "batches", "-json", "-admin", e.url)
			if len(list) == 0 {
				return false
			}
			for _, r := range list[0].Recipients {
				if r.State != want {
					return false
				}
			}
			return true
		}
	}
	admWait(t, "both copies failed", 10*time.Second, states("failed"))
	if b := batch(); !strings.Contains(b.Recipients[0].LastError, "550") || b.Recipients[0].NextAttempt != nil {
		t.Errorf("failed copy: %+v", b.Recipients[0])
	}
	if out := e.cliOK("batches", "-admin", e.url); !strings.Contains(out, "failed") || !strings.Contains(out, "550") {
		t.Errorf("batches does not show the failure: %q", out)
	}

	sink.FailRcpt(nil)
	if out := e.cliOK("batches", "retry", "-admin", e.url, "1"); !strings.Contains(out, "2 failed copies requeued") {
		t.Errorf("batches retry: %q", out)
	}
	// The scheduler is woken: no waiting for retry_min (5m here).
	admWait(t, "both copies delivered after the retry", 10*time.Second, states("delivered"))
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("sink got %d messages, want 2", n)
	}
	// Nothing left to retry.
	if code, _, errs := cli(context.Background(), "batches", "retry", "-admin", e.url, "1"); code != 1 || !strings.Contains(errs, "no failed copy") {
		t.Errorf("retry with nothing failed: exit %d, %q", code, errs)
	}
}

// TestAdminAuth: with a token set, a wrong one is refused with a clear
// message; the right one works from the environment or the config.
func TestAdminAuth(t *testing.T) {
	e := startAdmEnv(t, func(c *config.Config) { c.Admin.Token = "s3cret" })

	t.Setenv(adminTokenEnv, "wrong")
	code, _, errs := cli(context.Background(), "stats", "-admin", e.url)
	if code != 1 || !strings.Contains(errs, "admin token rejected (401): set PETITIOND_ADMIN_TOKEN or admin.token") {
		t.Errorf("wrong token: exit %d, %q", code, errs)
	}
	code, _, errs = cli(context.Background(), "tail", "-f", "-admin", e.url)
	if code != 1 || !strings.Contains(errs, "admin token rejected (401)") {
		t.Errorf("tail -f with a wrong token: exit %d, %q", code, errs)
	}

	t.Setenv(adminTokenEnv, "s3cret")
	e.cliOK("stats", "-admin", e.url)

	// No environment: the config file names the listener and the token.
	t.Setenv(adminTokenEnv, "")
	path := filepath.Join(t.TempDir(), "petitiond.toml")
	toml := fmt.Sprintf("[campaign]\nname = \"x\"\naddresses = [%q]\nrecipients = [%q]\nfrom = \"relay@campaign.test\"\n"+
		"[admin]\nlisten = %q\ntoken = \"s3cret\"\n", admCampaign, admRecipients[0], e.cfg.Admin.Listen)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cliOK("held", "-config", path)
	if code, _, errs := cli(context.Background(), "stats", "-admin", e.url); code != 1 || !strings.Contains(errs, "401") {
		t.Errorf("no token: exit %d, %q", code, errs)
	}
}

// TestAdminNotRunning: no daemon at the address is said plainly.
func TestAdminNotRunning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{{"stats"}, {"tail", "-f"}, {"held", "release", "-admin", url, "L00000001"}} {
		if len(args) < 3 {
			args = append(args, "-admin", url)
		}
		code, _, errs := cli(context.Background(), args...)
		if code != 1 || !strings.Contains(errs, "petitiond is not running at "+url+" (connection refused)") {
			t.Errorf("%v: exit %d, %q", args, code, errs)
		}
	}
}

// TestAdminUsage: -h exits 0; a wrong call exits 2 and says why.
func TestAdminUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"stats", "-h"}, 0, "-admin URL"},
		{[]string{"tail", "-h"}, 0, "-f"},
		{[]string{"batches", "-h"}, 0, "batches export ID"},
		{[]string{"held", "release", "-h"}, 0, "held release ID"},
		{[]string{"held", "release"}, 2, "takes one letter ID"},
		{[]string{"held", "release", "L1", "L2"}, 2, "takes one letter ID"},
		{[]string{"batches", "bogus"}, 2, "unknown action"},
		{[]string{"batches", "show", "1", "-json"}, 2, "flags go before it"},
		{[]string{"tail", "extra"}, 2, "unexpected arguments"},
		{[]string{"stats", "-nope"}, 2, "-nope"},
	} {
		code, _, errs := cli(context.Background(), c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d (want %d), stderr %q lacks %q", c.args, code, c.code, errs, c.want)
		}
	}
}
