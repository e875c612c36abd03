package control_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	// These tests cannot be in package control: they use controltest,
	// which imports control.
	. "github.com/gotflow/gotflow/internal/control"
	"github.com/gotflow/gotflow/internal/control/controltest"
)

func testMonitor(t *testing.T, cfg MonitorConfig) *Monitor {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	m, err := NewMonitor(cfg)
	require.NoError(t, err)
	return m
}

func workers(n int) []Task {
	out := []Task{{Role: RoleChief}}
	for i := 1; i < n; i++ {
		out = append(out, Task{Role: RoleWorker, Index: i - 1})
	}
	return out
}

// runJob runs the monitor and one agent+loop per trainer on coord(i).
func runJob(t *testing.T, m *Monitor, trainers []Task, coord func(i int) Coordinator, stopAfter map[int]int64) (*controltest.RowLog, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec := &controltest.RowLog{}
	var g errgroup.Group
	var monErr error
	monDone := make(chan struct{})
	go func() { monErr = m.Run(ctx); close(monDone) }()
	for i, task := range trainers {
		a, err := NewAgent(coord(i), AgentConfig{Task: task, Interval: 10 * time.Millisecond, RPCTimeout: time.Second, LostAfter: 5 * time.Second})
		require.NoError(t, err)
		actx, acancel := context.WithCancel(ctx)
		runDone := make(chan error, 1)
		go func() { runDone <- a.Run(actx) }()
		limit := int64(-1)
		if v, ok := stopAfter[i]; ok {
			limit = v
		}
		g.Go(func() error {
			defer func() { acancel(); <-runDone }()
			err := controltest.TrainLoop(actx, a, rec, i, limit)
			if errors.Is(err, controltest.ErrKilled) {
				return nil // silently gone: the monitor must notice
			}
			return err
		})
	}
	require.NoError(t, g.Wait())
	<-monDone
	return rec, monErr
}

func TestMonitorEpochsInProcess(t *testing.T) {
	trainers := workers(3)
	var ended []int
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 103, Epochs: 3, Hooks: MonitorHooks{
		OnEpochEnd: func(e int) bool { ended = append(ended, e); return false },
	}})
	rec, err := runJob(t, m, trainers, func(int) Coordinator { return m }, nil)
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2}, ended)
	reason, failed, ok := m.Result()
	require.True(t, ok)
	require.False(t, failed)
	require.Equal(t, "completed 3 epochs", reason)
	for e := range 3 {
		require.Len(t, rec.Seen[e], 103, "epoch %d", e)
		for row, ranks := range rec.Seen[e] {
			require.Len(t, ranks, 1, "epoch %d row %d seen by %v", e, row, ranks)
		}
	}
	// Rank 0 of 3 gets rows 0..35 each epoch.
	require.Equal(t, []int{0}, rec.Seen[1][34])
	require.Equal(t, []int{1}, rec.Seen[1][35])
	for _, s := range m.Status() {
		require.False(t, s.Dead)
		require.Positive(t, s.Step)
	}
}

func TestMonitorEarlyStop(t *testing.T) {
	trainers := workers(2)
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 40, Epochs: 10, Hooks: MonitorHooks{
		OnEpochEnd: func(e int) bool { return e == 1 },
	}})
	rec, err := runJob(t, m, trainers, func(int) Coordinator { return m }, nil)
	require.NoError(t, err)
	reason, _, _ := m.Result()
	require.Equal(t, "stopped after epoch 1 by the epoch-end hook", reason)
	require.Len(t, rec.Seen, 2)
}

func TestMonitorReassignsDeadWorker(t *testing.T) {
	trainers := workers(3)
	var mu sync.Mutex
	var dead []Task
	var got []Task
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 300, Epochs: 2, Hooks: MonitorHooks{
		OnDead: func(tk Task, reason string, receivers []Task) {
			mu.Lock()
			defer mu.Unlock()
			dead = append(dead, tk)
			got = receivers
			assert.Contains(t, reason, "no heartbeat for")
		},
	}})
	// Worker 0 (rank 1, rows 100..200) goes silent after 40 rows.
	rec, err := runJob(t, m, trainers, func(int) Coordinator { return m }, map[int]int64{1: 40})
	require.NoError(t, err)
	require.Equal(t, []Task{{RoleWorker, 0}}, dead)
	require.Equal(t, []Task{{RoleChief, 0}, {RoleWorker, 1}}, got)
	st := m.Status()
	require.True(t, st[1].Dead)
	for e := range 2 {
		require.Len(t, rec.Seen[e], 300, "epoch %d: every row trained", e)
	}
	// Rows reported before death are not trained again; rows trained after
	// the last report may be (at-least-once).
	for row := int64(100); row < 100+st[1].RowsDone; row++ {
		require.Equal(t, []int{1}, rec.Seen[0][row], "row %d", row)
	}
	// The second epoch is split over the two survivors only.
	for row, ranks := range rec.Seen[1] {
		require.Len(t, ranks, 1, "row %d", row)
		require.NotEqual(t, 1, ranks[0])
	}
}

func TestMonitorFailedTaskAndLastDeath(t *testing.T) {
	trainers := workers(2)
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 10})
	ctx := context.Background()
	r, err := m.Beat(ctx, Beat{Task: trainers[0], Incarnation: 7, State: StateRunning})
	require.NoError(t, err)
	require.Equal(t, CommandRun, r.Command)
	require.Equal(t, []Range{{0, 5}}, r.Ranges)

	r, err = m.Beat(ctx, Beat{Task: trainers[1], Incarnation: 9, State: StateFailed, Message: "out of memory"})
	require.NoError(t, err)
	require.Equal(t, CommandStop, r.Command)
	require.Equal(t, "failed: out of memory", m.Status()[1].DeadReason)

	r, err = m.Beat(ctx, Beat{Task: trainers[0], Incarnation: 7, State: StateRunning, RowsDone: 2})
	require.NoError(t, err)
	require.Equal(t, []Range{{0, 5}, {5, 10}}, r.Ranges)

	// A restarted process of a live task is stopped and its rows moved; here
	// it is the last trainer, so the job fails.
	r, err = m.Beat(ctx, Beat{Task: trainers[0], Incarnation: 8, State: StateRunning})
	require.NoError(t, err)
	require.Equal(t, CommandStop, r.Command)
	require.True(t, r.Failed)
	reason, failed, ok := m.Result()
	require.True(t, ok)
	require.True(t, failed)
	require.Contains(t, reason, "every trainer is dead")
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed")
	}

	_, err = m.Beat(ctx, Beat{Task: Task{Role: RoleWorker, Index: 5}, State: StateRunning})
	require.ErrorIs(t, err, ErrUnknownTask)
	require.ErrorIs(t, m.MarkDead(Task{Role: RolePS}, "x"), ErrUnknownTask)
}

func TestMonitorStartTimeoutAndCheck(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	trainers := workers(2)
	m, err := NewMonitor(MonitorConfig{Trainers: trainers, Rows: 10, Interval: time.Second, Timeout: 5 * time.Second, StartTimeout: 30 * time.Second, Now: clock})
	require.NoError(t, err)
	_, err = m.Beat(context.Background(), Beat{Task: trainers[0], Incarnation: 1, State: StateRunning})
	require.NoError(t, err)
	now = now.Add(4 * time.Second)
	require.Empty(t, m.Check(now))
	now = now.Add(2 * time.Second) // chief silent 6s > 5s
	require.Equal(t, []Task{trainers[0]}, m.Check(now))
	require.Contains(t, m.Status()[0].DeadReason, "no heartbeat for 6s (timeout 5s)")
	now = now.Add(30 * time.Second) // worker never beat
	require.Equal(t, []Task{trainers[1]}, m.Check(now))
	require.Contains(t, m.Status()[1].DeadReason, "no first heartbeat within 30s")
	reason, failed, ok := m.Result()
	require.True(t, ok)
	require.True(t, failed, "the last trainer's death fails the job")
	require.Contains(t, reason, "every trainer is dead")
	require.Empty(t, m.Check(now.Add(time.Hour)))
}

func TestMonitorConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  MonitorConfig
		want string
	}{
		{MonitorConfig{}, "no trainers"},
		{MonitorConfig{Trainers: []Task{{RolePS, 0}}}, "trainer ps:0 is not a chief or worker"},
		{MonitorConfig{Trainers: []Task{{RoleWorker, 0}, {RoleWorker, 0}}}, "listed twice"},
		{MonitorConfig{Trainers: workers(1), Rows: -1}, "rows -1"},
		{MonitorConfig{Trainers: workers(1), Interval: time.Second, Timeout: time.Second}, "must exceed the heartbeat interval"},
	} {
		_, err := NewMonitor(tc.cfg)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestHeartbeatsOverGRPC(t *testing.T) {
	trainers := workers(2)
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 64, Epochs: 2})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewHeartbeatServer(m)
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(time.Second); require.NoError(t, <-serveDone) })

	clients := make([]*CoordinatorClient, len(trainers))
	for i := range clients {
		c, err := DialCoordinator(lis.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	rec, err := runJob(t, m, trainers, func(i int) Coordinator { return clients[i] }, nil)
	require.NoError(t, err)
	for e := range 2 {
		require.Len(t, rec.Seen[e], 64)
	}

	// Unknown tasks map to NotFound and back to ErrUnknownTask.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = clients[0].Beat(ctx, Beat{Task: Task{Role: RoleWorker, Index: 9}, State: StateRunning})
	require.ErrorIs(t, err, ErrUnknownTask)
}

func TestAgentCoordinatorLost(t *testing.T) {
	// A port nobody listens on: every beat fails fast.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	c, err := DialCoordinator(addr)
	require.NoError(t, err)
	defer c.Close()
	a, err := NewAgent(c, AgentConfig{Task: Task{Role: RoleWorker}, Interval: 20 * time.Millisecond, RPCTimeout: 200 * time.Millisecond, LostAfter: 500 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	_, err = a.Next(ctx)
	require.ErrorIs(t, err, ErrCoordinatorLost)
	require.ErrorIs(t, <-runErr, ErrCoordinatorLost)
	require.Less(t, time.Since(start), 5*time.Second)

	_, err = NewAgent(c, AgentConfig{Task: Task{Role: RolePS}})
	require.ErrorContains(t, err, "not a chief or worker")
}

func TestHeartbeatToken(t *testing.T) {
	trainers := workers(1)
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 8})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	token, err := NewToken()
	require.NoError(t, err)
	require.Len(t, token, 64)
	srv := NewHeartbeatServer(m, RequireToken(token))
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(time.Second); require.NoError(t, <-serveDone) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	beat := Beat{Task: trainers[0], Incarnation: 1, State: StateRunning}
	for name, opts := range map[string][]grpc.DialOption{"none": nil, "wrong": {SendToken("guess")}} {
		c, err := DialCoordinator(lis.Addr().String(), opts...)
		require.NoError(t, err)
		_, err = c.Beat(ctx, beat)
		require.ErrorIs(t, err, ErrUnauthenticated, name)
		// An agent with a bad token gives up at once instead of retrying.
		a, err := NewAgent(c, AgentConfig{Task: trainers[0], Interval: 10 * time.Millisecond, LostAfter: time.Minute})
		require.NoError(t, err)
		start := time.Now()
		require.ErrorIs(t, a.Run(ctx), ErrUnauthenticated, name)
		require.Less(t, time.Since(start), 5*time.Second)
		c.Close()
	}
	c, err := DialCoordinator(lis.Addr().String(), SendToken(token))
	require.NoError(t, err)
	defer c.Close()
	r, err := c.Beat(ctx, beat)
	require.NoError(t, err)
	require.Equal(t, []Range{{0, 8}}, r.Ranges)
	require.Empty(t, m.Status()[0].DeadReason, "refused beats did not touch the monitor")
}

// countingCoord counts the beats each task sends.
type countingCoord struct {
	Coordinator
	mu sync.Mutex
	n  map[Task]int
}

func (c *countingCoord) Beat(ctx context.Context, b Beat) (Reply, error) {
	c.mu.Lock()
	c.n[b.Task]++
	c.mu.Unlock()
	return c.Coordinator.Beat(ctx, b)
}

// TestIdleAgentBeatsAtInterval: a trainer waiting for a slow peer must
// beat about once per interval, not spin.
func TestIdleAgentBeatsAtInterval(t *testing.T) {
	trainers := workers(2)
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 20, Interval: 20 * time.Millisecond})
	cc := &countingCoord{Coordinator: m, n: map[Task]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go m.Run(ctx)
	const slow = 400 * time.Millisecond
	var g errgroup.Group
	for i, tk := range trainers {
		g.Go(func() error {
			return RunAgent(ctx, cc, AgentConfig{Task: tk, Interval: 20 * time.Millisecond}, func(ctx context.Context, a *Agent) error {
				return controltest.Works(ctx, a, func(w Work) error {
					if i == 1 {
						time.Sleep(slow)
					}
					a.Advance(w.Rows(), 1, 0)
					return nil
				})
			})
		})
	}
	require.NoError(t, g.Wait())
	cc.mu.Lock()
	defer cc.mu.Unlock()
	fast := cc.n[trainers[0]]
	t.Logf("beats: fast %d, slow %d", fast, cc.n[trainers[1]])
	// About slow/interval = 20 beats while waiting; allow generous slack.
	require.Less(t, fast, 80, "an idle agent spun on heartbeats")
	require.Greater(t, fast, 5)
}
