package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/control"
)

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("worker", stderr)
	jobPath := fs.String("job", "", "job file (ModelDir/job.json written by train --cluster processes); without it, the job is described by train's flags")
	t := addTrainFlags(fs)
	localRows := fs.String("local-rows", "", "N0,N1,…: every trainer trains on its own --data (a Spark task's partition), rank r's holding Nr rows; the coordinator deals each rank its own rows")
	insecure := fs.Bool("insecure", false, "as the chief of a TF_CONFIG job: serve heartbeats on the cluster address without a coordinator token ("+control.EnvToken+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, err := distributed.TaskEnvFromEnviron(os.LookupEnv)
	if err != nil {
		return fmt.Errorf("%w (workers are started by `gotflow train --cluster processes`, or get TF_CONFIG from Kubeflow's TFJob)", err)
	}
	level := slog.LevelInfo
	if *t.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	var job *estimator.WorkerJob
	if *jobPath != "" {
		if job, err = estimator.ReadWorkerJob(*jobPath); err != nil {
			return err
		}
	} else {
		e, err := t.estimator(stderr)
		if err != nil {
			return err
		}
		ds, err := arrowio.OpenDataset(*t.data)
		if err != nil {
			return err
		}
		files := ds.Files()
		ds.Close()
		e.Logger = log
		job = &estimator.WorkerJob{Format: estimator.JobFormat, Estimator: *e, Data: files}
		if *t.where != "" {
			col, val, ok := strings.Cut(*t.where, "=")
			if !ok || col == "" {
				return fmt.Errorf("%w: --where wants column=value, got %q", errUsage, *t.where)
			}
			job.Where = &estimator.RowFilter{Column: col, Value: val}
		}
	}
	if *localRows != "" {
		if job.LocalRows, err = parseRowCounts(*localRows); err != nil {
			return err
		}
	}
	job.Insecure = job.Insecure || *insecure
	ctx, cancel := distributed.WithParent(ctx)
	defer cancel()
	return estimator.RunWorker(ctx, job, env, log)
}

// parseRowCounts parses --local-rows: comma-separated counts >= 1.
func parseRowCounts(s string) ([]int64, error) {
	parts := strings.Split(s, ",")
	out := make([]int64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: --local-rows %q: entry %d is %q, want a row count >= 1", errUsage, s, i, p)
		}
		out[i] = n
	}
	return out, nil
}
