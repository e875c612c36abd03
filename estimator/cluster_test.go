package estimator_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/distributed"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/testmodels"
)

var (
	buildOnce sync.Once
	gotflow   string
	buildErr  error
)

// gotflowBinary builds cmd/gotflow once for the process-cluster tests.
func gotflowBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gotflow-bin-")
		if err != nil {
			buildErr = err
			return
		}
		gotflow = filepath.Join(dir, "gotflow")
		cmd := exec.Command("go", "build", "-o", gotflow, "./cmd/gotflow")
		cmd.Dir = testmodels.Root()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	require.NoError(t, buildErr)
	return gotflow
}

// taskPID finds the process of a task (e.g. "worker:0", "ps:0") of the job
// in modelDir by its command line and environment.
func taskPID(modelDir, task string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(modelDir)) {
			continue
		}
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !bytes.Contains(env, []byte("GOTFLOW_TASK="+task+"\x00")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(p))
		return pid
	}
	return 0
}

// jobProcesses lists the live processes of the job in modelDir (by their
// command line).
func jobProcesses(modelDir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(modelDir)) {
			stat, _ := os.ReadFile(filepath.Join(p, "stat"))
			if !strings.Contains(string(stat), ") Z ") {
				out = append(out, filepath.Base(p)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
			}
		}
	}
	return out
}

func countProcesses(modelDir string) int { return len(jobProcesses(modelDir)) }

// requireNoProcesses checks that no process of the job is left.
func requireNoProcesses(t *testing.T, modelDir string) {
	t.Helper()
	for _, p := range jobProcesses(modelDir) {
		t.Errorf("process of the job still running: %s", p)
	}
}

func processEstimator(t *testing.T) estimator.TFEstimator {
	dir := t.TempDir()
	return estimator.TFEstimator{Bundle: mlpBundle, Workers: 2, BatchSize: 4, Epochs: 4, Cluster: estimator.Processes,
		Binary: gotflowBinary(t), ModelDir: dir, Optimizer: "sgd", LearningRate: 0.05, ValidationSplit: 0.2}
}

func fitProcesses(t *testing.T, e *estimator.TFEstimator) (*estimator.TFModel, error) {
	t.Helper()
	src, err := arrowio.OpenDataset("testdata/fit/data.arrow")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return e.Fit(ctx, src)
}

func TestFitProcesses(t *testing.T) {
	for _, mode := range []string{"hogwild", "async-lock", "sync"} {
		t.Run(mode, func(t *testing.T) {
			e := processEstimator(t)
			e.Mode = mode
			var infos []estimator.EpochInfo
			e.Hooks.OnEpoch = func(i estimator.EpochInfo) { infos = append(infos, i) }
			m, err := fitProcesses(t, &e)
			require.NoError(t, err)
			defer m.Close()
			require.Len(t, infos, 4)
			require.Less(t, infos[3].ValLoss, infos[0].ValLoss, "training lowers the validation loss")
			require.Len(t, predict(t, m), 96*3)
			requireNoProcesses(t, e.ModelDir)
		})
	}
}

// killInSecondEpoch makes e's OnEpoch hook SIGKILL the process of task
// shortly after the first epoch ends, in the middle of the second. The
// returned wait blocks until the kill happened.
func killInSecondEpoch(e *estimator.TFEstimator, task string) (wait func()) {
	var killed sync.WaitGroup
	e.Hooks.OnEpoch = func(i estimator.EpochInfo) {
		if i.Epoch != 0 {
			return
		}
		killed.Add(1)
		go func() {
			defer killed.Done()
			time.Sleep(10 * time.Millisecond) // the second epoch is handed out when the hook returns
			if pid := taskPID(e.ModelDir, task); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}()
	}
	return killed.Wait
}

// TestFitProcessesSurvivesKilledWorker kills a worker with SIGKILL in the
// middle of an epoch: its rows go to the chief and training completes.
func TestFitProcessesSurvivesKilledWorker(t *testing.T) {
	e := processEstimator(t)
	e.Epochs, e.BatchSize = 4, 1
	var lost []string
	e.Hooks.OnWorkerLost = func(task, reason string) { lost = append(lost, task) }
	wait := killInSecondEpoch(&e, "worker:0")
	m, err := fitProcesses(t, &e)
	wait()
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, []string{"worker:0"}, lost)
	require.Len(t, predict(t, m), 96*3)
	requireNoProcesses(t, e.ModelDir)
}

// TestFitProcessesRestartsKilledPS kills the parameter server with SIGKILL
// during an epoch: the supervisor restarts it from its snapshot and the
// workers carry on.
func TestFitProcessesRestartsKilledPS(t *testing.T) {
	e := processEstimator(t)
	e.Epochs, e.BatchSize = 4, 1
	wait := killInSecondEpoch(&e, "ps:0")
	m, err := fitProcesses(t, &e)
	wait()
	require.NoError(t, err)
	defer m.Close()
	require.Len(t, predict(t, m), 96*3)
	log, err := os.ReadFile(filepath.Join(e.ModelDir, "logs", "ps-0.log"))
	require.NoError(t, err)
	require.Equal(t, 2, strings.Count(string(log), "listening on"), "the shard was started twice:\n%s", log)
	requireNoProcesses(t, e.ModelDir)
}

// tfJobTasks returns a function that starts one task of a TF_CONFIG job
// (one chief, one worker, one ps) as Kubeflow's TFJob would: bin with its
// arguments and TF_CONFIG naming the task, its output in dir/<task>.log,
// killed with its process group when the test ends. The sockets of the
// tasks that serve (the chief's coordinator and the ps) are bound here and
// handed over, as a launcher does; the worker's address is only a name.
func tfJobTasks(ctx context.Context, t *testing.T, bin, dir string) func(task distributed.Task, args ...string) *exec.Cmd {
	t.Helper()
	var lis []*control.LoopbackListener
	for range 2 {
		l, err := control.ListenLoopback()
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		lis = append(lis, l)
	}
	spec := distributed.ClusterSpec{Chief: []string{lis[0].Addr().String()}, Worker: []string{"127.0.0.1:1"}, PS: []string{lis[1].Addr().String()}}
	serves := map[distributed.Role]*control.LoopbackListener{distributed.RoleChief: lis[0], distributed.RolePS: lis[1]}
	return func(task distributed.Task, args ...string) *exec.Cmd {
		cfg, err := distributed.TFConfig{Cluster: spec, Task: task}.Marshal()
		require.NoError(t, err)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "TF_CONFIG="+string(cfg))
		if l := serves[task.Role]; l != nil {
			control.PassListener(cmd, l)
		}
		log, err := os.Create(filepath.Join(dir, task.String()+".log"))
		require.NoError(t, err)
		t.Cleanup(func() { log.Close() })
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
		return cmd
	}
}

// tfJobLogs returns the logs tfJobTasks' tasks wrote in dir, each under its
// name.
func tfJobLogs(dir string) string {
	var b strings.Builder
	for _, n := range []string{"chief:0", "worker:0", "ps:0"} {
		l, _ := os.ReadFile(filepath.Join(dir, n+".log"))
		b.WriteString("== " + n + "\n" + string(l))
	}
	return b.String()
}

// TestTFConfigJob runs a job the way Kubeflow's TFJob does: one `gotflow
// ps`, a chief and a worker (`gotflow worker` with train's flags), each
// told its place by TF_CONFIG. The chief coordinates and exports the model.
func TestTFConfigJob(t *testing.T) {
	bin := gotflowBinary(t)
	dir := t.TempDir()
	export := filepath.Join(dir, "export")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := tfJobTasks(ctx, t, bin, dir)
	ps := start(distributed.Task{Role: distributed.RolePS}, "ps", "--mode", "async-lock", "--optimizer", `{"optimizer":"sgd","learning_rate":0.05}`,
		"--snapshot-dir", filepath.Join(dir, "snap"))
	data, err := filepath.Abs("testdata/fit/data.arrow")
	require.NoError(t, err)
	trainArgs := []string{"worker", "--bundle", mlpBundle, "--data", data, "--workers", "2", "--epochs", "3", "--batch-size", "4",
		"--validation-split", "0.2", "--mode", "async-lock", "--optimizer", "sgd", "--lr", "0.05", "--export", export}
	chief := start(distributed.Task{Role: distributed.RoleChief}, trainArgs...)
	worker := start(distributed.Task{Role: distributed.RoleWorker}, trainArgs...)
	logs := func() string { return tfJobLogs(dir) }
	require.NoError(t, chief.Wait(), logs())
	require.NoError(t, worker.Wait(), logs())
	require.NoError(t, ps.Process.Signal(syscall.SIGTERM))
	ps.Wait()

	m, err := estimator.Load(export)
	require.NoError(t, err, logs())
	defer m.Close()
	out := predict(t, m)
	require.Len(t, out, 96*3)
	res, err := m.Evaluate(testCtx(t), fitData(t))
	require.NoError(t, err)
	// Evaluate (eval.pb) and the exported SavedModel agree on accuracy.
	right := 0
	labels := fitLabels(t)
	for i, y := range labels {
		row := out[3*i : 3*i+3]
		best := 0
		for j := range row {
			if row[j] > row[best] {
				best = j
			}
		}
		if int32(best) == y {
			right++
		}
	}
	require.InDelta(t, float64(right)/float64(len(labels)), res.Metrics["accuracy"], 1e-6)
	chiefLog, _ := os.ReadFile(filepath.Join(dir, "chief:0.log"))
	require.Contains(t, string(chiefLog), "model exported")
}

// TestFitProcessesResumes runs 2 epochs, then asks for 3 with the same
// ModelDir (only the third runs, on the shards' restored weights), then
// for 3 again (nothing left: the saved weights are exported as they are).
func TestFitProcessesResumes(t *testing.T) {
	e := processEstimator(t)
	e.Epochs = 2
	var epochs []int
	e.Hooks.OnEpoch = func(i estimator.EpochInfo) { epochs = append(epochs, i.Epoch) }
	m, err := fitProcesses(t, &e)
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.Equal(t, []int{0, 1}, epochs)

	epochs = nil
	e.Epochs = 3
	m, err = fitProcesses(t, &e)
	require.NoError(t, err)
	after3 := predict(t, m)
	require.NoError(t, m.Close())
	require.Equal(t, []int{2}, epochs, "only the missing epoch runs")

	epochs = nil
	m, err = fitProcesses(t, &e)
	require.NoError(t, err)
	defer m.Close()
	require.Empty(t, epochs)
	require.Equal(t, after3, predict(t, m), "the restored weights are the ones the last run exported")
	requireNoProcesses(t, e.ModelDir)
}

// fitLabels returns the y column of the fit data.
func fitLabels(t *testing.T) []int32 {
	t.Helper()
	src := fitData(t)
	defer src.Close()
	var ys []int32
	for {
		rec, err := src.Next(testCtx(t))
		if err != nil {
			break
		}
		ys = append(ys, rec.Column(1).(*array.Int32).Int32Values()...)
		rec.Release()
	}
	return ys
}
