package estimator_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tf"
)

var mlpBundle = filepath.Join(testmodels.Root(), "loader", "testdata", "bundles", "mlp")

type fitExpected struct {
	Initial      []float64 `json:"initial"`
	SGD1Worker   []float64 `json:"sgd_1worker"`
	Sync2Workers []float64 `json:"sync_2workers"`
	Adam1Worker  []float64 `json:"adam_1worker"`
}

func loadFitExpected(t *testing.T) fitExpected {
	t.Helper()
	b, err := os.ReadFile("testdata/fit/expected.json")
	require.NoError(t, err)
	var e fitExpected
	require.NoError(t, json.Unmarshal(b, &e))
	return e
}

func fitData(t *testing.T) feeder.Source {
	t.Helper()
	src, err := feeder.OpenIPC("testdata/fit/data.arrow")
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
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			live := tf.LiveTensors()
			est := c.est
			est.Bundle = mlpBundle
			est.BatchSize = 16
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
			requireClose(t, c.want, predict(t, m), 2e-5, c.name)
			require.Less(t, epochs[len(epochs)-1].Loss, epochs[0].Loss, "training lowers the loss")
			require.NoError(t, m.Close())
			require.Equal(t, live, tf.LiveTensors(), "Fit frees every tensor")
		})
	}
}
