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
		{"stats", "stats", "the tally: counted, duplicates, held, rejected, batches, deliveries, pause", runStats},
		{"batches", "batches [show|export|retry ID|flush]", "list batches; show one; write its .eml; requeue failed copies; try deferred ones now", runBatches},
		{"held", "held [show ID|release|drop ID...|-all]", "letters held for an admin: read one, count or delete them", runHeld},
		{"pause", "pause [-reason R]", "emergency hold: letters still counted, no batch closes, nothing sent", runPause},
		{"resume", "resume", "end a pause", runResume},
		{"health", "health", "ask the daemon's /healthz; exit 1 when it is failing", runHealth},
		{"lookup", "lookup ADDRESS", "what the store holds about one supporter", runLookup},
		{"erase", "erase ADDRESS", "remove one supporter's personal data from the store", runErase},
		{"backup", "backup -out FILE", "a consistent copy of the running daemon's store", runBackup},
		{"restore", "restore [-check] [-in BACKUP]", "put a backup in place (daemon stopped), or accept a restored store", runRestore},
		{"dkim-keygen", "dkim-keygen -domain D -selector S", "write a signing key for batches and print its DNS record", runDKIMKeygen},
		{"demo", "demo [-letters N] [-keep] [-exit]", "a one-command tour on a throwaway store", runDemo},
		{"version", "version", "version, commit and Go version of this binary", runVersion},
	}
}

// The words some commands take after their flags to say what to do.
var (
	batchActions = []string{"show", "export", "retry", "flush"}
	heldActions  = []string{"show", "release", "drop"}
)

// commandActions lists the action words of each command that has some (for
// the man page and shell completion tests).
func commandActions() map[string][]string {
	return map[string][]string{"batches": batchActions, "held": heldActions}
}

// errUsage marks an error already explained to the user (exit 2, no extra text).
var errUsage = errors.New("usage")

// errLogged is a failure already written to the log (exit 1, no extra
// text).
var errLogged = errors.New("logged")

// errVersion is -version given to a command: run prints the version and
// exits 0.
var errVersion = errors.New("version asked")

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
	if args[0] == "-version" || args[0] == "--version" {
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errVersion):
			if err := printVersion(stdout, false); err != nil {
				return 1
			}
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.Is(err, errLogged):
			return 1
		default:
			// Errors may quote what the daemon or the network said.
			fmt.Fprintf(stderr, "petitiond %s: %s\n", c.name, safeLines(err.Error()))
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
		fmt.Fprintf(w, "  %-38s %s\n", c.usage, c.help)
	}
	fmt.Fprintln(w, "\nEvery command takes -h and -version.")
}

// newFlags makes a subcommand's flag set whose -h prints its usage and
// returns flag.ErrHelp (exit 0), and whose -version has parseFlags return
// errVersion (run prints the version, exit 0).
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: petitiond %s\n", usage)
		fs.PrintDefaults()
	}
	fs.Bool("version", false, "print the version, commit and Go version of petitiond, and exit")
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if v := fs.Lookup("version"); v != nil && v.Value.String() == "true" {
		return errVersion
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
	opt := relay.Options{Logger: log, AdminToken: os.Getenv(adminTokenEnv)}
	// What check-config says, serve says: the same Check, before anything
	// opens.
	warnings, err := relay.Check(cfg, opt)
	if err != nil {
		return inFile(source, err)
	}
	for _, w := range warnings {
		log.Warn(w, "config", source)
	}
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
	if err := relay.Run(ctx, cfg, opt); err != nil {
		// In the log's own format, so a JSON log stays JSON to its end.
		log.Error("petitiond stopped", "err", err)
		return errLogged
	}
	return nil
}

// runCheckConfig does what serve does short of opening the store and
// listening: the config parsed and validated, then relay.Check (keys and
// certificates read, the DKIM domain aligned, the admin token rule).
// Warnings go to stderr, each line starting "warning:"; they do not fail
// the check.
func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, source, err := loadConfig("check-config", args, stderr)
	if err != nil {
		return err
	}
	warnings, err := relay.Check(cfg, relay.Options{AdminToken: os.Getenv(adminTokenEnv)})
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s: %s\n", source, w)
	}
	if err != nil {
		return inFile(source, err)
	}
	fmt.Fprintf(stdout, "# %s: OK\n", source)
	_, err = stdout.Write(cfg.TOML())
	return err
}

// inFile names the config file in each of Check's problems, as Load names
// it in its own.
func inFile(source string, err error) error {
	var ps config.Problems
	if !errors.As(err, &ps) {
		return err
	}
	out := make(config.Problems, len(ps))
	for i, p := range ps {
		if p.File == "" {
			p.File = source
		}
		out[i] = p
	}
	return out
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
