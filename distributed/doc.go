// Package distributed places parameter servers and workers and keeps them
// alive: cluster specs and TF_CONFIG, roles and ranks, data partitioning,
// heartbeats, and launchers that run a job's tasks as goroutines or as local
// processes under a supervisor.
//
// The control plane (everything in this package) imports neither tf/ nor
// cgo and builds with CGO_ENABLED=0.
//
// # Cluster specs and TF_CONFIG
//
// A ClusterSpec maps the jobs chief, worker, ps and evaluator to addresses.
// ParseTFConfig reads TF_CONFIG exactly as Kubeflow's TFJob operator writes
// it, so the same gotflow binary runs as TFJob replicas; "master" is read as
// "chief" and an evaluator may sit outside "cluster". Training tasks (chief
// then workers) get ranks 0..N-1; the chief, or worker 0 without one, runs
// the heartbeat Monitor.
//
// # Running a job
//
// A Launcher runs a JobConfig (Workers trainers, NumPS shards, Rows split
// over the trainers each epoch, Epochs) until it completes:
// InProcessLauncher as goroutines with no ports, ProcessLauncher as local
// processes on loopback (normally `gotflow ps` / `gotflow worker`, which
// read their TaskEnv from the GOTFLOW_* variables it sets). Both run a
// Monitor (the coordinator) and a Supervisor over the same Runner
// interface. A trainer's body is a loop over Agent.Next / Agent.Advance;
// RunAgent and RunTrainer wrap it. Under Kubernetes the same binary gets its
// TaskEnv from TF_CONFIG and the chief hosts the Monitor (RunTrainer).
//
// Each epoch the Monitor splits rows 0..Rows over the live trainers. A
// trainer declared dead (silent past the heartbeat timeout, failed, or its
// process gone) has its unconsumed rows split over the survivors; later
// epochs are split over the survivors only. Rows a dead trainer consumed
// after its last heartbeat may be trained twice (at-least-once).
//
// # Processes and their sockets
//
// ProcessLauncher binds each PS shard's socket itself (ListenLoopback, port
// 0) and hands it to every attempt of that shard (PassListener, Listen in
// the child, GOTFLOW_LISTEN_FD): no port is picked and bound later, so jobs
// started at once never take each other's ports, and a restarted shard
// serves at the same address. Every task a ProcessRunner starts dies with
// its launcher, however the launcher dies: the kernel's parent-death signal
// (SIGTERM, on Linux) and WithParent, which watches the parent id the
// runner passes in GOTFLOW_PARENT_PID. A task that exits while the
// Supervisor waits for it to be ready fails the job at once, and a task's
// exit error quotes the last lines of its log file.
//
// # Security
//
// ProcessLauncher serves heartbeats on 127.0.0.1 behind a random bearer
// token it hands to its tasks (GOTFLOW_COORDINATOR_TOKEN). Under TF_CONFIG
// the chief listens on every interface of its pod: set the same token on
// every replica from a Secret, or add TLS through the grpc options of
// NewHeartbeatServer and DialCoordinator. A heartbeat can declare its own
// task failed, so an unauthenticated coordinator trusts its network.
//
// # Ownership
//
// A Supervisor owns every task it starts: Run returns only after ending
// them all — processes by process group, SIGTERM then SIGKILL after a grace
// period; goroutines by cancelling their context (a goroutine that ignores
// its context is named in Run's error after the kill wait instead of being
// waited on forever). Launchers own their Monitor and heartbeat server. A Monitor owns its
// WorkPlan; callers get copies. Close on a HeartbeatServer stops its gRPC
// server; the listener passed to Serve is closed by it.
//
// # Concurrency
//
// Monitor, Supervisor and the launchers are safe for concurrent use. A
// LoopbackListener stays open until Close (the launcher's, at the job's
// end); WithParent's watch ends with its context. WorkPlan
// is not; the Monitor serializes access to its own. Goroutines are started
// only by types whose Stop/Close/Run-return waits for them. Every wait has a
// deadline: heartbeats have per-RPC timeouts, a task silent for longer than
// the heartbeat timeout is declared dead, and stopping a task escalates to
// SIGKILL after the grace period.
//
// # Errors
//
// Bad specs, TF_CONFIG that is not JSON, unknown task types, out-of-range
// indices and impossible partitions return errors prefixed "distributed:"
// that name the offending value and what was expected, before any process
// starts. A dead worker is reported through the Supervisor's hooks and in
// its Result, not as a failure of the job, unless no trainer survives.
package distributed
