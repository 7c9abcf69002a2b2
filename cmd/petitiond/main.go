// Command petitiond is the campaign mail daemon and its admin tool.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/petitiond/petitiond/config"
	"github.com/petitiond/petitiond/relay"
)

// command is one subcommand: its name, one line of help and its body.
type command struct {
	name, usage, help string
	run               func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "serve [-config FILE]", "run the daemon", runServe},
		{"check-config", "check-config [-config FILE]", "validate a config and print the effective one", runCheckConfig},
		{"tail", "tail [-f] [-n N]", "the last N relay events; -f follows new ones", runTail},
		{"stats", "stats", "the tally: counted, duplicates, held, rejected, batches, deliveries", runStats},
		{"batches", "batches [show|export|retry ID]", "list batches; show one; write its .eml; requeue failed copies", runBatches},
		{"held", "held [release|drop ID]", "letters held for an admin, and what to do with each", runHeld},
		{"backup", "backup -out FILE", "a consistent copy of the running daemon's store", runBackup},
		{"restore", "restore [-check] [-in BACKUP]", "put a backup in place (daemon stopped), or accept a restored store", runRestore},
		{"dkim-keygen", "dkim-keygen -domain D -selector S", "write a signing key for batches and print its DNS record", runDKIMKeygen},
		{"demo", "demo [-letters N] [-keep] [-exit]", "a one-command tour on a throwaway store", runDemo},
	}
}

// errUsage marks an error already explained to the user (exit 2, no extra text).
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "petitiond %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "petitiond: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: petitiond COMMAND [flags] [args]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-35s %s\n", c.usage, c.help)
	}
	fmt.Fprintln(w, "\nEvery command takes -h.")
}

// newFlags makes a subcommand's flag set whose -h prints its usage and
// returns flag.ErrHelp (exit 0).
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: petitiond %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// loadConfig parses a command that takes only -config, and loads that config.
func loadConfig(name string, args []string, stderr io.Writer) (*config.Config, string, error) {
	fs := newFlags(name, name+" [-config FILE]", stderr)
	path := fs.String("config", "", "config file (default ./petitiond.toml if present, else the embedded default)")
	if err := parseFlags(fs, args); err != nil {
		return nil, "", err
	}
	return config.Load(*path)
}

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, source, err := loadConfig("serve", args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	// SIGHUP would end the process by default. Nothing is reloaded on it
	// (the config, keys and certificates are read at start): say so, and
	// go on serving.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Warn("SIGHUP ignored: petitiond reloads nothing; restart it to apply a changed config", "config", source)
			}
		}
	}()
	log.Info("starting petitiond", "config", source, "store", cfg.Store.Dir)
	return relay.Run(ctx, cfg, relay.Options{Logger: log, AdminToken: os.Getenv(adminTokenEnv)})
}

func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, source, err := loadConfig("check-config", args, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# %s: OK\n", source)
	_, err = stdout.Write(cfg.TOML())
	return err
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
