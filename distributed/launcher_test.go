//go:build unix

package distributed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/control/controltest"
	"github.com/stretchr/testify/require"
)

var fastHeartbeat = HeartbeatConfig{Interval: 20 * time.Millisecond, Timeout: 2 * time.Second, StartTimeout: 30 * time.Second}

func TestInProcessLauncher(t *testing.T) {
	rec := &controltest.RowLog{}
	var psRuns atomic.Int32
	var deadSeen []Task
	var mu sync.Mutex
	l := InProcessLauncher{
		PS: func(ctx context.Context, env TaskEnv) error {
			require.Equal(t, -1, env.Rank)
			psRuns.Add(1)
			<-ctx.Done()
			return nil
		},
		Trainer: func(ctx context.Context, env TaskEnv, a *Agent) error {
			limit := int64(-1)
			if env.Rank == 1 {
				limit = 20
			}
			err := controltest.TrainLoop(ctx, a, rec, env.Rank, limit)
			if errors.Is(err, controltest.ErrKilled) {
				return fmt.Errorf("rank %d: bad batch", env.Rank)
			}
			return err
		},
	}
	cfg := JobConfig{Workers: 3, NumPS: 2, Rows: 240, Epochs: 2, Heartbeat: fastHeartbeat,
		MonitorHooks: MonitorHooks{OnDead: func(tk Task, _ string, _ []Task) { mu.Lock(); deadSeen = append(deadSeen, tk); mu.Unlock() }}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := l.Launch(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, "completed 2 epochs", res.Reason)
	require.Equal(t, int32(2), psRuns.Load())
	require.Equal(t, []Task{{Role: RoleWorker, Index: 0}}, res.Supervisor.Dead)
	require.Equal(t, []Task{{Role: RoleWorker, Index: 0}}, deadSeen)
	require.Equal(t, "failed: rank 1: bad batch", res.Status[1].DeadReason)
	for e := range 2 {
		require.Len(t, rec.Seen[e], 240)
	}
}

func TestJobConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  JobConfig
		want string
	}{
		{JobConfig{}, "0 workers, expected at least 1"},
		{JobConfig{Workers: 1, NumPS: -1}, "-1 parameter servers"},
		{JobConfig{Workers: 1, Rows: -5}, "-5 rows"},
		{JobConfig{Workers: 1, MaxPSRestarts: -1}, "-1 PS restarts"},
	} {
		require.ErrorContains(t, tc.cfg.Validate(), tc.want)
		_, err := InProcessLauncher{Trainer: func(context.Context, TaskEnv, *Agent) error { return nil }}.Launch(context.Background(), tc.cfg)
		require.ErrorContains(t, err, tc.want, "Launch validates before starting anything")
	}
	_, err := InProcessLauncher{}.Launch(context.Background(), JobConfig{Workers: 1})
	require.ErrorContains(t, err, "needs a Trainer")
	_, err = ProcessLauncher{}.Launch(context.Background(), JobConfig{Workers: 1})
	require.ErrorContains(t, err, "no Command")
	require.Equal(t, []Task{{Role: RolePS, Index: 0}, {Role: RoleChief, Index: 0}, {Role: RoleWorker, Index: 0}, {Role: RoleWorker, Index: 1}}, JobConfig{Workers: 3, NumPS: 1}.Tasks())
}

func TestProcessLauncher(t *testing.T) {
	dir := t.TempDir()
	pids := &controltest.PIDLog{}
	var ready atomic.Int32
	l := ProcessLauncher{
		Command: func(env TaskEnv) (*exec.Cmd, error) {
			role := "trainer"
			if env.Task.Role == RolePS {
				role = "listener"
			}
			return controltest.Command(role, dir, env.Task.String(), env.Attempt, env.Environ()...), nil
		},
		Ready: func(ctx context.Context, env TaskEnv) error {
			var d net.Dialer
			for {
				c, err := d.DialContext(ctx, "tcp", env.PSAddrs[env.Task.Index])
				if err == nil {
					c.Close()
					ready.Add(1)
					return nil
				}
				select {
				case <-ctx.Done():
					return err
				case <-time.After(10 * time.Millisecond):
				}
			}
		},
	}
	cfg := JobConfig{Workers: 2, NumPS: 2, Rows: 100, Epochs: 2, Heartbeat: fastHeartbeat,
		StopGrace: 2 * time.Second, SupervisorHooks: SupervisorHooks{OnStart: pids.Hook}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := l.Launch(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, "completed 2 epochs", res.Reason)
	require.Equal(t, int32(2), ready.Load())
	require.Empty(t, res.Supervisor.Dead)
	cov := controltest.CoveredRows(t, dir)
	for e := range int64(2) {
		require.Len(t, cov[e], 100)
		for row, n := range cov[e] {
			require.Equal(t, 1, n, "epoch %d row %d", e, row)
		}
	}
	pids.RequireAllGone(t)
}

// TestTFConfigCluster runs three trainers the way TFJob pods run: each gets
// its own TF_CONFIG, the chief hosts the coordinator on its cluster address
// and the workers find it there.
func TestTFConfigCluster(t *testing.T) {
	// Only the chief listens (the coordinator); it serves on a socket bound
	// here, so no other process can take its port before it does.
	coord, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addrs := []string{coord.Addr().String(), "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	cluster := fmt.Sprintf(`{"chief":[%q],"worker":[%q,%q],"ps":[%q]}`, addrs[0], addrs[1], addrs[2], addrs[3])
	tasks := []Task{{Role: RoleChief, Index: 0}, {Role: RoleWorker, Index: 0}, {Role: RoleWorker, Index: 1}}
	rec := &controltest.RowLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, tk := range tasks {
		raw := fmt.Sprintf(`{"cluster":%s,"task":{"type":%q,"index":%d},"environment":"cloud"}`, cluster, tk.Role, tk.Index)
		env, err := TaskEnvFromEnviron(func(k string) (string, bool) {
			if k == TFConfigEnv {
				return raw, true
			}
			return "", false
		})
		require.NoError(t, err)
		require.Equal(t, i, env.Rank)
		require.Equal(t, 3, env.Workers)
		require.Equal(t, []string{addrs[3]}, env.PSAddrs)
		require.Equal(t, addrs[0], env.CoordinatorAddr)
		require.Equal(t, i == 0, env.HostsCoordinator())
		env.Heartbeat = fastHeartbeat
		env.Token = "shared-secret" // from a Kubernetes Secret in a real TFJob
		wg.Add(1)
		go func() {
			defer wg.Done()
			job := TrainerJob{Rows: 90, Epochs: 3}
			if env.HostsCoordinator() {
				job.Listener = coord
			}
			errs[i] = RunTrainer(ctx, env, job, func(ctx context.Context, a *Agent) error {
				return controltest.TrainLoop(ctx, a, rec, env.Rank, -1)
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "task %s", tasks[i])
	}
	for e := range 3 {
		require.Len(t, rec.Seen[e], 90)
	}
}

func TestTaskEnvEnviron(t *testing.T) {
	env := TaskEnv{Task: Task{Role: RoleWorker, Index: 1}, Attempt: 2, Rank: 2, Workers: 3, NumPS: 2,
		PSAddrs: []string{"127.0.0.1:5001", "127.0.0.1:5002"}, CoordinatorAddr: "127.0.0.1:5000", Heartbeat: fastHeartbeat, Token: "t0k"}
	vars := map[string]string{}
	for _, kv := range env.Environ() {
		k, v, _ := cutEq(kv)
		vars[k] = v
	}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	got, err := TaskEnvFromEnviron(lookup)
	require.NoError(t, err)
	require.Equal(t, env, got)

	for _, tc := range []struct{ key, val, want string }{
		{control.EnvTask, "worker", "is not role:index"},
		{control.EnvTask, "trainer:0", `unknown task type "trainer"`},
		{control.EnvWorkers, "2", "has rank 2 but GOTFLOW_WORKERS=2"},
		{control.EnvWorkers, "x", `GOTFLOW_WORKERS="x", expected an integer`},
		{control.EnvPS, "127.0.0.1", "is not host:port"},
		{control.EnvHeartbeat, "1s,2s", "expected interval,timeout,start-timeout"},
		{control.EnvHeartbeat, "1s,soon,3s", `"soon" is not a duration`},
		{control.EnvCoordinator, "", "has no GOTFLOW_COORDINATOR"},
	} {
		old := vars[tc.key]
		vars[tc.key] = tc.val
		_, err := TaskEnvFromEnviron(lookup)
		require.ErrorContains(t, err, tc.want, "%s=%s", tc.key, tc.val)
		vars[tc.key] = old
	}
	_, err = TaskEnvFromEnviron(func(string) (string, bool) { return "", false })
	require.ErrorIs(t, err, ErrNoTaskEnv)
	_, err = TaskEnvFromEnviron(func(k string) (string, bool) { return "{not json", k == TFConfigEnv })
	require.ErrorContains(t, err, "TF_CONFIG is not valid JSON")
}

func cutEq(kv string) (string, string, bool) {
	for i := range len(kv) {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// TestCoordinatorRefusesOpenBindWithoutToken: the chief of a TF_CONFIG
// job does not serve heartbeats on a non-loopback address without a token
// unless told it may.
func TestCoordinatorRefusesOpenBindWithoutToken(t *testing.T) {
	lis, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	env := TaskEnv{Task: Task{Role: RoleChief, Index: 0}, Rank: 0, Workers: 1, ListenAddr: lis.Addr().String(), TFConfig: true, Heartbeat: fastHeartbeat}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = RunTrainer(ctx, env, TrainerJob{Rows: 4, Epochs: 1, Listener: lis}, func(context.Context, *Agent) error { return nil })
	require.ErrorContains(t, err, "without a token: set GOTFLOW_COORDINATOR_TOKEN on every replica")

	lis, err = net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	env.ListenAddr = lis.Addr().String()
	rec := &controltest.RowLog{}
	err = RunTrainer(ctx, env, TrainerJob{Rows: 4, Epochs: 1, Listener: lis, Insecure: true}, func(ctx context.Context, a *Agent) error {
		return controltest.TrainLoop(ctx, a, rec, 0, -1)
	})
	require.NoError(t, err)
	require.Len(t, rec.Seen[0], 4)
}
