package main

// backup and restore: the way back from a damaged disk, a damaged store
// file, or a store that was rolled back (README, Backup and restore).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/safeio"
	"github.com/petitiond/petitiond/store"
)

// runBackup asks the running daemon for a consistent copy of its store and
// writes it to -out durably: into a new file beside it, fsynced, then
// renamed over -out, so a backup cut short never replaces a good one.
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, af := newAdminFlags("backup", "backup "+adminFlagsUsage+" -out FILE",
		"Writes a consistent copy of the running daemon's store (letters, dedup secret, batches and their\n"+
			"messages) to FILE, a tar archive, replacing FILE only once the copy is whole and on disk.\n"+
			"Check a backup with `petitiond restore -check -in FILE`; README, Backup and restore.", stderr)
	out := fs.String("out", "", "the backup `FILE` to write (required)")
	if _, rest, err := parseAdminArgs(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usageError(fs, stderr, "unexpected argument %q", rest[0])
	}
	if *out == "" {
		return usageError(fs, stderr, "-out FILE is required")
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	var r [6]byte
	_, _ = rand.Read(r[:])
	tmp := *out + ".partial-" + hex.EncodeToString(r[:])
	pr, pw := io.Pipe()
	done := make(chan *store.BackupSummary, 1)
	go func() {
		sum, err := c.Backup(ctx, pw)
		done <- sum
		pw.CloseWithError(err)
	}()
	n, err := safeio.WriteNewFrom(tmp, pr, 0o600)
	pr.CloseWithError(err) // unblocks the copy if the file failed
	sum := <-done
	if err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if err := safeio.SyncDir(filepath.Dir(*out)); err != nil {
		return fmt.Errorf("write %s: %w", *out, err)
	}
	if af.json {
		return printJSON(stdout, sum)
	}
	fmt.Fprintf(stdout, "backup written to %s: %d bytes; letters up to %s, %d events, %d batches with %d messages\n",
		*out, n, sum.LastLetter, sum.Events, sum.Batches, sum.Messages)
	if len(sum.Missing) > 0 {
		fmt.Fprintf(stdout, "%d batch messages were purged after retention while the backup ran and are not in it: %v\n",
			len(sum.Missing), sum.Missing)
	}
	return nil
}

// runRestore works on the store's directory with the daemon stopped:
// -check reads a backup and checks it, -in puts a backup in place, and with
// neither the store file is accepted as it is (after a restore by hand).
func runRestore(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", "restore [-config FILE] [-check] [-in BACKUP] [-json]", stderr)
	base := fs.Usage
	fs.Usage = func() {
		base()
		fmt.Fprint(stderr, "\nWith petitiond stopped: -in puts the backup in place of the store in store.dir (the file\n"+
			"it replaces is kept beside it); -check -in only checks the backup; with neither, the store file\n"+
			"as it is now is accepted after petitiond refused to start on a rolled-back file. Letter, event\n"+
			"and batch numbers then continue after the highest ever handed out. README, Backup and restore.\n")
	}
	cfgPath := fs.String("config", "", "config file, to find store.dir (default ./petitiond.toml if present, else the embedded default)")
	in := fs.String("in", "", "the `BACKUP` file, made by petitiond backup")
	check := fs.Bool("check", false, "only check the backup given with -in; change nothing")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fs, stderr, "unexpected argument %q", fs.Arg(0))
	case *check && *in == "":
		return usageError(fs, stderr, "-check needs -in BACKUP")
	}
	if *check {
		sum, err := store.CheckBackup(*in, "")
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, sum)
		}
		fmt.Fprintf(stdout, "%s is a sound backup made %s: letters up to %s, %d events, %d batches with %d messages\n",
			*in, sum.Created.Format("2006-01-02 15:04:05 MST"), sum.LastLetter, sum.Events, sum.Batches, sum.Messages)
		return nil
	}
	cfg, _, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	res := &store.Restored{}
	if *in != "" {
		if res, err = store.Restore(cfg.Store.Dir, *in); err != nil {
			return err
		}
	} else {
		s, err := store.Open(cfg.Store.Dir, store.Options{AcceptRollback: true})
		if err != nil {
			return err
		}
		res.Rollback = s.RolledBack()
		if err := s.Close(); err != nil {
			return err
		}
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	if res.Summary != nil {
		fmt.Fprintf(stdout, "restored %s (made %s) into %s\n", *in, res.Summary.Created.Format("2006-01-02 15:04:05 MST"), cfg.Store.Dir)
	}
	if res.Replaced != "" {
		fmt.Fprintf(stdout, "the store file it replaced is kept as %s: remove it once petitiond runs well again\n", res.Replaced)
	}
	if rb := res.Rollback; rb != nil {
		fmt.Fprintf(stdout, "the store ends at letter %s, event %d, batch %d; petitiond had handed out up to letter %s, "+
			"event %d, batch %d: letters answered in between are not in it, and numbering continues after them\n",
			rb.File.LetterID(), rb.File.Events, rb.File.Batches, rb.Marked.LetterID(), rb.Marked.Events, rb.Marked.Batches)
	} else {
		fmt.Fprintln(stdout, "the store is not behind anything petitiond answered")
	}
	fmt.Fprintln(stdout, "start petitiond again")
	return nil
}
