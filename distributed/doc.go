// Package distributed places parameter servers and workers and keeps them
// alive: cluster specs and TF_CONFIG, the job configuration, and launchers
// that run a job's tasks as goroutines or as local processes, plus what a
// task needs to join a job another process launched.
//
// The control plane the launchers run — the heartbeat coordinator, the
// supervisor of the tasks, the row partitioning, the gRPC protocol — is in
// internal/control; the few of its names a job or a trainer is written
// with (Task, Role, TaskEnv, HeartbeatConfig, Agent, MonitorHooks,
// SupervisorHooks, Handle) are aliases here. Neither package imports tf/
// or cgo; both build with CGO_ENABLED=0.
//
// # Cluster specs and TF_CONFIG
//
// A ClusterSpec maps the jobs chief, worker, ps and evaluator to addresses.
// ParseTFConfig reads TF_CONFIG exactly as Kubeflow's TFJob operator writes
// it, so the same gotflow binary runs as TFJob replicas; "master" is read as
// "chief" and an evaluator may sit outside "cluster". Training tasks (chief
// then workers) get ranks 0..N-1; the chief, or worker 0 without one, hosts
// the heartbeat coordinator.
//
// # Running a job
//
// A Launcher runs a JobConfig (Workers trainers, NumPS shards, Rows split
// over the trainers each epoch, Epochs) until it completes:
// InProcessLauncher as goroutines with no ports, ProcessLauncher as local
// processes on loopback (normally `gotflow ps` / `gotflow worker`, which
// read their TaskEnv from the GOTFLOW_* variables it sets, with
// TaskEnvFromEnviron). Both run the coordinator and a supervisor over the
// job's tasks. A trainer's body is a loop over Agent.Next / Agent.Advance
// (TrainerFunc, or RunTrainer's body in a trainer process). Under
// Kubernetes the same binary gets its TaskEnv from TF_CONFIG and the chief
// hosts the coordinator (RunTrainer).
//
// Each epoch the coordinator splits rows 0..Rows over the live trainers. A
// trainer declared dead (silent past the heartbeat timeout, failed, or its
// process gone) has its unconsumed rows split over the survivors; later
// epochs are split over the survivors only (MonitorHooks.OnDead). Rows a
// dead trainer consumed after its last heartbeat may be trained twice
// (at-least-once).
//
// # Processes and their sockets
//
// ProcessLauncher binds each PS shard's socket itself (on 127.0.0.1, port
// 0) and hands it to every attempt of that shard, which serves on it by
// calling Listen (GOTFLOW_LISTEN_FD): no port is picked and bound later,
// so jobs started at once never take each other's ports, and a restarted
// shard serves at the same address. Every task a ProcessLauncher starts
// dies with it, however it dies: the kernel's parent-death signal
// (SIGTERM, on Linux) and WithParent, which a task calls to watch the
// parent id it was given (GOTFLOW_PARENT_PID). A task that exits while the
// launcher waits for it to be ready (ProcessLauncher.Ready) fails the job
// at once, and a task's exit error quotes the last lines of its log file.
//
// # Security
//
// ProcessLauncher serves heartbeats on 127.0.0.1 behind a random bearer
// token it hands to its tasks (GOTFLOW_COORDINATOR_TOKEN). Under TF_CONFIG
// the chief listens on every interface of its pod: set the same token on
// every replica from a Secret, or add TLS (TrainerJob.ServerTLS and
// ClientTLS); RunTrainer refuses to serve on a non-loopback address
// without a token unless TrainerJob.Insecure is set. A heartbeat can
// declare its own task failed, so an unauthenticated coordinator trusts
// its network.
//
// # Ownership
//
// A launcher owns every task it starts: Launch returns only after ending
// them all — processes by process group, SIGTERM then SIGKILL after
// JobConfig.StopGrace; goroutines by cancelling their context (a goroutine
// that ignores its context is named in Launch's error after the kill wait
// instead of being waited on forever). Launchers and RunTrainer own the
// coordinator, its heartbeat server and the sockets they bind, and close
// them before returning. A JobResult and the slices in it belong to the
// caller.
//
// # Concurrency
//
// The launchers are safe for concurrent use, and so is the Agent a trainer
// body gets. Hooks are called from the launcher's goroutines, never with a
// lock held, and must not block for long (MonitorHooks.OnEpochEnd may: the
// trainers wait, beating, while it runs). Apart from WithParent's watch,
// which ends with its context, goroutines are started only by calls that
// wait for them before returning. Every wait has a deadline: heartbeats have per-RPC timeouts,
// a task silent for longer than the heartbeat timeout is declared dead,
// and stopping a task escalates to SIGKILL after the grace period.
//
// # Errors
//
// Bad specs, TF_CONFIG that is not JSON, unknown task types, out-of-range
// indices and impossible partitions return errors prefixed "distributed:"
// that name the offending value and what was expected, before any process
// starts (JobConfig.Validate, ClusterSpec.Validate, TFConfig.Validate). A
// dead worker is reported through the hooks and in JobResult, not as a
// failure of the job, unless no trainer survives. A trainer's Agent.Next
// returns an error wrapping ErrStopped when the job is over and
// ErrCoordinatorLost when the coordinator stopped answering.
package distributed
