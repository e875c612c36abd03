package tfserving_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/tfserving"
)

// TestReadConfigFiles reads TF Serving's text-format model config and
// batching parameters as TF Serving's documentation writes them.
func TestReadConfigFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "models.config")
	require.NoError(t, os.WriteFile(cfg, []byte(`
model_config_list {
  config {
    name: 'half_plus_two'
    base_path: '/models/half_plus_two'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: 'stable' value: 1 }
    version_labels { key: 'canary' value: 2 }
  }
  config {
    name: 'digits'
    base_path: 'digits'
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: 'all' base_path: '/m/all' model_version_policy { all {} } }
}
`), 0o644))
	models, err := tfserving.ReadModelConfig(cfg)
	require.NoError(t, err)
	require.Equal(t, []serving.ModelConfig{
		{Name: "half_plus_two", BasePath: "/models/half_plus_two", Policy: serving.VersionPolicy{Specific: []int64{1, 2}},
			Labels: map[string]int64{"stable": 1, "canary": 2}},
		{Name: "digits", BasePath: filepath.Join(dir, "digits"), Policy: serving.VersionPolicy{Latest: 2}},
		{Name: "all", BasePath: "/m/all", Policy: serving.VersionPolicy{All: true}},
	}, models)

	bp := filepath.Join(dir, "batching.config")
	require.NoError(t, os.WriteFile(bp, []byte(`
max_batch_size { value: 128 }
batch_timeout_micros { value: 500 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 4 }
allowed_batch_sizes: 32
allowed_batch_sizes: 128
`), 0o644))
	p, err := tfserving.ReadBatchingParameters(bp)
	require.NoError(t, err)
	require.Equal(t, &serving.BatchingParameters{MaxBatchSize: 128, BatchTimeout: 500 * time.Microsecond, MaxEnqueuedBatches: 100,
		NumBatchThreads: 4, AllowedBatchSizes: []int{32, 128}}, p)

	for _, tc := range []struct{ file, text, msg string }{
		{"models.config", `model_config_list { config { name: 'x' base_path: '/x' model_platform: 'pytorch' } }`, `platform "pytorch" is not supported`},
		{"models.config", `model_config_list {}`, "has no model"},
		{"models.config", `not a proto`, "is not a ModelServerConfig in text format"},
		{"batching.config", `max_batch_size { value: 64 } allowed_batch_sizes: 32`, "must equal max_batch_size (64)"},
		{"batching.config", `max_batch_size { value: 64 } allowed_batch_sizes: 64 allowed_batch_sizes: 32`, "strictly increasing"},
	} {
		path := filepath.Join(t.TempDir(), tc.file)
		require.NoError(t, os.WriteFile(path, []byte(tc.text), 0o644))
		if tc.file == "models.config" {
			_, err = tfserving.ReadModelConfig(path)
		} else {
			_, err = tfserving.ReadBatchingParameters(path)
		}
		require.ErrorContains(t, err, tc.msg)
	}
}
