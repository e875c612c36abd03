package distributed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gotflow/gotflow/internal/control"
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
	// supervisor of the tasks (internal/control's SupervisorConfig; zero
	// selects its defaults): how often one PS shard may be restarted (3),
	// how long tasks get between SIGTERM and SIGKILL (5s), how long to wait
	// after SIGKILL (5s), and how long trainers may take to exit once the
	// job is over (30s).
	MaxPSRestarts int
	StopGrace     time.Duration
	KillWait      time.Duration
	FinishTimeout time.Duration

	MonitorHooks    MonitorHooks
	SupervisorHooks SupervisorHooks
	Logger          *slog.Logger
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
		out = append(out, control.TrainerTask(r))
	}
	return out
}

func (c JobConfig) monitorConfig() control.MonitorConfig {
	return control.MonitorConfig{
		Trainers: c.Trainers(), Rows: c.Rows, Epochs: c.Epochs,
		Interval: c.Heartbeat.Interval, Timeout: c.Heartbeat.Timeout, StartTimeout: c.Heartbeat.StartTimeout,
		Hooks: c.MonitorHooks, Logger: c.Logger,
	}
}

func (c JobConfig) supervisorConfig(r control.Runner, m *control.Monitor) control.SupervisorConfig {
	return control.SupervisorConfig{
		Runner: r, Tasks: c.Tasks(), Monitor: m, MaxRestarts: c.MaxPSRestarts,
		StopGrace: c.StopGrace, KillWait: c.KillWait, FinishTimeout: c.FinishTimeout,
		Hooks: c.SupervisorHooks, Logger: c.Logger,
	}
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
	Reason     string           // why the job stopped, from the coordinator
	Status     []TaskStatus     // final status of each trainer, by rank
	Supervisor SupervisorResult // every attempt's exit, PS restarts, trainers reported dead
}

// TaskStatus is a trainer's last known state in JobResult.Status: its
// task, TaskState, epoch, rows consumed, step, loss and, when it failed,
// why.
type TaskStatus = control.TaskStatus

// TaskState is what a task says it is doing in a heartbeat: StateRunning,
// StateIdle or StateFailed.
type TaskState = control.TaskState

// The states of a TaskStatus.
const (
	StateRunning = control.StateRunning // working through assigned ranges
	StateIdle    = control.StateIdle    // every assigned row of the epoch consumed; waiting
	StateFailed  = control.StateFailed  // failed and about to exit
)

// SupervisorResult is what the supervisor saw of a job: every attempt's
// exit, the PS restarts and the trainers reported dead.
type SupervisorResult = control.SupervisorResult

// Launcher runs a job's tasks under the heartbeat coordinator and a
// supervisor until the job completes, fails or ctx is cancelled, and returns only once every
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
// straight into the coordinator (no ports).
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
	m, err := control.NewMonitor(cfg.monitorConfig())
	if err != nil {
		return JobResult{}, err
	}
	runner := control.InProcessRunner{Func: func(ctx context.Context, t Task, attempt int) error {
		env := cfg.env(t, attempt)
		if t.Role == RolePS {
			return l.PS(ctx, env)
		}
		return control.RunAgent(ctx, m, control.AgentConfigFor(env), func(ctx context.Context, a *Agent) error {
			return l.Trainer(ctx, env, a)
		})
	}}
	return launch(ctx, cfg.supervisorConfig(runner, m), m)
}

// launch runs the monitor and a supervisor built from scfg, and assembles
// the result.
func launch(ctx context.Context, scfg control.SupervisorConfig, m *control.Monitor) (JobResult, error) {
	sup, err := control.NewSupervisor(scfg)
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
