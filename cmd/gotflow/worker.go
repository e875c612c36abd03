package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/estimator"
)

func init() {
	register(command{name: "worker", summary: "run one training worker of a job (started by train --cluster processes, or a TFJob replica)", run: runWorker})
}

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	jobPath := fs.String("job", "", "job file (ModelDir/job.json written by train, or your own)")
	verbose := fs.Bool("v", false, "log debug details")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *jobPath == "" {
		return fmt.Errorf("%w: --job is required", errUsage)
	}
	env, err := distributed.TaskEnvFromEnviron(os.LookupEnv)
	if err != nil {
		return fmt.Errorf("%w (run workers through `gotflow train --cluster processes`, or set TF_CONFIG)", err)
	}
	job, err := estimator.ReadWorkerJob(*jobPath)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return estimator.RunWorker(ctx, job, env, log)
}
