package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/store"
)

// failpointEnv names the failpoint a binary built with -tags crashtest
// stops at (store/failpoint_crashtest.go).
const failpointEnv = "PETITIOND_FAILPOINT"

// TestEraseCrash runs the real binary, built with failpoints, and SIGKILLs
// it in the middle of an erasure: once right after the erasure committed,
// before the batch message's file was removed, and once after the wipe of
// the free pages began, before it zeroed a page. Each time the files still
// hold the supporter when the process dies; the store must then open with
// every letter that was answered 250 and nothing of what was erased.
func TestEraseCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	bin := buildBinary(t, "crashtest")
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	key, err := keyserver.NewKey("ed.test", "s", "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	ks.SetKey(key)
	for _, fp := range []string{"erase-committed", "wipe"} {
		t.Run(fp, func(t *testing.T) { crashDuringErase(t, bin, ks.Addr, key, fp) })
	}
}

func crashDuringErase(t *testing.T, bin, dnsAddr string, key *keyserver.Key, fp string) {
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	smtpAddr, adminAddr := freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "petitiond.toml")
	writeBinaryConfig(t, cfgPath, func(c *config.Config) {
		crashCampaign(c, smtpAddr, dnsAddr, sink.Addr, 10)
		c.Store.Dir = dataDir
		c.Admin.Listen = adminAddr
	})
	send := func(from string, timeout time.Duration) (string, error) {
		msg := testenv.Letter(from, testenv.CampaignAddr, "Libertad", "Liberen a los presos de la revuelta. "+from)
		if strings.Contains(from, supporterName) {
			msg = testenv.Letter(from, testenv.CampaignAddr, "Libertad, "+supporterName, supporterText)
		}
		signed, err := key.Sign(msg, keyserver.SignOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := smtpclient.SendMail(smtpAddr, "client.test", "bounce@client.test", []string{testenv.CampaignAddr}, signed, timeout)
		if err != nil {
			return "", err
		}
		if r.LetterID() == "" {
			return "", fmt.Errorf("reply %s", r.String())
		}
		return r.LetterID(), nil
	}

	t.Setenv(failpointEnv, fp)
	d := startDaemon(t, bin, cfgPath, smtpAddr)
	acked := map[string]string{} // letter ID → sender
	for i := range 20 {
		from := fmt.Sprintf("supporter%02d@ed.test", i)
		id, err := send(from, 10*time.Second)
		if err != nil {
			t.Fatalf("letter from %s: %v", from, err)
		}
		acked[id] = from
		if i == 10 {
			id, err := send(supporterName+" <"+supporterAddr+">", 10*time.Second)
			if err != nil {
				t.Fatalf("the supporter's letter: %v", err)
			}
			acked[id] = supporterAddr
		}
	}
	token, err := admin.ReadTokenFile(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := admin.NewClient("http://"+adminAddr, token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	testenv.WaitFor(t, "every batch delivered", 20*time.Second, func() bool {
		st, err := c.Stats(ctx)
		return err == nil && st.Pending == 0 && st.Deliveries.Delivered == 2*st.Batches && st.Batches > 0
	})

	go func() { _, _ = c.Erase(ctx, strings.ToUpper(supporterAddr)) }()
	if err := wait.Until(ctx, 20*time.Second, func() (bool, error) {
		return strings.Contains(d.logText(), "failpoint "+fp+" reached"), nil
	}); err != nil {
		d.signal(t, syscall.SIGKILL)
		t.Fatalf("the erasure never reached failpoint %s: %v\n%s", fp, err, d.logs)
	}
	// A letter arriving now: answered 250 only if the erasure does not
	// hold the writer (it does during the wipe); if it is, it must survive.
	if id, err := send("late@ed.test", 2*time.Second); err == nil {
		acked[id] = "late@ed.test"
	}
	d.signal(t, syscall.SIGKILL)
	if found := supporterTraces(t, dataDir, supporterAddr, supporterName, supporterText); len(found) == 0 {
		t.Fatalf("when killed at %s the files no longer held the supporter: the test would prove nothing", fp)
	}

	t.Setenv(failpointEnv, "")
	d = startDaemon(t, bin, cfgPath, smtpAddr)
	if found := supporterTraces(t, dataDir, supporterAddr, supporterName, supporterText); len(found) > 0 {
		t.Errorf("after restarting, files under store.dir still hold: %v", found)
	}
	look, err := c.Lookup(ctx, supporterAddr)
	if err != nil {
		t.Fatal(err)
	}
	if len(look.Letters) != 1 || look.Letters[0].State != "erased" {
		t.Errorf("lookup after restarting: %+v", look)
	}
	var buf strings.Builder
	if err := c.BatchMessage(ctx, fmt.Sprint(look.Letters[0].Batch), &buf); err == nil || !strings.Contains(err.Error(), "erased") {
		t.Errorf("export of the erased batch after restarting: %v", err)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, d.logs)
	}

	st, err := store.Open(dataDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for id, from := range acked {
		l, err := st.Letter(id)
		switch {
		case err != nil:
			t.Errorf("letter %s from %s, answered 250, is not in the store: %v", id, from, err)
		case from == supporterAddr && (!l.Erased || l.From != ""):
			t.Errorf("the erased letter %s: %+v", id, l)
		case from != supporterAddr && l.From != from:
			t.Errorf("letter %s: from %q, want %q", id, l.From, from)
		}
	}
	stats, err := st.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.Counted != uint64(len(acked)) {
		t.Errorf("counted %d, want %d: every letter answered 250 (the erased one stays counted)", stats.Counted, len(acked))
	}
	if found := supporterTraces(t, dataDir, supporterAddr, supporterName, supporterText); len(found) > 0 {
		t.Errorf("files under store.dir hold: %v", found)
	}
}

// logText is what the daemon wrote to stderr so far.
func (d *daemonProc) logText() string {
	return d.logs.String()
}
