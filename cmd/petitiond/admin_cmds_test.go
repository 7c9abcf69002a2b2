package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/relay/admin"
)

// The admin commands' tests run a real daemon in-process on loopback (real
// store, DNS server for DKIM keys, SMTP) and call the commands as main does.

// admConfig gives the daemon an admin listener on loopback and closes
// batches after 200ms; mutate adjusts the config further.
func admConfig(mutate func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Admin.Listen = "127.0.0.1:0"
		c.Batch.MaxWait = config.Duration{Duration: 200 * time.Millisecond}
		if mutate != nil {
			mutate(c)
		}
	}
}

// startAdm starts a daemon for the admin commands to talk to, and gives
// the commands its admin token through the environment, as an admin would
// who runs them with -admin URL and no config.
func startAdm(t *testing.T, mutate func(*config.Config)) *testenv.Test {
	t.Helper()
	e := testenv.Start(t, admConfig(mutate))
	t.Setenv(adminTokenEnv, e.AdminToken())
	return e
}

// unsigned is a letter from addr without a signature: held, by default.
func unsigned(e *testenv.Test, addr string) []byte { return e.Letter(addr, "Libertad", testenv.Body) }

// cli runs a petitiond command as main would.
func cli(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// cliOK runs a command that must succeed.
func cliOK(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := cli(context.Background(), args...)
	if code != 0 {
		t.Fatalf("petitiond %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// cliJSON runs a command with -json (after the action word, if any) and
// decodes its output.
func cliJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	raw := cliOK(t, args...)
	if err := json.Unmarshal([]byte(raw), out); err != nil {
		t.Fatalf("petitiond %s: output is not the JSON expected: %v\n%s", strings.Join(args, " "), err, raw)
	}
}

// TestAdminStats: the tally matches the letters sent, in the SPEC 9 shape.
func TestAdminStats(t *testing.T) {
	e := startAdm(t, func(c *config.Config) { c.Batch.MaxWait = config.Duration{Duration: time.Hour} })
	e.Queued(e.Signed("ed.test", "ana@ed.test"))
	e.Queued(e.Signed("ed.test", "bo@ed.test"))
	if r := e.Send(e.Signed("ed.test", "Ana+x@ed.test")); r.Code != 250 || !strings.Contains(r.Text, "already counted") {
		t.Fatalf("duplicate: %s", r.String())
	}
	e.Queued(unsigned(e, "dan@ed.test")) // unsigned: held
	if r := e.Send([]byte("From: eva@ed.test\r\nSubject: x\n\r\nbody\r\n")); r.Code != 554 {
		t.Fatalf("bare LF: %s", r.String())
	}

	var raw map[string]any
	cliJSON(t, &raw, "stats", "-json", "-admin", e.AdminURL())
	want := map[string]any{
		"counted": 2.0, "duplicates": 1.0, "held": 1.0, "rejected": 1.0, "batches": 0.0, "pending": 2.0, "paused": false,
		"deliveries": map[string]any{"queued": 0.0, "deferred": 0.0, "delivered": 0.0, "failed": 0.0},
		"supporters": map[string]any{"confirm_sent": 0.0, "confirmed": 0.0, "confirm_expired": 0.0, "confirm_undeliverable": 0.0,
			"confirm_waiting": 0.0, "confirm_live": 0.0, "receipts_sent": 0.0, "queued": 0.0},
	}
	if fmt.Sprint(raw) != fmt.Sprint(want) {
		t.Errorf("stats -json = %v\nwant %v", raw, want)
	}
	out := cliOK(t, "stats", "-admin", e.AdminURL())
	for _, line := range []string{"counted     2", "duplicates  1", "held        1", "rejected    1"} {
		if !strings.Contains(out, line) {
			t.Errorf("stats output lacks %q:\n%s", line, out)
		}
	}
}

// TestAdminJSONTimesInCampaignZone: the times the commands print as JSON
// are RFC 3339 with campaign.timezone's offset (SPEC 3), whatever the
// machine's own zone: a held letter's arrival, a batch's closing, an
// event's time, the pause.
func TestAdminJSONTimesInCampaignZone(t *testing.T) {
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	e := startAdm(t, func(c *config.Config) { c.Campaign.Timezone = "America/Santiago" })
	e.Queued(unsigned(e, "dan@ed.test"))
	e.Queued(e.Signed("ed.test", "ana@ed.test"))
	var raw struct {
		Held []struct {
			Received string `json:"received"`
		}
		Batches []struct {
			Created string `json:"created"`
		}
		Events []struct {
			Time string `json:"time"`
		}
		Pause struct {
			Since string `json:"since"`
		}
	}
	cliJSON(t, &raw.Held, "held", "-json", "-admin", e.AdminURL())
	testenv.WaitFor(t, "the batch", 10*time.Second, func() bool {
		cliJSON(t, &raw.Batches, "batches", "-json", "-admin", e.AdminURL())
		return len(raw.Batches) == 1
	})
	_, out, _ := cli(context.Background(), "tail", "-json", "-n", "3", "-admin", e.AdminURL())
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Time string `json:"time"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("tail -json line %q: %v", line, err)
		}
		raw.Events = append(raw.Events, ev)
	}
	cliJSON(t, &raw.Pause, "pause", "-json", "-admin", e.AdminURL())
	times := []string{raw.Pause.Since}
	for _, h := range raw.Held {
		times = append(times, h.Received)
	}
	for _, b := range raw.Batches {
		times = append(times, b.Created)
	}
	for _, ev := range raw.Events {
		times = append(times, ev.Time)
	}
	if len(times) < 6 {
		t.Fatalf("only %d times read: %q", len(times), times)
	}
	for _, s := range times {
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Errorf("%q is not RFC 3339: %v", s, err)
			continue
		}
		_, want := at.In(santiago).Zone()
		if _, got := at.Zone(); got != want || time.Since(at) > time.Hour || time.Since(at) < -time.Minute {
			t.Errorf("%q: offset %ds, want Santiago's %ds, and a time of this run", s, got, want)
		}
	}
}

// TestAdminStatsSupporterMail: under policy confirm with receipts on,
// stats counts the requests and receipts that left, in JSON and in text.
func TestAdminStatsSupporterMail(t *testing.T) {
	e := startAdm(t, func(c *config.Config) {
		c.Batch.MaxWait = config.Duration{Duration: time.Hour}
		c.Verify.Unverified = config.UnverifiedConfirm
		c.Receipts.Enabled = true
	})
	e.Queued(unsigned(e, "dan@ed.test"))         // a request to dan
	e.Queued(unsigned(e, "eva@ed.test"))         // and one to eva
	e.Queued(e.Signed("ed.test", "ana@ed.test")) // a receipt to ana
	var raw struct{ Supporters map[string]float64 }
	testenv.WaitFor(t, "two requests and a receipt sent", 10*time.Second, func() bool {
		cliJSON(t, &raw, "stats", "-json", "-admin", e.AdminURL())
		return raw.Supporters["confirm_sent"] == 2 && raw.Supporters["receipts_sent"] == 1
	})
	if raw.Supporters["confirm_live"] != 2 || raw.Supporters["confirmed"] != 0 || raw.Supporters["confirm_waiting"] != 0 {
		t.Errorf("stats -json supporters = %v", raw.Supporters)
	}
	out := cliOK(t, "stats", "-admin", e.AdminURL())
	for _, want := range []string{"confirmation requests sent to supporters: confirmed 0, expired 0, undeliverable 0; live 2, waiting their turn 0",
		"receipts sent to supporters"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats output lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^confirm\s+2\s`).MatchString(out) || !regexp.MustCompile(`(?m)^receipts\s+1\s`).MatchString(out) {
		t.Errorf("stats output does not count 2 requests and 1 receipt:\n%s", out)
	}
}

// TestAdminTailFollow: tail -f shows events as they happen, and when the
// daemon restarts it reconnects and resumes, missing nothing and repeating
// nothing.
func TestAdminTailFollow(t *testing.T) {
	e := startAdm(t, func(c *config.Config) { c.Batch.MaxWait = config.Duration{Duration: time.Hour} })
	first := e.Queued(e.Signed("ed.test", "ana@ed.test"))

	// Without -f: the last events, human-readable.
	if out := cliOK(t, "tail", "-n", "5", "-admin", e.AdminURL()); !strings.Contains(out, "accepted") || !strings.Contains(out, "letter="+first) {
		t.Errorf("tail: %q", out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"tail", "-f", "-n", "1", "-json", "-admin", e.AdminURL()}, &stdout, &stderr)
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
	testenv.WaitFor(t, "the backlog event", 5*time.Second, shows(first))
	second := e.Queued(e.Signed("ed.test", "bo@ed.test"))
	testenv.WaitFor(t, "a new letter's event", 5*time.Second, shows(second))

	// The daemon restarts; a letter arrives before tail is back.
	e.Restart()
	third := e.Queued(e.Signed("ed.test", "carla@ed.test"))
	testenv.WaitFor(t, "the letter sent while tail reconnected", 10*time.Second, shows(third))
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
	e := startAdm(t, nil) // maildir delivery, max_wait 200ms
	id := e.Queued(unsigned(e, "dan@ed.test"))
	other := e.Queued(unsigned(e, "eva@ed.test"))

	var held []map[string]any
	cliJSON(t, &held, "held", "-json", "-admin", e.AdminURL())
	if len(held) != 2 || held[0]["id"] != id || held[0]["from"] != "dan@ed.test" ||
		!strings.HasPrefix(fmt.Sprint(held[0]["reason"]), "unverified") {
		t.Fatalf("held -json = %v", held)
	}
	if _, err := time.Parse(time.RFC3339, fmt.Sprint(held[0]["received"])); err != nil {
		t.Errorf("received is not RFC 3339: %v", err)
	}
	if out := cliOK(t, "held", "-admin", e.AdminURL()); !strings.Contains(out, id) || !strings.Contains(out, "dan@ed.test") {
		t.Errorf("held: %q", out)
	}

	if out := cliOK(t, "held", "release", "-admin", e.AdminURL(), id); !strings.Contains(out, id+" released") {
		t.Errorf("held release: %q", out)
	}
	if out := cliOK(t, "held", "drop", "-admin", e.AdminURL(), other); !strings.Contains(out, other+" dropped") {
		t.Errorf("held drop: %q", out)
	}
	// Deciding twice is the admin's mistake: exit 1 with the reason.
	if code, _, errs := cli(context.Background(), "held", "release", "-admin", e.AdminURL(), id); code != 1 || !strings.Contains(errs, "not held") {
		t.Errorf("release of a released letter: exit %d, %q", code, errs)
	}
	if code, _, errs := cli(context.Background(), "held", "drop", "-admin", e.AdminURL(), "L0000FFFF"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("drop of no letter: exit %d, %q", code, errs)
	}

	// The release counted it: the closer batches it within max_wait, and
	// both copies are delivered.
	var b admin.Batch
	testenv.WaitFor(t, "the released letter's batch delivered", 10*time.Second, func() bool {
		var list []admin.Batch
		cliJSON(t, &list, "batches", "-json", "-admin", e.AdminURL())
		if len(list) == 0 {
			return false
		}
		cliJSON(t, &b, "batches", "show", "-json", "-admin", e.AdminURL(), "1")
		return b.Recipients[0].State == "delivered" && b.Recipients[1].State == "delivered"
	})
	if !slices.Equal(b.LetterIDs, []string{id}) || b.Letters != 1 || b.MessageID == "" {
		t.Errorf("batch 1: %+v, want letter %s alone", b, id)
	}
	var raw []map[string]any
	cliJSON(t, &raw, "batches", "-json", "-admin", e.AdminURL())
	r0 := raw[0]["recipients"].([]any)[0].(map[string]any)
	for _, k := range []string{"address", "state", "attempts", "next_attempt", "last_error"} {
		if _, ok := r0[k]; !ok {
			t.Errorf("batches -json recipient lacks %q: %v", k, r0)
		}
	}
	if _, ok := raw[0]["letter_ids"]; ok {
		t.Errorf("batches -json lists letter IDs (only show does): %v", raw[0])
	}
	if out := cliOK(t, "batches", "-admin", e.AdminURL()); !strings.Contains(out, "familias@ofapp.test") || !strings.Contains(out, "delivered") {
		t.Errorf("batches: %q", out)
	}
	if out := cliOK(t, "batches", "show", "-admin", e.AdminURL(), "1"); !strings.Contains(out, id) || !strings.Contains(out, b.MessageID) {
		t.Errorf("batches show: %q", out)
	}

	exported := cliOK(t, "batches", "export", "-admin", e.AdminURL(), "1")
	for _, rcpt := range []string{testenv.Familias, testenv.Copias} {
		files := e.Delivered(rcpt)
		if len(files) != 1 {
			t.Fatalf("maildir of %s: %v", rcpt, files)
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
	if code, _, errs := cli(context.Background(), "batches", "export", "-admin", e.AdminURL(), "7"); code != 1 || !strings.Contains(errs, "not found") {
		t.Errorf("export of no batch: exit %d, %q", code, errs)
	}
}

// TestAdminRetry: a copy that failed (550 at RCPT) is delivered after the
// fault is cleared and an admin retries the batch.
func TestAdminRetry(t *testing.T) {
	e := testenv.Prepare(t, admConfig(nil))
	sink := e.Smarthost()
	sink.FailRcpt(&sinkserver.Fault{Code: 550, Enhanced: [3]int{5, 1, 1}, Msg: "no such user"})
	e.Start()
	t.Setenv(adminTokenEnv, e.AdminToken())
	e.Queued(e.Signed("ed.test", "ana@ed.test"))

	batch := func() admin.Batch {
		var b admin.Batch
		cliJSON(t, &b, "batches", "show", "-json", "-admin", e.AdminURL(), "1")
		return b
	}
	states := func(want string) func() bool {
		return func() bool {
			var list []admin.Batch
			cliJSON(t, &list, "batches", "-json", "-admin", e.AdminURL())
			if len(list) == 0 {
				return false
			}
			for _, r := range list[0].Recipients {
				if string(r.State) != want {
					return false
				}
			}
			return true
		}
	}
	testenv.WaitFor(t, "both copies failed", 10*time.Second, states("failed"))
	if b := batch(); !strings.Contains(b.Recipients[0].LastError, "550") || b.Recipients[0].NextAttempt != nil {
		t.Errorf("failed copy: %+v", b.Recipients[0])
	}
	if out := cliOK(t, "batches", "-admin", e.AdminURL()); !strings.Contains(out, "failed") || !strings.Contains(out, "550") {
		t.Errorf("batches does not show the failure: %q", out)
	}

	sink.FailRcpt(nil)
	if out := cliOK(t, "batches", "retry", "-admin", e.AdminURL(), "1"); !strings.Contains(out, "2 failed copies requeued") {
		t.Errorf("batches retry: %q", out)
	}
	// The scheduler is woken: no waiting for retry_min (5m here).
	testenv.WaitFor(t, "both copies delivered after the retry", 10*time.Second, states("delivered"))
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("sink got %d messages, want 2", n)
	}
	// Nothing left to retry.
	if code, _, errs := cli(context.Background(), "batches", "retry", "-admin", e.AdminURL(), "1"); code != 1 || !strings.Contains(errs, "no failed copy") {
		t.Errorf("retry with nothing failed: exit %d, %q", code, errs)
	}
}

// TestAdminAuth: with a token set, a wrong one is refused with a clear
// message; the right one works from the environment or the config.
func TestAdminAuth(t *testing.T) {
	e := startAdm(t, func(c *config.Config) { c.Admin.Token = "s3cret" })

	t.Setenv(adminTokenEnv, "wrong")
	code, _, errs := cli(context.Background(), "stats", "-admin", e.AdminURL())
	if code != 1 || !strings.Contains(errs, "admin token rejected (401): set PETITIOND_ADMIN_TOKEN or admin.token") {
		t.Errorf("wrong token: exit %d, %q", code, errs)
	}
	code, _, errs = cli(context.Background(), "tail", "-f", "-admin", e.AdminURL())
	if code != 1 || !strings.Contains(errs, "admin token rejected (401)") {
		t.Errorf("tail -f with a wrong token: exit %d, %q", code, errs)
	}

	t.Setenv(adminTokenEnv, "s3cret")
	cliOK(t, "stats", "-admin", e.AdminURL())

	// No environment: the config file names the listener and the token.
	t.Setenv(adminTokenEnv, "")
	path := filepath.Join(t.TempDir(), "petitiond.toml")
	toml := fmt.Sprintf("[campaign]\nname = \"x\"\naddresses = [%q]\nrecipients = [%q]\nfrom = \"relay@campaign.test\"\n"+
		"[admin]\nlisten = %q\ntoken = \"s3cret\"\n", testenv.CampaignAddr, testenv.Familias, e.Config.Admin.Listen)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cliOK(t, "held", "-config", path)
	if code, _, errs := cli(context.Background(), "stats", "-admin", e.AdminURL()); code != 1 || !strings.Contains(errs, "401") {
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
		{[]string{"held", "release"}, 2, "takes letter IDs or -all"},
		{[]string{"held", "drop", "-all", "L1"}, 2, "takes letter IDs or -all"},
		{[]string{"held", "-all"}, 2, "-all and -reason go with release or drop"},
		{[]string{"held", "show", "-all"}, 2, "-all and -reason go with release or drop"},
		{[]string{"held", "release", "-reason", "postmaster", "L1"}, 2, "-reason narrows -all"},
		{[]string{"held", "show"}, 2, "show takes one letter ID"},
		{[]string{"held", "show", "L1", "L2"}, 2, "show takes one letter ID"},
		{[]string{"held", "bogus"}, 2, "unknown action"},
		{[]string{"batches", "flush", "1"}, 2, "flush takes no batch ID"},
		{[]string{"batches", "show"}, 2, "show takes one batch ID"},
		{[]string{"pause", "because"}, 2, "a reason goes in -reason"},
		{[]string{"resume", "-reason", "x"}, 2, "-reason"},
		{[]string{"health", "now"}, 2, "unexpected arguments"},
		{[]string{"version", "x"}, 2, "unexpected arguments"},
		{[]string{"pause", "-h"}, 0, "no batch closes and nothing"},
		{[]string{"health", "-h"}, 0, "exits 0 when it is healthy"},
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
