package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/petitiond/petitiond/internal/keyserver"
	"github.com/petitiond/petitiond/internal/loadgen"
	"github.com/petitiond/petitiond/store"
)

// stopGrace is how long a spawned daemon gets to stop after SIGTERM before
// SIGKILL: it lets sessions in flight finish, so a few seconds are plenty.
const stopGrace = 15 * time.Second

// runLoad does the whole run: setup (untimed), the timed phase against
// petitiond, then the baseline. It returns what it measured even when a
// later step fails, so the report shows how far it got.
func runLoad(ctx context.Context, opt options, progress io.Writer) (*report, error) {
	rep := &report{Letters: opt.n, Sessions: opt.sessions, Domains: opt.domains}
	say := func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }

	start := time.Now()
	keys, err := loadgen.NewKeys(ctx, opt.domains)
	if err != nil {
		return nil, err
	}
	rep.Setup.KeysSeconds = time.Since(start).Seconds()
	dns, err := keyserver.Start(opt.dnsListen)
	if err != nil {
		return nil, fmt.Errorf("DNS server: %w", err)
	}
	defer dns.Close()
	for _, k := range keys {
		dns.SetKey(k)
	}
	rep.DNSServer = dns.Addr
	say("DNS server for the supporters' DKIM keys: %s (the daemon's verify.dns_resolver)", dns.Addr)
	if _, port, _ := net.SplitHostPort(opt.dnsListen); opt.addr != "" && port == "0" {
		say("warning: -dns-listen has port 0, so a daemon started before this run cannot name this DNS server;" +
			" give -dns-listen a fixed port, or letters will fail verification")
	}

	start = time.Now()
	letters, err := loadgen.MakeLetters(ctx, keys, opt.n, opt.size, opt.rcpt)
	if err != nil {
		return nil, err
	}
	rep.Setup.SignSeconds = time.Since(start).Seconds()
	total := 0
	for _, l := range letters {
		total += l.Size()
	}
	rep.LetterBytes = total / len(letters)
	say("signed %d letters (%d bytes on average) in %.1fs", opt.n, rep.LetterBytes, rep.Setup.SignSeconds)

	target := opt.addr
	var d *daemon
	if opt.spawn != "" {
		dir, cleanup, err := workDir(opt.keep)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		if opt.keep {
			rep.WorkDir = dir
			say("work dir (kept): %s", dir)
		}
		dataDir := filepath.Join(dir, "data")
		if opt.prefill > 0 {
			say("prefilling the store with %d counted senders ...", opt.prefill)
			if rep.Prefill, err = prefill(ctx, dataDir, opt.prefill); err != nil {
				return nil, err
			}
			say("prefilled in %.1fs", rep.Prefill.Seconds)
		}
		cfg, err := spawnConfig(opt, dir, dataDir, dns.Addr)
		if err != nil {
			return nil, err
		}
		if d, err = startDaemon(ctx, opt.spawn, dir, cfg); err != nil {
			return nil, err
		}
		defer d.stop(stopGrace)
		target = d.smtpAddr
		say("started %s (pid %d), SMTP on %s, admin on %s", opt.spawn, d.pid(), d.smtpAddr, d.adminAddr)
	}

	probe := newProbe(opt, d)
	var tracer *straceRun
	if opt.strace {
		dir, err := os.MkdirTemp("", "petitiond-load-strace-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if tracer, err = startStrace(probe.pid, dir); err != nil {
			return nil, err
		}
		say("strace attached to pid %d: letters/s and latencies of this run are not the daemon's", probe.pid)
	}
	before := probe.sample(ctx)
	prof := probe.startProfile(ctx, opt.profile, opt.profileSeconds)
	say("sending %d letters over %d sessions to %s ...", opt.n, opt.sessions, target)
	send := loadgen.Options{Addr: target, Rcpt: opt.rcpt, Sessions: opt.sessions, Lockstep: opt.lockstep}
	res := loadgen.Send(ctx, letters, send)
	after := probe.sample(ctx)
	rep.Petitiond = newPhase(target, res)
	rep.Daemon = probe.report(before, after, res.Accepted)
	if tracer != nil {
		calls, err := tracer.stop()
		if err != nil {
			return rep, err
		}
		if res.Accepted > 0 {
			rep.Daemon.Syscalls = map[string]float64{}
			for name, n := range calls {
				rep.Daemon.Syscalls[name] = float64(n) / float64(res.Accepted)
			}
		}
	}
	if prof != nil {
		rep.Daemon.Profile = prof.wait()
	}
	if d != nil {
		if err := d.stop(stopGrace); err != nil {
			rep.Notes = append(rep.Notes, "stopping the daemon: "+err.Error())
		}
		if res.Accepted < opt.n {
			rep.Notes = append(rep.Notes, "daemon log (last lines):\n"+d.logTail(20))
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("run cut short after %v (-timeout): %w", opt.timeout, err)
	}

	if opt.baseline {
		sink, err := loadgen.StartDiscard("127.0.0.1:0")
		if err != nil {
			return rep, err
		}
		say("sending the same letters to the discarding baseline on %s ...", sink.Addr())
		send.Addr = sink.Addr()
		bres := loadgen.Send(ctx, letters, send)
		if err := sink.Close(); err != nil {
			rep.Notes = append(rep.Notes, "closing the baseline server: "+err.Error())
		}
		b := newPhase(sink.Addr(), bres)
		rep.Baseline = &b
		if b.LettersPerSecond > 0 {
			rep.Ratio = rep.Petitiond.LettersPerSecond / b.LettersPerSecond
		}
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("run cut short after %v (-timeout): %w", opt.timeout, err)
		}
	}
	return rep, nil
}

// prefill opens the (new) store in dataDir, adds n counted senders and closes
// it again, before the daemon takes it over.
func prefill(ctx context.Context, dataDir string, n int) (*prefillReport, error) {
	st, err := store.Open(dataDir, store.Options{})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	err = st.Prefill(ctx, n, 10000)
	elapsed := time.Since(start)
	if cerr := st.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return &prefillReport{Senders: n, Seconds: elapsed.Seconds(), PerSecond: float64(n) / elapsed.Seconds()}, nil
}
