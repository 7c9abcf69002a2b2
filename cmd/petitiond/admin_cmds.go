package main

// The admin commands: clients of the running daemon's admin API (bbolt
// allows one writer process, so they never open the store themselves).

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/relay/admin"
	"github.com/petitiond/petitiond/store"
)

// adminFlags are the flags every admin command takes.
type adminFlags struct {
	config string
	url    string
	json   bool
}

const adminFlagsUsage = "[-config FILE] [-admin URL] [-json]"

// newAdminFlags makes a command's flag set with the common admin flags.
func newAdminFlags(name, usage, help string, stderr io.Writer) (*flag.FlagSet, *adminFlags) {
	fs := newFlags(name, usage, stderr)
	base := fs.Usage
	fs.Usage = func() {
		base()
		fmt.Fprintf(stderr, "\n%s\n\n%s\n", help, adminTokenHelp)
	}
	af := &adminFlags{}
	fs.StringVar(&af.config, "config", "", "config file, to find admin.listen and admin.token (default ./petitiond.toml if present, else the embedded default)")
	fs.StringVar(&af.url, "admin", "", "admin API URL, e.g. http://127.0.0.1:8025 (overrides admin.listen)")
	fs.BoolVar(&af.json, "json", false, "print JSON for scripts")
	return fs, af
}

// parseAdminArgs parses the flags and, when the first argument is one of
// actions, the flags after it too, so both `held release -json ID` and
// `held -json release ID` work; flags always come before the other
// arguments. It returns the action ("" for none) and what is left.
func parseAdminArgs(fs *flag.FlagSet, args []string, actions ...string) (action string, rest []string, err error) {
	if err := parseFlags(fs, args); err != nil {
		return "", nil, err
	}
	rest = fs.Args()
	if len(rest) > 0 && slices.Contains(actions, rest[0]) {
		action = rest[0]
		if err := parseFlags(fs, rest[1:]); err != nil {
			return "", nil, err
		}
		rest = fs.Args()
	}
	return action, rest, nil
}

// oneID checks the arguments left after an action: one ID of what (a
// batch, a letter) for an action, none to list or for the actions in
// whole, which act on everything.
func oneID(fs *flag.FlagSet, stderr io.Writer, action string, rest []string, what string, whole ...string) (string, error) {
	switch {
	case action == "" && len(rest) > 0:
		return "", usageError(fs, stderr, "unknown action %q", rest[0])
	case (action == "" || slices.Contains(whole, action)) && len(rest) > 0:
		return "", usageError(fs, stderr, "%s takes no %s ID", action, what)
	case action == "" || slices.Contains(whole, action):
		return "", nil
	case len(rest) != 1:
		return "", usageError(fs, stderr, "%s takes one %s ID (flags go before it)", action, what)
	}
	return rest[0], nil
}

// clientNoArgs parses a command that takes flags only, and finds the
// daemon; hint, when set, says where stray arguments belong.
func clientNoArgs(fs *flag.FlagSet, af *adminFlags, stderr io.Writer, args []string, hint string) (*admin.Client, error) {
	_, rest, err := parseAdminArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, usageError(fs, stderr, "unexpected arguments %q%s", rest, hint)
	}
	return af.client()
}

// usageError prints msg and the usage, and makes the command exit 2.
func usageError(fs *flag.FlagSet, stderr io.Writer, format string, a ...any) error {
	fmt.Fprintf(stderr, "petitiond %s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return errUsage
}

// client finds the daemon: -admin, else admin.listen from the config; the
// token as findAdminToken says. The config is read only when something is
// still missing or -config names it.
func (af *adminFlags) client() (*admin.Client, error) {
	token := os.Getenv(adminTokenEnv)
	base := af.url
	if base == "" || token == "" || af.config != "" {
		cfg, source, err := config.Load(af.config)
		if err != nil {
			return nil, err
		}
		if token, err = findAdminToken(cfg); err != nil {
			return nil, err
		}
		if base == "" {
			if cfg.Admin.Listen == "" {
				return nil, fmt.Errorf("the admin listener is disabled in %s (admin.listen is \"\"): set it, or pass -admin URL", source)
			}
			if base, err = admin.BaseURL(cfg.Admin.Listen); err != nil {
				return nil, err
			}
		}
	}
	return admin.NewClient(base, token)
}

// printJSON writes v as indented JSON, terminal-safe (see jsonSafe).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(jsonSafe{w})
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// humanTime is how tables show times: local, to the second.
func humanTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05 MST")
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "tail [-f] [-n N] " + adminFlagsUsage
	fs, af := newAdminFlags("tail", usage, "Prints the last N relay events; with -f follows new ones, reconnecting when the daemon restarts.", stderr)
	follow := fs.Bool("f", false, "follow new events until interrupted")
	n := fs.Int("n", 10, "how many past events to print first")
	_, rest, err := parseAdminArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", rest)
	}
	if *n < 0 {
		return usageError(fs, stderr, "-n must not be negative")
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	emit := func(e admin.Event) error { return printEvent(stdout, e, af.json) }
	if !*follow {
		events, err := c.Events(ctx, *n)
		if err != nil {
			return err
		}
		for _, e := range events {
			if err := emit(e); err != nil {
				return err
			}
		}
		return nil
	}
	down := false
	return c.Follow(ctx, *n, emit, admin.FollowNotify{
		Lost: func(err error) {
			// Once per outage, not once per attempt.
			if !down {
				fmt.Fprintf(stderr, "petitiond tail: %s; reconnecting\n", safe(err.Error()))
				down = true
			}
		},
		Back: func() {
			fmt.Fprintf(stderr, "petitiond tail: reconnected to %s\n", c.URL())
			down = false
		},
	})
}

// printEvent writes one event: a JSON object per line, or a log-like line.
func printEvent(w io.Writer, e admin.Event, asJSON bool) error {
	if asJSON {
		// One object per line; Encode ends it with the newline.
		enc := json.NewEncoder(jsonSafe{w})
		enc.SetEscapeHTML(false) // Message-IDs keep their <>
		return enc.Encode(e)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-9s", humanTime(e.Time), safe(string(e.Event)))
	field := func(k, v string) {
		if v == "" {
			return
		}
		v = safe(v)
		if strings.ContainsAny(v, " \"=") {
			v = `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	field("letter", e.Letter)
	if e.Batch != 0 {
		field("batch", strconv.FormatUint(e.Batch, 10))
	}
	field("sender", e.Sender)
	field("ip", e.IP)
	field("recipient", e.Recipient)
	field("reason", e.Reason)
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, af := newAdminFlags("stats", "stats "+adminFlagsUsage, "Prints the tally: letters counted, duplicates, held, rejected, batches, deliveries, confirmation requests and receipts.", stderr)
	c, err := clientNoArgs(fs, af, stderr, args, "")
	if err != nil {
		return err
	}
	st, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	if af.json {
		return printJSON(stdout, st)
	}
	tw := newTable(stdout)
	fmt.Fprintf(tw, "counted\t%d\tletters counted, one per supporter\n", st.Counted)
	fmt.Fprintf(tw, "duplicates\t%d\tletters from supporters already counted\n", st.Duplicates)
	fmt.Fprintf(tw, "held\t%d\tletters waiting for an admin (petitiond held)\n", st.Held)
	fmt.Fprintf(tw, "rejected\t%d\tletters refused\n", st.Rejected)
	fmt.Fprintf(tw, "pending\t%d\tcounted letters waiting for a batch\n", st.Pending)
	fmt.Fprintf(tw, "batches\t%d\tbatches closed\n", st.Batches)
	d := st.Deliveries
	fmt.Fprintf(tw, "deliveries\t%d\tbatch copies: queued %d, deferred %d, delivered %d, failed %d\n",
		d.Queued+d.Deferred+d.Delivered+d.Failed, d.Queued, d.Deferred, d.Delivered, d.Failed)
	sm := st.Supporters
	fmt.Fprintf(tw, "confirm\t%d\tconfirmation requests sent to supporters: confirmed %d, expired %d, undeliverable %d; live %d, waiting their turn %d\n",
		sm.ConfirmSent, sm.ConfirmConfirmed, sm.ConfirmExpired, sm.ConfirmUndeliverable, sm.ConfirmLive, sm.ConfirmWaiting)
	fmt.Fprintf(tw, "receipts\t%d\treceipts sent to supporters (mail to supporters waiting for delivery: %d)\n",
		sm.ReceiptsSent, sm.Queued)
	if f := st.Forwarding; f != nil {
		fmt.Fprintf(tw, "waiting\t%d\tletters waiting to be forwarded to the primary (secondary MX)\n", f.Waiting)
		fmt.Fprintf(tw, "forwarded\t%d\tletters the primary has taken\n", f.Forwarded)
	}
	if st.Paused {
		fmt.Fprintf(tw, "paused\tyes\t%s\n", pauseNote(st.PausedSince, st.PauseReason))
	} else {
		fmt.Fprintf(tw, "paused\tno\tbatches close and copies are sent\n")
	}
	return tw.Flush()
}

func runBatches(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "batches [show|export|retry|flush] " + adminFlagsUsage + " [ID]"
	fs, af := newAdminFlags("batches", usage, `  batches            list batches with each recipient's delivery state
  batches show ID    one batch, with its letters
  batches export ID  write the batch's message (.eml), exactly as delivered, to stdout
                     (escaped when stdout is a terminal; redirect it for the exact bytes)
  batches retry ID   requeue the batch's failed copies for delivery now
  batches flush      try every deferred copy now (like postqueue -f)`, stderr)
	action, rest, err := parseAdminArgs(fs, args, batchActions...)
	if err != nil {
		return err
	}
	id, err := oneID(fs, stderr, action, rest, "batch", "flush")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	switch action {
	case "show":
		b, err := c.Batch(ctx, id)
		if err != nil {
			return err
		}
		if af.json {
			return printJSON(stdout, b)
		}
		return printBatch(stdout, b)
	case "export":
		return c.BatchMessage(ctx, id, messageOut(stdout))
	case "flush":
		r, err := c.Flush(ctx)
		if err != nil {
			return err
		}
		if af.json {
			return printJSON(stdout, r)
		}
		note := ""
		if r.Paused {
			note = " (petitiond is paused: they go when it resumes)"
		}
		_, err = fmt.Fprintf(stdout, "%d deferred %s will be tried now%s\n", r.Flushed, plural(r.Flushed, "copy", "copies"), note)
		return err
	case "retry":
		r, err := c.Retry(ctx, id)
		if err != nil {
			return err
		}
		if af.json {
			return printJSON(stdout, r)
		}
		_, err = fmt.Fprintf(stdout, "batch %d: %d failed %s requeued for delivery now\n", r.ID, r.Requeued, plural(r.Requeued, "copy", "copies"))
		return err
	}
	batches, err := c.Batches(ctx)
	if err != nil {
		return err
	}
	return printList(stdout, af.json, batches, "no batches yet", func(tw io.Writer) {
		fmt.Fprintln(tw, "BATCH\tCREATED\tLETTERS\tRECIPIENT\tSTATE\tATTEMPTS\tNOTE")
		for _, b := range batches {
			for i, r := range b.Recipients {
				if i == 0 {
					fmt.Fprintf(tw, "%d\t%s\t%d\t", b.ID, humanTime(b.Created), b.Letters)
				} else {
					fmt.Fprint(tw, "\t\t\t")
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", safe(r.Address), safe(string(r.State)), r.Attempts, deliveryNote(r))
			}
		}
	})
}

// deliveryNote says what is next for a copy, or what went wrong.
func deliveryNote(r admin.Recipient) string {
	var parts []string
	if r.NextAttempt != nil {
		parts = append(parts, "next try "+humanTime(*r.NextAttempt))
	}
	if r.LastError != "" && r.State != store.DeliveryDelivered {
		parts = append(parts, safe(shorten(r.LastError, 100)))
	}
	return strings.Join(parts, ": ")
}

func printBatch(w io.Writer, b admin.Batch) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "batch\t%d\n", b.ID)
	fmt.Fprintf(tw, "created\t%s\n", humanTime(b.Created))
	fmt.Fprintf(tw, "message-id\t%s\n", safe(b.MessageID))
	fmt.Fprintf(tw, "letters\t%d: %s\n", b.Letters, safe(strings.Join(b.LetterIDs, " ")))
	if b.Purged {
		fmt.Fprintf(tw, "purged\tletter bodies and message removed after retention\n")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "RECIPIENT\tSTATE\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR")
	for _, r := range b.Recipients {
		next := "-"
		if r.NextAttempt != nil {
			next = humanTime(*r.NextAttempt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", safe(r.Address), safe(string(r.State)), r.Attempts, next, safe(r.LastError))
	}
	return tw.Flush()
}

func runHeld(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "held [show|release|drop] " + adminFlagsUsage + " [-all [-reason R]] [ID...]"
	fs, af := newAdminFlags("held", usage, `  held                       list letters held for an admin (unverified, or mail to postmaster)
  held show ID               the held message exactly as received (escaped when stdout is a
                             terminal; redirect it for the exact bytes)
  held release ID...         count the letters (a duplicate if the sender was counted meanwhile)
  held drop ID...            delete the letters
  held release|drop -all     every held letter (-reason R: only those held for R, e.g. unverified,
                             postmaster); release leaves postmaster mail, which is never counted`, stderr)
	all := fs.Bool("all", false, "release or drop every held letter")
	reason := fs.String("reason", "", "with -all: only the letters held for this reason")
	action, ids, err := parseAdminArgs(fs, args, heldActions...)
	if err != nil {
		return err
	}
	switch {
	case action == "" && len(ids) > 0:
		return usageError(fs, stderr, "unknown action %q", ids[0])
	case (*all || *reason != "") && action != "release" && action != "drop":
		return usageError(fs, stderr, "-all and -reason go with release or drop")
	case *reason != "" && !*all:
		return usageError(fs, stderr, "-reason narrows -all")
	case action == "show" && len(ids) != 1:
		return usageError(fs, stderr, "show takes one letter ID (flags go before it)")
	case (action == "release" || action == "drop") && *all == (len(ids) > 0):
		return usageError(fs, stderr, "%s takes letter IDs or -all (flags go before the IDs)", action)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	switch action {
	case "show":
		if af.json {
			var buf bytes.Buffer
			if err := c.HeldMessage(ctx, ids[0], &buf); err != nil {
				return err
			}
			return printJSON(stdout, heldMessageJSON{ID: strings.ToUpper(ids[0]), Size: buf.Len(), Message: buf.Bytes()})
		}
		return c.HeldMessage(ctx, ids[0], messageOut(stdout))
	case "release", "drop":
		kind := store.EventReleased
		if action == "drop" {
			kind = store.EventDropped
		}
		d, err := c.Decide(ctx, kind, admin.HeldRequest{IDs: ids, All: *all, Reason: *reason})
		if err != nil {
			return err
		}
		return printDecisions(stdout, af.json, action, *reason, d)
	}
	held, err := c.Held(ctx)
	if err != nil {
		return err
	}
	return printList(stdout, af.json, held, "no held letters", func(tw io.Writer) {
		fmt.Fprintln(tw, "ID\tRECEIVED\tFROM\tSUBJECT\tREASON")
		for _, l := range held {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", safe(l.ID), humanTime(l.Received), safe(l.From),
				safe(shorten(l.Subject, 50)), safe(l.Reason))
		}
	})
}

// heldMessageJSON is held show -json: the message's bytes in base64, since
// a message need not be UTF-8 text.
type heldMessageJSON struct {
	ID      string `json:"id"`
	Size    int    `json:"size"`
	Message []byte `json:"message_base64"`
}

// printDecisions reports a release or drop, a line per letter decided, and
// fails the command, naming each, when some letter could not be decided.
func printDecisions(w io.Writer, asJSON bool, action, reason string, d admin.Decisions) error {
	var failed []string
	for _, r := range d.Results {
		if r.Error != "" {
			failed = append(failed, r.ID+": "+r.Error)
		}
	}
	if asJSON {
		if err := printJSON(w, d); err != nil {
			return err
		}
	} else {
		if len(d.Results) == 0 && d.Skipped == 0 {
			what := "no held letters"
			if reason != "" {
				what += " held for " + safe(reason)
			}
			fmt.Fprintln(w, what)
		}
		for _, r := range d.Results {
			if r.Error != "" {
				continue
			}
			msg := map[store.EventKind]string{
				store.EventReleased:  "released: counted, it goes into the next batch",
				store.EventDuplicate: "released, but its sender was counted meanwhile: recorded as a duplicate, not counted again",
				store.EventDropped:   "dropped",
			}[r.Outcome]
			if msg == "" {
				msg = safe(string(r.Outcome))
			}
			fmt.Fprintf(w, "%s %s\n", safe(r.ID), msg)
		}
		if d.Skipped > 0 {
			fmt.Fprintf(w, "%d postmaster %s left held: never counted, only dropped (petitiond held drop -all -reason postmaster)\n",
				d.Skipped, plural(d.Skipped, "letter", "letters"))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d %s could not be %s:\n%s", len(failed), len(d.Results),
			plural(len(d.Results), "letter", "letters"), pastTense(action), strings.Join(failed, "\n"))
	}
	return nil
}

func pastTense(action string) string {
	if action == "drop" {
		return "dropped"
	}
	return action + "d"
}

// shorten cuts s to at most n runes, marking the cut.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// printList prints a listing as JSON for scripts, or a line saying it is
// empty, or a table written by rows.
func printList[T any](w io.Writer, asJSON bool, items []T, empty string, rows func(tw io.Writer)) error {
	if asJSON {
		return printJSON(w, items)
	}
	if len(items) == 0 {
		_, err := fmt.Fprintln(w, empty)
		return err
	}
	tw := newTable(w)
	rows(tw)
	return tw.Flush()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
