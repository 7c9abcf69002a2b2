package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/syncbuf"
)

// TestSIGHUPIsLoggedAndIgnored: SIGHUP, which would end a process by
// default, leaves the real binary serving, with a log line that says it
// reloads nothing; SIGTERM then stops it cleanly.
func TestSIGHUPIsLoggedAndIgnored(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := writeServeConfig(t, dir, smtpAddr, "")
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	logs := &syncbuf.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	dial := func() error {
		c, err := smtpclient.Dial(smtpAddr, time.Second)
		if err == nil {
			c.Quit()
		}
		return err
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("daemon exited (%v) while waiting for %s:\n%s", err, what, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s:\n%s", what, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitUntil("the SMTP listener", func() bool { return dial() == nil })

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil("the SIGHUP log line", func() bool { return strings.Contains(logs.String(), "SIGHUP ignored") })
	if err := dial(); err != nil {
		t.Fatalf("SMTP after SIGHUP: %v\n%s", err, logs.String())
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("daemon did not exit on SIGTERM")
	}
	exited <- nil // for the deferred Kill
}

// writeServeConfig writes a config for the real binary in dir: the test
// campaign, SMTP on smtpAddr, Maildir delivery, the store in dir/data, no
// admin listener; extra (whole tables) is appended. It returns its path.
func writeServeConfig(t *testing.T, dir, smtpAddr, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "petitiond.toml")
	cfg := fmt.Sprintf(`[campaign]
name = "Libertad"
addresses = ["libertad@campaign.test"]
recipients = ["familias@ofapp.test"]
from = "relay@campaign.test"
[smtp]
listen = [%q]
[delivery]
mode = "maildir"
[store]
dir = %q
[admin]
listen = ""
%s`, smtpAddr, filepath.Join(dir, "data"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
