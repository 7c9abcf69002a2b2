package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/syncbuf"
)

// TestServeEmbeddedDefault runs the built binary with no config at all in an
// empty directory: it must start on the embedded default (127.0.0.1:2525)
// and accept a letter, keeping it under ./petitiond-data.
func TestServeEmbeddedDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "serve")
	cmd.Dir = dir
	var logs syncbuf.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, logs: &logs}
	defer func() {
		if err := d.signal(t, syscall.SIGTERM); err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	}()
	c, err := dialWhenUp("127.0.0.1:2525", 20*time.Second)
	if err != nil {
		t.Fatalf("embedded default did not listen on 127.0.0.1:2525: %v\n%s", err, logs.String())
	}
	defer c.Quit()
	c.Hello("client.test")
	msg := "From: Ana <ana@example.org>\r\nTo: <libertad@localhost>\r\nSubject: Libertad\r\n\r\nFree them.\r\n"
	r, err := c.Send("ana@example.org", []string{"libertad@localhost"}, []byte(msg))
	if err != nil || r.Code != 250 || !strings.Contains(r.Text, "queued as L") {
		t.Fatalf("letter to the embedded default: %v %v", r, err)
	}
	c.Cmd("MAIL FROM:<ana@example.org>")
	if r, _ = c.Cmd("RCPT TO:<someone@elsewhere.test>"); r.Code != 550 {
		t.Errorf("relay attempt: %v, want 550", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "petitiond-data", "petitiond.db")); err != nil {
		t.Errorf("store not under ./petitiond-data: %v", err)
	}
}

// TestCheckConfig: a good file prints the effective config and exits 0; a
// file with several problems lists every one with its line and exits 1.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join("..", "..", "deploy", "petitiond.toml")
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"check-config", "-config", good}, &out, &errOut); code != 0 {
		t.Fatalf("deploy example: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `addresses = ["libertad@campaign.example"]`) {
		t.Errorf("effective config not printed:\n%s", out.String())
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte(`[campaign]
name = "x"
addresses = []
recipients = ["not an address"]
from = "relay@campaign.test"
[smtp]
timeout = "soon"
colour = "red"
[verify]
unverified = "maybe"
`), 0o600)
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"check-config", "-config", bad}, &out, &errOut); code != 1 {
		t.Fatalf("bad config: exit %d, want 1", code)
	}
	for _, want := range []string{"campaign.addresses", "campaign.recipients", "smtp.timeout", "smtp.colour", "verify.unverified", "bad.toml:3", "bad.toml:7", "bad.toml:8"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("problems do not mention %q:\n%s", want, errOut.String())
		}
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"check-config", "-h"}, &out, &errOut); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}
