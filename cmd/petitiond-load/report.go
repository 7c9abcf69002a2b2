package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petitiond/petitiond/internal/loadgen"
)

// report is everything a run measured; -json prints it as it is.
type report struct {
	Letters     int    `json:"letters"`
	Sessions    int    `json:"sessions"`
	Domains     int    `json:"domains"`
	LetterBytes int    `json:"letter_bytes"` // average, as sent
	DNSServer   string `json:"dns_server"`
	WorkDir     string `json:"work_dir,omitempty"`
	Setup       struct {
		KeysSeconds float64 `json:"keys_seconds"`
		SignSeconds float64 `json:"sign_seconds"`
	} `json:"setup"`
	Prefill   *prefillReport `json:"prefill,omitempty"`
	Petitiond phase          `json:"petitiond"`
	Daemon    *daemonReport  `json:"daemon,omitempty"`
	Baseline  *phase         `json:"baseline,omitempty"`
	// Ratio is petitiond's letters/s over the baseline's.
	Ratio float64  `json:"ratio_to_baseline,omitempty"`
	Notes []string `json:"notes,omitempty"`
}

type prefillReport struct {
	Senders   int     `json:"senders"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

// phase is one timed run of the client against one server.
type phase struct {
	Addr             string  `json:"addr"`
	Sent             int     `json:"sent"`
	Accepted         int     `json:"accepted"`
	Seconds          float64 `json:"seconds"`
	LettersPerSecond float64 `json:"letters_per_second"`
	// Latency of the end-of-DATA reply, in milliseconds.
	LatencyMs struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"end_of_data_ms"`
	Replies       map[string]int    `json:"replies"`
	ReplyExamples map[string]string `json:"reply_examples,omitempty"`
	Errors        map[string]int    `json:"errors,omitempty"`
}

// daemonReport is what the daemon revealed about itself; nil fields were not
// available.
type daemonReport struct {
	PID             int      `json:"pid,omitempty"`
	AdminAddr       string   `json:"admin_addr,omitempty"`
	CPUSeconds      *float64 `json:"cpu_seconds,omitempty"` // user+sys during the timed phase
	CPUUserSeconds  *float64 `json:"cpu_user_seconds,omitempty"`
	CPUSysSeconds   *float64 `json:"cpu_sys_seconds,omitempty"`
	CPUMsPerLetter  *float64 `json:"cpu_ms_per_letter,omitempty"`
	PeakRSSBytes    *int64   `json:"peak_rss_bytes,omitempty"`
	Metrics         string   `json:"metrics"` // "ok", or why not
	Commits         *float64 `json:"commits,omitempty"`
	CommitWrites    *float64 `json:"commit_writes,omitempty"`
	LettersPerFsync *float64 `json:"letters_per_fsync,omitempty"`
	HeapInuseBytes  *float64 `json:"go_heap_inuse_bytes,omitempty"`
	// Per accepted letter, during the timed phase: read and write system
	// calls (sockets and files, /proc/PID/io), bytes written to storage,
	// and heap allocations (go_memstats_mallocs_total).
	WriteCallsPerLetter *float64 `json:"write_syscalls_per_letter,omitempty"`
	ReadCallsPerLetter  *float64 `json:"read_syscalls_per_letter,omitempty"`
	DiskBytesPerLetter  *float64 `json:"disk_bytes_per_letter,omitempty"`
	AllocsPerLetter     *float64 `json:"allocs_per_letter,omitempty"`
	// Syscalls is every system call strace counted (-strace), per
	// accepted letter, by name.
	Syscalls map[string]float64 `json:"strace_syscalls_per_letter,omitempty"`
	Profile  string             `json:"profile,omitempty"`
	Notes    []string           `json:"notes,omitempty"`
}

func newPhase(addr string, r *loadgen.Result) phase {
	p := phase{Addr: addr, Sent: r.Sent, Accepted: r.Accepted, Seconds: r.Elapsed.Seconds(),
		LettersPerSecond: r.Rate(), Replies: map[string]int{}, ReplyExamples: map[string]string{}, Errors: r.Errors}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	p.LatencyMs.P50, p.LatencyMs.P90 = ms(r.Percentile(0.50)), ms(r.Percentile(0.90))
	p.LatencyMs.P99, p.LatencyMs.Max = ms(r.Percentile(0.99)), ms(r.Percentile(1))
	for code, n := range r.Codes {
		p.Replies[strconv.Itoa(code)] = n
		if code/100 != 2 {
			p.ReplyExamples[strconv.Itoa(code)] = r.Examples[code]
		}
	}
	return p
}

func writeReport(w io.Writer, r *report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	var b strings.Builder
	rsa := (r.Domains + 1) / 2
	fmt.Fprintf(&b, "petitiond-load: %d letters of %d bytes from %d supporters in %d domains (%d RSA-2048, %d ed25519), %d sessions\n",
		r.Letters, r.LetterBytes, r.Letters, r.Domains, rsa, r.Domains-rsa, r.Sessions)
	fmt.Fprintf(&b, "untimed setup: keys %.1fs, signing %.1fs", r.Setup.KeysSeconds, r.Setup.SignSeconds)
	if p := r.Prefill; p != nil {
		fmt.Fprintf(&b, ", prefill of %d senders %.1fs (%.0f/s)", p.Senders, p.Seconds, p.PerSecond)
	}
	fmt.Fprintf(&b, "\nDKIM keys served by DNS on %s\n\n", r.DNSServer)

	writePhase(&b, "petitiond", r.Petitiond)
	if d := r.Daemon; d != nil {
		if d.CPUSeconds != nil {
			fmt.Fprintf(&b, "  daemon CPU      %.2fs (user %.2fs, sys %.2fs)", *d.CPUSeconds, *d.CPUUserSeconds, *d.CPUSysSeconds)
			if d.CPUMsPerLetter != nil {
				fmt.Fprintf(&b, " = %.3f ms/letter", *d.CPUMsPerLetter)
			}
			fmt.Fprintf(&b, "  [pid %d]\n", d.PID)
		} else {
			fmt.Fprintf(&b, "  daemon CPU      n/a (give -pid)\n")
		}
		if d.WriteCallsPerLetter != nil {
			fmt.Fprintf(&b, "  per letter      %.2f write and %.2f read system calls, %.0f bytes to disk",
				*d.WriteCallsPerLetter, *d.ReadCallsPerLetter, *d.DiskBytesPerLetter)
			if d.AllocsPerLetter != nil {
				fmt.Fprintf(&b, ", %.0f allocations", *d.AllocsPerLetter)
			}
			b.WriteString("\n")
		}
		if len(d.Syscalls) > 0 {
			names := slices.Collect(maps.Keys(d.Syscalls))
			slices.SortFunc(names, func(a, b string) int { return cmp.Compare(d.Syscalls[b], d.Syscalls[a]) })
			var parts []string
			for _, n := range names {
				if d.Syscalls[n] >= 0.01 {
					parts = append(parts, fmt.Sprintf("%s %.2f", n, d.Syscalls[n]))
				}
			}
			fmt.Fprintf(&b, "  strace/letter   %s\n", strings.Join(parts, ", "))
		}
		if d.PeakRSSBytes != nil {
			fmt.Fprintf(&b, "  peak RSS        %.1f MiB\n", float64(*d.PeakRSSBytes)/(1<<20))
		} else {
			fmt.Fprintf(&b, "  peak RSS        n/a\n")
		}
		switch {
		case d.LettersPerFsync != nil:
			fmt.Fprintf(&b, "  letters/fsync   %.2f (%.0f writes in %.0f commits)\n", *d.LettersPerFsync, *d.CommitWrites, *d.Commits)
		case d.Metrics != "ok":
			fmt.Fprintf(&b, "  letters/fsync   n/a (%s)\n", d.Metrics)
		default:
			fmt.Fprintf(&b, "  letters/fsync   n/a (no commits counted)\n")
		}
		switch {
		case d.HeapInuseBytes != nil:
			fmt.Fprintf(&b, "  Go heap in use  %.1f MiB (after)\n", *d.HeapInuseBytes/(1<<20))
		case d.Metrics != "ok":
			fmt.Fprintf(&b, "  Go heap in use  n/a (%s)\n", d.Metrics)
		default:
			fmt.Fprintf(&b, "  Go heap in use  n/a (not in /metrics)\n")
		}
		if d.Profile != "" {
			fmt.Fprintf(&b, "  CPU profile     %s\n", d.Profile)
		}
		for _, n := range d.Notes {
			fmt.Fprintf(&b, "  note: %s\n", n)
		}
	}
	if r.Baseline != nil {
		b.WriteString("\n")
		writePhase(&b, "baseline (in-process go-smtp, discards)", *r.Baseline)
		fmt.Fprintf(&b, "\nratio petitiond/baseline: %.2f\n", r.Ratio)
	}
	if r.WorkDir != "" {
		fmt.Fprintf(&b, "\nwork dir (config, store, daemon.log): %s\n", r.WorkDir)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\nnote: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writePhase(b *strings.Builder, name string, p phase) {
	fmt.Fprintf(b, "%s on %s\n", name, p.Addr)
	fmt.Fprintf(b, "  letters/s       %.1f (%d accepted of %d sent in %.2fs)\n", p.LettersPerSecond, p.Accepted, p.Sent, p.Seconds)
	fmt.Fprintf(b, "  end-of-DATA     p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms\n",
		p.LatencyMs.P50, p.LatencyMs.P90, p.LatencyMs.P99, p.LatencyMs.Max)
	codes := make([]string, 0, len(p.Replies))
	for c := range p.Replies {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		part := fmt.Sprintf("%s x%d", c, p.Replies[c])
		if ex := p.ReplyExamples[c]; ex != "" {
			part += fmt.Sprintf(" (%q)", ex)
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	fmt.Fprintf(b, "  replies         %s\n", strings.Join(parts, ", "))
	if len(p.Errors) > 0 {
		errs := make([]string, 0, len(p.Errors))
		for e, n := range p.Errors {
			errs = append(errs, fmt.Sprintf("%s x%d", e, n))
		}
		slices.Sort(errs)
		fmt.Fprintf(b, "  errors          %s\n", strings.Join(errs, ", "))
	}
}
