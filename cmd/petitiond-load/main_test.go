package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/relay"
)

// runTool runs the command line and returns its exit code, stdout and stderr.
func runTool(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func decodeReport(t *testing.T, out string) *report {
	t.Helper()
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	return &r
}

// freeDNSAddr finds a loopback port free for both UDP and TCP, for a DNS
// server the daemon must know before the tool starts it.
func freeDNSAddr(t *testing.T) string {
	t.Helper()
	ks, err := keyserver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ks.Addr
	if err := ks.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// The tool's main path against a daemon in this process: every letter
// verified and counted, the daemon's CPU, RSS and metrics read, and the
// baseline run in the same run.
func TestLoadRunningDaemon(t *testing.T) {
	dnsAddr := freeDNSAddr(t)
	adminAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := spawnConfig(options{rcpt: "libertad@load.test", sessions: 5}, t.TempDir(), filepath.Join(t.TempDir(), "data"), dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.Admin.Listen = adminAddr
	d, err := relay.New(cfg, relay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
	})

	code, out, errOut := runTool(t, "-addr", d.SMTPAddrs()[0].String(), "-dns-listen", dnsAddr, "-rcpt", "libertad@load.test",
		"-admin", adminAddr, "-pid", strconv.Itoa(os.Getpid()), "-n", "50", "-c", "5", "-domains", "2", "-baseline", "-json", "-timeout", "2m")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	r := decodeReport(t, out)
	p := r.Petitiond
	if p.Sent != 50 || p.Accepted != 50 || p.Replies["250"] != 50 || len(p.Errors) != 0 || p.LettersPerSecond <= 0 {
		t.Errorf("petitiond phase = %+v", p)
	}
	if p.LatencyMs.P50 <= 0 || p.LatencyMs.P99 < p.LatencyMs.P50 || p.LatencyMs.Max < p.LatencyMs.P99 {
		t.Errorf("latencies = %+v", p.LatencyMs)
	}
	if st, err := d.Store().Stats(); err != nil || st.Counted != 50 {
		t.Errorf("daemon counted %d letters (%v), want 50", st.Counted, err)
	}
	if b := r.Baseline; b == nil || b.Accepted != 50 || r.Ratio <= 0 {
		t.Errorf("baseline = %+v, ratio %v", b, r.Ratio)
	}
	dr := r.Daemon
	if dr == nil || dr.CPUSeconds == nil || dr.PeakRSSBytes == nil || *dr.PeakRSSBytes <= 0 {
		t.Fatalf("daemon report = %+v", dr)
	}
	// The admin listener and its /metrics belong to another part of the
	// daemon; when they are there, letters per fsync must be read.
	if dr.Metrics == "ok" && (dr.LettersPerFsync == nil || *dr.LettersPerFsync < 1 || *dr.CommitWrites < 50) {
		t.Errorf("metrics read but letters/fsync = %v, writes %v", dr.LettersPerFsync, dr.CommitWrites)
	}
	if !strings.Contains(errOut, "DNS server for the supporters' DKIM keys: "+dnsAddr) {
		t.Errorf("the DNS address is not printed for the operator:\n%s", errOut)
	}

	// The text report says the same.
	code, out, errOut = runTool(t, "-addr", d.SMTPAddrs()[0].String(), "-dns-listen", dnsAddr, "-rcpt", "libertad@load.test",
		"-n", "10", "-c", "2", "-domains", "1")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"letters/s", "10 accepted of 10 sent", "p99", "replies         250 x10",
		"daemon CPU      n/a (give -pid)", "letters/fsync   n/a (admin address unknown (give -admin))"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

// Letters the daemon refuses show as reply codes with their text, and the
// run exits 1: here the daemon cannot see the tool's DNS server.
func TestLoadRefusedLetters(t *testing.T) {
	cfg, err := spawnConfig(options{rcpt: "libertad@load.test", sessions: 2}, t.TempDir(), filepath.Join(t.TempDir(), "data"), freeDNSAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.SMTP.Listen = []string{"127.0.0.1:0"}
	cfg.Admin.Listen = ""
	cfg.Verify.DNSTimeout = config.Duration{Duration: 200 * time.Millisecond}
	d, err := relay.New(cfg, relay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = d.Shutdown(ctx)
	})
	code, out, errOut := runTool(t, "-addr", d.SMTPAddrs()[0].String(), "-rcpt", "libertad@load.test",
		"-n", "4", "-c", "2", "-domains", "1", "-json")
	if code != 1 || !strings.Contains(errOut, "accepted 0 of 4") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	r := decodeReport(t, out)
	if r.Petitiond.Accepted != 0 || r.Petitiond.Replies["451"]+r.Petitiond.Replies["550"] != 4 {
		t.Errorf("replies = %v %v", r.Petitiond.Replies, r.Petitiond.ReplyExamples)
	}
	for code, text := range r.Petitiond.ReplyExamples {
		if text == "" {
			t.Errorf("no example text for %s", code)
		}
	}
}

// The real binary, spawned on a generated config, on top of a prefilled
// store; it is stopped at the end and its temp dir removed.
func TestLoadSpawn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds petitiond")
	}
	bin := filepath.Join(t.TempDir(), "petitiond")
	build := exec.Command("go", "build", "-o", bin, "github.com/petitiond/petitiond/cmd/petitiond")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // to see that the work dir goes away
	code, out, errOut := runTool(t, "-spawn", bin, "-n", "50", "-c", "5", "-domains", "2", "-prefill", "20000", "-json", "-timeout", "2m")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	r := decodeReport(t, out)
	if r.Petitiond.Accepted != 50 || r.Prefill == nil || r.Prefill.Senders != 20000 || r.Prefill.PerSecond <= 0 {
		t.Errorf("report: petitiond %+v, prefill %+v", r.Petitiond, r.Prefill)
	}
	dr := r.Daemon
	if dr == nil || dr.PID == 0 || dr.CPUSeconds == nil || dr.PeakRSSBytes == nil {
		t.Fatalf("daemon report = %+v", dr)
	}
	if dr.Metrics != "ok" || dr.LettersPerFsync == nil || dr.HeapInuseBytes == nil || dr.AllocsPerLetter == nil || *dr.AllocsPerLetter < 1 {
		t.Errorf("metrics %q, letters/fsync %v, heap %v, allocations %v", dr.Metrics, dr.LettersPerFsync, dr.HeapInuseBytes, dr.AllocsPerLetter)
	}
	// A letter takes at least one reply on the socket and one page write.
	if dr.WriteCallsPerLetter == nil || *dr.WriteCallsPerLetter < 2 || *dr.ReadCallsPerLetter < 1 || dr.DiskBytesPerLetter == nil {
		t.Errorf("per letter: writes %v, reads %v, disk bytes %v", dr.WriteCallsPerLetter, dr.ReadCallsPerLetter, dr.DiskBytesPerLetter)
	}
	if err := exec.Command("kill", "-0", strconv.Itoa(dr.PID)).Run(); err == nil {
		t.Errorf("daemon pid %d still running after the run", dr.PID)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "petitiond-load-*")); len(left) > 0 {
		t.Errorf("work dir left behind: %v", left)
	}

	// strace counts the system calls, fdatasync among them.
	if _, err := exec.LookPath("strace"); err == nil {
		code, out, errOut := runTool(t, "-spawn", bin, "-n", "20", "-c", "2", "-domains", "1", "-strace", "-json", "-timeout", "2m")
		if code != 0 {
			t.Fatalf("-strace: exit %d\n%s\n%s", code, out, errOut)
		}
		calls := decodeReport(t, out).Daemon.Syscalls
		if calls["fdatasync"] <= 0 || calls["write"] < 1 || calls["read"] < 1 {
			t.Errorf("-strace: system calls per letter %v", calls)
		}
	}

	// A binary that is not petitiond fails fast, with its output shown.
	code, _, errOut = runTool(t, "-spawn", "/bin/false", "-n", "1", "-domains", "1", "-timeout", "1m")
	if code != 1 || !strings.Contains(errOut, "did not start") {
		t.Errorf("spawning /bin/false: exit %d\n%s", code, errOut)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"-n", "5"}, "exactly one of -addr and -spawn"},
		{[]string{"-addr", "127.0.0.1:25", "-spawn", "x"}, "exactly one of -addr and -spawn"},
		{[]string{"-addr", "192.0.2.1:25"}, "not a loopback address"},
		{[]string{"-addr", "mx.example.org:25"}, "not a loopback address"},
		{[]string{"-addr", "[::1]"}, "not host:port"},
		{[]string{"-spawn", "x", "-dns-listen", "0.0.0.0:53"}, "-dns-listen"},
		{[]string{"-addr", "127.0.0.1:25", "-admin", "10.0.0.1:8025"}, "-admin"},
		{[]string{"-addr", "127.0.0.1:25", "-prefill", "10"}, "need -spawn"},
		{[]string{"-spawn", "x", "-pid", "1"}, "are for -addr"},
		{[]string{"-spawn", "x", "-n", "0"}, "-n must be"},
		{[]string{"-spawn", "x", "-c", "0"}, "-c must be"},
		{[]string{"-spawn", "x", "-size", "10"}, "-size must be"},
		{[]string{"-spawn", "x", "extra"}, "unexpected arguments"},
		{[]string{"-addr", "127.0.0.1:25", "-strace"}, "-strace needs"},
	} {
		code, _, errOut := runTool(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
	for _, ok := range []string{"127.0.0.1:2525", "127.1.2.3:25", "[::1]:25", "localhost:2525"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("checkLoopback(%q) = %v", ok, err)
		}
	}
	code, _, errOut := runTool(t, "-h")
	if code != 0 || !strings.Contains(errOut, "-spawn PATH") {
		t.Errorf("-h: exit %d\n%s", code, errOut)
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and a parenthesis, as /proc shows it.
	line := "4242 (pet (it) d) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 12345 678\n"
	user, sys, err := parseStat([]byte(line))
	if err != nil || user != 2500*time.Millisecond || sys != 750*time.Millisecond {
		t.Errorf("parseStat = %v, %v, %v; want 2.5s, 750ms", user, sys, err)
	}
	for _, bad := range []string{"", "4242 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 0 0 0 0 0 ab 1 0"} {
		if _, _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}
	// And the real thing.
	if user, sys, err := readCPU(os.Getpid()); err != nil || user+sys < 0 {
		t.Errorf("readCPU(self) = %v, %v, %v", user, sys, err)
	}
}

func TestParseIO(t *testing.T) {
	data := "rchar: 1000\nwchar: 2000\nsyscr: 30\nsyscw: 40\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"
	if got, err := parseIO([]byte(data)); err != nil || got != (procIO{syscr: 30, syscw: 40, writeBytes: 8192}) {
		t.Errorf("parseIO = %+v, %v", got, err)
	}
	if _, err := parseIO([]byte("rchar: 1\nsyscr: x\n")); err == nil {
		t.Error("parseIO of a file without the counters succeeded")
	}
	if got, err := readIO(os.Getpid()); err != nil || got.syscr <= 0 {
		t.Errorf("readIO(self) = %+v, %v", got, err)
	}
}

func TestParseStraceSummary(t *testing.T) {
	summary := `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.10    0.120000          12     10000           write
 30.00    0.090000          90      1000           fdatasync
 29.90    0.089700           4     20000      9000 read
------ ----------- ----------- --------- --------- ----------------
100.00    0.299700                 31000      9000 total
`
	got, err := parseStraceSummary([]byte(summary))
	if err != nil || len(got) != 3 || got["write"] != 10000 || got["fdatasync"] != 1000 || got["read"] != 20000 {
		t.Errorf("parseStraceSummary = %v, %v", got, err)
	}
	if _, err := parseStraceSummary([]byte("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n")); err == nil {
		t.Error("a summary without counts was read")
	}
}

func TestParseHWM(t *testing.T) {
	status := "Name:\tpetitiond\nVmPeak:\t  800000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40000 kB\n"
	if got, err := parseHWM([]byte(status)); err != nil || got != 50<<20 {
		t.Errorf("parseHWM = %d, %v; want %d", got, err, 50<<20)
	}
	for _, bad := range []string{"Name: x\n", "VmHWM: 12 MB\n", "VmHWM: x kB\n"} {
		if _, err := parseHWM([]byte(bad)); err == nil {
			t.Errorf("parseHWM(%q) succeeded", bad)
		}
	}
	if hwm, err := readPeakRSS(os.Getpid()); err != nil || hwm <= 0 {
		t.Errorf("readPeakRSS(self) = %d, %v", hwm, err)
	}
}

func TestParseMetrics(t *testing.T) {
	body := `# HELP petitiond_store_commits_total Group commits.
# TYPE petitiond_store_commits_total counter
petitiond_store_commits_total 120
petitiond_store_commit_writes_total 5000 1700000000000
go_memstats_heap_inuse_bytes 8.5e+06
petitiond_verdicts_total{outcome="pass"} 40
petitiond_verdicts_total{outcome="fail",note="a } b"} 2
broken_line
bad_value NaNx
`
	m := parseMetrics([]byte(body))
	want := map[string]float64{
		metricCommits: 120, metricWrites: 5000, metricHeapInuse: 8.5e6, "petitiond_verdicts_total": 42,
	}
	if len(m) != len(want) {
		t.Errorf("parseMetrics = %v", m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	p := &probe{pid: 0}
	before := sample{metrics: map[string]float64{metricCommits: 100, metricWrites: 1000}}
	after := sample{metrics: map[string]float64{metricCommits: 300, metricWrites: 3000, metricHeapInuse: 1 << 20}}
	r := p.report(before, after, 2000)
	if r.Metrics != "ok" || r.LettersPerFsync == nil || *r.LettersPerFsync != 10 || *r.HeapInuseBytes != 1<<20 {
		t.Errorf("report = %+v", r)
	}
	r = p.report(sample{metricsErr: errNoMetrics}, sample{metricsErr: errNoMetrics}, 1)
	var b strings.Builder
	if err := writeReport(&b, &report{Daemon: r}, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "letters/fsync   n/a (no /metrics)") {
		t.Errorf("no-metrics report:\n%s", b.String())
	}
}
