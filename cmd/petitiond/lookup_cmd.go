package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"github.com/petitiond/petitiond/relay/admin"
)

// runLookup answers a supporter's question "what do you hold about me?"
// (SPEC 13).
func runLookup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runAddressCommand(ctx, "lookup", `Prints what the store holds about one supporter: each letter from the address (any
spelling that counts as the same supporter), with its state, how it verified, its
batch and the personal data its record keeps; the batches that carried them; and how
many journal events still name the supporter.`, args, stdout, stderr, (*admin.Client).Lookup, printLookup)
}

// runAddressCommand runs an admin command about one supporter: it asks the
// daemon about the address given, and prints the answer as JSON or for
// people.
func runAddressCommand[T any](ctx context.Context, name, help string, args []string, stdout, stderr io.Writer,
	ask func(c *admin.Client, ctx context.Context, address string) (T, error), print func(io.Writer, T) error) error {
	fs, af := newAdminFlags(name, name+" "+adminFlagsUsage+" ADDRESS", help, stderr)
	address, err := parseAddressArg(fs, stderr, args)
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	res, err := ask(c, ctx, address)
	if err != nil {
		return err
	}
	if af.json {
		return printJSON(stdout, res)
	}
	return print(stdout, res)
}

// parseAddressArg parses the flags and the one ADDRESS argument after them.
func parseAddressArg(fs *flag.FlagSet, stderr io.Writer, args []string) (string, error) {
	_, rest, err := parseAdminArgs(fs, args)
	switch {
	case err != nil:
		return "", err
	case len(rest) != 1:
		return "", usageError(fs, stderr, "takes one supporter's address (flags go before it)")
	}
	return rest[0], nil
}

func printLookup(w io.Writer, res admin.Lookup) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "supporter\t%s\t(normalised for dedup)\n", terminalSafe(res.Address))
	if len(res.Letters) == 0 {
		fmt.Fprintf(tw, "letters\tnone stored\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(res.Letters) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "LETTER\tRECEIVED\tSTATE\tVERDICT\tBATCH\tFROM\tNAME\tIP\tTEXT")
		for _, l := range res.Letters {
			batch, text := "-", "removed"
			if l.Batch != 0 {
				batch = strconv.FormatUint(l.Batch, 10)
			}
			if l.Body {
				text = "stored"
			}
			state := l.State
			if l.Reason != "" {
				state += " (" + l.Reason + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, humanTime(l.Received), state, l.Verdict, batch,
				orDash(terminalSafe(l.From)), orDash(terminalSafe(l.Name)), orDash(l.IP), text)
		}
	}
	if len(res.Batches) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "BATCH\tDELIVERED\tSTORED MESSAGE")
		for _, b := range res.Batches {
			fmt.Fprintf(tw, "%d\t%s\t%s\n", b.ID, yesNo(b.Delivered), b.Message)
		}
	}
	fmt.Fprintf(tw, "\njournal events that still name the supporter: %d\n", res.Events)
	return tw.Flush()
}

// terminalSafe shows a value that came from the network quoted, escapes and
// all, when it holds a character a terminal would act on.
func terminalSafe(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) && r != ' ' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
