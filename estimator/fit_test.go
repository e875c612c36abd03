package estimator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/tensorboard"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tf"
)

var mlpBundle = filepath.Join(testmodels.Root(), "loader", "testdata", "bundles", "mlp")

type fitExpected struct {
	Initial        []float64 `json:"initial"`
	SGD1Worker     []float64 `json:"sgd_1worker"`
	SGD1WorkerEval struct {
		Loss     float64 `json:"loss"`
		Accuracy float64 `json:"accuracy"`
	} `json:"sgd_1worker_eval"`
	Sync2Workers []float64 `json:"sync_2workers"`
	Adam1Worker  []float64 `json:"adam_1worker"`
	SGDOverlap   []float64 `json:"sgd_1worker_overlap"`
}

func loadFitExpected(t *testing.T) fitExpected {
	t.Helper()
	b, err := os.ReadFile("testdata/fit/expected.json")
	require.NoError(t, err)
	var e fitExpected
	require.NoError(t, json.Unmarshal(b, &e))
	return e
}

func fitData(t *testing.T) arrowio.Source {
	t.Helper()
	src, err := arrowio.OpenIPC("testdata/fit/data.arrow")
	require.NoError(t, err)
	return src
}

// predict runs the fitted model over the training data and returns its
// "output" column, flattened.
func predict(t *testing.T, m *estimator.TFModel) []float64 {
	t.Helper()
	s, err := m.Transform(testCtx(t), fitData(t))
	require.NoError(t, err)
	defer s.Release()
	nums, _, rows := collect(t, s)
	require.EqualValues(t, 96, rows)
	return nums["output"]
}

func requireClose(t *testing.T, want, got []float64, tol float64, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	worst := 0.0
	for i := range want {
		worst = max(worst, math.Abs(want[i]-got[i]))
	}
	t.Logf("%s: max |gotflow - keras| = %.2e", what, worst)
	require.LessOrEqual(t, worst, tol, what)
}

// TestFitMatchesKerasTraining trains the MLP bundle with Fit and compares
// the exported model's predictions with those of the same Keras model
// trained in Python on the same batches (estimator/testdata/gen_fit.py).
func TestFitMatchesKerasTraining(t *testing.T) {
	exp := loadFitExpected(t)
	cases := []struct {
		name string
		est  estimator.TFEstimator
		want []float64
	}{
		{"sgd 1 worker async-lock", estimator.TFEstimator{Optimizer: "sgd", LearningRate: 0.1, Epochs: 2, Mode: "async-lock"}, exp.SGD1Worker},
		{"sgd 1 worker hogwild", estimator.TFEstimator{Optimizer: "sgd", LearningRate: 0.1, Epochs: 2}, exp.SGD1Worker},
		{"sgd 2 workers sync", estimator.TFEstimator{Optimizer: "sgd", LearningRate: 0.1, Epochs: 2, Workers: 2, Mode: "sync", NumPS: 2}, exp.Sync2Workers},
		{"adam 1 worker", estimator.TFEstimator{Optimizer: "adam", LearningRate: 0.01, Epochs: 3, Mode: "async-lock"}, exp.Adam1Worker},
		{"sgd 1 worker overlapping pushes", estimator.TFEstimator{Optimizer: "sgd", LearningRate: 0.1, Epochs: 2, Mode: "async-lock", OverlapPush: true}, exp.SGDOverlap},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			live := tf.LiveTensors()
			est := c.est
			est.Bundle = mlpBundle
			est.BatchSize = 16
			if est.Workers == 0 {
				est.Workers = 1
			}
			est.ExportDir = t.TempDir()
			var epochs []estimator.EpochInfo
			est.Hooks.OnEpoch = func(i estimator.EpochInfo) { epochs = append(epochs, i) }
			m, err := est.Fit(testCtx(t), fitData(t))
			require.NoError(t, err)
			defer m.Close()
			require.Len(t, epochs, max(est.Epochs, 1))
			require.Equal(t, 96/16, epochs[0].Steps)
			require.FileExists(t, filepath.Join(est.ExportDir, "frozen.pb"))
			require.FileExists(t, filepath.Join(est.ExportDir, "saved_model", "saved_model.pb"))
			got := predict(t, m)
			requireClose(t, c.want, got, 2e-5, c.name)
			moved := 0.0
			for i := range got {
				moved = max(moved, math.Abs(got[i]-exp.Initial[i]))
			}
			require.Greater(t, moved, 1e-2, "training must change the predictions")
			require.Less(t, epochs[len(epochs)-1].Loss, epochs[0].Loss, "training lowers the loss")
			require.NoError(t, m.Close())
			require.Equal(t, live, tf.LiveTensors(), "Fit frees every tensor")
		})
	}
}

func TestFitBadInput(t *testing.T) {
	base := func() estimator.TFEstimator {
		return estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, ExportDir: t.TempDir()}
	}
	cases := []struct {
		name string
		edit func(e *estimator.TFEstimator)
		data func(t *testing.T) arrowio.Source
		want string
	}{
		{"no bundle", func(e *estimator.TFEstimator) { e.Bundle = "" }, fitData, "Bundle is required"},
		{"workers 0", func(e *estimator.TFEstimator) { e.Workers = 0 }, fitData, "Workers is 0"},
		{"bad mode", func(e *estimator.TFEstimator) { e.Mode = "eventual" }, fitData, "Mode"},
		{"bad optimizer", func(e *estimator.TFEstimator) { e.Optimizer = "lbfgs" }, fitData, "lbfgs"},
		{"validation split 1", func(e *estimator.TFEstimator) { e.ValidationSplit = 1 }, fitData, "ValidationSplit is 1"},
		{"early stopping without validation", func(e *estimator.TFEstimator) { e.EarlyStopping = &estimator.EarlyStopping{} }, fitData, "EarlyStopping needs a ValidationSplit"},
		{"sync with pull every 5", func(e *estimator.TFEstimator) { e.Mode = "sync"; e.PullEvery = 5 }, fitData, "PullEvery must be 0 or 1"},
		{"missing bundle dir", func(e *estimator.TFEstimator) { e.Bundle = t.TempDir() }, fitData, "manifest.json"},
		{"mapping to a missing column", func(e *estimator.TFEstimator) { e.InputMapping = map[string]string{"pixels": "x"} }, fitData, "pixels"},
		{"mapping to an unknown input", func(e *estimator.TFEstimator) { e.InputMapping = map[string]string{"x": "image"} }, fitData, `input "image", which the bundle does not have`},
		{"column mapped twice", func(e *estimator.TFEstimator) {
			e.LabelMapping = map[string]string{"x": "y"}
			e.InputMapping = map[string]string{"x": "x"}
		}, fitData, "mapped to both"},
		{"tensor mapped twice", func(e *estimator.TFEstimator) {
			e.InputMapping = map[string]string{"x": "x", "x2": "x"}
		}, fitData, `columns "x" and "x2" are both mapped to "x"`},
		{"label dtype the loss cannot take", nil, floatLabels, "y"},
		{"empty dataset", nil, emptyData, "training data is empty"},
		{"more workers than rows", func(e *estimator.TFEstimator) { e.Workers = 200 }, fitData, "96 training rows for 200 workers"},
		{"nowhere to export", func(e *estimator.TFEstimator) { e.ExportDir = "" }, fitData, "set ExportDir (or ModelDir)"},
		{"validation split of no row", func(e *estimator.TFEstimator) { e.ValidationSplit = 0.001 }, fitData, "holds out no row"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			live := tf.LiveTensors()
			e := base()
			if c.edit != nil {
				c.edit(&e)
			}
			m, err := e.Fit(testCtx(t), c.data(t))
			require.Error(t, err)
			require.Nil(t, m)
			require.ErrorContains(t, err, c.want)
			t.Log(err)
			require.Equal(t, live, tf.LiveTensors())
		})
	}
}

// floatLabels is the fit data with y as float64, which the int32 label of
// the bundle's loss cannot take without Cast.
func floatLabels(t *testing.T) arrowio.Source {
	t.Helper()
	src := fitData(t)
	defer src.Close()
	mem := leakcheck.Allocator()
	var recs []arrow.RecordBatch
	for {
		rec, err := src.Next(testCtx(t))
		if err != nil {
			break
		}
		b := array.NewFloat64Builder(mem)
		ys := rec.Column(1).(*array.Int32)
		for i := 0; i < ys.Len(); i++ {
			b.Append(float64(ys.Value(i)) + 0.5)
		}
		ycol := b.NewArray()
		schema := arrow.NewSchema([]arrow.Field{rec.Schema().Field(0), {Name: "y", Type: arrow.PrimitiveTypes.Float64}}, nil)
		recs = append(recs, array.NewRecordBatch(schema, []arrow.Array{rec.Column(0), ycol}, rec.NumRows()))
		ycol.Release()
		rec.Release()
	}
	out, err := arrowio.FromRecords(recs[0].Schema(), recs...)
	require.NoError(t, err)
	for _, r := range recs {
		r.Release()
	}
	return out
}

func emptyData(t *testing.T) arrowio.Source {
	t.Helper()
	src := fitData(t)
	schema := src.Schema()
	src.Close()
	out, err := arrowio.FromRecords(schema)
	require.NoError(t, err)
	return out
}

// TestFitValidationEarlyStoppingAndTensorBoard holds out a quarter of the
// rows, stops when the validation loss does not improve by a large margin,
// and writes one TensorBoard summary per epoch with the hooks' values.
func TestFitValidationEarlyStoppingAndTensorBoard(t *testing.T) {
	tbDir := t.TempDir()
	var infos []estimator.EpochInfo
	var steps atomic.Int64
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 2, BatchSize: 8, Epochs: 10, ValidationSplit: 0.25,
		ShufflePerIter: true, PartitionShuffles: 3, Seed: 7, ExportDir: t.TempDir(), TensorBoardDir: tbDir,
		EarlyStopping: &estimator.EarlyStopping{Patience: 0, MinDelta: 100},
		Hooks: estimator.TrainHooks{
			OnEpoch: func(i estimator.EpochInfo) { infos = append(infos, i) },
			OnStep:  func(estimator.StepInfo) { steps.Add(1) },
		}}
	m, err := est.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	defer m.Close()
	require.Len(t, infos, 2, "the second epoch does not improve by MinDelta, so training stops")
	// The ETA after the first epoch is about one epoch's time.
	require.InDelta(t, float64(infos[0].Elapsed), float64(infos[0].ETA)/9, float64(infos[0].Elapsed),
		"ETA %v after an epoch of %v with 9 to go", infos[0].ETA, infos[0].Elapsed)
	require.Less(t, infos[1].ETA, infos[0].ETA)
	for _, i := range infos {
		require.False(t, math.IsNaN(i.ValLoss))
		require.Greater(t, i.ValLoss, 0.0)
		require.Contains(t, i.ValMetrics, "accuracy")
		require.Equal(t, 2*5, i.Steps, "two workers with 36 rows each, in batches of 8")
		require.Greater(t, i.ExamplesSec, 0.0)
	}
	require.EqualValues(t, 2*10, steps.Load())

	files, err := filepath.Glob(filepath.Join(tbDir, "events.out.tfevents.*"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	f, err := os.Open(files[0])
	require.NoError(t, err)
	defer f.Close()
	events, err := tensorboard.ReadEvents(f)
	require.NoError(t, err)
	got := map[int64]map[string]float64{}
	for _, ev := range events {
		for _, v := range ev.GetSummary().GetValue() {
			if got[ev.Step] == nil {
				got[ev.Step] = map[string]float64{}
			}
			got[ev.Step][v.Tag] = float64(v.GetSimpleValue())
		}
	}
	for _, i := range infos {
		s := got[int64(i.Epoch+1)]
		require.InDelta(t, i.Loss, s["loss"], 1e-6)
		require.InDelta(t, i.ValLoss, s["val_loss"], 1e-6)
		require.InDelta(t, i.ValMetrics["accuracy"], s["val_accuracy"], 1e-6)
		require.Contains(t, s, "examples_per_sec")
	}
}

// TestEvaluateMatchesKeras evaluates the SGD-trained model over all rows and
// compares loss and accuracy with Keras' values for the same training.
func TestEvaluateMatchesKeras(t *testing.T) {
	exp := loadFitExpected(t)
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, BatchSize: 16, Optimizer: "sgd", LearningRate: 0.1,
		Epochs: 2, Mode: "async-lock", ExportDir: t.TempDir()}
	m, err := est.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	defer m.Close()
	m.BatchSize = 40 // batches of another size than training's, and a partial last one
	res, err := m.Evaluate(testCtx(t), fitData(t))
	require.NoError(t, err)
	require.EqualValues(t, 96, res.Rows)
	require.InDelta(t, exp.SGD1WorkerEval.Loss, res.Loss, 1e-5)
	require.InDelta(t, exp.SGD1WorkerEval.Accuracy, res.Metrics["accuracy"], 1e-6)

	loaded, err := estimator.Load(est.ExportDir)
	require.NoError(t, err, "Fit saves the model description in the export directory")
	defer loaded.Close()
	res2, err := loaded.Evaluate(testCtx(t), fitData(t))
	require.NoError(t, err)
	require.InDelta(t, res.Loss, res2.Loss, 1e-6)

	noBundle := &estimator.TFModel{Path: m.Path, BatchSize: 40}
	_, err = noBundle.Evaluate(testCtx(t), fitData(t))
	require.ErrorContains(t, err, "Evaluate needs the model's Bundle and Weights")
}

// TestFitOverlapPush trains with pushes overlapping the next step: the
// loss still falls, every step reaches the parameter server, and nothing
// leaks.
func TestFitOverlapPush(t *testing.T) {
	for _, pullEvery := range []int{1, 3} {
		t.Run(fmt.Sprintf("pull every %d", pullEvery), func(t *testing.T) {
			live := tf.LiveTensors()
			var infos []estimator.EpochInfo
			est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 2, BatchSize: 8, Epochs: 6, Optimizer: "sgd",
				LearningRate: 0.1, OverlapPush: true, PullEvery: pullEvery, ValidationSplit: 0.25, ExportDir: t.TempDir(),
				Hooks: estimator.TrainHooks{OnEpoch: func(i estimator.EpochInfo) { infos = append(infos, i) }}}
			m, err := est.Fit(testCtx(t), fitData(t))
			require.NoError(t, err)
			require.Less(t, infos[5].ValLoss, infos[0].ValLoss)
			require.Equal(t, 10, infos[0].Steps)
			require.NoError(t, m.Close())
			require.Equal(t, live, tf.LiveTensors())
		})
	}
	bad := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, Mode: "sync", OverlapPush: true}
	require.ErrorContains(t, bad.Validate(), "OverlapPush needs an asynchronous mode")
}

// TestFitReadersKeepOrder: decoding the data with several readers gives
// the same rows in the same order, so training matches Keras as with one.
func TestFitReadersKeepOrder(t *testing.T) {
	exp := loadFitExpected(t)
	dir := t.TempDir()
	// The fit data as Parquet in three files, several row groups each.
	src := fitData(t)
	var recs []arrow.RecordBatch
	for {
		r, err := src.Next(testCtx(t))
		if err != nil {
			break
		}
		recs = append(recs, r)
	}
	src.Close()
	for i, r := range recs {
		sink, err := arrowio.CreateParquet(filepath.Join(dir, fmt.Sprintf("part-%d.parquet", i)), r.Schema(), arrowio.RowGroupRows(16))
		require.NoError(t, err)
		require.NoError(t, sink.Write(r))
		require.NoError(t, sink.Close())
		r.Release()
	}
	ds, err := arrowio.OpenDataset(dir)
	require.NoError(t, err)
	require.Len(t, ds.Files(), len(recs))
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, Readers: 3, BatchSize: 16, Optimizer: "sgd", LearningRate: 0.1,
		Epochs: 2, Mode: "async-lock", ExportDir: t.TempDir()}
	m, err := est.Fit(testCtx(t), ds)
	require.NoError(t, err)
	defer m.Close()
	requireClose(t, exp.SGD1Worker, predict(t, m), 2e-5, "3 readers")
}

// TestFitOverlapPushCanceled cancels a Fit while pushes overlap the next
// step: Fit returns the cancellation, and no tensor is left behind.
func TestFitOverlapPushCanceled(t *testing.T) {
	live := tf.LiveTensors()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 2, BatchSize: 4, Epochs: 50, Optimizer: "sgd",
		LearningRate: 0.1, OverlapPush: true, ExportDir: t.TempDir(),
		Hooks: estimator.TrainHooks{OnStep: func(s estimator.StepInfo) {
			if s.Examples > 100 {
				cancel()
			}
		}}}
	m, err := est.Fit(ctx, fitData(t))
	require.Error(t, err)
	require.Nil(t, m)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, live, tf.LiveTensors(), "every tensor, also those of in-flight pushes, is freed")
}

// TestExportReplacesAtomically exports twice into one directory: the second
// model replaces the first entirely, and no staging directory is left.
func TestExportReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, BatchSize: 16, Optimizer: "sgd", LearningRate: 0.1,
		Epochs: 1, Mode: "async-lock", ExportDir: dir}
	m, err := est.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	first := predict(t, m)
	require.NoError(t, m.Close())

	est.Epochs = 2
	m, err = est.Fit(testCtx(t), fitData(t))
	require.NoError(t, err)
	defer m.Close()
	requireClose(t, loadFitExpected(t).SGD1Worker, predict(t, m), 2e-5, "second export")
	require.NotEqual(t, first, predict(t, m))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"frozen.pb", "saved_model", "weights.safetensors", estimator.ModelFile}, names)
	loaded, err := estimator.Load(dir)
	require.NoError(t, err)
	defer loaded.Close()
	requireClose(t, loadFitExpected(t).SGD1Worker, predict(t, loaded), 2e-5, "loaded from tfmodel.json")
}
