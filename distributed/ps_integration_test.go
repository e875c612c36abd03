//go:build unix

package distributed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/control/controltest"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/ps/optim"
	"github.com/stretchr/testify/require"
)

// realPS serves one shard of the real parameter server where the launcher
// said, snapshotting to dir after every update, until SIGTERM.
func realPS(p *controltest.Process) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	env, err := TaskEnvFromEnviron(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	srv, err := ps.NewServer(ps.WithShard(env.Task.Index, env.NumPS), ps.WithMode(ps.AsyncLock),
		ps.WithOptimizer(optim.Config{Optimizer: "sgd", LearningRate: 1}),
		ps.WithSnapshotDir(filepath.Join(p.Dir, "snapshots"), 1, 0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	lis, err := Listen(env.PSAddrs[env.Task.Index])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	select {
	case <-term:
	case <-p.Expired:
	}
	srv.GracefulStop()
	<-done
	return 0
}

// psTrainer pushes a gradient of -1 per row chunk it trains (SGD with
// learning rate 1 adds 1 to "count" per chunk) and appends its row log;
// the chief writes the final "count" it pulls to final.txt.
func psTrainer(p *controltest.Process) int {
	env, err := TaskEnvFromEnviron(nil)
	if err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), controltest.Lifetime)
	defer cancel()
	c, err := ps.Dial(ctx, env.PSAddrs, ps.WithWorkerID(env.Task.String()),
		ps.WithRetry(60, 20*time.Millisecond, 200*time.Millisecond), ps.WithRPCTimeout(2*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer c.Close()
	if err := c.Register(ctx, []ps.Variable{{Name: "count", Shape: []int64{1}, Trainable: true, Init: []float32{0}}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log, err := controltest.OpenRowLog(p.Dir, env.Task.String())
	if err != nil {
		return 2
	}
	defer log.Close()
	err = RunTrainer(ctx, env, TrainerJob{}, func(ctx context.Context, a *Agent) error {
		return controltest.Consume(ctx, a, func(ch controltest.Chunk) (float64, error) {
			if _, err := c.Push(ctx, []ps.Tensor{{Name: "count", Values: []float32{-1}}}); err != nil {
				return 0, fmt.Errorf("push rows %d..%d: %w", ch.Start, ch.End, err)
			}
			time.Sleep(3 * time.Millisecond)
			controltest.LogChunk(log, ch)
			return 0, nil
		})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, env.Task, err)
		return 1
	}
	if env.Rank == 0 {
		dst := []ps.Tensor{{Name: "count", Values: make([]float32, 1)}}
		if err := c.Pull(ctx, dst); err != nil {
			return 1
		}
		os.WriteFile(filepath.Join(p.Dir, "final.txt"), []byte(strconv.Itoa(int(dst[0].Values[0]))), 0o644)
	}
	return 0
}

// TestProcessLauncherRestartsRealPS runs the real parameter server and two
// trainers as processes, SIGKILLs the PS mid-training, and checks that the
// supervisor restarts it from its snapshot and training finishes.
func TestProcessLauncherRestartsRealPS(t *testing.T) {
	dir := t.TempDir()
	pids := &controltest.PIDLog{}
	var restarts atomic.Int32
	l := ProcessLauncher{
		Command: func(env TaskEnv) (*exec.Cmd, error) {
			role := "pstrainer"
			if env.Task.Role == RolePS {
				role = "realps"
			}
			return controltest.Command(role, dir, env.Task.String(), env.Attempt, env.Environ()...), nil
		},
	}
	const rows, epochs = 400, 2
	cfg := JobConfig{Workers: 2, NumPS: 1, Rows: rows, Epochs: epochs, Heartbeat: fastHeartbeat, StopGrace: 3 * time.Second,
		SupervisorHooks: SupervisorHooks{OnStart: pids.Hook, OnRestart: func(Task, int) { restarts.Add(1) }}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	snapDir := filepath.Join(dir, "snapshots")
	chaos := make(chan struct{})
	go func() {
		defer close(chaos)
		// Kill the PS once it has snapshotted and the trainers are well
		// into the first epoch.
		controltest.WaitFor(t, ctx, "first snapshot and progress", func() bool {
			m, _ := filepath.Glob(filepath.Join(snapDir, "*.snapshot"))
			return len(m) > 0 && controltest.CountRows(filepath.Join(dir, "chief:0.rows")) >= 60
		})
		require.NoError(t, syscall.Kill(pids.PID("ps:0#0"), syscall.SIGKILL))
	}()
	res, err := l.Launch(ctx, cfg)
	<-chaos
	require.NoError(t, err)
	require.Equal(t, "completed 2 epochs", res.Reason)
	require.Equal(t, int32(1), restarts.Load())
	require.Equal(t, 1, res.Supervisor.Restarts[Task{Role: RolePS, Index: 0}])
	require.Empty(t, res.Supervisor.Dead)

	cov := controltest.CoveredRows(t, dir)
	for e := range int64(epochs) {
		require.Len(t, cov[e], rows, "epoch %d", e)
	}
	// Every chunk pushed once; updates the killed PS applied after its last
	// snapshot are lost, nothing is applied twice.
	chunks := 0
	for _, f := range []string{"chief:0.rows", "worker:0.rows"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		chunks += len(strings.Split(strings.TrimSpace(string(b)), "\n"))
	}
	final := controltest.ReadInt(filepath.Join(dir, "final.txt"))
	t.Logf("pushes %d, final count %d (lost to the kill: %d)", chunks, final, chunks-final)
	require.LessOrEqual(t, final, chunks)
	require.Greater(t, final, chunks/2, "the restarted PS resumed from its snapshot, not from zero")
	tmp, _ := filepath.Glob(filepath.Join(snapDir, "*.tmp*"))
	require.Empty(t, tmp, "no half-written snapshot left")
	pids.RequireAllGone(t)
}

// fakeCLI stands in for the gotflow binary: it checks the arguments
// GotflowCommands built against the environment, then runs the real PS or
// a trainer.
func fakeCLI(p *controltest.Process) int {
	env, err := TaskEnvFromEnviron(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	args := os.Args[1:]
	switch {
	case len(args) == 4 && args[0] == "ps":
		want := []string{"ps", "--listen=" + env.PSAddrs[env.Task.Index], fmt.Sprintf("--shard=%d/%d", env.Task.Index, env.NumPS), "--mode=async-lock"}
		if strings.Join(args, " ") != strings.Join(want, " ") {
			fmt.Fprintf(os.Stderr, "args %q, want %q\n", args, want)
			return 2
		}
		fmt.Println("cli ps ok")
		return realPS(p)
	case len(args) == 2 && args[0] == "worker" && args[1] == "--epochs=1" && env.Task.Trains():
		fmt.Printf("cli worker ok (rank %d of %d)\n", env.Rank, env.Workers)
		return psTrainer(p)
	}
	fmt.Fprintf(os.Stderr, "unexpected args %q for %s\n", args, env.Task)
	return 2
}

func TestGotflowCommands(t *testing.T) {
	dir := t.TempDir()
	var out strings.Builder
	g := &control.GotflowCommands{
		Binary: os.Args[0], PSArgs: []string{"--mode=async-lock"}, WorkerArgs: []string{"--epochs=1"},
		Env:    []string{controltest.EnvRole + "=cli", controltest.EnvDir + "=" + dir, controltest.EnvAttempt + "=0"},
		Output: &syncBuilder{b: &out},
	}
	cfg := JobConfig{Workers: 2, NumPS: 1, Rows: 40, Heartbeat: fastHeartbeat}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := ProcessLauncher{Command: g.Command}.Launch(ctx, cfg)
	require.NoError(t, err, "output:\n%s", out.String())
	require.Equal(t, "completed 1 epochs", res.Reason)
	got := out.String()
	require.Contains(t, got, "[ps:0] cli ps ok\n")
	require.Contains(t, got, "[chief:0] cli worker ok (rank 0 of 2)\n")
	require.Contains(t, got, "[worker:0] cli worker ok (rank 1 of 2)\n")
	require.Equal(t, "10", strings.TrimSpace(readFile(t, filepath.Join(dir, "final.txt"))), "40 rows in chunks of 4, one push each")

	_, err = g.Command(TaskEnv{Task: Task{Role: RolePS, Index: 1}, PSAddrs: []string{"127.0.0.1:1"}})
	require.ErrorContains(t, err, "no address for ps:1")
	_, err = g.Command(TaskEnv{Task: Task{Role: RoleEvaluator, Index: 0}})
	require.ErrorContains(t, err, "ps and trainer tasks only")
}

type syncBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
