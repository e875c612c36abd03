package savedmodel_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// The bundles and the Python outputs recorded for them come from
// loader/testdata/gen_bundles.py.
func exportBundle(t *testing.T, name string) (*loader.Bundle, map[string]any) {
	t.Helper()
	dir := filepath.Join(testmodels.Root(), "loader", "testdata", "bundles")
	b, err := loader.LoadBundle(filepath.Join(dir, name))
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join(dir, name+".expected.json"))
	require.NoError(t, err)
	var exp map[string]any
	require.NoError(t, json.Unmarshal(raw, &exp))
	return b, exp
}

func floats(v any) []float64 {
	var out []float64
	for _, x := range v.(map[string]any)["data"].([]any) {
		out = append(out, x.(float64))
	}
	return out
}

func shape(v any) []int64 {
	var out []int64
	for _, x := range v.(map[string]any)["shape"].([]any) {
		out = append(out, int64(x.(float64)))
	}
	return out
}

func relErr(got, want []float64) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(got[i]-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return diff / math.Max(scale, 1e-30)
}

type pyJob struct {
	Dir    string         `json:"dir"`
	Inputs map[string]any `json:"inputs"`
}

// pythonPredict loads each SavedModel with tf.saved_model.load and runs its
// serving_default signature on the job's inputs, in one Python process.
func pythonPredict(t *testing.T, jobs []pyJob) []map[string][]float64 {
	t.Helper()
	py := os.Getenv("GOTFLOW_PYTHON")
	if py == "" {
		py = filepath.Join(testmodels.Root(), ".venv", "bin", "python")
	}
	if _, err := os.Stat(py); err != nil {
		t.Skipf("Python with TensorFlow not found at %s (set GOTFLOW_PYTHON): %v", py, err)
	}
	in, err := json.Marshal(jobs)
	require.NoError(t, err)
	script := `
import json, sys
import numpy as np
import tensorflow as tf
results = []
for job in json.loads(sys.stdin.read()):
    f = tf.saved_model.load(job["dir"]).signatures["serving_default"]
    feeds = {k: tf.constant(np.array(v["data"], dtype=v["dtype"]).reshape(v["shape"])) for k, v in job["inputs"].items()}
    out = f(**feeds)
    results.append({k: v.numpy().reshape(-1).astype(float).tolist() for k, v in out.items()})
print(json.dumps(results))
`
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	require.NoError(t, err, "python: %s", stderr.String())
	var out []map[string][]float64
	require.NoError(t, json.Unmarshal(outb, &out))
	require.Len(t, out, len(jobs))
	return out
}

func TestExportLoadsInPythonAndGo(t *testing.T) {
	names := []string{"mlp", "cnn", "tf1", "finetune"}
	var jobs []pyJob
	exps := map[string]map[string]any{}
	for _, name := range names {
		b, exp := exportBundle(t, name)
		frozen, err := b.Freeze(b.Weights)
		require.NoError(t, err)
		dir := filepath.Join(t.TempDir(), name)
		require.NoError(t, savedmodel.Export(dir, frozen, savedmodel.SignatureFromBundle(b)))
		jobs = append(jobs, pyJob{Dir: dir, Inputs: exp["inputs"].(map[string]any)})
		exps[name] = exp
	}
	pyOut := pythonPredict(t, jobs)
	for j, name := range names {
		t.Run(name, func(t *testing.T) {
			dir := jobs[j].Dir
			inputs := jobs[j].Inputs
			outputs := exps[name]["outputs"].(map[string]any)
			py := pyOut[j]
			require.Len(t, py, len(outputs))

			// The same SavedModel through gotflow's own loader.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			m, err := savedmodel.Load(ctx, dir)
			require.NoError(t, err)
			defer m.Close()
			feeds := map[string]*tf.Tensor{}
			for k, v := range inputs {
				data := floats(v)
				f32 := make([]float32, len(data))
				for i, x := range data {
					f32[i] = float32(x)
				}
				x, err := tf.NewTensor(shape(v), f32)
				require.NoError(t, err)
				defer x.Close()
				feeds[k] = x
			}
			var names []string
			for k := range outputs {
				names = append(names, k)
			}
			res, err := m.Run(ctx, feeds, names...)
			require.NoError(t, err)
			for i, k := range names {
				want := floats(outputs[k]) // model(x, training=False) in Python
				d, err := tf.Data[float32](res[i])
				require.NoError(t, err)
				got := make([]float64, len(d))
				for j, x := range d {
					got[j] = float64(x)
				}
				res[i].Close()
				require.LessOrEqual(t, relErr(py[k], want), 1e-5, "python %s", k)
				require.LessOrEqual(t, relErr(got, py[k]), 1e-5, "go vs python %s", k)
			}
		})
	}
}

func TestExportRejects(t *testing.T) {
	b, _ := exportBundle(t, "mlp")
	frozen, err := b.Freeze(nil)
	require.NoError(t, err)
	sig := savedmodel.SignatureFromBundle(b)

	t.Run("unfrozen graph", func(t *testing.T) {
		err := savedmodel.Export(filepath.Join(t.TempDir(), "m"), b.Infer, sig)
		require.ErrorContains(t, err, "is not a signature input (is the graph frozen?)")
	})
	t.Run("missing tensor", func(t *testing.T) {
		bad := sig
		bad.Outputs = []savedmodel.SignatureTensor{{Alias: "out", TensorSpec: tf.TensorSpec{Name: "output/nope:0", DType: tf.Float}}}
		dir := filepath.Join(t.TempDir(), "m")
		err := savedmodel.Export(dir, frozen, bad)
		require.ErrorIs(t, err, tf.ErrNotFound)
		require.ErrorContains(t, err, `output "out"`)
		_, statErr := os.Stat(dir)
		require.True(t, os.IsNotExist(statErr), "nothing written")
	})
	t.Run("existing dir", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), nil, 0o644))
		require.ErrorContains(t, savedmodel.Export(dir, frozen, sig), "exists and is not empty")
	})
	t.Run("input dtype differs from its placeholder", func(t *testing.T) {
		bad := sig
		bad.Inputs = append([]savedmodel.SignatureTensor(nil), sig.Inputs...)
		bad.Inputs[0].DType = tf.Int64
		require.ErrorContains(t, savedmodel.Export(filepath.Join(t.TempDir(), "m"), frozen, bad), "declares int64, but placeholder")
	})
	t.Run("no outputs", func(t *testing.T) {
		bad := sig
		bad.Outputs = nil
		require.ErrorContains(t, savedmodel.Export(filepath.Join(t.TempDir(), "m"), frozen, bad), "needs inputs and outputs")
	})
}
