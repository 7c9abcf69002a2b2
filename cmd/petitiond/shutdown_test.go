package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/smtpclient"
)

// jsonLines parses a daemon's stderr as JSON log lines (log.format "json"):
// every line must be one.
func jsonLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Errorf("stderr line is not JSON: %q", sc.Text())
			continue
		}
		out = append(out, m)
	}
	return out
}

// find returns the log lines whose fields have the values given.
func find(lines []map[string]any, fields map[string]string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		match := true
		for k, v := range fields {
			if fmt.Sprint(l[k]) != v {
				match = false
			}
		}
		if match {
			out = append(out, l)
		}
	}
	return out
}

var sessionInReply = regexp.MustCompile(`\(session ([0-9a-f]+)\)`)

// TestLogsAndCleanShutdown runs the real binary with JSON logs. Each event
// of an SMTP session is logged at its level (SPEC 8) with the session ID
// the reply gave; and SIGTERM while a client is in the middle of DATA is a
// clean shutdown: the client is cut off at the end of the grace period
// (nothing of it stored, no 250 given), and the daemon exits 0.
func TestLogsAndCleanShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary and waits out the 30s shutdown grace")
	}
	t.Parallel()
	bin := buildBinary(t)
	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := writeServeConfig(t, dir, smtpAddr, "[log]\nformat = \"json\"\n")
	d := startDaemon(t, bin, cfgPath, smtpAddr)
	stopped := false
	defer func() {
		if !stopped {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
	}()
	send := func(rcpt string, msg string) smtpclient.Reply {
		t.Helper()
		r, err := smtpclient.SendMail(smtpAddr, "client.test", "ana@example.org", []string{rcpt}, []byte(msg), 10*time.Second)
		if err != nil && r.Code == 0 {
			t.Fatalf("send: %v", err)
		}
		return r
	}
	refusalSession := func(r smtpclient.Reply, code int) string {
		t.Helper()
		m := sessionInReply.FindStringSubmatch(r.Text)
		if r.Code != code || m == nil {
			t.Fatalf("reply %s: want %d with a session ID", r, code)
		}
		return m[1]
	}
	bareLF := refusalSession(send("libertad@campaign.test", "From: ana@example.org\r\nSubject: x\n\r\nbody\r\n"), 554)
	relay := refusalSession(send("someone@elsewhere.test", "From: ana@example.org\r\n\r\nx\r\n"), 550)
	held := send("libertad@campaign.test", "From: ana@example.org\r\nSubject: Libertad\r\n\r\nLibertad.\r\n")
	if held.LetterID() == "" {
		t.Fatalf("unsigned letter: %s", held)
	}

	// A client in the middle of DATA when SIGTERM comes.
	c, err := smtpclient.Dial(smtpAddr, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Hello("slow.test")
	for _, cmd := range []string{"MAIL FROM:<slow@example.org>", "RCPT TO:<libertad@campaign.test>", "DATA"} {
		if r, err := c.Cmd("%s", cmd); err != nil || r.Code/100 > 3 {
			t.Fatalf("%s: %v %v", cmd, r, err)
		}
	}
	if err := c.Raw([]byte("From: slow@example.org\r\nSubject: half a letter\r\n\r\nthe first li")); err != nil {
		t.Fatal(err)
	}
	err = d.signal(t, syscall.SIGTERM)
	stopped = true
	logs := d.logs.String()
	if err != nil {
		t.Errorf("exit after SIGTERM with a client in DATA: %v, want 0\n%s", err, logs)
	}
	if r, err := c.ReadReply(); err == nil && r.Code == 250 {
		t.Errorf("the cut-off letter got %s", r)
	}

	lines := jsonLines(t, logs)
	for _, want := range []struct {
		fields map[string]string
		level  string
	}{
		{map[string]string{"event": "rejected", "session": bareLF, "class": "bare_line_ending"}, "WARN"},
		{map[string]string{"msg": "recipient refused: not a campaign address", "session": relay}, "INFO"},
		{map[string]string{"event": "held", "letter": held.LetterID()}, "INFO"},
		{map[string]string{"msg": "shutting down"}, "INFO"},
	} {
		got := find(lines, want.fields)
		if len(got) != 1 || got[0]["level"] != want.level {
			t.Errorf("log lines with %v: %v; want one at %s", want.fields, got, want.level)
		}
	}
	if l := find(lines, map[string]string{"event": "held"}); len(l) == 1 && l[0]["session"] == nil {
		t.Errorf("held event without its session: %v", l[0])
	}
	if got := find(lines, map[string]string{"level": "ERROR"}); len(got) != 0 {
		t.Errorf("a clean shutdown logged errors: %v", got)
	}
	if !strings.Contains(logs, "cut off") {
		t.Errorf("the log does not say a session was cut off:\n%s", logs)
	}
	// The half letter was neither stored nor counted.
	if got := find(lines, map[string]string{"sender": "slow@example.org"}); len(got) != 0 {
		t.Errorf("the cut-off letter left events: %v", got)
	}
}
