// Command gotflow trains and serves TensorFlow models from Go.
//
// Each subcommand lives in its own file and registers itself in init with
// register; all logic lives in the library packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one gotflow subcommand.
type command struct {
	name    string
	summary string
	// run executes the command with the arguments after its name. It writes
	// results to stdout and diagnostics to stderr.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("gotflow: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// errUsage marks errors caused by bad command-line arguments (exit code 2).
var errUsage = errors.New("usage error")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gotflow <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'gotflow <command> -h' for the flags of a command.")
}

func main() {
	// TensorFlow's C++ logging is noisy at INFO; keep warnings and errors
	// unless the user chose a level.
	if _, set := os.LookupEnv("TF_CPP_MIN_LOG_LEVEL"); !set {
		os.Setenv("TF_CPP_MIN_LOG_LEVEL", "2")
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout) // asked for: the answer, on stdout
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "gotflow: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "gotflow %s: %v\n", c.name, err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

// newFlagSet returns a flag set for a subcommand that reports errors instead
// of exiting, writing its help to stderr.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gotflow "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gotflow %s %s\n\n", name, synopses[name])
		if c, ok := commands[name]; ok {
			fmt.Fprintf(stderr, "%s.\n\n", strings.ToUpper(c.summary[:1])+c.summary[1:])
		}
		fs.PrintDefaults()
	}
	return fs
}

// synopses are the usage lines of the commands that print no usage of
// their own.
var synopses = map[string]string{
	"train":    "--bundle BUNDLE --data DATA [--export DIR] [flags]",
	"worker":   "[--job ModelDir/job.json | train's flags]   (started by train --cluster processes, or with TF_CONFIG)",
	"evaluate": "--model EXPORT --data DATA [--where column=value] [flags]",
	"ps":       "[--listen HOST:PORT] [--shard I/N] [--mode MODE] [--optimizer NAME|JSON|@file] [flags]",
	"tune":     "--space SPACE --study DIR --bundle BUNDLE --data DATA [train flags] | --resume DIR",
	"ensemble": "--members N -o DIR [train flags] | --from-study DIR --top K -o DIR",
	"version":  "",
	"inspect":  "MODEL [--json] [flags]",
}

// parseFlags parses args and wraps a parse failure as a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
