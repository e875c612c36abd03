package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/tune"
)

// tuneJob is DIR/tune.json: what `gotflow tune --resume DIR` needs besides
// the space.
type tuneJob struct {
	Format    string                `json:"format"`
	Data      string                `json:"data"`
	Where     string                `json:"where,omitempty"`
	Estimator estimator.TFEstimator `json:"estimator"`
}

const tuneJobFormat = "gotflow.tune/v1"

func runTune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tune", stderr)
	t := addTrainFlags(fs)
	spacePath := fs.String("space", "", "search space file (YAML or JSON, shaped like a Katib Experiment)")
	dir := fs.String("study", "", "study directory (trials, tables, TensorBoard runs, best/); required")
	resume := fs.String("resume", "", "resume the study in this directory with its own space, data and flags")
	cpus := fs.Int("cpus", 0, "cores the trials share (default: all)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var (
		job tuneJob
		sp  *tune.Space
		err error
	)
	if *resume != "" {
		*dir = *resume
		b, err := os.ReadFile(filepath.Join(*dir, "tune.json"))
		if err != nil {
			return fmt.Errorf("--resume %s: not a study started by gotflow tune: %w", *dir, err)
		}
		if err := json.Unmarshal(b, &job); err != nil || job.Format != tuneJobFormat {
			return fmt.Errorf("--resume %s: tune.json is not of this version (%v)", *dir, err)
		}
		if sp, err = tune.ReadSpace(filepath.Join(*dir, "space.json")); err != nil {
			return err
		}
		job.Estimator.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	} else {
		if *spacePath == "" || *dir == "" {
			return fmt.Errorf("%w: --space and --study are required (or --resume DIR)", errUsage)
		}
		if sp, err = tune.ReadSpace(*spacePath); err != nil {
			return err
		}
		t.e.ExportDir = filepath.Join(*dir, "best") // each trial gets its own
		e, err := t.estimator(stderr)
		if err != nil {
			return err
		}
		job = tuneJob{Format: tuneJobFormat, Data: *t.data, Where: *t.where, Estimator: *e}
		if job.Estimator.Bundle, err = filepath.Abs(e.Bundle); err != nil {
			return err
		}
		if !strings.Contains(job.Data, "://") {
			// --resume may run from another directory.
			if job.Data, err = filepath.Abs(job.Data); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return err
		}
		// A study that never started (its first run failed its checks,
		// before space.json) may be started again with other flags; one
		// that started belongs to its tune.json.
		for _, f := range []string{"study.json", "space.json", "study.lock"} {
			if _, err := os.Stat(filepath.Join(*dir, f)); err == nil {
				return fmt.Errorf("%w: %s already holds a study: resume it with --resume %s, or choose another --study", errUsage, *dir, *dir)
			}
		}
		b, _ := json.MarshalIndent(job, "", "  ")
		if err := atomicfile.WriteFile(filepath.Join(*dir, "tune.json"), append(b, '\n')); err != nil {
			return err
		}
	}
	useThisBinary(&job.Estimator)
	table := &trialTable{w: stdout, objective: sp.Objective.ObjectiveMetricName, params: paramNames(sp), tty: isTerminal(stdout)}
	st := tune.Study{Dir: *dir, Space: sp, Base: job.Estimator, CPUs: *cpus, OnEvent: table.event,
		Logger: job.Estimator.Logger,
		Data:   func() (arrowio.Source, error) { return openData(job.Data, job.Where) }}
	fmt.Fprintf(stdout, "study %s: %s search, %d trials, %d at a time, objective %s %s\n", *dir, sp.Algorithm.AlgorithmName,
		sp.MaxTrialCount, sp.ParallelTrialCount, sp.Objective.Type, sp.Objective.ObjectiveMetricName)
	res, err := st.Run(ctx)
	if res != nil {
		table.summary(res, sp)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("interrupted: resume with gotflow tune --resume %s: %w", *dir, err)
		}
		return err
	}
	if res.Best == nil {
		return fmt.Errorf("no trial completed (%s); see %s", res.Reason, filepath.Join(*dir, "trials.csv"))
	}
	fmt.Fprintf(stdout, "best: %s  %s %.6g  %s\nexported to %s\n", res.Best.ID, sp.Objective.ObjectiveMetricName, float64(res.Best.Final),
		formatParams(res.Best.Params, table.params), filepath.Join(*dir, "best"))
	return nil
}

func paramNames(sp *tune.Space) []string {
	var out []string
	for _, p := range sp.Parameters {
		out = append(out, p.Name)
	}
	return out
}

func formatParams(p map[string]tune.Value, names []string) string {
	var parts []string
	for _, n := range names {
		parts = append(parts, n+"="+string(p[n]))
	}
	return strings.Join(parts, " ")
}

// trialTable prints one line per trial event and a ranked table at the
// end; on a terminal it redraws a live table of every trial instead.
type trialTable struct {
	w         io.Writer
	objective string
	params    []string
	tty       bool
	trials    map[string]tune.Trial
	epochs    map[string]int
	drawn     int // lines of the live table on screen
}

func (t *trialTable) event(e tune.Event) {
	if t.tty {
		t.redraw(e)
		return
	}
	v := ""
	if n := len(e.Trial.Metrics); n > 0 && !math.IsNaN(float64(e.Trial.Metrics[n-1])) {
		v = fmt.Sprintf("  %s %.4f", t.objective, float64(e.Trial.Metrics[n-1]))
	}
	switch e.Kind {
	case "started":
		fmt.Fprintf(t.w, "%s  started    %s\n", e.Trial.ID, formatParams(e.Trial.Params, t.params))
	case "epoch":
		fmt.Fprintf(t.w, "%s  epoch %d/%d%s\n", e.Trial.ID, e.Epoch, e.Epochs, v)
	case "stopped":
		fmt.Fprintf(t.w, "%s  stopped    after %d epochs%s  (%s)\n", e.Trial.ID, len(e.Trial.Metrics), v, e.Trial.StopReason)
	case "failed":
		fmt.Fprintf(t.w, "%s  failed     %s\n", e.Trial.ID, e.Trial.Error)
	default:
		fmt.Fprintf(t.w, "%s  %-9s  %d epochs%s  %.1fs\n", e.Trial.ID, e.Kind, len(e.Trial.Metrics), v, e.Trial.Wall)
	}
}

// redraw replaces the live table with one row per trial: state, epoch,
// last objective and parameters.
func (t *trialTable) redraw(e tune.Event) {
	if t.trials == nil {
		t.trials, t.epochs = map[string]tune.Trial{}, map[string]int{}
	}
	t.trials[e.Trial.ID] = e.Trial
	t.epochs[e.Trial.ID] = e.Epochs
	ids := sortedKeys(t.trials)
	var b strings.Builder
	if t.drawn > 0 {
		fmt.Fprintf(&b, "\033[%dA", t.drawn) // back to the table's first line
	}
	fmt.Fprintf(&b, "\r\033[K%-11s %-10s %-7s %-12s %s\n", "trial", "state", "epoch", t.objective, "parameters")
	for _, id := range ids {
		tr := t.trials[id]
		v := "-"
		if n := len(tr.Metrics); n > 0 && !math.IsNaN(float64(tr.Metrics[n-1])) {
			v = fmt.Sprintf("%.4f", float64(tr.Metrics[n-1]))
		}
		fmt.Fprintf(&b, "\r\033[K%-11s %-10s %-7s %-12s %s\n", id, tr.Status, fmt.Sprintf("%d/%d", len(tr.Metrics), t.epochs[id]), v, formatParams(tr.Params, t.params))
	}
	t.drawn = len(ids) + 1
	io.WriteString(t.w, b.String())
}

func (t *trialTable) summary(res *tune.Result, sp *tune.Space) {
	trials := append([]tune.Trial(nil), res.Trials...)
	sign := 1.0
	if sp.Objective.Type == "maximize" {
		sign = -1
	}
	key := func(tr tune.Trial) float64 {
		if math.IsNaN(float64(tr.Final)) {
			return math.Inf(1)
		}
		return sign * float64(tr.Final)
	}
	sort.SliceStable(trials, func(i, j int) bool { return key(trials[i]) < key(trials[j]) })
	fmt.Fprintf(t.w, "\n%-11s %-10s %-7s %-12s %s\n", "trial", "status", "epochs", t.objective, "parameters")
	for _, tr := range trials {
		v := "-"
		if !math.IsNaN(float64(tr.Final)) {
			v = fmt.Sprintf("%.4f", float64(tr.Final))
		}
		fmt.Fprintf(t.w, "%-11s %-10s %-7d %-12s %s\n", tr.ID, tr.Status, len(tr.Metrics), v, formatParams(tr.Params, t.params))
	}
	fmt.Fprintf(t.w, "%s\n", res.Reason)
}
