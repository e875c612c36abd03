package estimator_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
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
