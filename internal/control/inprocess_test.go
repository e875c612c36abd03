package control_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	. "github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/control/controltest"
)

// TestSupervisorInProcess runs a job as goroutines behind the same
// Supervisor: a ps that fails once and is restarted, three trainers beating
// straight into the Monitor (no ports), one of which fails mid-epoch.
func TestSupervisorInProcess(t *testing.T) {
	trainers := workers(3)
	const rows = 300
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: rows, Epochs: 2})
	rec := &controltest.RowLog{}
	var psStarts atomic.Int32
	// Trainers need their ps, as real ones do: they start once the
	// restarted ps is up, so the job cannot end before the restart.
	psBack := make(chan struct{})
	runner := InProcessRunner{Func: func(ctx context.Context, tk Task, attempt int) error {
		if tk.Role == RolePS {
			psStarts.Add(1)
			if attempt == 0 {
				return errors.New("ps crashed")
			}
			close(psBack)
			<-ctx.Done()
			return nil
		}
		select {
		case <-psBack:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the restarted ps: %w", ctx.Err())
		}
		rank := 0
		for i, tr := range trainers {
			if tr == tk {
				rank = i
			}
		}
		a, err := NewAgent(m, AgentConfig{Task: tk, Interval: 10 * time.Millisecond})
		if err != nil {
			return err
		}
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		go a.Run(actx)
		limit := int64(-1)
		if rank == 2 {
			limit = 30
		}
		err = controltest.TrainLoop(actx, a, rec, rank, limit)
		if errors.Is(err, controltest.ErrKilled) {
			return errors.New("worker hit a bad batch")
		}
		return err
	}}
	sup, err := NewSupervisor(SupervisorConfig{Runner: runner, Tasks: append([]Task{{RolePS, 0}}, trainers...), Monitor: m, RestartBackoff: time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go m.Run(ctx)
	res, err := sup.Run(ctx)
	require.NoError(t, err)
	require.Equal(t, int32(2), psStarts.Load())
	require.Equal(t, 1, res.Restarts[Task{RolePS, 0}])
	require.Equal(t, []Task{trainers[2]}, res.Dead)
	require.Equal(t, "worker hit a bad batch", m.Status()[2].DeadReason)
	for e := range 2 {
		require.Len(t, rec.Seen[e], rows, "epoch %d", e)
	}
}

// TestSupervisorReportsGoroutineThatIgnoresStop: a goroutine cannot be
// killed; Run must still return, naming it.
func TestSupervisorReportsGoroutineThatIgnoresStop(t *testing.T) {
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	runner := InProcessRunner{Func: func(ctx context.Context, tk Task, _ int) error {
		if tk.Role == RoleWorker {
			defer wg.Done()
			<-release // ignores ctx
			return nil
		}
		<-ctx.Done()
		return nil
	}}
	sup, err := NewSupervisor(SupervisorConfig{Runner: runner, Tasks: []Task{{RoleChief, 0}, {RoleWorker, 0}}, StopGrace: 50 * time.Millisecond, KillWait: 50 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = sup.Run(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "tasks worker:0 (goroutine worker:0#0) still running")
	require.Less(t, time.Since(start), 5*time.Second)
	close(release)
	wg.Wait()
}

func TestSupervisorWithoutMonitor(t *testing.T) {
	var calls atomic.Int32
	runner := InProcessRunner{Func: func(ctx context.Context, tk Task, _ int) error {
		calls.Add(1)
		switch tk.Role {
		case RoleChief:
			return nil
		case RoleWorker:
			panic("boom")
		}
		<-ctx.Done()
		return nil
	}}
	var dead []string
	sup, err := NewSupervisor(SupervisorConfig{Runner: runner, Tasks: []Task{{RolePS, 0}, {RoleChief, 0}, {RoleWorker, 0}},
		Hooks: SupervisorHooks{OnWorkerDead: func(t Task, reason string) { dead = append(dead, reason) }}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := sup.Run(ctx)
	require.NoError(t, err, "one trainer finished cleanly")
	require.Equal(t, []Task{{RoleWorker, 0}}, res.Dead)
	require.Len(t, dead, 1)
	require.Contains(t, dead[0], "task worker:0 panicked: boom")
	require.Len(t, res.Exits, 3, "ps stopped at the end")

	// All trainers failing fails the job.
	sup, err = NewSupervisor(SupervisorConfig{Runner: InProcessRunner{Func: func(context.Context, Task, int) error { return errors.New("no data") }}, Tasks: []Task{{RoleWorker, 0}}})
	require.NoError(t, err)
	_, err = sup.Run(ctx)
	require.ErrorContains(t, err, "every trainer failed: no data")
}

func TestNewSupervisorErrors(t *testing.T) {
	r := InProcessRunner{Func: func(context.Context, Task, int) error { return nil }}
	for _, tc := range []struct {
		cfg  SupervisorConfig
		want string
	}{
		{SupervisorConfig{Tasks: []Task{{RoleWorker, 0}}}, "no Runner"},
		{SupervisorConfig{Runner: r}, "no tasks"},
		{SupervisorConfig{Runner: r, Tasks: []Task{{RolePS, 0}}}, "no chief or worker task"},
		{SupervisorConfig{Runner: r, Tasks: []Task{{RoleWorker, 0}, {RoleWorker, 0}}}, "worker:0 listed twice"},
		{SupervisorConfig{Runner: r, Tasks: []Task{{"driver", 0}}}, "task driver:0 is not a valid task"},
		{SupervisorConfig{Runner: r, Tasks: []Task{{RoleWorker, 0}}, MaxRestarts: -1}, "MaxRestarts -1"},
	} {
		_, err := NewSupervisor(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
	_, err := InProcessRunner{}.Start(context.Background(), Task{RoleWorker, 0}, 0)
	require.ErrorContains(t, err, "no Func")
}
