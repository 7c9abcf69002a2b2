package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/internal/smtpclient"
)

// readyTimeout bounds the wait for a spawned daemon to take connections.
const readyTimeout = 30 * time.Second

// workDir makes the temp dir for the config, the store and the daemon log;
// cleanup removes it unless keep.
func workDir(keep bool) (string, func(), error) {
	dir, err := os.MkdirTemp("", "petitiond-load-")
	if err != nil {
		return "", nil, fmt.Errorf("make work dir: %w", err)
	}
	if keep {
		return dir, func() {}, nil
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

// spawnConfig is the embedded default made fit for measuring: loopback
// ports, the tool's DNS server, letters without a valid signature refused
// (so a setup mistake shows as 550s, not as held letters), session limits
// above -c, and batching out of the way unless -batch asks for it.
func spawnConfig(opt options, dir, dataDir, dnsAddr string) (*config.Config, error) {
	smtpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.Campaign.Addresses = []string{opt.rcpt}
	cfg.SMTP.Listen = []string{smtpPort}
	// Headroom over -c: a session the client closed may still count for a
	// moment on the daemon's side when the client reconnects.
	cfg.SMTP.MaxPerIP = opt.sessions + 16
	cfg.SMTP.MaxConnections = max(cfg.SMTP.MaxConnections, cfg.SMTP.MaxPerIP)
	cfg.Verify.Unverified = "reject"
	cfg.Verify.DNSResolver = dnsAddr
	// Out of the way means by every rule: a batch of 10 MB (max_bytes'
	// default) would otherwise close every few thousand letters.
	cfg.Batch.MaxLetters = 1 << 30
	cfg.Batch.MaxWait = config.Duration{Duration: 365 * 24 * time.Hour}
	cfg.Batch.MaxBytes = 1 << 50
	if opt.batch > 0 {
		cfg.Batch.MaxLetters = opt.batch
		cfg.Batch.MaxBytes = config.Default().Batch.MaxBytes
	}
	cfg.Delivery.Mode = "maildir"
	cfg.Store.Dir = dataDir
	cfg.Admin.Listen = adminPort
	cfg.Log.Format = "text"
	if ps := cfg.Validate(); len(ps) > 0 {
		return nil, fmt.Errorf("generated config is invalid: %v", ps)
	}
	return cfg, nil
}

// freePort finds a loopback TCP port nobody listens on. Another process
// could take it before the daemon does; the daemon then fails to start and
// the tool says so.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// daemon is a petitiond process the tool started.
type daemon struct {
	cmd       *exec.Cmd
	logPath   string
	smtpAddr  string
	adminAddr string
	adminTok  string
	exited    chan struct{} // closed when the process has exited
	waitErr   error         // set before exited is closed
	stopOnce  sync.Once
	stopErr   error
}

// startDaemon writes cfg into dir and runs "PATH serve -config FILE" with
// its log in dir/daemon.log, then waits until it takes SMTP connections.
func startDaemon(ctx context.Context, path, dir string, cfg *config.Config) (*daemon, error) {
	cfgPath := filepath.Join(dir, "petitiond.toml")
	if err := os.WriteFile(cfgPath, cfg.TOML(), 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	logPath := filepath.Join(dir, "daemon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create daemon log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	// An admin token the tool knows (the config file would show it only as
	// "(set)"), so it can read /metrics and ask for a profile.
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		return nil, fmt.Errorf("make admin token: %w", err)
	}
	cmd := exec.Command(path, "serve", "-config", cfgPath)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PETITIOND_ADMIN_TOKEN="+hex.EncodeToString(token))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the tool dies without stopping it, the daemon goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	d := &daemon{cmd: cmd, logPath: logPath, smtpAddr: cfg.SMTP.Listen[0], adminAddr: cfg.Admin.Listen,
		adminTok: hex.EncodeToString(token),
		exited:   make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	if err := d.waitReady(ctx); err != nil {
		_ = d.stop(stopGrace)
		return nil, fmt.Errorf("%s did not start: %w\ndaemon log (last lines):\n%s", path, err, d.logTail(20))
	}
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// waitReady polls the SMTP port until the daemon greets, it exits, or the
// deadline passes.
func (d *daemon) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := smtpclient.Dial(d.smtpAddr, time.Second); err == nil {
			code := c.Banner.Code
			_ = c.Quit()
			if code == 220 {
				return nil
			}
			return fmt.Errorf("greeting %d", code)
		}
		select {
		case <-d.exited:
			return fmt.Errorf("it exited: %v", d.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("no SMTP greeting on %s: %w", d.smtpAddr, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM, and SIGKILL if the daemon is still there after grace.
// It may be called more than once.
func (d *daemon) stop(grace time.Duration) error {
	d.stopOnce.Do(func() {
		select {
		case <-d.exited:
			d.stopErr = exitError(d.waitErr)
			return
		default:
		}
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
			d.stopErr = exitError(d.waitErr)
		case <-time.After(grace):
			_ = d.cmd.Process.Kill()
			<-d.exited
			d.stopErr = fmt.Errorf("still running %v after SIGTERM; killed", grace)
		}
	})
	return d.stopErr
}

// exitError says what is wrong with how the daemon exited, if anything.
func exitError(err error) error {
	var ee *exec.ExitError
	if err == nil {
		return nil
	}
	if errors.As(err, &ee) {
		return fmt.Errorf("daemon exited: %s", ee.ProcessState)
	}
	return err
}

// logTail is the end of the daemon's log, for error messages.
func (d *daemon) logTail(lines int) string {
	data, err := os.ReadFile(d.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	all := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(data, []byte("?"))), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "  " + strings.Join(all, "\n  ")
}
