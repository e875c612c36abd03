package control

import (
	"strconv"
	"strings"
	"time"
)

// TaskEnv is what one task is told about the job it belongs to.
type TaskEnv struct {
	Task    Task
	Attempt int // 0, then 1, 2, … for a restarted PS
	Rank    int // trainer rank; -1 for a PS
	Workers int
	NumPS   int
	// PSAddrs and CoordinatorAddr are the loopback addresses of the PS
	// shards and of the heartbeat server; set by distributed.ProcessLauncher
	// only.
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

// HeartbeatConfig sets the heartbeat timing (zero selects the Monitor's
// defaults: 500ms interval, 10× interval timeout, 60s start timeout).
type HeartbeatConfig struct {
	Interval     time.Duration
	Timeout      time.Duration
	StartTimeout time.Duration
}

// Environment variables a distributed.ProcessLauncher sets for its tasks
// (see TaskEnv.Environ). Under Kubernetes TF_CONFIG takes their place.
const (
	EnvTask        = "GOTFLOW_TASK"        // "worker:1"
	EnvAttempt     = "GOTFLOW_ATTEMPT"     // "0"
	EnvWorkers     = "GOTFLOW_WORKERS"     // number of trainers
	EnvPS          = "GOTFLOW_PS"          // comma-separated PS addresses
	EnvCoordinator = "GOTFLOW_COORDINATOR" // heartbeat server address
	EnvHeartbeat   = "GOTFLOW_HEARTBEAT"   // "interval,timeout,start-timeout" as Go durations
)

// Environ returns e as environment variables (EnvTask …) for a child
// process; distributed.TaskEnvFromEnviron reads them back.
func (e TaskEnv) Environ() []string {
	return []string{
		EnvTask + "=" + e.Task.String(),
		EnvAttempt + "=" + strconv.Itoa(e.Attempt),
		EnvWorkers + "=" + strconv.Itoa(e.Workers),
		EnvPS + "=" + strings.Join(e.PSAddrs, ","),
		EnvCoordinator + "=" + e.CoordinatorAddr,
		EnvHeartbeat + "=" + e.Heartbeat.Interval.String() + "," + e.Heartbeat.Timeout.String() + "," + e.Heartbeat.StartTimeout.String(),
		EnvToken + "=" + e.Token,
	}
}

// HostsCoordinator reports whether this task must run the Monitor and serve
// heartbeats on ListenAddr (the chief under TF_CONFIG).
func (e TaskEnv) HostsCoordinator() bool { return e.ListenAddr != "" }
