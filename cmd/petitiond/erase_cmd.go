package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/petitiond/petitiond/relay/admin"
)

// runErase removes one supporter's personal data from the store (SPEC 13).
// Its output names letter IDs and batch numbers, never the address, so it
// can go into a ticket or a log.
func runErase(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runAddressCommand(ctx, "erase", `Removes one supporter's personal data from the store: address, name, text, subject and
IP of each of their letters, their held mail, the stored messages of batches that carried
their letters, and sender and IP of their journal events. A letter not yet in a batch is
withdrawn: never sent, no longer counted, and the supporter may sign again. A letter
already batched stays counted as an anonymous entry; the copies the organisations
received are theirs. This cannot be undone.`, args, stdout, stderr, (*admin.Client).Erase, printErasure)
}

func printErasure(w io.Writer, res admin.Erasure) error {
	var b strings.Builder
	if len(res.Letters) == 0 {
		b.WriteString("no letters stored from that address\n")
	} else {
		fmt.Fprintf(&b, "erased %d %s: %s\n", len(res.Letters), plural(len(res.Letters), "letter", "letters"), strings.Join(res.Letters, " "))
	}
	if len(res.Withdrawn) > 0 {
		fmt.Fprintf(&b, "withdrawn, no longer counted or held (the supporter may sign again): %s\n", strings.Join(res.Withdrawn, " "))
	}
	if len(res.Batches) > 0 {
		nums := make([]string, len(res.Batches))
		for i, n := range res.Batches {
			nums[i] = strconv.FormatUint(n, 10)
		}
		fmt.Fprintf(&b, "stored messages removed of %s %s (the organisations keep the copies they received)\n",
			plural(len(nums), "batch", "batches"), strings.Join(nums, " "))
	}
	fmt.Fprintf(&b, "journal events cleared of sender and IP: %d\n", res.Events)
	_, err := io.WriteString(w, b.String())
	return err
}
