package distributed

import (
	"errors"

	"github.com/gotflow/gotflow/internal/control"
)

// The sentinel errors of a job's tasks; match them with errors.Is.
var (
	// ErrNoTFConfig is returned by TFConfigFromEnv when TF_CONFIG is unset
	// or empty.
	ErrNoTFConfig = errors.New("distributed: TF_CONFIG is not set")
	// ErrNoTaskEnv is returned by TaskEnvFromEnviron when neither
	// GOTFLOW_TASK nor TF_CONFIG is set.
	ErrNoTaskEnv = errors.New("distributed: neither " + control.EnvTask + " nor " + TFConfigEnv + " is set")
	// ErrStopped is wrapped by Agent.Next when the coordinator told the
	// task to stop; the message carries the coordinator's reason.
	ErrStopped = control.ErrStopped
	// ErrCoordinatorLost is wrapped by Agent.Next when no heartbeat got an
	// answer for three times HeartbeatConfig.Timeout (30s when it is zero).
	ErrCoordinatorLost = control.ErrCoordinatorLost
	// ErrParentGone is the cause of a WithParent context cancelled because
	// the launcher that started this process has exited.
	ErrParentGone = control.ErrParentGone
)
