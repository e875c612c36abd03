package distributed

import "github.com/gotflow/gotflow/internal/control"

// The names below come from the control plane (internal/control), which
// runs what the launchers start: they are the part of it that a job's
// configuration and a trainer's body are written with.

// TaskEnv is what one task is told about the job it belongs to: Task,
// Attempt (0, then 1, 2, … for a restarted PS), Rank (-1 for a PS),
// Workers, NumPS, PSAddrs and CoordinatorAddr (set by ProcessLauncher),
// Heartbeat, Token (the coordinator's bearer token), ListenAddr (set for
// the task that hosts the coordinator itself, the chief under TF_CONFIG)
// and TFConfig (its place came from TF_CONFIG). Its Environ method returns
// it as the GOTFLOW_* environment variables of a child process, which
// TaskEnvFromEnviron reads back; HostsCoordinator reports whether
// ListenAddr is set.
type TaskEnv = control.TaskEnv

// HeartbeatConfig sets the heartbeat timing: Interval, Timeout and
// StartTimeout (zero selects the defaults: 500ms interval, 10× interval
// timeout, 60s start timeout).
type HeartbeatConfig = control.HeartbeatConfig

// Agent is a trainer's side of the heartbeat protocol, handed to a
// TrainerFunc (or to RunTrainer's body) already running. The body calls
// Next for the rows it must train, as a Work of Epoch and Ranges
// ([Start, End) row ranges), consumes all of them calling Advance(rows,
// step, loss) as it goes, and returns nil once Next returns an error
// wrapping ErrStopped:
//
//	for {
//		w, err := agent.Next(ctx)
//		if errors.Is(err, distributed.ErrStopped) { return nil } // job over
//		if err != nil { return err }
//		for _, r := range w.Ranges { /* train on rows r; agent.Advance(r.Len(), step, loss) */ }
//	}
//
// Fail reports the task failed, so that the coordinator reassigns its rows
// at once; a body that returns an error does the same.
type Agent = control.Agent

// MonitorHooks are callbacks for job events, called from the coordinator's
// goroutine, never with a lock held; either may be nil. OnDead(t, reason,
// receivers) is called once for each trainer declared dead, with the tasks
// that received its remaining rows. OnEpochEnd(epoch) is called when every
// live trainer has consumed its rows for epoch, before the next epoch is
// handed out; returning true stops the job (early stopping). Trainers wait
// (beating) while it runs.
type MonitorHooks = control.MonitorHooks

// SupervisorHooks are callbacks from the goroutine that starts and stops a
// job's tasks; any may be nil and none may block for long: OnStart(t,
// attempt, h), OnExit(t, attempt, err), OnRestart(t, attempt) for a PS
// started again, OnWorkerDead(t, reason).
type SupervisorHooks = control.SupervisorHooks

// Handle is one running attempt of a task, as SupervisorHooks.OnStart sees
// it: Done is closed when it has exited, Err is its exit error, String
// describes it ("pid 4242"); Terminate and Kill end it.
type Handle = control.Handle
