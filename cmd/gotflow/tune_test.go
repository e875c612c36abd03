package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/leakcheck/tfleak"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tune"
)

// TestMain lets a test run this binary as gotflow (GOTFLOW_TEST_MAIN=1),
// to kill it.
func TestMain(m *testing.M) {
	if os.Getenv("GOTFLOW_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// The tests fail when they leave a TensorFlow object open, Arrow
	// memory on leakcheck.Allocator or a goroutine behind.
	leakcheck.Main(m, tfleak.Objects())
}

func studyTrials(dir string) []*tune.Trial {
	b, err := os.ReadFile(filepath.Join(dir, "study.json"))
	if err != nil {
		return nil
	}
	var st struct{ Trials []*tune.Trial }
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return st.Trials
}

// TestTuneKilledAndResumed SIGKILLs `gotflow tune` once two trials have
// finished and others run, then resumes it with --resume: the study ends
// with trial ids 0..7, each once, all finished, and the trials finished
// before the kill unchanged.
func TestTuneKilledAndResumed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "study")
	space := filepath.Join(t.TempDir(), "space.yaml")
	require.NoError(t, os.WriteFile(space, []byte(`
objective: {type: minimize, objectiveMetricName: val_loss}
algorithm: {algorithmName: random, algorithmSettings: [{name: random_state, value: 3}]}
maxTrialCount: 8
parallelTrialCount: 2
parameters:
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "0.001", max: "0.1", distribution: logUniform}}
  - {name: batch_size, parameterType: int, feasibleSpace: {min: 2, max: 8}}
`), 0o644))
	root := testmodels.Root()
	// The study and the data are named relative to the first run's
	// directory; the resume runs from another one.
	data, err := os.ReadFile(filepath.Join(root, "estimator/testdata/fit/data.arrow"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(dir), "data.arrow"), data, 0o644))
	args := []string{"tune", "--space", space, "--study", "study", "--bundle", filepath.Join(root, "loader/testdata/bundles/mlp"),
		"--data", "data.arrow", "--epochs", "8", "--validation-split", "0.25"}
	env := append(os.Environ(), "GOTFLOW_TEST_MAIN=1", "TF_CPP_MIN_LOG_LEVEL=3")

	// A first run that fails its checks leaves the directory free for a
	// run with other flags.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("objective: {type: maximize, objectiveMetricName: val_f1}\nalgorithm: {algorithmName: random}\nmaxTrialCount: 2\n"+
		"parameters:\n  - {name: batch_size, parameterType: int, feasibleSpace: {min: 2, max: 8}}\n"), 0o644))
	first := exec.CommandContext(ctx, os.Args[0], append([]string{"tune", "--space", bad}, args[3:]...)...)
	first.Env, first.Dir = env, filepath.Dir(dir)
	first.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b, err := first.CombinedOutput()
	require.Error(t, err, "%s", b)
	require.Contains(t, string(b), "val_f1")

	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env, cmd.Dir = env, filepath.Dir(dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var before []*tune.Trial
	for {
		finished := 0
		before = studyTrials(dir)
		for _, tr := range before {
			if tr.Finished() {
				finished++
			}
		}
		if finished >= 2 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("gotflow tune ended before the kill: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("timed out waiting for two finished trials\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	<-exited
	require.Less(t, len(studyTrials(dir)), 8, "killed mid-way:\n%s", out.String())

	resume := exec.CommandContext(ctx, os.Args[0], "tune", "--resume", dir)
	resume.Env, resume.Dir = cmd.Env, t.TempDir()
	resume.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b, err = resume.CombinedOutput()
	require.NoError(t, err, "%s", b)
	require.Contains(t, string(b), "all 8 trials run")
	after := studyTrials(dir)
	require.Len(t, after, 8)
	for i, tr := range after {
		require.Equal(t, "trial-000"+string(rune('0'+i)), tr.ID)
		require.True(t, tr.Finished(), "%s is %s", tr.ID, tr.Status)
		if tr.Status == tune.Completed {
			require.True(t, filepath.IsAbs(tr.Export), "%s exported to %s", tr.ID, tr.Export)
			require.FileExists(t, filepath.Join(tr.Export, "frozen.pb"))
		}
	}
	for _, tr := range before {
		if tr.Finished() {
			require.Equal(t, tr.Params, after[idOf(tr.ID)].Params)
			require.Equal(t, tr.Metrics, after[idOf(tr.ID)].Metrics)
		}
	}
	csv, err := os.ReadFile(filepath.Join(dir, "trials.csv"))
	require.NoError(t, err)
	require.Equal(t, 9, strings.Count(string(csv), "\n"), "a header and one row per trial:\n%s", csv)
}

func idOf(id string) int { return int(id[len(id)-1] - '0') }

// TestEnsembleCommand trains a 3-member ensemble through the CLI and
// predicts with it; bad flags are refused with what to do.
func TestEnsembleCommand(t *testing.T) {
	root := testmodels.Root()
	dir := t.TempDir()
	var out, errb syncBuffer
	code := run([]string{"ensemble", "--members", "3", "--parallel", "2", "--combine", "softmax", "--bundle", filepath.Join(root, "loader/testdata/bundles/mlp"),
		"--data", filepath.Join(root, "estimator/testdata/fit/data.arrow"), "--epochs", "2", "-o", dir}, &out, &errb)
	require.Equal(t, 0, code, "%s%s", out.String(), errb.String())
	require.Contains(t, out.String(), "ensemble (softmax) exported to "+filepath.Join(dir, "export"))
	pred := filepath.Join(dir, "pred.parquet")
	code = run([]string{"predict", "--model", filepath.Join(dir, "export", "saved_model"), "--input", filepath.Join(root, "estimator/testdata/fit/data.arrow"),
		"--output", pred, "--quiet"}, &out, &errb)
	require.Equal(t, 0, code, "%s", errb.String())
	require.FileExists(t, pred)

	code = run([]string{"ensemble", "--members", "3", "--combine", "median", "--bundle", "b", "--data", "d", "-o", dir}, &out, &errb)
	require.Equal(t, 2, code)
	require.Contains(t, errb.String(), `combine "median": want mean, softmax or vote`)
}

// TestHelpOnStdout: help that was asked for goes to stdout and lists every
// verb; a missing command is a usage error on stderr.
func TestHelpOnStdout(t *testing.T) {
	for _, arg := range []string{"help", "-h", "--help"} {
		var out, errb syncBuffer
		require.Equal(t, 0, run([]string{arg}, &out, &errb))
		require.Empty(t, errb.String())
		for _, verb := range []string{"train", "predict", "tune", "ensemble", "convert"} {
			require.Contains(t, out.String(), "\n  "+verb+" ")
		}
	}
	var out, errb syncBuffer
	require.Equal(t, 2, run(nil, &out, &errb))
	require.Empty(t, out.String())
	require.Contains(t, errb.String(), "usage: gotflow [-v] <command>")

	// Every verb's -h starts with its usage line.
	for name := range commands {
		var out, errb syncBuffer
		require.Equal(t, 0, run([]string{name, "-h"}, &out, &errb))
		require.Empty(t, errb.String(), "gotflow %s -h", name)
		require.Contains(t, out.String(), "usage: gotflow "+name, "gotflow %s -h", name)
	}
}

// TestTrialTableRedraws: on a terminal the trial table is redrawn in
// place, one row per trial with its state, epoch and last objective.
func TestTrialTableRedraws(t *testing.T) {
	var out strings.Builder
	tb := &trialTable{w: &out, objective: "val_loss", params: []string{"learning_rate"}, tty: true}
	p := map[string]tune.Value{"learning_rate": "0.01"}
	tb.event(tune.Event{Kind: "started", Trial: tune.Trial{ID: "trial-0000", Status: tune.Running, Params: p}, Epochs: 3})
	tb.event(tune.Event{Kind: "started", Trial: tune.Trial{ID: "trial-0001", Status: tune.Running, Params: p}, Epochs: 3})
	tb.event(tune.Event{Kind: "epoch", Trial: tune.Trial{ID: "trial-0000", Status: tune.Running, Params: p, Metrics: []tune.Metric{0.5}}, Epoch: 1, Epochs: 3})
	s := out.String()
	require.Equal(t, 2, strings.Count(s, "\033[2A")+strings.Count(s, "\033[3A"), "redrawn over itself:\n%q", s)
	last := s[strings.LastIndex(s, "\033[3A"):]
	require.Contains(t, last, "trial-0000  running    1/3     0.5000       learning_rate=0.01")
	require.Contains(t, last, "trial-0001  running    0/3     -            learning_rate=0.01")
}
