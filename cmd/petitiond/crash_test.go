package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/batchmime"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/sinkserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/syncbuf"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/store"
)

// buildBinary builds petitiond into the test's temp dir (again at every
// call), with build tags if given (crashtest: failpoints, store/failpoint*.go).
func buildBinary(t *testing.T, tags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "petitiond")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "build", "-tags", strings.Join(tags, ","), "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// daemonProc is the built binary running as a child process.
type daemonProc struct {
	cmd  *exec.Cmd
	logs *syncbuf.Buffer
}

func startDaemon(t *testing.T, bin, cfgPath, smtpAddr string) *daemonProc {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	logs := &syncbuf.Buffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := dialWhenUp(smtpAddr, 20*time.Second)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("daemon did not come up: %v\n%s", err, logs)
	}
	c.Quit()
	return &daemonProc{cmd: cmd, logs: logs}
}

// dialWhenUp dials addr until a daemon starting there answers, and returns
// the session, or the last dial error once timeout passed.
func dialWhenUp(addr string, timeout time.Duration) (*smtpclient.Conn, error) {
	var c *smtpclient.Conn
	var last error
	err := wait.Until(context.Background(), timeout, func() (bool, error) {
		c, last = smtpclient.Dial(addr, time.Second)
		return last == nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, last)
	}
	return c, nil
}

// signal stops the daemon with sig and returns how it exited.
func (d *daemonProc) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	_ = d.cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(40 * time.Second):
		d.cmd.Process.Kill()
		<-done
		t.Fatalf("daemon did not exit on %v", sig)
		return nil
	}
}

// TestCrashSafety runs the real binary under concurrent load, kills it with
// SIGKILL at random moments (while letters arrive and while batches are
// being delivered), restarts it, and finally checks SPEC 4's promise: every
// letter that got a 250 is in the store once, in exactly one batch, and
// that batch reached both recipients. Whole-batch resends (same Message-ID)
// are allowed by SPEC 7 and reported.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	bin := buildBinary(t)
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	var keys []*keyserver.Key
	for _, d := range []string{"uno.test", "dos.test", "tres.test"} {
		k, err := keyserver.NewKey(d, "s", "ed25519")
		if err != nil {
			t.Fatal(err)
		}
		ks.SetKey(k)
		keys = append(keys, k)
	}
	sink, err := sinkserver.Start(sinkserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()

	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := filepath.Join(dir, "petitiond.toml")
	writeBinaryConfig(t, cfgPath, func(c *config.Config) {
		crashCampaign(c, smtpAddr, ks.Addr, sink.Addr, 7)
		c.SMTP.MaxPerIP = 100
		c.Store.Dir = filepath.Join(dir, "data")
		c.Admin.Listen = ""
	})

	const workers, perWorker = 8, 150
	// Pre-sign every letter so the load is steady.
	letters := make([][][]byte, workers)
	for w := range letters {
		for i := 0; i < perWorker; i++ {
			k := keys[(w+i)%len(keys)]
			from := fmt.Sprintf("w%di%d@%s", w, i, k.Domain)
			msg := fmt.Sprintf("From: <%s>\r\nTo: <libertad@campaign.test>\r\nSubject: libertad\r\n"+
				"Message-ID: <%s>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nLetter %d of worker %d.\r\n", from, from, i, w)
			signed, err := k.Sign([]byte(msg), keyserver.SignOptions{})
			if err != nil {
				t.Fatal(err)
			}
			letters[w] = append(letters[w], signed)
		}
	}

	var mu sync.Mutex
	acked := map[string]string{} // letter ID -> sender (Message-ID)
	next := make([]int, workers)
	send := func(ctx context.Context, w int) {
		for next[w] < perWorker && ctx.Err() == nil {
			c, err := smtpclient.Dial(smtpAddr, 5*time.Second)
			if err != nil {
				return
			}
			if r, err := c.Hello("load.test"); err != nil || r.Code != 250 {
				c.Close() // refused (shutting down): dial again
				continue
			}
			for next[w] < perWorker && ctx.Err() == nil {
				i := next[w]
				r, err := c.Send("bounce@load.test", []string{"libertad@campaign.test"}, letters[w][i])
				if err != nil {
					break // killed mid-transaction: not acked, will be resent
				}
				if r.Code == 250 {
					if _, id, ok := strings.Cut(r.Text, "queued as "); ok {
						id = strings.Fields(id)[0]
						mu.Lock()
						acked[id] = fmt.Sprintf("w%di%d", w, i)
						mu.Unlock()
					} else if !strings.Contains(r.Text, "already counted") {
						t.Errorf("unexpected 250: %q", r.Text)
					}
					next[w]++
				} else if r.Code/100 != 4 {
					t.Errorf("letter w%di%d: %v", w, i, r)
					next[w]++
				}
				if _, err := c.Cmd("RSET"); err != nil {
					break
				}
			}
			c.Close()
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 5; round++ {
		d := startDaemon(t, bin, cfgPath, smtpAddr)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() { defer wg.Done(); send(ctx, w) }()
		}
		// Kill in the middle of the load: after a random number of further
		// acks, while sessions are mid-transaction and batches are going out.
		mu.Lock()
		target := len(acked) + 100 + rng.IntN(120)
		mu.Unlock()
		// Kill at the target, or after 20s of slow progress: either way in
		// the middle of the load.
		_ = wait.Until(context.Background(), 20*time.Second, func() (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= target, nil
		})
		sig := syscall.SIGKILL
		if round == 2 {
			// One graceful stop among the crashes: sessions and deliveries
			// in flight finish or are abandoned, and the exit is clean.
			sig = syscall.SIGTERM
		}
		if err := d.signal(t, sig); sig == syscall.SIGTERM && err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, d.logs)
		}
		cancel()
		wg.Wait()
		mu.Lock()
		t.Logf("round %d: %v after %d letters acked in all, %d batch copies received", round, sig, len(acked), len(sink.Messages()))
		mu.Unlock()
	}
	// Last run: send the rest, let every batch go out, then stop cleanly.
	d := startDaemon(t, bin, cfgPath, smtpAddr)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() { defer wg.Done(); send(context.Background(), w) }()
	}
	wg.Wait()
	for w := range next {
		if next[w] != perWorker {
			t.Fatalf("worker %d stopped at %d", w, next[w])
		}
	}

	// Every acked letter must reach both recipients; poll the sink.
	perRcpt := func() (map[string]map[string]string, map[string]map[string]int) {
		letterBatch := map[string]map[string]string{} // rcpt -> letter Message-ID -> batch Message-ID
		copies := map[string]map[string]int{}         // rcpt -> batch Message-ID -> copies
		for _, m := range sink.Messages() {
			rcpt := m.To[0]
			if letterBatch[rcpt] == nil {
				letterBatch[rcpt], copies[rcpt] = map[string]string{}, map[string]int{}
			}
			bid, ids := batchLetters(t, m.Data)
			copies[rcpt][bid]++
			for _, id := range ids {
				if prev, ok := letterBatch[rcpt][id]; ok && prev != bid {
					t.Errorf("letter %s in two batches (%s and %s) at %s", id, prev, bid, rcpt)
				}
				letterBatch[rcpt][id] = bid
			}
		}
		return letterBatch, copies
	}
	missing := 0
	err = wait.Until(context.Background(), 60*time.Second, func() (bool, error) {
		lb, _ := perRcpt()
		missing = 0
		mu.Lock()
		defer mu.Unlock()
		for _, sender := range acked {
			for _, rcpt := range []string{"familias@ofapp.test", "copias@sr.test"} {
				if _, ok := lb[rcpt][sender+"@"+domainOfSender(sender, keys)]; !ok {
					missing++
				}
			}
		}
		return missing == 0, nil
	})
	if err != nil {
		t.Fatalf("%d acked letter copies never delivered (%d letters acked, sink got %d messages): %v\n%s",
			missing, len(acked), len(sink.Messages()), err, d.logs)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, d.logs)
	}

	_, copies := perRcpt()
	resends := 0
	for rcpt, bs := range copies {
		for bid, n := range bs {
			if n > 1 {
				resends += n - 1
				t.Logf("batch %s sent %d times to %s (crash between the remote 250 and the state write)", bid, n, rcpt)
			}
		}
	}
	t.Logf("%d letters acked over 4 SIGKILLs and a SIGTERM; %d whole-batch resends", len(acked), resends)

	// The store: each acked ID present, batched, in exactly one batch.
	st, err := store.Open(filepath.Join(dir, "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	inBatch := batchOf(t, st)
	for id, sender := range acked {
		l, err := st.Letter(id)
		if err != nil {
			t.Errorf("acked letter %s (%s) not in the store: %v", id, sender, err)
			continue
		}
		if l.State != store.StateBatched || inBatch[id] != l.Batch {
			t.Errorf("acked letter %s: state %s batch %d (index says %d)", id, l.State, l.Batch, inBatch[id])
		}
	}
	stats, _ := st.Stats()
	if stats.Counted != uint64(workers*perWorker) {
		t.Errorf("counted %d, want %d (each sender once)", stats.Counted, workers*perWorker)
	}
}

func domainOfSender(sender string, keys []*keyserver.Key) string {
	var w, i int
	fmt.Sscanf(sender, "w%di%d", &w, &i)
	return keys[(w+i)%len(keys)].Domain
}

// batchLetters returns a batch's Message-ID and its letters' Message-IDs.
func batchLetters(t *testing.T, msg []byte) (string, []string) {
	t.Helper()
	b, err := batchmime.Read(msg)
	if err != nil {
		t.Fatalf("batch does not parse: %v", err)
	}
	var ids []string
	for _, l := range b.Letters {
		id, err := l.MessageID()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return b.Header.Get("Message-Id"), ids
}
