package estimator_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/testmodels"
)

// cnnBundle has batch-norm and dropout: evaluation with training behaviour
// off and on gives different numbers.
var cnnBundle = filepath.Join(testmodels.Root(), "loader", "testdata", "bundles", "cnn")

type evalExpected struct {
	Rows     int `json:"rows"`
	Evaluate struct {
		Loss     float64 `json:"loss"`
		Accuracy float64 `json:"accuracy"`
	} `json:"evaluate"`
}

func evalSource(t *testing.T, name string) arrowio.Source {
	t.Helper()
	src, err := arrowio.OpenIPC(filepath.Join("testdata", "eval", name))
	require.NoError(t, err)
	return src
}

// withoutEvalGraph copies the CNN bundle without eval.pb, as converted
// before eval graphs existed.
func withoutEvalGraph(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cnn")
	require.NoError(t, os.CopyFS(dir, os.DirFS(cnnBundle)))
	p := filepath.Join(dir, "manifest.json")
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	require.Equal(t, "eval.pb", m["eval_graph"])
	delete(m, "eval_graph")
	raw, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, raw, 0o644))
	require.NoError(t, os.Remove(filepath.Join(dir, "eval.pb")))
	return dir
}

// TestEvaluateRunsWithTrainingOff evaluates the CNN bundle's initial weights
// and compares with Keras' model.evaluate (estimator/testdata/gen_eval.py):
// dropout off and batch-norm on its moving statistics.
func TestEvaluateRunsWithTrainingOff(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "eval", "expected.json"))
	require.NoError(t, err)
	var exp evalExpected
	require.NoError(t, json.Unmarshal(raw, &exp))
	m := &estimator.TFModel{Bundle: cnnBundle, Weights: filepath.Join(cnnBundle, "weights.safetensors"), BatchSize: 16}
	res, err := m.Evaluate(testCtx(t), evalSource(t, "data.arrow"))
	require.NoError(t, err)
	require.EqualValues(t, exp.Rows, res.Rows)
	t.Logf("eval loss %.7f (Keras %.7f), accuracy %.4f (Keras %.4f)", res.Loss, exp.Evaluate.Loss, res.Metrics["accuracy"], exp.Evaluate.Accuracy)
	require.InDelta(t, exp.Evaluate.Loss, res.Loss, 1e-5)
	require.InDelta(t, exp.Evaluate.Accuracy, res.Metrics["accuracy"], 1e-6)

	// The same bundle without eval.pb runs its training graph: dropout and
	// batch statistics give another loss.
	old := &estimator.TFModel{Bundle: withoutEvalGraph(t), Weights: m.Weights, BatchSize: 16}
	resTrain, err := old.Evaluate(testCtx(t), evalSource(t, "data.arrow"))
	require.NoError(t, err)
	t.Logf("training-mode loss %.7f", resTrain.Loss)
	require.Greater(t, math.Abs(resTrain.Loss-res.Loss), 1e-3)
}

// TestFitValidationRunsWithTrainingOff checks that Fit's validation loss is
// Evaluate's (training behaviour off) on the held-out rows with the
// trained weights.
func TestFitValidationRunsWithTrainingOff(t *testing.T) {
	var last estimator.EpochInfo
	est := estimator.TFEstimator{Bundle: cnnBundle, Workers: 1, BatchSize: 8, Optimizer: "sgd", LearningRate: 0.05,
		Epochs: 2, ValidationSplit: 0.2, ExportDir: t.TempDir(),
		Hooks: estimator.TrainHooks{OnEpoch: func(i estimator.EpochInfo) { last = i }}}
	m, err := est.Fit(testCtx(t), evalSource(t, "data.arrow"))
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, 1, last.Epoch)
	res, err := m.Evaluate(testCtx(t), evalSource(t, "val.arrow"))
	require.NoError(t, err)
	require.EqualValues(t, 10, res.Rows)
	t.Logf("Fit validation loss %.7f, Evaluate %.7f", last.ValLoss, res.Loss)
	require.InDelta(t, res.Loss, last.ValLoss, 1e-5)
	require.InDelta(t, res.Metrics["accuracy"], last.ValMetrics["accuracy"], 1e-6)
}
