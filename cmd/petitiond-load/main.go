// Command petitiond-load measures how fast petitiond accepts letters
// (issue 5): it makes N supporters across several domains with RSA-2048 and
// ed25519 DKIM keys, serves their keys from its own DNS server on loopback,
// signs N distinct letters of about 3 KB before the clock starts, and sends
// them over C concurrent SMTP sessions that each carry many letters, either
// to a running daemon (-addr) or to one it starts on a generated config
// (-spawn). It reports letters/s, the end-of-DATA reply latency, the reply
// codes, the daemon's CPU time and peak RSS, and letters per fsync from the
// daemon's /metrics; -baseline runs the same client against a go-smtp
// server that discards everything, in the same run.
//
// Everything stays on loopback, and every run is bounded by -n letters and
// -timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/petitiond/petitiond/loopback"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	n, sessions, domains, size int
	addr, spawn, dnsListen     string
	rcpt, admin                string
	pid                        int
	baseline, lockstep, strace bool
	prefill, batch             int
	json, keep                 bool
	timeout                    time.Duration
	profile                    string
	profileSeconds             int
}

const usageText = `usage: petitiond-load [flags] (-spawn PATH | -addr HOST:PORT)

Sends -n DKIM-signed letters from -n distinct supporters over -c concurrent
SMTP sessions, pipelining RSET, MAIL, RCPT and DATA as sending servers do
(-lockstep: one command at a time), and reports letters/s, end-of-DATA
latency, reply codes, the daemon's CPU and memory, letters per fsync, and
per letter its system calls, bytes written to disk and allocations.

  -spawn PATH   starts the petitiond binary at PATH ("serve -config") on a
                generated config in a temp dir, and stops it at the end
  -addr H:P     uses a running daemon; its verify.dns_resolver must name this
                tool's DNS server: give -dns-listen a fixed port for that

flags:
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opt, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "petitiond-load: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, opt.timeout)
	defer cancel()
	rep, err := runLoad(ctx, opt, stderr)
	if rep != nil {
		if werr := writeReport(stdout, rep, opt.json); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "petitiond-load: %v\n", err)
		return 1
	}
	if rep.Petitiond.Accepted < opt.n {
		fmt.Fprintf(stderr, "petitiond-load: petitiond accepted %d of %d letters\n", rep.Petitiond.Accepted, opt.n)
		return 1
	}
	return 0
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("petitiond-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.n, "n", 5000, "letters to send, each from a distinct supporter")
	fs.IntVar(&o.sessions, "c", 50, "concurrent SMTP sessions")
	fs.IntVar(&o.domains, "domains", 6, "supporter domains; even-numbered ones sign with RSA-2048, odd ones with ed25519")
	fs.IntVar(&o.size, "size", 3000, "approximate letter size in bytes, DKIM-Signature included")
	fs.StringVar(&o.addr, "addr", "", "SMTP address of a running petitiond (loopback only)")
	fs.StringVar(&o.spawn, "spawn", "", "path of a petitiond binary to start on a generated config")
	fs.StringVar(&o.dnsListen, "dns-listen", "127.0.0.1:0", "where the DNS server for the supporters' DKIM keys listens (UDP and TCP, loopback only)")
	fs.StringVar(&o.rcpt, "rcpt", "libertad@localhost", "campaign address the letters are sent to")
	fs.StringVar(&o.admin, "admin", "", "with -addr: the daemon's admin.listen, to read /metrics (loopback only)")
	fs.IntVar(&o.pid, "pid", 0, "with -addr: the daemon's process ID, to read its CPU time and peak RSS from /proc")
	fs.BoolVar(&o.baseline, "baseline", false, "also run the same client against an in-process go-smtp server that discards every message, and print the ratio")
	fs.BoolVar(&o.lockstep, "lockstep", false, "send each command alone and wait for its reply, instead of pipelining RSET, MAIL, RCPT and DATA (RFC 2920) as sending servers do")
	fs.BoolVar(&o.strace, "strace", false, "count the daemon's system calls per letter with strace -c during the timed phase (slows the daemon: a run for counts, not speed)")
	fs.IntVar(&o.prefill, "prefill", 0, "with -spawn: first put this many counted senders in the new store")
	fs.IntVar(&o.batch, "batch", 0, "with -spawn: batch.max_letters (0: batching kept out of the way)")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.keep, "keep", false, "with -spawn: keep the temp dir (config, store, daemon log) and print its path")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "bound on the whole run, setup included")
	fs.StringVar(&o.profile, "profile", "", "write a CPU profile of the daemon during the timed phase to this file (needs /debug/pprof on the admin listener)")
	fs.IntVar(&o.profileSeconds, "profile-seconds", 5, "length of the -profile profile, in seconds")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	}
	return o, o.check()
}

// check refuses option sets that make no sense, and anything off loopback.
func (o *options) check() error {
	switch {
	case (o.addr == "") == (o.spawn == ""):
		return errors.New("give exactly one of -addr and -spawn")
	case o.n < 1:
		return fmt.Errorf("-n must be at least 1, not %d", o.n)
	case o.sessions < 1:
		return fmt.Errorf("-c must be at least 1, not %d", o.sessions)
	case o.domains < 1:
		return fmt.Errorf("-domains must be at least 1, not %d", o.domains)
	case o.size < 500 || o.size > 512<<10:
		return fmt.Errorf("-size must be between 500 and %d bytes, not %d", 512<<10, o.size)
	case o.timeout <= 0:
		return errors.New("-timeout must be positive")
	case o.prefill < 0 || o.batch < 0:
		return errors.New("-prefill and -batch cannot be negative")
	case o.addr != "" && (o.prefill > 0 || o.batch > 0 || o.keep):
		return errors.New("-prefill, -batch and -keep need -spawn (the tool cannot change a running daemon)")
	case o.spawn != "" && (o.admin != "" || o.pid != 0):
		return errors.New("-admin and -pid are for -addr; with -spawn the tool knows its daemon")
	case o.profile != "" && o.profileSeconds < 1:
		return errors.New("-profile-seconds must be at least 1")
	case o.strace && o.spawn == "" && o.pid == 0:
		return errors.New("-strace needs the daemon's process: -spawn, or -addr with -pid")
	}
	for _, a := range []struct{ flag, addr string }{{"-addr", o.addr}, {"-dns-listen", o.dnsListen}, {"-admin", o.admin}} {
		if a.addr == "" {
			continue
		}
		if err := checkLoopback(a.addr); err != nil {
			return fmt.Errorf("%s: %w", a.flag, err)
		}
	}
	return nil
}

// checkLoopback accepts host:port where host is a loopback IP or
// "localhost": the tool sends thousands of letters and must never aim them
// at a real server.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", hostport, err)
	}
	if !loopback.Host(host) {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1 or localhost); this tool only loads loopback", host)
	}
	return nil
}
