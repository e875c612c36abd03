package distributed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// JobConfig places a training job: NumPS parameter-server shards and
// Workers trainers (rank 0 is the chief), the rows they split each epoch,
// and how closely they are watched.
type JobConfig struct {
	Workers int   // trainers, >= 1; rank 0 runs as chief:0, rank r as worker:r-1
	NumPS   int   // parameter-server shards, >= 0
	Rows    int64 // training rows split over the trainers each epoch
	Epochs  int   // passes over Rows (default 1)

	Heartbeat HeartbeatConfig
	// MaxPSRestarts, StopGrace, KillWait and FinishTimeout are passed to the
	// Supervisor (see SupervisorConfig; zero selects its defaults).
	MaxPSRestarts int
	StopGrace     time.Duration
	KillWait      time.Duration
	FinishTimeout time.Duration

	MonitorHooks    MonitorHooks
	SupervisorHooks SupervisorHooks
	Logger          *slog.Logger
}

// HeartbeatConfig sets the heartbeat timing (zero selects the Monitor's
// defaults: 500ms interval, 10× interval timeout, 60s start timeout).
type HeartbeatConfig struct {
	Interval     time.Duration
	Timeout      time.Duration
	StartTimeout time.Duration
}

// Validate checks the configuration before anything starts.
func (c JobConfig) Validate() error {
	if c.Workers < 1 {
		return fmt.Errorf("distributed: job has %d workers, expected at least 1", c.Workers)
	}
	if c.NumPS < 0 {
		return fmt.Errorf("distributed: job has %d parameter servers, expected >= 0", c.NumPS)
	}
	if c.Rows < 0 {
		return fmt.Errorf("distributed: job has %d rows, expected >= 0", c.Rows)
	}
	if c.Epochs < 0 {
		return fmt.Errorf("distributed: job has %d epochs, expected >= 1", c.Epochs)
	}
	if c.MaxPSRestarts < 0 {
		return fmt.Errorf("distributed: job allows %d PS restarts, expected >= 0", c.MaxPSRestarts)
	}
	return c.monitorConfig().Validate()
}

// Tasks returns the job's tasks: ps first, then the chief, then the
// workers.
func (c JobConfig) Tasks() []Task {
	var out []Task
	for i := range c.NumPS {
		out = append(out, Task{Role: RolePS, Index: i})
	}
	return append(out, c.Trainers()...)
}

// Trainers returns the trainer tasks in rank order.
func (c JobConfig) Trainers() []Task {
	out := make([]Task, 0, c.Workers)
	for r := range c.Workers {
		out = append(out, TrainerTask(r))
	}
	return out
}

// TrainerTask returns the task of rank r: chief:0 for rank 0, worker:r-1
// otherwise.
func TrainerTask(rank int) Task {
	if rank == 0 {
		return Task{Role: RoleChief}
	}
	return Task{Role: RoleWorker, Index: rank - 1}
}

func (c JobConfig) monitorConfig() MonitorConfig {
	return MonitorConfig{
		Trainers: c.Trainers(), Rows: c.Rows, Epochs: c.Epochs,
		Interval: c.Heartbeat.Interval, Timeout: c.Heartbeat.Timeout, StartTimeout: c.Heartbeat.StartTimeout,
		Hooks: c.MonitorHooks, Logger: c.Logger,
	}
}

func (c JobConfig) supervisorConfig(r Runner, m *Monitor) SupervisorConfig {
	return SupervisorConfig{
		Runner: r, Tasks: c.Tasks(), Monitor: m, MaxRestarts: c.MaxPSRestarts,
		StopGrace: c.StopGrace, KillWait: c.KillWait, FinishTimeout: c.FinishTimeout,
		Hooks: c.SupervisorHooks, Logger: c.Logger,
	}
}

// TaskEnv is what one task is told about the job it belongs to.
type TaskEnv struct {
	Task    Task
	Attempt int // 0, then 1, 2, … for a restarted PS
	Rank    int // trainer rank; -1 for a PS
	Workers int
	NumPS   int
	// PSAddrs and CoordinatorAddr are the loopback addresses of the PS
	// shards and of the heartbeat server; set by ProcessLauncher only.
	PSAddrs         []string
	CoordinatorAddr string
	// Heartbeat is the job's heartbeat timing, for the task's Agent.
	Heartbeat HeartbeatConfig
	// Token is the coordinator's bearer token ("" for none).
	Token string
	// ListenAddr is set for the task that hosts the coordinator itself
	// (the chief under TF_CONFIG): it serves heartbeats there.
	ListenAddr string
	// TFConfig reports that the task's place came from TF_CONFIG (a
	// cluster across machines) rather than from a local launcher.
	TFConfig bool
}

func (c JobConfig) env(t Task, attempt int) TaskEnv {
	e := TaskEnv{Task: t, Attempt: attempt, Rank: -1, Workers: c.Workers, NumPS: c.NumPS, Heartbeat: c.Heartbeat}
	switch t.Role {
	case RoleChief:
		e.Rank = 0
	case RoleWorker:
		e.Rank = t.Index + 1
	}
	return e
}

// JobResult is what a launched job reports.
type JobResult struct {
	Reason     string       // why the job stopped, from the Monitor
	Status     []TaskStatus // final status of each trainer, by rank
	Supervisor SupervisorResult
}

// Launcher runs a job's tasks under a Monitor and a Supervisor until the
// job completes, fails or ctx is cancelled, and returns only once every
// task it started has stopped. InProcessLauncher and ProcessLauncher
// implement it.
type Launcher interface {
	Launch(ctx context.Context, cfg JobConfig) (JobResult, error)
}

// TrainerFunc is a trainer's body: it takes work from agent (Next),
// reports progress (Advance) and returns nil once Next returns ErrStopped.
type TrainerFunc func(ctx context.Context, env TaskEnv, agent *Agent) error

// PSFunc serves one parameter-server shard until ctx is cancelled.
type PSFunc func(ctx context.Context, env TaskEnv) error

// InProcessLauncher runs every task as a goroutine of this process: PS
// shards through PS, trainers through Trainer with an Agent that beats
// straight into the Monitor (no ports).
type InProcessLauncher struct {
	PS      PSFunc // required when NumPS > 0
	Trainer TrainerFunc
}

// Launch implements Launcher.
func (l InProcessLauncher) Launch(ctx context.Context, cfg JobConfig) (JobResult, error) {
	if err := cfg.Validate(); err != nil {
		return JobResult{}, err
	}
	if l.Trainer == nil || (cfg.NumPS > 0 && l.PS == nil) {
		return JobResult{}, errors.New("distributed: InProcessLauncher needs a Trainer, and a PS func when NumPS > 0")
	}
	m, err := NewMonitor(cfg.monitorConfig())
	if err != nil {
		return JobResult{}, err
	}
	runner := InProcessRunner{Func: func(ctx context.Context, t Task, attempt int) error {
		env := cfg.env(t, attempt)
		if t.Role == RolePS {
			return l.PS(ctx, env)
		}
		return RunAgent(ctx, m, agentConfig(env), func(ctx context.Context, a *Agent) error {
			return l.Trainer(ctx, env, a)
		})
	}}
	return launch(ctx, cfg.supervisorConfig(runner, m), m)
}

func agentConfig(env TaskEnv) AgentConfig {
	c := AgentConfig{Task: env.Task, Interval: env.Heartbeat.Interval}
	if env.Heartbeat.Timeout > 0 {
		c.RPCTimeout = env.Heartbeat.Timeout / 2
		c.LostAfter = 3 * env.Heartbeat.Timeout
	}
	return c
}

// AgentConfigFor returns the AgentConfig a trainer process should use for
// env (the job's heartbeat timing, its task).
func AgentConfigFor(env TaskEnv) AgentConfig { return agentConfig(env) }

// launch runs the monitor and a supervisor built from scfg, and assembles
// the result.
func launch(ctx context.Context, scfg SupervisorConfig, m *Monitor) (JobResult, error) {
	sup, err := NewSupervisor(scfg)
	if err != nil {
		return JobResult{}, err
	}
	mctx, cancelMon := context.WithCancel(ctx)
	defer cancelMon()
	monErr := make(chan error, 1)
	go func() { monErr <- m.Run(mctx) }()
	res, err := sup.Run(ctx)
	if err != nil {
		// The supervisor gave up (or ctx ended): make the monitor's verdict
		// final so its Run returns.
		m.Stop("supervisor: "+err.Error(), true)
	}
	merr := <-monErr
	reason, _, _ := m.Result()
	out := JobResult{Reason: reason, Status: m.Status(), Supervisor: res}
	if err == nil && merr != nil {
		err = merr
	}
	return out, err
}

// RunAgent runs a trainer body with an Agent beating to coord: it starts
// the agent, calls body, reports body's error to the coordinator (so the
// task's rows are reassigned at once) and returns after the agent stopped.
func RunAgent(ctx context.Context, coord Coordinator, cfg AgentConfig, body func(ctx context.Context, a *Agent) error) error {
	a, err := NewAgent(coord, cfg)
	if err != nil {
		return err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(actx) }()
	berr := body(actx, a)
	if berr != nil {
		a.Fail(berr.Error())
		// Give the agent one beat to deliver the failure, bounded by its
		// RPC timeout.
		t := time.NewTimer(a.cfg.RPCTimeout + a.cfg.Interval)
		select {
		case <-runErr:
			t.Stop()
			return berr
		case <-t.C:
		}
	}
	cancel()
	rerr := <-runErr
	if berr != nil {
		return berr
	}
	if rerr != nil && !errors.Is(rerr, context.Canceled) {
		return rerr
	}
	return nil
}
