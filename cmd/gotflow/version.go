package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/gotflow/gotflow/tf"
)

// version is gotflow's version; release builds set it with
// -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "gotflow %s\n", version)
	fmt.Fprintf(stdout, "TensorFlow %s\n", tf.Version())
	fmt.Fprintf(stdout, "Go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/wamuir/graft", "github.com/apache/arrow-go/v18", "google.golang.org/grpc":
				fmt.Fprintf(stdout, "%s %s\n", d.Path, d.Version)
			}
		}
	}
	return nil
}
