package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// straceRun is strace counting the daemon's system calls (-strace). Tracing
// stops the daemon at every system call, so a run with it measures counts,
// not speed.
type straceRun struct {
	cmd  *exec.Cmd
	out  string
	done chan error
}

// startStrace attaches "strace -c -f" to every thread of pid, writing its
// summary into dir, and waits until it is attached.
func startStrace(pid int, dir string) (*straceRun, error) {
	path, err := exec.LookPath("strace")
	if err != nil {
		return nil, fmt.Errorf("-strace: %w", err)
	}
	s := &straceRun{out: filepath.Join(dir, "strace.txt"), done: make(chan error, 1)}
	s.cmd = exec.Command(path, "-c", "-f", "-q", "-o", s.out, "-p", strconv.Itoa(pid))
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("-strace: %w", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	// strace stops each thread to attach; its TracerPid shows when the
	// daemon's main thread is held.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("-strace: strace exited: %v: %s", err, strings.TrimSpace(stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if tracer, err := tracerPID(pid); err == nil && tracer == s.cmd.Process.Pid {
			return s, nil
		}
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	return nil, errors.New("-strace: strace did not attach within 10s")
}

// stop detaches strace and returns its counts of calls by system call.
func (s *straceRun) stop() (map[string]int64, error) {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return nil, errors.New("-strace: strace did not stop within 30s")
	}
	data, err := os.ReadFile(s.out)
	if err != nil {
		return nil, fmt.Errorf("-strace: %w", err)
	}
	return parseStraceSummary(data)
}

// tracerPID is the TracerPid of /proc/PID/status.
func tracerPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no TracerPid in /proc status")
}

// parseStraceSummary reads the table strace -c writes: per system call,
// "% time, seconds, usecs/call, calls, [errors,] syscall".
func parseStraceSummary(data []byte) (map[string]int64, error) {
	calls := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 || f[len(f)-1] == "total" || f[len(f)-1] == "syscall" {
			continue
		}
		if _, err := strconv.ParseFloat(f[0], 64); err != nil {
			continue // the rules of dashes
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			continue
		}
		calls[f[len(f)-1]] = n
	}
	if len(calls) == 0 {
		return nil, errors.New("-strace: no counts in strace's summary")
	}
	return calls, nil
}
