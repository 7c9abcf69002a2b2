package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/wait"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/store"
)

// mxCrash is a primary running in the test and a secondary that is the
// real binary, killed at will (SPEC 12).
type mxCrash struct {
	primary   *testenv.Test
	bin       string
	cfgPath   string
	dataDir   string
	smtpAddr  string
	adminAddr string
}

// freePortOn is a free TCP address on the loopback address ip.
func freePortOn(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newMXCrash starts the primary on 127.0.0.2 and writes the secondary's
// config: 127.0.0.3, forwarding there, retrying every few hundred
// milliseconds.
func newMXCrash(t *testing.T, bin string) *mxCrash {
	t.Helper()
	primaryAddr := freePortOn(t, "127.0.0.2")
	p := testenv.Prepare(t, func(c *config.Config) {
		c.SMTP.Listen = []string{primaryAddr}
		c.SMTP.MaxPerIP = 100
		c.Batch.MaxLetters = 10
		c.Batch.MaxWait = config.Duration{Duration: 200 * time.Millisecond}
	})
	p.Start()
	dir := t.TempDir()
	m := &mxCrash{primary: p, bin: bin, cfgPath: filepath.Join(dir, "petitiond.toml"), dataDir: filepath.Join(dir, "data"),
		smtpAddr: freePortOn(t, "127.0.0.3"), adminAddr: freePortOn(t, "127.0.0.3")}
	writeBinaryConfig(t, m.cfgPath, func(c *config.Config) {
		c.Campaign.Name = "Crash test"
		c.SMTP.Listen = []string{m.smtpAddr}
		c.SMTP.Hostname = testenv.SecondaryHostname
		c.SMTP.MaxPerIP = 100
		c.Verify.DNSResolver = p.DNS.Addr
		c.Verify.DNSTimeout = config.Duration{Duration: 2 * time.Second}
		c.Delivery.RetryMin = config.Duration{Duration: 100 * time.Millisecond}
		c.Delivery.RetryMax = config.Duration{Duration: 300 * time.Millisecond}
		c.Store.Dir = m.dataDir
		c.Admin.Listen = m.adminAddr
		c.Secondary.Primary = primaryAddr
	})
	return m
}

func (m *mxCrash) start(t *testing.T) *daemonProc {
	t.Helper()
	return startDaemon(t, m.bin, m.cfgPath, m.smtpAddr)
}

// letter is a signed letter from from.
func (m *mxCrash) letter(from string) []byte {
	return m.primary.Signed("ed.test", from)
}

// send gives the secondary one letter and returns its reply; err is a
// session that broke (the daemon killed) or was refused before MAIL.
func (m *mxCrash) send(msg []byte) (smtpclient.Reply, error) {
	return smtpclient.SendMail(m.smtpAddr, "client.test", "bounce@client.test", []string{testenv.CampaignAddr}, msg, 5*time.Second)
}

// secondaryStats is the running secondary's tally, through its admin API.
func (m *mxCrash) secondaryStats(ctx context.Context) (admin.Stats, error) {
	token, err := admin.ReadTokenFile(m.dataDir)
	if err != nil {
		return admin.Stats{}, err
	}
	c, err := admin.NewClient("http://"+m.adminAddr, token)
	if err != nil {
		return admin.Stats{}, err
	}
	return c.Stats(ctx)
}

// checkPrimary: every sender counted once on the primary, each counted
// letter in exactly one batch.
func (m *mxCrash) checkPrimary(t *testing.T, senders []string) {
	t.Helper()
	st := m.primary.Store()
	m.primary.WaitStats("every sender counted and batched", func(s store.Stats) bool {
		return s.Counted >= uint64(len(senders)) && s.Pending == 0
	})
	ls, err := st.ScanLetters(store.LetterScan{})
	if err != nil {
		t.Fatal(err)
	}
	counted := map[string]int{}
	for _, l := range ls {
		if l.State == store.StateBatched || l.State == store.StatePending {
			counted[l.From]++
		}
	}
	for _, s := range senders {
		if counted[s] != 1 {
			t.Errorf("%s counted %d times on the primary, want once", s, counted[s])
		}
	}
	if stats, _ := st.Stats(); stats.Counted != uint64(len(senders)) {
		t.Errorf("primary counted %d, want %d", stats.Counted, len(senders))
	}
	batchOf(t, st)
}

// checkSecondaryEmpty opens the stopped secondary's store: nothing waits,
// nothing is held, every letter it took was forwarded.
func (m *mxCrash) checkSecondaryEmpty(t *testing.T, atLeast int) {
	t.Helper()
	st, err := store.Open(m.dataDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stats, err := st.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.Forward.Waiting != 0 || stats.Held != 0 || stats.Counted != 0 || stats.Forward.Forwarded < uint64(atLeast) {
		t.Errorf("secondary's tally %+v: want nothing waiting, held or counted, at least %d forwarded", stats, atLeast)
	}
	if ls, err := st.ScanLetters(store.LetterScan{}); err != nil || len(ls) != 0 {
		t.Errorf("secondary still holds %d letters (%v)", len(ls), err)
	}
}

// TestSecondaryCrash runs the secondary as the real binary and SIGKILLs
// it while it forwards: once at the worst moment (the primary answered 250,
// the secondary has not yet recorded it), then at random moments under
// load. Nothing answered 250 is lost, and the primary counts each sender
// once: a letter forwarded twice is a duplicate there.
func TestSecondaryCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	bin := buildBinary(t, "crashtest")
	t.Run("after the primary's 250", func(t *testing.T) { crashAfterPrimaryTook(t, bin) })
	t.Run("at random while forwarding", func(t *testing.T) { crashWhileForwarding(t, bin) })
}

func crashAfterPrimaryTook(t *testing.T, bin string) {
	m := newMXCrash(t, bin)
	t.Setenv(failpointEnv, "forwarded")
	d := m.start(t)
	if r, err := m.send(m.letter("Ana <ana@ed.test>")); err != nil || !strings.HasPrefix(r.LetterID(), "S") {
		d.signal(t, syscall.SIGKILL)
		t.Fatalf("reply %v, %v; want queued as S…", r, err)
	}
	if err := wait.Until(context.Background(), 20*time.Second, func() (bool, error) {
		return strings.Contains(d.logText(), "failpoint forwarded reached"), nil
	}); err != nil {
		d.signal(t, syscall.SIGKILL)
		t.Fatalf("never reached the failpoint: %v\n%s", err, d.logs)
	}
	m.primary.WaitStats("the primary to count the letter", func(s store.Stats) bool { return s.Counted == 1 })
	d.signal(t, syscall.SIGKILL)

	t.Setenv(failpointEnv, "")
	d = m.start(t)
	// Sent again after the restart's backoff: a duplicate on the primary.
	m.primary.WaitStats("the letter sent again", func(s store.Stats) bool { return s.Duplicates == 1 })
	if err := wait.Until(context.Background(), 20*time.Second, func() (bool, error) {
		st, err := m.secondaryStats(context.Background())
		return err == nil && st.Forwarding != nil && st.Forwarding.Waiting == 0 && st.Forwarding.Forwarded == 1, nil
	}); err != nil {
		t.Errorf("the secondary's stats never showed the letter forwarded: %v", err)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, d.logs)
	}
	m.checkSecondaryEmpty(t, 1)
	m.checkPrimary(t, []string{"ana@ed.test"})
}

func crashWhileForwarding(t *testing.T, bin string) {
	m := newMXCrash(t, bin)
	const workers, perWorker = 4, 30
	letters := make([][][]byte, workers)
	var senders []string
	for w := range letters {
		for i := range perWorker {
			from := fmt.Sprintf("w%di%d@ed.test", w, i)
			senders = append(senders, from)
			letters[w] = append(letters[w], m.letter(from))
		}
	}
	var mu sync.Mutex
	acked := 0
	next := make([]int, workers)
	send := func(ctx context.Context, w int) {
		for next[w] < perWorker && ctx.Err() == nil {
			r, err := m.send(letters[w][next[w]])
			if err != nil || r.Code/100 == 4 {
				continue // killed, or asked to retry: sent again
			}
			if !strings.HasPrefix(r.LetterID(), "S") {
				t.Errorf("letter w%di%d: %v; want queued as S…", w, next[w], r)
			}
			next[w]++
			mu.Lock()
			acked++
			mu.Unlock()
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 3 {
		d := m.start(t)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() { defer wg.Done(); send(ctx, w) }()
		}
		mu.Lock()
		target := acked + 10 + rng.IntN(20)
		mu.Unlock()
		_ = wait.Until(context.Background(), 20*time.Second, func() (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			return acked >= target, nil
		})
		d.signal(t, syscall.SIGKILL)
		cancel()
		wg.Wait()
		primary, _ := m.primary.Store().Stats()
		t.Logf("round %d: killed after %d letters acked; the primary has counted %d (%d duplicates)",
			round, acked, primary.Counted, primary.Duplicates)
	}
	d := m.start(t)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); send(context.Background(), w) }()
	}
	wg.Wait()
	if err := wait.Until(context.Background(), 30*time.Second, func() (bool, error) {
		st, err := m.secondaryStats(context.Background())
		return err == nil && st.Forwarding != nil && st.Forwarding.Waiting == 0, nil
	}); err != nil {
		t.Errorf("the secondary's queue never emptied: %v", err)
	}
	if err := d.signal(t, syscall.SIGTERM); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, d.logs)
	}
	m.checkSecondaryEmpty(t, len(senders))
	m.checkPrimary(t, senders)
	primary, _ := m.primary.Store().Stats()
	t.Logf("%d letters over 3 SIGKILLs: the primary counted %d, with %d duplicates (letters forwarded again, or sent again by a client)",
		len(senders), primary.Counted, primary.Duplicates)
}
