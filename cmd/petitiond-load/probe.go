package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Metric names the daemon's /metrics exposes (issue 5).
const (
	metricCommits   = "petitiond_store_commits_total"
	metricWrites    = "petitiond_store_commit_writes_total"
	metricHeapInuse = "go_memstats_heap_inuse_bytes"
	metricMallocs   = "go_memstats_mallocs_total"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. Linux
// fixes it at 100 for user space on every architecture Go runs on, so it
// is a constant rather than a sysconf(_SC_CLK_TCK) call (which needs cgo).
const clockTicks = 100

// errNoMetrics means the daemon serves no /metrics (not yet, or admin off).
var errNoMetrics = errors.New("no /metrics")

// probe reads what the daemon reveals about itself: /proc when its PID is
// known, /metrics when its admin listener is.
type probe struct {
	pid       int
	adminAddr string
	// token is the admin token: the spawned daemon's, else
	// PETITIOND_ADMIN_TOKEN, as for petitiond's own admin commands.
	token  string
	client *http.Client
}

func newProbe(opt options, d *daemon) *probe {
	// No client timeout: each request has its own deadline in its context.
	p := &probe{pid: opt.pid, adminAddr: opt.admin, token: os.Getenv("PETITIOND_ADMIN_TOKEN"), client: &http.Client{}}
	if d != nil {
		p.pid, p.adminAddr, p.token = d.pid(), d.adminAddr, d.adminTok
	}
	return p
}

// sample is what the probe saw at one moment.
type sample struct {
	cpuUser, cpuSys time.Duration
	cpuErr          error
	io              procIO
	ioErr           error
	metrics         map[string]float64
	metricsErr      error
}

// procIO is what /proc/PID/io counts: system calls that read and write
// (files and sockets alike), and the bytes the process had written to
// storage (its share of the page cache it dirtied).
type procIO struct {
	syscr, syscw, writeBytes int64
}

func (p *probe) sample(ctx context.Context) sample {
	var s sample
	if p.pid > 0 {
		s.cpuUser, s.cpuSys, s.cpuErr = readCPU(p.pid)
		s.io, s.ioErr = readIO(p.pid)
	}
	if p.adminAddr != "" {
		s.metrics, s.metricsErr = p.scrape(ctx)
	} else {
		s.metricsErr = errors.New("admin address unknown (give -admin)")
	}
	return s
}

// report turns the samples around the timed phase into the daemon's part of
// the report.
func (p *probe) report(before, after sample, accepted int) *daemonReport {
	r := &daemonReport{PID: p.pid, AdminAddr: p.adminAddr}
	if p.pid > 0 {
		if before.cpuErr == nil && after.cpuErr == nil {
			user, sys := (after.cpuUser - before.cpuUser).Seconds(), (after.cpuSys - before.cpuSys).Seconds()
			cpu := user + sys
			r.CPUSeconds, r.CPUUserSeconds, r.CPUSysSeconds = &cpu, &user, &sys
			if accepted > 0 {
				ms := cpu * 1000 / float64(accepted)
				r.CPUMsPerLetter = &ms
			}
		} else {
			r.Notes = append(r.Notes, "CPU: "+errors.Join(before.cpuErr, after.cpuErr).Error())
		}
		if before.ioErr == nil && after.ioErr == nil && accepted > 0 {
			per := func(a, b int64) *float64 { v := float64(b-a) / float64(accepted); return &v }
			r.WriteCallsPerLetter = per(before.io.syscw, after.io.syscw)
			r.ReadCallsPerLetter = per(before.io.syscr, after.io.syscr)
			r.DiskBytesPerLetter = per(before.io.writeBytes, after.io.writeBytes)
		} else if accepted > 0 {
			r.Notes = append(r.Notes, "I/O: "+errors.Join(before.ioErr, after.ioErr).Error())
		}
		if hwm, err := readPeakRSS(p.pid); err == nil {
			r.PeakRSSBytes = &hwm
		} else {
			r.Notes = append(r.Notes, "peak RSS: "+err.Error())
		}
	}
	switch {
	case before.metricsErr != nil || after.metricsErr != nil:
		err := after.metricsErr
		if err == nil {
			err = before.metricsErr
		}
		r.Metrics = err.Error()
		if errors.Is(err, errNoMetrics) {
			r.Metrics = errNoMetrics.Error()
			r.Notes = append(r.Notes, "metrics: "+err.Error())
		}
	default:
		r.Metrics = "ok"
		c0, ok0 := before.metrics[metricCommits]
		c1, ok1 := after.metrics[metricCommits]
		w0, ok2 := before.metrics[metricWrites]
		w1, ok3 := after.metrics[metricWrites]
		if ok0 && ok1 && ok2 && ok3 {
			commits, writes := c1-c0, w1-w0
			r.Commits, r.CommitWrites = &commits, &writes
			if commits > 0 {
				lpf := writes / commits
				r.LettersPerFsync = &lpf
			}
		} else {
			r.Notes = append(r.Notes, "/metrics has no "+metricCommits+" or "+metricWrites)
		}
		if h, ok := after.metrics[metricHeapInuse]; ok {
			r.HeapInuseBytes = &h
		}
		m0, ok0 := before.metrics[metricMallocs]
		m1, ok1 := after.metrics[metricMallocs]
		if ok0 && ok1 && accepted > 0 {
			allocs := (m1 - m0) / float64(accepted)
			r.AllocsPerLetter = &allocs
		}
	}
	return r
}

// readCPU reads a process's user and system CPU time from /proc/PID/stat.
func readCPU(pid int) (user, sys time.Duration, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStat(data)
}

// parseStat takes utime and stime (fields 14 and 15) from a /proc/PID/stat
// line. The command name (field 2) is in parentheses and may hold spaces
// and parentheses itself, so the fields are counted from the last ')'.
func parseStat(data []byte) (user, sys time.Duration, err error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat: no ')'")
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state), so field k is fields[k-3].
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("malformed /proc stat: %d fields after the name", len(fields))
	}
	ut, err1 := strconv.ParseUint(fields[14-3], 10, 64)
	st, err2 := strconv.ParseUint(fields[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	tick := time.Second / clockTicks
	return time.Duration(ut) * tick, time.Duration(st) * tick, nil
}

// readIO reads a process's I/O counters from /proc/PID/io.
func readIO(pid int) (procIO, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return procIO{}, err
	}
	return parseIO(data)
}

func parseIO(data []byte) (procIO, error) {
	var io procIO
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if !ok || err != nil {
			continue
		}
		switch key {
		case "syscr":
			io.syscr, found = n, found+1
		case "syscw":
			io.syscw, found = n, found+1
		case "write_bytes":
			io.writeBytes, found = n, found+1
		}
	}
	if found != 3 {
		return procIO{}, errors.New("malformed /proc io: no syscr, syscw or write_bytes")
	}
	return io, nil
}

// readPeakRSS reads VmHWM (peak resident set) from /proc/PID/status.
func readPeakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseHWM(data)
}

func parseHWM(data []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed VmHWM line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed VmHWM line %q", sc.Text())
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// get fetches a path from the admin listener; a 404 or a refused
// connection means the endpoint is absent.
func (p *probe) get(ctx context.Context, path string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.adminAddr+path, nil)
	if err != nil {
		return nil, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// scrape reads the daemon's /metrics.
func (p *probe) scrape(ctx context.Context) (map[string]float64, error) {
	body, err := p.get(ctx, "/metrics", 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoMetrics, err)
	}
	return parseMetrics(body), nil
}

// parseMetrics reads the Prometheus text format, summing each metric's
// series over their labels (the names read here have none, or should be
// summed). Lines it cannot read are skipped.
func parseMetrics(body []byte) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ \t"); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest) // value [timestamp]
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// profileFetch is a CPU profile being taken during the timed phase.
type profileFetch struct {
	done chan string // what became of it, for the report
}

// startProfile asks the daemon's /debug/pprof for a CPU profile of seconds
// and writes it to path; nil when no profile was asked for.
func (p *probe) startProfile(ctx context.Context, path string, seconds int) *profileFetch {
	if path == "" {
		return nil
	}
	f := &profileFetch{done: make(chan string, 1)}
	if p.adminAddr == "" {
		f.done <- "n/a (admin address unknown)"
		return f
	}
	go func() {
		body, err := p.get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), time.Duration(seconds)*time.Second+30*time.Second)
		if err != nil {
			f.done <- "n/a (no /debug/pprof: " + err.Error() + ")"
			return
		}
		if err := os.WriteFile(path, body, 0o644); err != nil {
			f.done <- "n/a (" + err.Error() + ")"
			return
		}
		f.done <- fmt.Sprintf("%s (%ds from the start of the timed phase)", path, seconds)
	}()
	return f
}

// wait returns what became of the profile, once the fetch is over.
func (f *profileFetch) wait() string { return <-f.done }
