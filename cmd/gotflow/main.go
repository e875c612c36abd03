// Command gotflow trains and serves TensorFlow models from Go.
//
// Each subcommand lives in its own file, listed in commands.go's table; all
// logic lives in the library packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// command is one gotflow subcommand; commands.go lists them all.
type command struct {
	name    string
	summary string
	// synopsis are the usage lines, after "gotflow NAME ".
	synopsis []string
	// about describes the command in more than its summary (optional).
	about string
	// run executes the command with the arguments after its name. It writes
	// results to stdout and diagnostics to stderr.
	run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands indexes commandTable by name.
var commands = map[string]command{}

// errUsage marks errors caused by bad command-line arguments (exit code 2).
var errUsage = errors.New("usage error")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: gotflow [-v] <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commandTable {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'gotflow <command> -h' for the flags of a command. -v, before the")
	fmt.Fprintln(w, "command or among its flags, also shows TensorFlow's own log lines.")
}

// commandUsage writes a command's help: its usage lines, summary and
// description, then its flags when fs is not nil.
func commandUsage(w io.Writer, name string, fs *flag.FlagSet) {
	c := commands[name]
	lines := c.synopsis
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		lead := "usage:"
		if i > 0 {
			lead = "      "
		}
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("%s gotflow %s %s", lead, name, l), " "))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s.\n", strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.about != "" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, c.about)
	}
	if fs == nil {
		return
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "flags:")
	fs.PrintDefaults()
}

func main() {
	quietTFLogs() // TensorFlow's log level was settled before Go started: see quiet.go
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if isVerboseFlag(args[0]) {
		// Only TensorFlow's start-up logging looks at it (quiet.go).
		args = args[1:]
		if len(args) == 0 {
			usage(stderr)
			return 2
		}
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
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
	if helpRequested(args[1:]) {
		// Help that was asked for is the answer: it goes to stdout.
		stderr = stdout
	}
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
// of exiting, and whose -h prints commandUsage to w.
func newFlagSet(name string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gotflow "+name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() { commandUsage(w, name, fs) }
	return fs
}

// helpRequested reports whether the arguments of a command ask for its
// help (before any "--").
func helpRequested(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "--h":
			return true
		}
	}
	return false
}

// isVerboseFlag reports whether a is -v as the flag package reads it (-v,
// --v, -v=true, -v=1, ...).
func isVerboseFlag(a string) bool {
	name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
	if !strings.HasPrefix(a, "-") || name != "v" {
		return false
	}
	if !hasVal {
		return true
	}
	b, err := strconv.ParseBool(val)
	return err == nil && b
}

// flagsParsed, when set (by tests), sees every verb's flag set once parsed.
var flagsParsed func(*flag.FlagSet)

// parseFlags parses args and wraps a parse failure as a usage error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if fs.Lookup("v") == nil {
		// Every verb takes -v; quiet.go has read it already.
		fs.Bool("v", false, "also show TensorFlow's own log lines")
	}
	err := fs.Parse(args)
	if flagsParsed != nil {
		flagsParsed(fs)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
