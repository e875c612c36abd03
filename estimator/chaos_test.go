package estimator_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/ps/pspb"
)

// snapshotVersion reads the version of shard 0's snapshot in modelDir (0
// if there is none yet).
func snapshotVersion(t *testing.T, modelDir string) uint64 {
	t.Helper()
	f, err := os.Open(filepath.Join(modelDir, "ps", "ps-shard-0-of-1.snapshot"))
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(t, err)
	defer f.Close()
	h := &pspb.SnapshotHeader{}
	require.NoError(t, protodelim.UnmarshalFrom(bufio.NewReader(f), h))
	return h.GetVersion()
}

// versionWatch samples the snapshot's version while a job runs and
// records whether it ever went backwards.
type versionWatch struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	last     uint64
	backward string
}

func watchVersion(t *testing.T, modelDir string) *versionWatch {
	w := &versionWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			w.check(t, modelDir)
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *versionWatch) check(t *testing.T, modelDir string) {
	f, err := os.Open(filepath.Join(modelDir, "ps", "ps-shard-0-of-1.snapshot"))
	if err != nil {
		return // not written yet (or being renamed into place)
	}
	defer f.Close()
	h := &pspb.SnapshotHeader{}
	if protodelim.UnmarshalFrom(bufio.NewReader(f), h) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if v := h.GetVersion(); v < w.last && w.backward == "" {
		w.backward = fmt.Sprintf("snapshot version went from %d back to %d", w.last, v)
	} else if v > w.last {
		w.last = v
	}
}

// end stops the watch and fails t if the version went backwards.
func (w *versionWatch) end(t *testing.T) {
	t.Helper()
	close(w.stop)
	<-w.done
	require.Empty(t, w.backward)
}

// chaosEstimator is a deterministic job: SGD, no validation split, 96 rows
// in equal halves, 12 steps per worker and epoch.
func chaosEstimator(t *testing.T, mode string) estimator.TFEstimator {
	e := processEstimator(t)
	e.Mode, e.ValidationSplit, e.Epochs, e.BatchSize, e.Seed = mode, 0, 5, 4, 3
	return e
}

// killDuringTraining SIGKILLs the process of task at a random moment of
// the epochs after the first (chosen by rng).
func killDuringTraining(e *estimator.TFEstimator, task string, rng *rand.Rand) (wait func() int) {
	var wg sync.WaitGroup
	kills := 0
	delay := time.Duration(rng.IntN(40)) * time.Millisecond
	e.Hooks.OnEpoch = func(i estimator.EpochInfo) {
		if i.Epoch != 0 {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(delay)
			defer t.Stop()
			<-t.C
			if pid := taskPID(e.ModelDir, task); pid > 0 && syscall.Kill(pid, syscall.SIGKILL) == nil {
				kills++
			}
		}()
	}
	return func() int { wg.Wait(); return kills }
}

// requireRestarted checks that the job's shard was started twice: the
// kill hit it while the job ran.
func requireRestarted(t *testing.T, modelDir string) {
	t.Helper()
	log, err := os.ReadFile(filepath.Join(modelDir, "logs", "ps-0.log"))
	require.NoError(t, err)
	require.Equal(t, 2, strings.Count(string(log), "listening on"), "the shard was restarted once:\n%s", log)
}

func exported(t *testing.T, e estimator.TFEstimator) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.ModelDir, "export", "weights.safetensors"))
	require.NoError(t, err)
	return b
}

// TestChaos runs processes-mode training on a deterministic problem while
// SIGKILLing a parameter server, a worker or the parent at random moments
// (the seed is logged), and checks after each run: completion (or, for the
// parent, a clean end and a resumable model dir), no process left, a
// snapshot version that never goes backwards, sync SGD weights equal to a
// fault-free run's bit for bit, and in async-lock mode every acknowledged
// gradient applied exactly once (the shard's update count equals the
// fault-free run's).
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("chaos seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	reference := map[string]estimator.TFEstimator{}
	for _, mode := range []string{"sync", "async-lock"} {
		e := chaosEstimator(t, mode)
		m, err := fitProcesses(t, &e)
		require.NoError(t, err)
		m.Close()
		reference[mode] = e
	}
	require.Equal(t, uint64(5*12), snapshotVersion(t, reference["sync"].ModelDir), "one update per sync step")
	require.Equal(t, uint64(5*2*12), snapshotVersion(t, reference["async-lock"].ModelDir), "one update per push")

	for round := range 2 {
		for _, mode := range []string{"sync", "async-lock"} {
			t.Run(fmt.Sprintf("ps-killed/%s/%d", mode, round), func(t *testing.T) {
				e := chaosEstimator(t, mode)
				wait := killDuringTraining(&e, "ps:0", rng)
				w := watchVersion(t, e.ModelDir)
				m, err := fitProcesses(t, &e)
				require.Equal(t, 1, wait())
				w.end(t)
				require.NoError(t, err)
				m.Close()
				requireRestarted(t, e.ModelDir)
				ref := reference[mode]
				require.Equal(t, snapshotVersion(t, ref.ModelDir), snapshotVersion(t, e.ModelDir), "every acknowledged gradient applied exactly once")
				if mode == "sync" {
					require.Equal(t, exported(t, ref), exported(t, e), "sync SGD ends at the fault-free run's weights")
				}
				requireNoProcesses(t, e.ModelDir)
			})
		}
	}
	for _, mode := range []string{"sync", "async-lock"} {
		t.Run("worker-killed/"+mode, func(t *testing.T) {
			e := chaosEstimator(t, mode)
			e.SyncTimeout = 10 * time.Minute // a sync step must not wait for the dead worker
			var lost []string
			e.Hooks.OnWorkerLost = func(task, _ string) { lost = append(lost, task) }
			wait := killDuringTraining(&e, "worker:0", rng)
			w := watchVersion(t, e.ModelDir)
			start := time.Now()
			m, err := fitProcesses(t, &e)
			require.Equal(t, 1, wait())
			w.end(t)
			require.NoError(t, err)
			defer m.Close()
			require.Less(t, time.Since(start), 5*time.Minute)
			require.Equal(t, []string{"worker:0"}, lost)
			require.Len(t, predict(t, m), 96*3)
			requireNoProcesses(t, e.ModelDir)
		})
	}
	t.Run("parent-killed", func(t *testing.T) {
		e := chaosEstimator(t, "async-lock")
		data, err := filepath.Abs("testdata/fit/data.arrow")
		require.NoError(t, err)
		args := []string{"train", "--cluster", "processes", "--workers", "2", "--mode", "async-lock", "--bundle", mlpBundle,
			"--data", data, "--epochs", "40", "--batch-size", "1", "--optimizer", "sgd", "--lr", "0.05", "--model-dir", e.ModelDir}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var out strings.Builder
		cmd := exec.CommandContext(ctx, gotflowBinary(t), args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		// Kill it once its shard has taken a snapshot and trained on.
		waitUntil(t, ctx, "the job's first snapshot", func() bool { return snapshotVersion(t, e.ModelDir) > 0 })
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond) // a random moment of training
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		require.Error(t, cmd.Wait())
		waitUntil(t, ctx, "every task of the killed job to exit", func() bool { return countProcesses(e.ModelDir) == 0 })
		atKill := snapshotVersion(t, e.ModelDir)

		// The model dir resumes where the job was.
		rerun := exec.CommandContext(ctx, gotflowBinary(t), append(args, "--export", filepath.Join(e.ModelDir, "export"))...)
		b, err := rerun.CombinedOutput()
		require.NoError(t, err, "%s", b)
		require.GreaterOrEqual(t, snapshotVersion(t, e.ModelDir), atKill)
		requireNoProcesses(t, e.ModelDir)
	})
}

// waitUntil polls cond until it holds or ctx ends, naming what it waited
// for.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// TestConcurrentJobs starts four `gotflow train --cluster processes` jobs
// at once on this machine: each binds its own sockets, so none can take
// another's ports, and all succeed.
func TestConcurrentJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	data, err := filepath.Abs("testdata/fit/data.arrow")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const jobs = 4
	dirs := make([]string, jobs)
	outs := make([][]byte, jobs)
	errs := make([]error, jobs)
	var wg sync.WaitGroup
	for i := range jobs {
		dirs[i] = t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, gotflowBinary(t), "train", "--cluster", "processes", "--workers", "2", "--ps", "2",
				"--mode", []string{"hogwild", "async-lock", "sync", "bounded-staleness"}[i], "--bundle", mlpBundle, "--data", data,
				"--epochs", "3", "--batch-size", "8", "--optimizer", "sgd", "--lr", "0.05", "--model-dir", dirs[i])
			outs[i], errs[i] = cmd.CombinedOutput()
		}()
	}
	wg.Wait()
	for i := range jobs {
		require.NoError(t, errs[i], "job %d:\n%s", i, outs[i])
		require.Contains(t, string(outs[i]), "trained in", "job %d", i)
		requireNoProcesses(t, dirs[i])
	}
}

// TestSecondFitOnSameModelDir: while a job trains in a ModelDir, a second
// Fit there is refused before it touches anything of the first.
func TestSecondFitOnSameModelDir(t *testing.T) {
	e := chaosEstimator(t, "async-lock")
	e.Epochs = 30
	second := e
	second.Hooks = estimator.TrainHooks{}
	var secondErr error
	var logBefore, logAfter []byte
	e.Hooks.OnEpoch = func(i estimator.EpochInfo) {
		if i.Epoch != 0 {
			return
		}
		logBefore, _ = os.ReadFile(filepath.Join(e.ModelDir, "logs", "ps-0.log"))
		_, secondErr = fitProcesses(t, &second)
		logAfter, _ = os.ReadFile(filepath.Join(e.ModelDir, "logs", "ps-0.log"))
	}
	m, err := fitProcesses(t, &e)
	require.NoError(t, err)
	m.Close()
	require.ErrorContains(t, secondErr, "is in use by another Fit: ")
	require.ErrorContains(t, secondErr, "fit.lock is held by pid ")
	require.Equal(t, string(logBefore), string(logAfter), "the refused Fit started no shard")
	requireNoProcesses(t, e.ModelDir)
}

// TestProcessesResumeWithinEpoch freezes a processes-mode sync job in the
// middle of an epoch and SIGKILLs every task, then fits again with the
// same ModelDir: each worker resumes its share at the batch the shard's
// restored state ends at (the position its pushes carried), and the job
// ends at exactly the weights of an uninterrupted run.
func TestProcessesResumeWithinEpoch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	job := func() estimator.TFEstimator {
		e := chaosEstimator(t, "sync")
		e.Epochs, e.BatchSize, e.SyncTimeout = 3, 1, 10*time.Minute // 48 steps per epoch
		return e
	}
	ref := job()
	m, err := fitProcesses(t, &ref)
	require.NoError(t, err)
	m.Close()
	require.Equal(t, uint64(3*48), snapshotVersion(t, ref.ModelDir), "one update per sync step")

	e := job()
	src, err := arrowio.OpenDataset("testdata/fit/data.arrow")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fitErr := make(chan error, 1)
	go func() {
		m, err := e.Fit(ctx, src)
		if err == nil {
			m.Close()
		}
		fitErr <- err
	}()
	// The shard snapshots every 20 updates: 60 is the 12th step of the
	// second epoch, 36 steps before its end.
	waitUntil(t, ctx, "a snapshot within the second epoch", func() bool { return snapshotVersion(t, e.ModelDir) >= 60 })
	var pids []int
	for _, task := range []string{"chief:0", "worker:0", "ps:0"} {
		if pid := taskPID(e.ModelDir, task); pid > 0 {
			require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
			pids = append(pids, pid)
		}
	}
	require.Len(t, pids, 3, "every task of the job found")
	cancel()
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case err := <-fitErr:
		require.Error(t, err, "the killed job ends with an error")
	case <-time.After(time.Minute):
		t.Fatal("timed out waiting for the killed job's Fit to return")
	}
	waitUntil(t, testCtx(t), "every task of the killed job to exit", func() bool { return countProcesses(e.ModelDir) == 0 })

	var epochs []int
	e.Hooks.OnEpoch = func(i estimator.EpochInfo) { epochs = append(epochs, i.Epoch) }
	m, err = fitProcesses(t, &e)
	require.NoError(t, err)
	m.Close()
	require.Equal(t, []int{1, 2}, epochs, "the rerun starts in the interrupted epoch")
	for _, w := range []string{"chief-0.log", "worker-0.log"} {
		log, err := os.ReadFile(filepath.Join(e.ModelDir, "logs", w))
		require.NoError(t, err)
		require.Regexp(t, `resuming within the epoch.*epoch=2 batches_done=(1[2-9]|[2-3][0-9]|4[0-7]) `, string(log), "%s resumed mid-epoch", w)
	}
	require.Equal(t, snapshotVersion(t, ref.ModelDir), snapshotVersion(t, e.ModelDir), "no step trained twice or skipped")
	require.Equal(t, exported(t, ref), exported(t, e), "sync SGD resumed mid-epoch ends at the uninterrupted run's weights")
	requireNoProcesses(t, e.ModelDir)
}
