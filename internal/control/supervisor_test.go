//go:build unix

package control_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	// These tests cannot be in package control: they use controltest,
	// which imports control.
	. "github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/control/controltest"
)

// fakeCoordEnv tells a fake worker the coordinator's address.
const fakeCoordEnv = "GOTFLOW_FAKE_COORD"

// The test binary doubles as the fake task processes: a Supervisor started
// by a test re-executes it as one of these roles (fakeRunner), and TestMain
// runs the role instead of the tests.
func TestMain(m *testing.M) {
	controltest.Main(m, map[string]controltest.Role{
		"ps":          fakePS,
		"worker":      func(p *controltest.Process) int { return fakeWorker(p, false) },
		"hang":        func(p *controltest.Process) int { return fakeWorker(p, true) },
		"stubborn":    fakeStubborn,
		"sleeper":     func(p *controltest.Process) int { <-p.Expired; return 4 },
		"crash":       func(*controltest.Process) int { return 3 },
		"noisy-crash": fakeNoisyCrash,
		"launcher":    fakeLauncher,
		"watcher":     fakeWatcher,
	})
}

// fakePS counts "updates" in a snapshot file and resumes from it.
func fakePS(p *controltest.Process) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	snap := filepath.Join(p.Dir, p.Task+".snap")
	n := 0
	if b, err := os.ReadFile(snap); err == nil {
		n, _ = strconv.Atoi(string(b))
	}
	p.Write(fmt.Sprintf("%s.%d.resumed", p.Task, p.Attempt), strconv.Itoa(n))
	tick := time.NewTicker(10 * time.Millisecond)
	for {
		select {
		case <-term:
			return 0
		case <-p.Expired:
			return 4
		case <-tick.C:
			n++
			p.Write(p.Task+".snap", strconv.Itoa(n))
		}
	}
}

// fakeStubborn ignores SIGTERM and starts a grandchild sleeper.
func fakeStubborn(p *controltest.Process) int {
	signal.Ignore(syscall.SIGTERM)
	child := controltest.Command("sleeper", p.Dir, "grandchild", p.Attempt)
	if err := child.Start(); err != nil {
		return 5
	}
	<-p.Expired
	return 4
}

func fakeNoisyCrash(*controltest.Process) int {
	fmt.Fprintln(os.Stderr, "starting")
	fmt.Fprintln(os.Stderr, "boom: snapshot taken with another optimizer")
	return 3
}

// fakeLauncher starts a sleeper (and, with the sleeper ignoring SIGTERM, a
// watcher) through a ProcessRunner and waits to be killed.
func fakeLauncher(p *controltest.Process) int {
	r := fakeRunner(p.Dir, "", map[Task]string{{RolePS, 0}: "sleeper", {RoleWorker, 0}: "watcher"})
	for _, tk := range []Task{{RolePS, 0}, {RoleWorker, 0}} {
		h, err := r.Start(context.Background(), tk, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		p.Write(tk.String()+".child", strconv.Itoa(h.(interface{ PID() int }).PID()))
	}
	<-p.Expired
	return 4
}

// fakeWatcher ignores the parent-death signal and relies on WithParent.
func fakeWatcher(p *controltest.Process) int {
	signal.Ignore(syscall.SIGTERM)
	ctx, cancel := WithParent(context.Background())
	defer cancel()
	p.Write(p.Task+".watching", "1")
	select {
	case <-ctx.Done():
		p.Write(p.Task+".noticed", context.Cause(ctx).Error())
		return 0
	case <-p.Expired:
		return 4
	}
}

// errHung ends a hanging fakeWorker's loop.
var errHung = errors.New("hung")

// fakeWorker trains on its rows through an Agent, logging every chunk to
// its row log. With hang it stops beating (but keeps running) once it has
// trained on 12 rows.
func fakeWorker(p *controltest.Process, hang bool) int {
	t, err := ParseTask(p.Task)
	if err != nil {
		return 2
	}
	c, err := DialCoordinator(os.Getenv(fakeCoordEnv))
	if err != nil {
		return 2
	}
	defer c.Close()
	a, err := NewAgent(c, AgentConfig{Task: t, Interval: 20 * time.Millisecond, RPCTimeout: time.Second, LostAfter: 10 * time.Second})
	if err != nil {
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	log, err := controltest.OpenRowLog(p.Dir, p.Task)
	if err != nil {
		return 2
	}
	defer log.Close()
	var total int64
	err = controltest.Consume(ctx, a, func(ch controltest.Chunk) (float64, error) {
		if hang && total >= 12 {
			cancel() // no more heartbeats; stay alive
			<-p.Expired
			return 0, errHung
		}
		time.Sleep(10 * time.Millisecond)
		controltest.LogChunk(log, ch)
		total += ch.Rows()
		return 0, nil
	})
	switch {
	case errors.Is(err, errHung):
		return 4
	case err != nil:
		return 1
	}
	return 0
}

// fakeRunner runs the test binary as roles[t] for each task.
func fakeRunner(dir, coord string, roles map[Task]string) ProcessRunner {
	return ProcessRunner{Command: func(t Task, attempt int) (*exec.Cmd, error) {
		role, ok := roles[t]
		if !ok {
			return nil, fmt.Errorf("no role for %s", t)
		}
		return controltest.Command(role, dir, t.String(), attempt, fakeCoordEnv+"="+coord), nil
	}}
}

func serveMonitor(t *testing.T, m *Monitor) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewHeartbeatServer(m)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(time.Second); require.NoError(t, <-done) })
	return lis.Addr().String()
}

func TestSupervisorRestartsPSAndSurvivesWorkerKill(t *testing.T) {
	dir := t.TempDir()
	trainers := []Task{{RoleChief, 0}, {RoleWorker, 0}, {RoleWorker, 1}}
	const rows, epochs = 900, 2
	m, err := NewMonitor(MonitorConfig{Trainers: trainers, Rows: rows, Epochs: epochs, Interval: 20 * time.Millisecond, Timeout: 3 * time.Second, StartTimeout: 30 * time.Second})
	require.NoError(t, err)
	addr := serveMonitor(t, m)
	ps := Task{RolePS, 0}
	roles := map[Task]string{ps: "ps", trainers[0]: "worker", trainers[1]: "worker", trainers[2]: "worker"}
	pids := &controltest.PIDLog{}
	var deadMu sync.Mutex
	var deadReasons []string
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, addr, roles), Tasks: append([]Task{ps}, trainers...), Monitor: m,
		StopGrace: 2 * time.Second, KillWait: 2 * time.Second, FinishTimeout: 10 * time.Second,
		Hooks: SupervisorHooks{OnStart: pids.Hook, OnWorkerDead: func(t Task, reason string) {
			deadMu.Lock()
			deadReasons = append(deadReasons, t.String()+": "+reason)
			deadMu.Unlock()
		}},
	})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	monErr := make(chan error, 1)
	go func() { monErr <- m.Run(ctx) }()

	// Kill the PS once it has snapshotted, and worker 0 mid-epoch.
	var snapAtKill int
	chaos := make(chan struct{})
	go func() {
		defer close(chaos)
		controltest.WaitFor(t, ctx, "ps snapshot", func() bool { return controltest.ReadInt(filepath.Join(dir, "ps:0.snap")) >= 5 })
		pid := pids.PID("ps:0#0")
		snapAtKill = controltest.ReadInt(filepath.Join(dir, "ps:0.snap"))
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		controltest.WaitFor(t, ctx, "worker 0 progress", func() bool { return controltest.CountRows(filepath.Join(dir, "worker:0.rows")) >= 40 })
		require.NoError(t, syscall.Kill(pids.PID("worker:0#0"), syscall.SIGKILL))
	}()

	start := time.Now()
	res, err := sup.Run(ctx)
	elapsed := time.Since(start)
	<-chaos
	require.NoError(t, err)
	require.NoError(t, <-monErr)
	t.Logf("job took %v; dead: %v", elapsed, deadReasons)

	require.Equal(t, 1, res.Restarts[ps])
	resumed := controltest.ReadInt(filepath.Join(dir, "ps:0.1.resumed"))
	require.GreaterOrEqual(t, resumed, snapAtKill, "the restarted ps resumed from its snapshot")
	require.Equal(t, []Task{{RoleWorker, 0}}, res.Dead)
	require.Len(t, deadReasons, 1)
	require.Contains(t, deadReasons[0], "signal: killed")

	cov := controltest.CoveredRows(t, dir)
	for e := range int64(epochs) {
		require.Len(t, cov[e], rows, "epoch %d: every row trained despite the dead worker", e)
	}
	// Epoch 1 ran on the two survivors only, each row once.
	for row, n := range cov[1] {
		require.Equal(t, 1, n, "epoch 1 row %d", row)
	}
	st := m.Status()
	require.True(t, st[1].Dead)
	require.False(t, st[0].Dead)
	require.False(t, st[2].Dead)
	pids.RequireAllGone(t)
}

func TestSupervisorKillsSilentWorker(t *testing.T) {
	dir := t.TempDir()
	trainers := []Task{{RoleChief, 0}, {RoleWorker, 0}}
	m, err := NewMonitor(MonitorConfig{Trainers: trainers, Rows: 200, Interval: 20 * time.Millisecond, Timeout: 400 * time.Millisecond})
	require.NoError(t, err)
	addr := serveMonitor(t, m)
	pids := &controltest.PIDLog{}
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, addr, map[Task]string{trainers[0]: "worker", trainers[1]: "hang"}),
		Tasks:  trainers, Monitor: m, StopGrace: time.Second, KillWait: time.Second,
		Hooks: SupervisorHooks{OnStart: pids.Hook},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go m.Run(ctx)
	res, err := sup.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, []Task{{RoleWorker, 0}}, res.Dead)
	require.Contains(t, m.Status()[1].DeadReason, "no heartbeat for")
	require.Len(t, controltest.CoveredRows(t, dir)[0], 200)
	pids.RequireAllGone(t)
}

func TestSupervisorStopEscalatesToSIGKILL(t *testing.T) {
	dir := t.TempDir()
	chief := Task{RoleChief, 0}
	pids := &controltest.PIDLog{}
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, "", map[Task]string{chief: "stubborn", {RolePS, 0}: "ps"}),
		Tasks:  []Task{chief, {RolePS, 0}}, StopGrace: 300 * time.Millisecond, KillWait: 2 * time.Second,
		Hooks: SupervisorHooks{OnStart: pids.Hook},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	// Cancel once the stubborn task has spawned its grandchild.
	var grandchild int
	go func() {
		controltest.WaitFor(t, ctx, "grandchild", func() bool {
			grandchild = controltest.ReadInt(filepath.Join(dir, "grandchild.0.pid"))
			return grandchild > 0
		})
		stop()
	}()
	start := time.Now()
	_, err = sup.Run(runCtx)
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 8*time.Second)
	pids.RequireAllGone(t)
	require.Positive(t, grandchild)
	require.False(t, controltest.Alive(grandchild), "the grandchild in the task's process group was killed too")
}

func TestSupervisorGivesUpOnCrashingPS(t *testing.T) {
	dir := t.TempDir()
	ps, chief := Task{RolePS, 0}, Task{RoleChief, 0}
	pids := &controltest.PIDLog{}
	var restarts []int
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, "", map[Task]string{ps: "crash", chief: "sleeper"}),
		Tasks:  []Task{chief, ps}, MaxRestarts: 2, RestartBackoff: 10 * time.Millisecond,
		StopGrace: time.Second, KillWait: time.Second,
		Hooks: SupervisorHooks{OnStart: pids.Hook, OnRestart: func(_ Task, a int) { restarts = append(restarts, a) }},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := sup.Run(ctx)
	require.ErrorContains(t, err, "task ps:0 died and was already restarted 2 times (last exit: distributed: task ps:0")
	require.ErrorContains(t, err, "exit status 3")
	require.Equal(t, []int{1, 2}, restarts)
	require.Equal(t, 2, res.Restarts[ps])
	pids.RequireAllGone(t)
}

func TestSupervisorReadyTimeout(t *testing.T) {
	dir := t.TempDir()
	ps, chief := Task{RolePS, 0}, Task{RoleChief, 0}
	pids := &controltest.PIDLog{}
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, "", map[Task]string{ps: "ps", chief: "sleeper"}),
		Tasks:  []Task{chief, ps}, ReadyTimeout: 200 * time.Millisecond,
		Ready: func(ctx context.Context, t Task) error { <-ctx.Done(); return ctx.Err() },
		Hooks: SupervisorHooks{OnStart: pids.Hook}, StopGrace: time.Second,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = sup.Run(ctx)
	require.ErrorContains(t, err, "task ps:0 (pid ")
	require.ErrorContains(t, err, "not ready within 200ms")
	require.NoFileExists(t, filepath.Join(dir, "chief:0.0.pid"), "trainers start only after the ps is ready")
	pids.RequireAllGone(t)
}

func TestProcessRunnerErrors(t *testing.T) {
	ctx := context.Background()
	_, err := ProcessRunner{}.Start(ctx, Task{RoleWorker, 0}, 0)
	require.ErrorContains(t, err, "no Command")
	_, err = ProcessRunner{Command: func(Task, int) (*exec.Cmd, error) { return exec.Command("/nonexistent/gotflow"), nil }}.Start(ctx, Task{RoleWorker, 0}, 0)
	require.ErrorContains(t, err, "start task worker:0")
	_, err = ProcessRunner{Command: func(Task, int) (*exec.Cmd, error) { return nil, errors.New("no binary") }}.Start(ctx, Task{RoleWorker, 0}, 0)
	require.ErrorContains(t, err, "command for task worker:0: no binary")
}
