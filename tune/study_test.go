package tune_test

import (
	"context"
	"encoding/csv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tune"
)

var (
	mlpBundle = filepath.Join(testmodels.Root(), "loader", "testdata", "bundles", "mlp")
	fitData   = filepath.Join(testmodels.Root(), "estimator", "testdata", "fit", "data.arrow")
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func base() estimator.TFEstimator {
	return estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, BatchSize: 8, Epochs: 6, Optimizer: "adam",
		LearningRate: 0.01, ValidationSplit: 0.25, Seed: 3, CheckpointEvery: -1}
}

func openData() (arrowio.Source, error) { return arrowio.OpenDataset(fitData) }

const searchSpace = `
objective: {type: maximize, objectiveMetricName: val_accuracy}
algorithm: {algorithmName: random, algorithmSettings: [{name: random_state, value: 5}]}
maxTrialCount: 8
parallelTrialCount: 2
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "0.0005", max: "0.5", distribution: logUniform}}
  - {name: batch_size, parameterType: int, feasibleSpace: {min: 4, max: 32}}
  - {name: optimizer, parameterType: categorical, feasibleSpace: {list: [adam, sgd]}}
earlyStopping: {algorithmName: asha, algorithmSettings: [{name: grace_period, value: 1}, {name: reduction_factor, value: 2}]}
`

func mustSpace(t *testing.T, s string) *tune.Space {
	sp, err := tune.ParseSpace([]byte(s))
	require.NoError(t, err)
	return sp
}

// TestStudy runs 8 trials, 2 at a time, with ASHA, and checks the study
// directory: the trials' rows in study.json, trials.csv and
// trials.parquet, the per-trial exports and TensorBoard runs, ASHA's stops
// at its rungs, and the best trial (highest final val_accuracy) copied to
// best/.
func TestStudy(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	kinds := map[string]int{}
	st := tune.Study{Dir: dir, Space: mustSpace(t, searchSpace), Base: base(), Data: openData, CPUs: 2,
		OnEvent: func(e tune.Event) {
			mu.Lock()
			defer mu.Unlock()
			kinds[e.Kind]++
		}}
	res, err := st.Run(testCtx(t))
	require.NoError(t, err)
	require.Len(t, res.Trials, 8)
	require.Equal(t, "all 8 trials run", res.Reason)
	require.Equal(t, 8, kinds["started"])
	require.Equal(t, 8, kinds["completed"]+kinds["stopped"])
	var ids []string
	for _, tr := range res.Trials {
		ids = append(ids, tr.ID)
		require.Contains(t, []string{tune.Completed, tune.Stopped}, tr.Status, "%s: %s", tr.ID, tr.Error)
		require.DirExists(t, filepath.Join(dir, "tensorboard", tr.ID))
		switch tr.Status {
		case tune.Completed:
			require.Len(t, tr.Metrics, 6)
			require.FileExists(t, filepath.Join(tr.Export, "tfmodel.json"))
		case tune.Stopped:
			require.Contains(t, []int{1, 2, 4}, len(tr.Metrics), "stopped at a rung: %s", tr.StopReason)
			require.Contains(t, tr.StopReason, "asha")
		}
		best := slices.MaxFunc(tr.Metrics, func(a, b tune.Metric) int { return cmpNaN(a, b) })
		require.Equal(t, float64(best), float64(tr.Best))
		require.Equal(t, tr.Metrics[len(tr.Metrics)-1], tr.Final)
	}
	require.Equal(t, []string{"trial-0000", "trial-0001", "trial-0002", "trial-0003", "trial-0004", "trial-0005", "trial-0006", "trial-0007"}, ids)
	require.Greater(t, kinds["stopped"], 0, "ASHA stopped some trials")
	ranked := res.Ranked(st.Space.Objective)
	require.NotEmpty(t, ranked)
	require.Equal(t, ranked[0].ID, res.Best.ID)
	for i := 1; i < len(ranked); i++ {
		require.GreaterOrEqual(t, ranked[i-1].Final, ranked[i].Final, "best first: the highest val_accuracy")
	}
	require.FileExists(t, filepath.Join(dir, "best", "tfmodel.json"))
	m, err := estimator.Load(filepath.Join(dir, "best"))
	require.NoError(t, err)
	m.Close()

	// The tables hold one row per trial.
	f, err := os.Open(filepath.Join(dir, "trials.csv"))
	require.NoError(t, err)
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	require.NoError(t, err)
	require.Len(t, rows, 9)
	require.Equal(t, []string{"id", "status", "params_learning_rate", "params_batch_size", "params_optimizer", "val_accuracy", "best_val_accuracy",
		"best_epoch", "epochs", "wall_seconds", "stop_reason", "error", "export"}, rows[0])
	pf, err := file.OpenParquetFile(filepath.Join(dir, "trials.parquet"), false)
	require.NoError(t, err)
	defer pf.Close()
	rd, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, leakcheck.Allocator())
	require.NoError(t, err)
	tbl, err := rd.ReadTable(context.Background())
	require.NoError(t, err)
	defer tbl.Release()
	require.EqualValues(t, 8, tbl.NumRows())
	require.Equal(t, "float64", tbl.Schema().Field(2).Type.String())
	require.Equal(t, "int64", tbl.Schema().Field(3).Type.String())
}

func cmpNaN(a, b tune.Metric) int {
	switch {
	case math.IsNaN(float64(a)):
		return -1
	case math.IsNaN(float64(b)):
		return 1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestStudyResumes interrupts a study after its third finished trial and
// runs it again on the same directory: the finished trials are kept as
// they were, the interrupted ones run again, and the study ends with
// trial ids 0..7, each once, with the parameters the sampler gave them.
func TestStudyResumes(t *testing.T) {
	dir := t.TempDir()
	sp := mustSpace(t, searchSpace)
	sp.EarlyStopping = nil
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	finished := 0
	st := tune.Study{Dir: dir, Space: sp, Base: base(), Data: openData, CPUs: 2, OnEvent: func(e tune.Event) {
		if e.Kind == "completed" || e.Kind == "stopped" || e.Kind == "failed" {
			if finished++; finished == 3 {
				cancel()
			}
		}
	}}
	res, err := st.Run(ctx)
	require.ErrorContains(t, err, "interrupted")
	var first []tune.Trial
	for _, tr := range res.Trials {
		if tr.Finished() {
			first = append(first, tr)
		}
	}
	require.GreaterOrEqual(t, len(first), 3)
	require.Less(t, len(res.Trials), 8)

	st.OnEvent = nil
	res, err = st.Run(testCtx(t))
	require.NoError(t, err)
	require.Len(t, res.Trials, 8)
	seen := map[string]bool{}
	for i, tr := range res.Trials {
		require.Equal(t, []string{"trial-0000", "trial-0001", "trial-0002", "trial-0003", "trial-0004", "trial-0005", "trial-0006", "trial-0007"}[i], tr.ID)
		require.False(t, seen[tr.ID])
		seen[tr.ID] = true
		require.Equal(t, tune.Completed, tr.Status, "%s: %s", tr.ID, tr.Error)
	}
	for _, f := range first {
		got := res.Trials[idIndex(f.ID)]
		require.True(t, f.Started.Equal(got.Started) && f.Ended.Equal(got.Ended))
		f.Started, f.Ended, got.Started, got.Ended = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		require.Equal(t, f, got, "finished trials are kept as they were")
	}

	// The same parameters as an uninterrupted study with the same seed.
	whole := tune.Study{Dir: t.TempDir(), Space: sp, Base: base(), Data: openData, CPUs: 2}
	want, err := whole.Run(testCtx(t))
	require.NoError(t, err)
	for i := range want.Trials {
		require.Equal(t, want.Trials[i].Params, res.Trials[i].Params)
	}
}

func idIndex(id string) int {
	var n int
	for _, c := range id[len("trial-"):] {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestStudyBadInput(t *testing.T) {
	dir := t.TempDir()
	sp := mustSpace(t, `
objective: {type: maximize, objectiveMetricName: val_precision}
parameters: [{name: learning_rate, parameterType: double, feasibleSpace: {min: 0.001, max: 0.1}}]`)
	_, err := (&tune.Study{Dir: dir, Space: sp, Base: base(), Data: openData}).Run(testCtx(t))
	require.ErrorContains(t, err, `objective.objectiveMetricName "val_precision": bundle `)
	require.ErrorContains(t, err, "reports loss and [accuracy]")

	sp.Objective.ObjectiveMetricName = "val_accuracy"
	b := base()
	b.ValidationSplit = 0
	_, err = (&tune.Study{Dir: dir, Space: sp, Base: b, Data: openData}).Run(testCtx(t))
	require.ErrorContains(t, err, "needs a validation split")

	// Trials that fail are recorded with their error and counted against
	// maxFailedTrialCount.
	failing := mustSpace(t, `
objective: {type: minimize, objectiveMetricName: val_loss}
maxTrialCount: 4
maxFailedTrialCount: 1
parameters: [{name: optimizer, parameterType: categorical, feasibleSpace: {list: [nadamax]}}]`)
	failDir := t.TempDir()
	res, err := (&tune.Study{Dir: failDir, Space: failing, Base: base(), Data: openData}).Run(testCtx(t))
	require.ErrorContains(t, err, "2 trials failed, more than maxFailedTrialCount 1")
	require.Len(t, res.Trials, 2)
	for _, tr := range res.Trials {
		require.Equal(t, tune.Failed, tr.Status)
		require.Contains(t, tr.Error, "nadamax")
	}

	// More parallel trials than CPUs is a warning with the numbers.
	var logs strings.Builder
	many := mustSpace(t, searchSpace)
	many.ParallelTrialCount, many.MaxTrialCount, many.EarlyStopping = 4, 1, nil
	_, err = (&tune.Study{Dir: t.TempDir(), Space: many, Base: base(), Data: openData, CPUs: 2,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}).Run(testCtx(t))
	require.NoError(t, err)
	require.Contains(t, logs.String(), "more trial workers than CPUs: trials share cores")
	require.Contains(t, logs.String(), "parallelTrialCount=4 workers_per_trial=1 cpus=2 intra_op_threads_per_trial=1")

	// Another space on the same directory is refused.
	_, err = (&tune.Study{Dir: failDir, Space: mustSpace(t, searchSpace), Base: base(), Data: openData}).Run(testCtx(t))
	require.ErrorContains(t, err, "searches another space")
}
