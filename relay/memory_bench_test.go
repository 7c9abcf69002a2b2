package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/smtpclient"
	"github.com/petitiond/petitiond/internal/testenv"
	"github.com/petitiond/petitiond/internal/wait"
)

// BenchmarkInFlightMemory measures the daemon's peak resident memory while
// many sessions send large, header-heavy letters at once (issue 9 point 5):
// it builds petitiond, runs it as its own process (so the client's memory
// is not counted), sends -letters letters of about 1 MB each, every one
// from its own session and all at the same time, and reports the peak RSS
// (VmHWM) and the replies. Run it with
//
//	go test -run XXX -bench InFlightMemory -benchtime 1x ./relay/
//
// PETITIOND_BENCH_BIN names another build of petitiond to measure instead
// (an older one, to compare).
func BenchmarkInFlightMemory(b *testing.B) {
	const letters = 100
	dir := b.TempDir()
	bin := os.Getenv("PETITIOND_BENCH_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "petitiond")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/petitiond").CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
	}
	dns, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer dns.Close()
	key, err := keyserver.NewKey("mem.test", "sel", "ed25519")
	if err != nil {
		b.Fatal(err)
	}
	dns.SetKey(key)
	msgs := make([][]byte, letters)
	for i := range msgs {
		if msgs[i], err = key.Sign(headerHeavy(fmt.Sprintf("s%d@mem.test", i), 1<<20-8<<10), keyserver.SignOptions{}); err != nil {
			b.Fatal(err)
		}
	}

	for b.Loop() {
		peak, replies := runMemoryLoad(b, bin, dir, dns.Addr, msgs)
		b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
		b.Logf("%d letters of %d KiB at once: peak RSS %d MiB; replies %v", letters, len(msgs[0])>>10, peak>>20, replies)
	}
}

// headerHeavy is an unsigned letter from from of about size bytes, nearly
// all of them header fields.
func headerHeavy(from string, size int) []byte {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "From: %s\r\nTo: <%s>\r\nSubject: Libertad\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <%s.%d@mem.test>\r\n",
		from, testenv.CampaignAddr, strings.ReplaceAll(from, "@", "."), size)
	for i := 0; buf.Len() < size-200; i++ {
		fmt.Fprintf(&buf, "X-F%05d: %s\r\n", i, strings.Repeat("f", 8))
	}
	buf.WriteString("\r\n" + testenv.Body + "\r\n")
	return buf.Bytes()
}

// runMemoryLoad starts the daemon, sends every message in a session of its
// own at once, and returns the daemon's peak RSS and the replies by code.
func runMemoryLoad(b *testing.B, bin, dir, dnsAddr string, msgs [][]byte) (int64, map[int]int) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := config.Default()
	testenv.UseCampaign(cfg)
	cfg.SMTP.Listen = []string{addr}
	cfg.SMTP.MaxConnections, cfg.SMTP.MaxPerIP = 2*len(msgs), 2*len(msgs)
	cfg.SMTP.Timeout = config.Duration{Duration: 60 * time.Second}
	cfg.Verify.DNSResolver = dnsAddr
	cfg.Verify.SPF = false
	cfg.Batch.MaxLetters = 1 << 30
	cfg.Batch.MaxWait = config.Duration{Duration: 24 * time.Hour}
	cfg.Delivery.Mode = "maildir"
	cfg.Store.Dir = b.TempDir()
	cfg.Admin.Listen = ""
	if ps := cfg.Validate(); len(ps) > 0 {
		b.Fatalf("config: %v", ps)
	}
	cfgPath := filepath.Join(dir, "petitiond.toml")
	if err := os.WriteFile(cfgPath, cfg.TOML(), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	if err := wait.Until(context.Background(), 30*time.Second, func() (bool, error) {
		c, err := smtpclient.Dial(addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Quit()
		return true, nil
	}); err != nil {
		b.Fatalf("daemon did not start: %v", err)
	}

	// Every session is at DATA before any letter goes, so that they all
	// arrive at once.
	var mu sync.Mutex
	replies := map[int]int{}
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	for _, msg := range msgs {
		ready.Add(1)
		wg.Go(func() {
			code := sendAtOnce(addr, msg, &ready, start)
			mu.Lock()
			replies[code]++
			mu.Unlock()
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
	peak, err := peakRSS(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return peak, replies
}

// sendAtOnce opens a session, gets to DATA, says it is ready, waits for
// start and sends msg; it returns the reply code, or 0 if the session
// broke.
func sendAtOnce(addr string, msg []byte, ready *sync.WaitGroup, start <-chan struct{}) int {
	once := sync.OnceFunc(ready.Done)
	defer once()
	c, err := smtpclient.Dial(addr, 120*time.Second)
	if err != nil {
		return 0
	}
	defer c.Quit()
	for _, cmd := range []string{"EHLO client.test", "MAIL FROM:<bounce@client.test>", "RCPT TO:<" + testenv.CampaignAddr + ">", "DATA"} {
		if r, err := c.Cmd("%s", cmd); err != nil || r.Code >= 400 {
			return r.Code
		}
	}
	once()
	<-start
	if err := c.Raw(smtpclient.DotStuff(msg)); err != nil {
		return 0
	}
	r, err := c.ReadReply()
	if err != nil {
		return 0
	}
	return r.Code
}

// peakRSS reads VmHWM from /proc/PID/status.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
