//go:build unix

package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The test binary doubles as the fake task processes: a Supervisor started
// by a test re-executes it with fakeRoleEnv set, and TestMain runs the role
// instead of the tests.
const (
	fakeRoleEnv  = "GOTFLOW_FAKE_ROLE"
	fakeDirEnv   = "GOTFLOW_FAKE_DIR"
	fakeTaskEnv  = "GOTFLOW_FAKE_TASK"
	fakeTryEnv   = "GOTFLOW_FAKE_ATTEMPT"
	fakeCoordEnv = "GOTFLOW_FAKE_COORD"
	// Every fake process exits on its own after this, so a broken test
	// cannot leave processes behind for long.
	fakeLifetime = 90 * time.Second
)

func TestMain(m *testing.M) {
	if role := os.Getenv(fakeRoleEnv); role != "" {
		os.Exit(fakeRole(role))
	}
	os.Exit(m.Run())
}

func fakeRole(role string) int {
	dir := os.Getenv(fakeDirEnv)
	task := os.Getenv(fakeTaskEnv)
	attempt := os.Getenv(fakeTryEnv)
	write := func(name, content string) {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err == nil {
			os.Rename(tmp, filepath.Join(dir, name))
		}
	}
	write(task+"."+attempt+".pid", strconv.Itoa(os.Getpid()))
	life := time.NewTimer(fakeLifetime)
	term := make(chan os.Signal, 1)
	switch role {
	case "ps":
		// Counts "updates" in a snapshot file and resumes from it.
		signal.Notify(term, syscall.SIGTERM)
		snap := filepath.Join(dir, task+".snap")
		n := 0
		if b, err := os.ReadFile(snap); err == nil {
			n, _ = strconv.Atoi(string(b))
		}
		write(task+"."+attempt+".resumed", strconv.Itoa(n))
		tick := time.NewTicker(10 * time.Millisecond)
		for {
			select {
			case <-term:
				return 0
			case <-life.C:
				return 4
			case <-tick.C:
				n++
				write(task+".snap", strconv.Itoa(n))
			}
		}
	case "worker", "hang":
		return fakeWorker(role, dir, task, life)
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), fakeRoleEnv+"=sleeper", fakeTaskEnv+"=grandchild")
		if err := child.Start(); err != nil {
			return 5
		}
		<-life.C
		return 4
	case "sleeper":
		<-life.C
		return 4
	case "crash":
		return 3
	case "noisy-crash":
		fmt.Fprintln(os.Stderr, "starting")
		fmt.Fprintln(os.Stderr, "boom: snapshot taken with another optimizer")
		return 3
	case "launcher":
		// Starts a sleeper (and, with the sleeper ignoring SIGTERM, a
		// watcher) through a ProcessRunner and waits to be killed.
		r := fakeRunner(dir, "", map[Task]string{{RolePS, 0}: "sleeper", {RoleWorker, 0}: "watcher"})
		for _, tk := range []Task{{RolePS, 0}, {RoleWorker, 0}} {
			h, err := r.Start(context.Background(), tk, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			write(tk.String()+".child", strconv.Itoa(h.(*processHandle).PID()))
		}
		<-life.C
		return 4
	case "watcher":
		// Ignores the parent-death signal and relies on WithParent.
		signal.Ignore(syscall.SIGTERM)
		ctx, cancel := WithParent(context.Background())
		defer cancel()
		write(task+".watching", "1")
		select {
		case <-ctx.Done():
			write(task+".noticed", context.Cause(ctx).Error())
			return 0
		case <-life.C:
			return 4
		}
	}
	fmt.Fprintf(os.Stderr, "unknown fake role %q\n", role)
	return 2
}

// fakeWorker trains on its rows through an Agent, logging every chunk to
// <task>.rows. "hang" stops beating (but keeps running) after 12 rows.
func fakeWorker(role, dir, task string, life *time.Timer) int {
	t, err := parseTask(task)
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
	log, err := os.OpenFile(filepath.Join(dir, task+".rows"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 2
	}
	defer log.Close()
	var step, total int64
	for {
		w, err := a.Next(ctx)
		if errors.Is(err, ErrStopped) {
			return 0
		}
		if err != nil {
			return 1
		}
		for _, r := range w.Ranges {
			for i := r.Start; i < r.End; i += 4 {
				end := min(i+4, r.End)
				time.Sleep(10 * time.Millisecond)
				fmt.Fprintf(log, "%d %d %d\n", w.Epoch, i, end)
				step++
				total += end - i
				a.Advance(end-i, step, 0)
				if role == "hang" && total >= 12 {
					cancel() // no more heartbeats; stay alive
					<-life.C
					return 4
				}
			}
		}
	}
}

func parseTask(s string) (Task, error) { return ParseTask(s) }

// fakeRunner runs the test binary as roles[t] for each task.
func fakeRunner(dir, coord string, roles map[Task]string) ProcessRunner {
	return ProcessRunner{Command: func(t Task, attempt int) (*exec.Cmd, error) {
		role, ok := roles[t]
		if !ok {
			return nil, fmt.Errorf("no role for %s", t)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			fakeRoleEnv+"="+role, fakeDirEnv+"="+dir, fakeTaskEnv+"="+t.String(),
			fakeTryEnv+"="+strconv.Itoa(attempt), fakeCoordEnv+"="+coord)
		cmd.Stderr = os.Stderr
		return cmd, nil
	}}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// pidLog collects the pids of started processes.
type pidLog struct {
	mu   sync.Mutex
	pids map[string]int // "task#attempt" -> pid
}

func (p *pidLog) hook(t Task, attempt int, h Handle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pids == nil {
		p.pids = map[string]int{}
	}
	if ph, ok := h.(*processHandle); ok {
		p.pids[fmt.Sprintf("%s#%d", t, attempt)] = ph.PID()
	}
}

func (p *pidLog) get(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pids[key]
}

func (p *pidLog) requireAllGone(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NotEmpty(t, p.pids)
	for k, pid := range p.pids {
		require.False(t, alive(pid), "%s (pid %d) still running", k, pid)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Errorf("timed out waiting for %s", what)
			return
		case <-tick.C:
		}
	}
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

func countRows(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e, s, end int64
		if _, err := fmt.Sscan(sc.Text(), &e, &s, &end); err == nil {
			n += end - s
		}
	}
	return n
}

// coveredRows reads every worker's row log and returns epoch -> row -> count.
func coveredRows(t *testing.T, dir string) map[int64]map[int64]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.rows"))
	require.NoError(t, err)
	out := map[int64]map[int64]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line == "" {
				continue
			}
			var e, s, end int64
			_, err := fmt.Sscan(line, &e, &s, &end)
			require.NoError(t, err, "%s: %q", f, line)
			if out[e] == nil {
				out[e] = map[int64]int{}
			}
			for i := s; i < end; i++ {
				out[e][i]++
			}
		}
	}
	return out
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
	pids := &pidLog{}
	var deadMu sync.Mutex
	var deadReasons []string
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, addr, roles), Tasks: append([]Task{ps}, trainers...), Monitor: m,
		StopGrace: 2 * time.Second, KillWait: 2 * time.Second, FinishTimeout: 10 * time.Second,
		Hooks: SupervisorHooks{OnStart: pids.hook, OnWorkerDead: func(t Task, reason string) {
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
		waitFor(t, ctx, "ps snapshot", func() bool { return readInt(filepath.Join(dir, "ps:0.snap")) >= 5 })
		pid := pids.get("ps:0#0")
		snapAtKill = readInt(filepath.Join(dir, "ps:0.snap"))
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		waitFor(t, ctx, "worker 0 progress", func() bool { return countRows(filepath.Join(dir, "worker:0.rows")) >= 40 })
		require.NoError(t, syscall.Kill(pids.get("worker:0#0"), syscall.SIGKILL))
	}()

	start := time.Now()
	res, err := sup.Run(ctx)
	elapsed := time.Since(start)
	<-chaos
	require.NoError(t, err)
	require.NoError(t, <-monErr)
	t.Logf("job took %v; dead: %v", elapsed, deadReasons)

	require.Equal(t, 1, res.Restarts[ps])
	resumed := readInt(filepath.Join(dir, "ps:0.1.resumed"))
	require.GreaterOrEqual(t, resumed, snapAtKill, "the restarted ps resumed from its snapshot")
	require.Equal(t, []Task{{RoleWorker, 0}}, res.Dead)
	require.Len(t, deadReasons, 1)
	require.Contains(t, deadReasons[0], "signal: killed")

	cov := coveredRows(t, dir)
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
	pids.requireAllGone(t)
}

func TestSupervisorKillsSilentWorker(t *testing.T) {
	dir := t.TempDir()
	trainers := []Task{{RoleChief, 0}, {RoleWorker, 0}}
	m, err := NewMonitor(MonitorConfig{Trainers: trainers, Rows: 200, Interval: 20 * time.Millisecond, Timeout: 400 * time.Millisecond})
	require.NoError(t, err)
	addr := serveMonitor(t, m)
	pids := &pidLog{}
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, addr, map[Task]string{trainers[0]: "worker", trainers[1]: "hang"}),
		Tasks:  trainers, Monitor: m, StopGrace: time.Second, KillWait: time.Second,
		Hooks: SupervisorHooks{OnStart: pids.hook},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go m.Run(ctx)
	res, err := sup.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, []Task{{RoleWorker, 0}}, res.Dead)
	require.Contains(t, m.Status()[1].DeadReason, "no heartbeat for")
	require.Len(t, coveredRows(t, dir)[0], 200)
	pids.requireAllGone(t)
}

func TestSupervisorStopEscalatesToSIGKILL(t *testing.T) {
	dir := t.TempDir()
	chief := Task{RoleChief, 0}
	pids := &pidLog{}
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, "", map[Task]string{chief: "stubborn", {RolePS, 0}: "ps"}),
		Tasks:  []Task{chief, {RolePS, 0}}, StopGrace: 300 * time.Millisecond, KillWait: 2 * time.Second,
		Hooks: SupervisorHooks{OnStart: pids.hook},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	// Cancel once the stubborn task has spawned its grandchild.
	var grandchild int
	go func() {
		waitFor(t, ctx, "grandchild", func() bool {
			grandchild = readInt(filepath.Join(dir, "grandchild.0.pid"))
			return grandchild > 0
		})
		stop()
	}()
	start := time.Now()
	_, err = sup.Run(runCtx)
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, time.Since(start), 8*time.Second)
	pids.requireAllGone(t)
	require.Positive(t, grandchild)
	require.False(t, alive(grandchild), "the grandchild in the task's process group was killed too")
}

func TestSupervisorGivesUpOnCrashingPS(t *testing.T) {
	dir := t.TempDir()
	ps, chief := Task{RolePS, 0}, Task{RoleChief, 0}
	pids := &pidLog{}
	var restarts []int
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, "", map[Task]string{ps: "crash", chief: "sleeper"}),
		Tasks:  []Task{chief, ps}, MaxRestarts: 2, RestartBackoff: 10 * time.Millisecond,
		StopGrace: time.Second, KillWait: time.Second,
		Hooks: SupervisorHooks{OnStart: pids.hook, OnRestart: func(_ Task, a int) { restarts = append(restarts, a) }},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := sup.Run(ctx)
	require.ErrorContains(t, err, "task ps:0 died and was already restarted 2 times (last exit: distributed: task ps:0")
	require.ErrorContains(t, err, "exit status 3")
	require.Equal(t, []int{1, 2}, restarts)
	require.Equal(t, 2, res.Restarts[ps])
	pids.requireAllGone(t)
}

func TestSupervisorReadyTimeout(t *testing.T) {
	dir := t.TempDir()
	ps, chief := Task{RolePS, 0}, Task{RoleChief, 0}
	pids := &pidLog{}
	sup, err := NewSupervisor(SupervisorConfig{
		Runner: fakeRunner(dir, "", map[Task]string{ps: "ps", chief: "sleeper"}),
		Tasks:  []Task{chief, ps}, ReadyTimeout: 200 * time.Millisecond,
		Ready: func(ctx context.Context, t Task) error { <-ctx.Done(); return ctx.Err() },
		Hooks: SupervisorHooks{OnStart: pids.hook}, StopGrace: time.Second,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = sup.Run(ctx)
	require.ErrorContains(t, err, "task ps:0 (pid ")
	require.ErrorContains(t, err, "not ready within 200ms")
	require.NoFileExists(t, filepath.Join(dir, "chief:0.0.pid"), "trainers start only after the ps is ready")
	pids.requireAllGone(t)
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
