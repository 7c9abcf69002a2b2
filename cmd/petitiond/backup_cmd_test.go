package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/internal/damage"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/store"
)

// storeConfig writes a config whose store is dir, SMTP on smtpAddr, and no
// admin listener.
func storeConfig(t *testing.T, dir, smtpAddr string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "petitiond.toml")
	cfg := fmt.Sprintf(`[campaign]
name = "Libertad"
addresses = ["libertad@localhost"]
recipients = ["familias@localhost", "copias@localhost"]
from = "relay@localhost"
[smtp]
listen = [%q]
hostname = "localhost"
[delivery]
mode = "maildir"
[store]
dir = %q
[admin]
listen = ""
`, smtpAddr, dir)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// queuedID is the letter ID of a 250 reply.
func queuedID(t *testing.T, r smtpclient.Reply) string {
	t.Helper()
	_, id, ok := strings.Cut(r.Text, "queued as ")
	if r.Code != 250 || !ok {
		t.Fatalf("letter not queued: %v", r)
	}
	return strings.Fields(id)[0]
}

// TestBackupAndRestore: `backup` copies the running daemon's store (and a
// batch's message) to a file, `restore -check` finds it sound, `restore
// -in` puts it back after the daemon stopped, and the daemon then goes on
// with letter IDs after every one it ever answered.
func TestBackupAndRestore(t *testing.T) {
	e := startAdm(t, nil)
	first := e.Queued(e.Signed("ed.test", "ana@ed.test"))
	e.Queued(e.Signed("ed.test", "bo@ed.test"))
	var st store.Stats
	testenv.WaitFor(t, "both letters batched", 10*time.Second, func() bool {
		var err error
		st, err = e.Store().Stats()
		return err == nil && st.Counted == 2 && st.Pending == 0
	})
	dir := t.TempDir()
	out := filepath.Join(dir, "petitiond.tar")
	batches := fmt.Sprintf("%d batches with %[1]d messages", st.Batches)
	for range 2 { // the second replaces the first
		got := cliOK(t, "backup", "-admin", e.AdminURL(), "-out", out)
		if !strings.Contains(got, "letters up to L00000002") || !strings.Contains(got, batches) {
			t.Errorf("backup said: %s, want letters up to L00000002 and %s", got, batches)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("backup left files beside its output: %v", entries)
	}
	if got := cliOK(t, "restore", "-check", "-in", out); !strings.Contains(got, "sound backup") {
		t.Errorf("restore -check said: %s", got)
	}
	later := e.Queued(e.Signed("ed.test", "cy@ed.test"))
	e.Stop()

	cfg := storeConfig(t, e.Config.Store.Dir, "127.0.0.1:0")
	got := cliOK(t, "restore", "-config", cfg, "-in", out)
	for _, want := range []string{"restored " + out, "kept as", "up to letter " + later, "start petitiond again"} {
		if !strings.Contains(got, want) {
			t.Errorf("restore output lacks %q:\n%s", want, got)
		}
	}
	e.Start()
	if _, err := e.Store().Letter(first); err != nil {
		t.Errorf("letter %s not in the restored store: %v", first, err)
	}
	if _, err := e.Store().Letter(later); err == nil {
		t.Errorf("letter %s, answered after the backup, is in the restored store", later)
	}
	if _, err := e.Store().BatchMessage(1); err != nil {
		t.Errorf("batch 1's message after the restore: %v", err)
	}
	if id := e.Queued(e.Signed("ed.test", "dan@ed.test")); id <= later {
		t.Errorf("first letter after the restore is %s, want after %s", id, later)
	}
}

// TestBackupUsage: -out is required; a daemon that is not running is
// reported, and no file is left behind.
func TestBackupUsage(t *testing.T) {
	if code, _, errs := cli(context.Background(), "backup"); code != 2 || !strings.Contains(errs, "-out") {
		t.Errorf("backup without -out: exit %d: %s", code, errs)
	}
	out := filepath.Join(t.TempDir(), "b.tar")
	code, _, errs := cli(context.Background(), "backup", "-admin", "http://"+freePort(t), "-out", out)
	if code != 1 || !strings.Contains(errs, "not running") {
		t.Errorf("backup of no daemon: exit %d: %s", code, errs)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("a failed backup left %v", entries)
	}
}

// damagedStore makes a store with counted and held letters in a new
// directory, closes it, and damages its file with breakIt.
func damagedStore(t *testing.T, breakIt func(string) error) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		from := fmt.Sprintf("s%d@example.org", i)
		nl := store.NewLetter{From: from, DedupAddress: from, RemoteIP: "192.0.2.1",
			Verdict: store.Verdict{Kind: store.VerdictDKIM, Domain: "example.org"},
			Body:    fmt.Appendf(nil, "From: <%s>\r\nSubject: Libertad\r\n\r\nLetter %d.\r\n", from, i)}
		if i%4 == 0 {
			nl.Verdict, nl.Hold = store.Verdict{Kind: store.VerdictUnverified}, store.HeldUnverified
		}
		if _, err := s.Accept(context.Background(), nl); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := breakIt(filepath.Join(dir, store.FileName)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveExit runs `petitiond serve` on cfg until it exits (it must, within
// a bound) and returns its exit code and stderr.
func serveExit(t *testing.T, bin, cfg string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "-config", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("petitiond serve kept running on a damaged store:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// assertCleanRefusal checks a refusal's log: the file and the way out are
// named, and nothing crashed.
func assertCleanRefusal(t *testing.T, code int, logs, path string, say ...string) {
	t.Helper()
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, bad := range []string{"panic", "goroutine ", "SIGSEGV", "SIGBUS", "fatal error"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the log shows a crash (%q):\n%s", bad, logs)
		}
	}
	for _, want := range append([]string{path, "restore"}, say...) {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q:\n%s", want, logs)
		}
	}
}

// TestServeRefusesDamagedStore: on each kind of damage `petitiond serve`
// exits 1 with an error naming the file and the way back, without a crash
// (so Restart=on-failure never loops through panics), and leaves the file
// and its dedup secret as they were.
func TestServeRefusesDamagedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := buildBinary(t)
	for _, tc := range []struct {
		name   string
		damage func(string) error
		say    string
	}{
		{"empty", damage.Empty, "empty"},
		{"half", damage.Half, "cut short"},
		{"flipped meta page", damage.FlipNewestMeta, "rolled back"},
		{"flipped data page", damage.FlipRootPage, "damaged"},
		// bbolt pages carry no checksums: a flip in a letter's bytes or
		// in unused space leaves the structure sound and shows nowhere.
		// 512 flips in a file of about 25 pages hit its structure
		// whatever the layout (which varies with the dedup secret and
		// bbolt's choice of free pages), so the outcome is the same at
		// every run.
		{"random flips", func(p string) error { return damage.FlipRandom(p, 20191018, 512) }, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := damagedStore(t, tc.damage)
			path := filepath.Join(dir, store.FileName)
			before := mustRead(t, path)
			code, logs := serveExit(t, bin, storeConfig(t, dir, freePort(t)))
			assertCleanRefusal(t, code, logs, path, tc.say)
			if !bytes.Equal(mustRead(t, path), before) {
				t.Error("petitiond changed the damaged file")
			}
		})
	}
}

// TestServeStopsOnDamageWhileRunning: a page damaged under the running
// daemon fails the next letter with 451 (never a 250), and the daemon
// exits 1 with the error instead of crashing; the next start refuses the
// file.
func TestServeStopsOnDamageWhileRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the real binary")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	smtpAddr := freePort(t)
	cfg := storeConfig(t, dir, smtpAddr)
	d := startDaemon(t, bin, cfg, smtpAddr)
	defer d.cmd.Process.Kill()
	send := func(from string) smtpclient.Reply {
		msg := fmt.Sprintf("From: <%s>\r\nTo: <libertad@localhost>\r\nSubject: Libertad\r\n\r\nFree them.\r\n", from)
		r, err := smtpclient.SendMail(smtpAddr, "client.test", from, []string{"libertad@localhost"}, []byte(msg), 10*time.Second)
		if err != nil {
			t.Fatalf("send: %v\n%s", err, d.logs)
		}
		return r
	}
	queuedID(t, send("ana@example.org"))
	path := filepath.Join(dir, store.FileName)
	if err := damage.FlipRootPage(path); err != nil {
		t.Fatal(err)
	}
	if r := send("bo@example.org"); r.Code != 451 {
		t.Errorf("letter after the damage: %v, want 451", r)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Signal(syscall.SIGTERM)
		<-done
		t.Fatalf("the daemon kept running on a damaged store:\n%s", d.logs)
	}
	assertCleanRefusal(t, d.cmd.ProcessState.ExitCode(), d.logs.String(), path, "damaged")
	before := mustRead(t, path)
	code, logs := serveExit(t, bin, cfg)
	assertCleanRefusal(t, code, logs, path, "damaged")
	if !bytes.Equal(mustRead(t, path), before) {
		t.Error("the next start changed the damaged file")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
