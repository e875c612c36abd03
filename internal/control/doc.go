// Package control is the control plane behind package distributed: the
// coordinator that hands out rows and watches heartbeats (Monitor), the
// trainer's side of the heartbeat protocol (Agent), the gRPC service that
// carries it (HeartbeatServer, CoordinatorClient, distpb), the Supervisor
// that starts, restarts and stops a job's tasks through a Runner
// (InProcessRunner, ProcessRunner), the row partitioning (Split,
// WorkPlan), the coordinator's bearer token, and the hand-over of
// listening sockets and of the parent's process id to child processes.
//
// distributed's launchers assemble these pieces; its public API re-exports
// the few names a job or a trainer is written with (Role, Task, TaskEnv,
// HeartbeatConfig, Agent, MonitorHooks, SupervisorHooks, Handle, ErrStopped,
// ErrCoordinatorLost, Listen, WithParent, ErrParentGone). The rest is for
// distributed, the estimator and the gotflow command only. Like distributed,
// it imports neither tf/ nor cgo and builds with CGO_ENABLED=0.
//
// # Heartbeats and rows
//
// Each epoch the Monitor splits rows 0..Rows over the live trainers
// (WorkPlan). A trainer declared dead (silent past the heartbeat timeout,
// failed, or its process gone) has its unconsumed rows split over the
// survivors; later epochs are split over the survivors only. Rows a dead
// trainer consumed after its last heartbeat may be trained twice
// (at-least-once). With MonitorConfig.RankRows each trainer holds its own
// rows instead, and a dead trainer fails the job.
//
// # Processes and their sockets
//
// ListenLoopback binds a PS shard's socket on port 0 in the launcher and
// PassListener hands it to every attempt of that shard (EnvListenFD; Listen
// in the child): no port is picked and bound later, so jobs started at
// once never take each other's ports, and a restarted shard serves at the
// same address. Every task a ProcessRunner starts dies with its launcher,
// however the launcher dies: the kernel's parent-death signal (SIGTERM, on
// Linux) and WithParent, which watches the parent id the runner passes in
// EnvParentPID. A task that exits while the Supervisor waits for it to be
// ready fails the job at once, and a task's exit error quotes the last
// lines of its log file.
//
// # Security
//
// RequireToken and SendToken put a bearer token on heartbeats (EnvToken
// carries it to tasks); NewToken makes a random one. A heartbeat can
// declare its own task failed, so an unauthenticated coordinator trusts its
// network.
//
// # Ownership
//
// A Supervisor owns every task it starts: Run returns only after ending
// them all — processes by process group, SIGTERM then SIGKILL after a grace
// period; goroutines by cancelling their context (a goroutine that ignores
// its context is named in Run's error after the kill wait instead of being
// waited on forever). A Monitor owns its WorkPlan; callers get copies.
// Close on a HeartbeatServer stops its gRPC server; the listener passed to
// Serve is closed by it. A LoopbackListener is owned by whoever listened
// (the launcher) and stays open until its Close; a child's inherited copy
// is its own.
//
// # Concurrency
//
// Monitor, Supervisor, Agent and CoordinatorClient are safe for concurrent
// use; WithParent's watch ends with its context. WorkPlan is not; the
// Monitor serializes access to its own. Goroutines are started only by
// types whose Stop/Close/Run-return waits for them. Every wait has a
// deadline: heartbeats have per-RPC timeouts, a task silent for longer
// than the heartbeat timeout is declared dead, and stopping a task
// escalates to SIGKILL after the grace period.
//
// # Errors
//
// Errors are prefixed "distributed:", the package users see them through,
// and name the offending value and what was expected: invalid configs and
// tasks before anything starts, unknown or unauthenticated heartbeats
// (ErrUnknownTask, ErrUnauthenticated), the end of the job (ErrStopped)
// and a coordinator gone (ErrCoordinatorLost). A dead worker is reported through the Supervisor's
// hooks and in its result, not as a failure of the job, unless no trainer
// survives.
package control
