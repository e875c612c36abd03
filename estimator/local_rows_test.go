package estimator_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/estimator"
)

// splitFitData writes rows [0, cut) and [cut, 96) of the fit data to two
// Arrow IPC files, as two Spark tasks would spool their partitions.
func splitFitData(t *testing.T, dir string, cut int64) [2]string {
	t.Helper()
	src := fitData(t)
	defer src.Close()
	var recs []arrow.RecordBatch
	for {
		rec, err := src.Next(testCtx(t))
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		defer rec.Release()
		recs = append(recs, rec)
	}
	var paths [2]string
	var at int64
	for i := range paths {
		paths[i] = filepath.Join(dir, []string{"part-0.arrow", "part-1.arrow"}[i])
		f, err := os.Create(paths[i])
		require.NoError(t, err)
		w, err := ipc.NewFileWriter(f, ipc.WithSchema(src.Schema()))
		require.NoError(t, err)
		for _, rec := range recs {
			lo, hi := max(at, 0), at+rec.NumRows()
			want := [2][2]int64{{0, cut}, {cut, 1 << 62}}[i]
			s, e := max(lo, want[0])-at, min(hi, want[1])-at
			if s < e {
				part := rec.NewSlice(s, e)
				require.NoError(t, w.Write(part))
				part.Release()
			}
			at += rec.NumRows()
		}
		at = 0
		require.NoError(t, w.Close())
		require.NoError(t, f.Close())
	}
	return paths
}

// TestTFConfigJobLocalRows: two workers of a TF_CONFIG job each train on
// their own file (--local-rows), of unequal sizes; the chief exports a
// model whose loss on all rows is below the initial weights'.
func TestTFConfigJobLocalRows(t *testing.T) {
	bin := gotflowBinary(t)
	dir := t.TempDir()
	parts := splitFitData(t, dir, 40)
	export := filepath.Join(dir, "export")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := tfJobTasks(ctx, t, bin, dir)
	ps := start(distributed.Task{Role: distributed.RolePS}, "ps", "--mode", "sync", "--workers", "2",
		"--optimizer", `{"optimizer":"sgd","learning_rate":0.05}`)
	args := func(data string) []string {
		return []string{"worker", "--bundle", mlpBundle, "--data", data, "--local-rows", "40,56", "--workers", "2", "--epochs", "4",
			"--batch-size", "4", "--mode", "sync", "--optimizer", "sgd", "--lr", "0.05", "--export", export}
	}
	chief := start(distributed.Task{Role: distributed.RoleChief}, args(parts[0])...)
	worker := start(distributed.Task{Role: distributed.RoleWorker}, args(parts[1])...)
	logs := func() string { return tfJobLogs(dir) }
	require.NoError(t, chief.Wait(), logs())
	require.NoError(t, worker.Wait(), logs())
	require.NoError(t, ps.Process.Signal(syscall.SIGTERM))
	ps.Wait()
	require.Contains(t, logs(), "rows=40")
	require.Contains(t, logs(), "rows=56")

	m, err := estimator.Load(export)
	require.NoError(t, err, logs())
	defer m.Close()
	trained, err := m.Evaluate(testCtx(t), fitData(t))
	require.NoError(t, err)
	initial := &estimator.TFModel{Path: mlpBundle, Kind: estimator.KindBundle, Weights: filepath.Join(mlpBundle, "weights.safetensors"),
		LabelMapping: m.LabelMapping}
	defer initial.Close()
	before, err := initial.Evaluate(testCtx(t), fitData(t))
	require.NoError(t, err)
	require.Less(t, trained.Loss, 0.9*before.Loss, "training on the two local files lowers the loss on all rows")
}

func TestLocalRowsErrors(t *testing.T) {
	bin := gotflowBinary(t)
	dir := t.TempDir()
	parts := splitFitData(t, dir, 40)
	for name, tc := range map[string]struct {
		args []string
		msg  string
	}{
		"wrong count":      {[]string{"--data", parts[0], "--local-rows", "41,55"}, "read 40 rows"},
		"validation split": {[]string{"--data", parts[0], "--local-rows", "40,56", "--validation-split", "0.2"}, "needs ValidationSplit 0"},
		"bad list":         {[]string{"--data", parts[0], "--local-rows", "40,x"}, `entry 1 is "x"`},
		"ranks":            {[]string{"--data", parts[0], "--local-rows", "40"}, "row counts for 1 trainers"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			spec := distributed.ClusterSpec{Chief: []string{"127.0.0.1:1"}, Worker: []string{"127.0.0.1:2"}, PS: []string{"127.0.0.1:3"}}
			cfg, err := distributed.TFConfig{Cluster: spec, Task: distributed.Task{Role: distributed.RoleWorker}}.Marshal()
			require.NoError(t, err)
			cmd := exec.CommandContext(ctx, bin, append([]string{"worker", "--bundle", mlpBundle, "--workers", "2", "--batch-size", "4",
				"--export", filepath.Join(dir, "export")}, tc.args...)...)
			cmd.Env = append(os.Environ(), "TF_CONFIG="+string(cfg))
			out, err := cmd.CombinedOutput()
			require.Error(t, err)
			require.Contains(t, string(out), tc.msg)
		})
	}
}
