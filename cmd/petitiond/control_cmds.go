package main

// The commands about the daemon as a whole: the emergency pause, its
// health, and what this binary is.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/petitiond/petitiond/relay/admin"
)

func runPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, af := newAdminFlags("pause", "pause "+adminFlagsUsage+" [-reason R]",
		"Emergency hold: letters are still accepted, counted and stored, but no batch closes and nothing\n"+
			"is sent until petitiond resume. The pause survives a restart.", stderr)
	reason := fs.String("reason", "", "why, for the log and petitiond stats")
	return setPause(ctx, fs, af, args, true, reason, stdout, stderr)
}

func runResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, af := newAdminFlags("resume", "resume "+adminFlagsUsage,
		"Ends a pause: batches that are due close, and copies waiting to be sent go.", stderr)
	return setPause(ctx, fs, af, args, false, nil, stdout, stderr)
}

func setPause(ctx context.Context, fs *flag.FlagSet, af *adminFlags, args []string, paused bool, reason *string, stdout, stderr io.Writer) error {
	c, err := clientNoArgs(fs, af, stderr, args, " (a reason goes in -reason)")
	if err != nil {
		return err
	}
	why := ""
	if reason != nil {
		why = *reason
	}
	p, err := c.Pause(ctx, paused, why)
	if err != nil {
		return err
	}
	if af.json {
		return printJSON(stdout, p)
	}
	switch {
	case paused && p.Changed:
		_, err = fmt.Fprintf(stdout, "paused %s: no batch closes and nothing is sent until petitiond resume; letters are still accepted and counted\n",
			pauseNote(p.Since, p.Reason))
	case paused:
		_, err = fmt.Fprintf(stdout, "already paused %s\n", pauseNote(p.Since, p.Reason))
	case p.Changed:
		_, err = fmt.Fprintln(stdout, "resumed: batches close and copies are sent again")
	default:
		_, err = fmt.Fprintln(stdout, "not paused")
	}
	return err
}

// pauseNote says since when and why petitiond is paused.
func pauseNote(since *time.Time, reason string) string {
	s := "since -"
	if since != nil {
		s = "since " + humanTime(*since)
	}
	if reason != "" {
		s += ": " + safe(reason)
	}
	return s
}

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, af := newAdminFlags("health", "health "+adminFlagsUsage,
		"Asks the daemon's /healthz: exits 0 when it is healthy (paused included), 1 when it is failing\n"+
			"or does not answer. Made for container and service-manager health checks.", stderr)
	c, err := clientNoArgs(fs, af, stderr, args, "")
	if err != nil {
		return err
	}
	h, err := c.Health(ctx)
	if err != nil {
		return err
	}
	if af.json {
		if err := printJSON(stdout, h); err != nil {
			return err
		}
	} else {
		printHealth(stdout, h)
	}
	if h.Status == admin.HealthFailing {
		return fmt.Errorf("petitiond at %s is failing", c.URL())
	}
	return nil
}

func printHealth(w io.Writer, h admin.Health) {
	var notes []string
	for _, part := range []struct{ name, state string }{{"store", h.Store}, {"smtp", h.SMTP}, {"parts", h.Parts}} {
		if part.state != admin.HealthOK {
			notes = append(notes, part.name+": "+safe(part.state))
		}
	}
	if h.Paused {
		notes = append(notes, "paused "+pauseNote(h.PausedSince, ""))
	}
	if age := time.Duration(h.OldestUndeliveredBatchAge * float64(time.Second)); age > 0 {
		notes = append(notes, "oldest undelivered batch "+age.Round(time.Second).String()+" old")
	}
	line := safe(h.Status)
	if len(notes) > 0 {
		line += ": " + strings.Join(notes, "; ")
	}
	fmt.Fprintln(w, line)
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version [-json]", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	return printVersion(stdout, *asJSON)
}

func printVersion(w io.Writer, asJSON bool) error {
	b := admin.ReadBuild()
	if asJSON {
		return printJSON(w, b)
	}
	_, err := fmt.Fprintln(w, b.String())
	return err
}
