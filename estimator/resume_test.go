package estimator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
)

// TestFitResumesFromModelDir trains one epoch, then asks for two with the
// same ModelDir: the second Fit restores the parameter server's snapshot,
// runs only the missing epoch, and ends where two epochs in a row end.
func TestFitResumesFromModelDir(t *testing.T) {
	exp := loadFitExpected(t)
	dir := t.TempDir()
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, BatchSize: 16, Optimizer: "sgd",
		LearningRate: 0.1, Mode: "async-lock", ModelDir: dir, Epochs: 1}
	m, err := est.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.DirExists(t, filepath.Join(dir, "export", "saved_model"))

	var epochs []int
	est.Epochs = 2
	est.Hooks.OnEpoch = func(i estimator.EpochInfo) { epochs = append(epochs, i.Epoch) }
	m, err = est.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, []int{1}, epochs, "only the second epoch runs")
	requireClose(t, exp.SGD1Worker, predict(t, m), 2e-5, "resumed")
}

// TestFitResumesWithinEpoch kills (cancels) a Fit in the middle of its
// second epoch, after a mid-epoch checkpoint, and fits again with the same
// ModelDir: the workers resume at the checkpoint's batch, every batch after
// it is the one an uninterrupted run trains on, and synchronous SGD ends at
// exactly the weights of the uninterrupted run.
func TestFitResumesWithinEpoch(t *testing.T) {
	base := estimator.TFEstimator{Bundle: mlpBundle, Workers: 2, BatchSize: 4, Optimizer: "sgd", LearningRate: 0.05,
		Mode: "sync", Epochs: 2, ShufflePerIter: true, ShuffleBuffer: 2 << 10, Seed: 3, CheckpointEvery: 3}
	type key struct{ worker, epoch, batch int }
	record := func(into map[key]int) func(estimator.StepInfo) {
		var mu sync.Mutex
		return func(s estimator.StepInfo) {
			mu.Lock()
			defer mu.Unlock()
			into[key{s.Worker, s.Epoch, s.Batch}] = s.Rows
		}
	}
	// The uninterrupted run.
	full := map[key]int{}
	a := base
	a.ModelDir, a.ExportDir = t.TempDir(), t.TempDir()
	a.Hooks.OnStep = record(full)
	m, err := a.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	want := predict(t, m)
	require.NoError(t, m.Close())

	// The run that dies at batch 4 of epoch 1, after the checkpoint at 3.
	b := base
	b.ModelDir, b.ExportDir = t.TempDir(), t.TempDir()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	first := map[key]int{}
	rec := record(first)
	b.Hooks.OnStep = func(s estimator.StepInfo) {
		rec(s)
		if s.Epoch == 1 && s.Batch == 4 {
			cancel()
		}
	}
	_, err = b.Fit(ctx, fitData(t))
	require.ErrorIs(t, err, context.Canceled)
	prog, err := os.ReadFile(filepath.Join(b.ModelDir, "progress.json"))
	require.NoError(t, err)
	require.Contains(t, string(prog), `"batches_done":3`)

	second := map[key]int{}
	b.Hooks.OnStep = record(second)
	m, err = b.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	defer m.Close()
	for k, rows := range second {
		require.Equal(t, 1, k.epoch, "only epoch 1 runs again")
		require.GreaterOrEqual(t, k.batch, 3, "resumed at the checkpoint's batch")
		require.Equal(t, full[k], rows, "batch %+v", k)
	}
	for k := range full {
		if k.epoch == 1 && k.batch >= 3 {
			require.Contains(t, second, k, "batch %+v not trained after the resume", k)
		}
	}
	got := predict(t, m)
	require.Equal(t, want, got, "sync SGD after a mid-epoch resume ends at the uninterrupted run's weights")
}

// TestFitInMemorySameAsStreaming trains the same job streaming from
// Parquet row groups and held in memory (InMemory), with two readers: the
// batches, and so the trained weights, are the same.
func TestFitInMemorySameAsStreaming(t *testing.T) {
	dir := t.TempDir()
	src := fitData(t)
	for i := 0; ; i++ {
		r, err := src.Next(testCtx(t))
		if err != nil {
			break
		}
		sink, err := arrowio.CreateParquet(filepath.Join(dir, fmt.Sprintf("part-%d.parquet", i)), r.Schema(), arrowio.RowGroupRows(7))
		require.NoError(t, err)
		require.NoError(t, sink.Write(r))
		require.NoError(t, sink.Close())
		r.Release()
	}
	src.Close()
	var preds [][]float64
	for _, inMemory := range []bool{false, true} {
		ds, err := arrowio.OpenDataset(dir)
		require.NoError(t, err)
		est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, Readers: 2, BatchSize: 8, Optimizer: "sgd", LearningRate: 0.1,
			Epochs: 3, Mode: "async-lock", ShufflePerIter: true, Seed: 5, InMemory: inMemory, ExportDir: t.TempDir()}
		var plan estimator.PlanInfo
		est.Hooks.OnPlan = func(p estimator.PlanInfo) { plan = p }
		m, err := est.Fit(testCtx(t), ds)
		require.NoError(t, err)
		require.Greater(t, plan.Units, 2, "row groups are the units")
		require.Equal(t, inMemory, plan.InMemory)
		preds = append(preds, predict(t, m))
		require.NoError(t, m.Close())
	}
	require.Equal(t, preds[0], preds[1])
}
