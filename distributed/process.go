package distributed

import (
	"context"
	"net"

	"github.com/gotflow/gotflow/internal/control"
)

// Listen returns the listening socket this process inherited from the
// ProcessLauncher that started it (GOTFLOW_LISTEN_FD names its file
// descriptor), or else listens on addr. A PS shard started by a
// ProcessLauncher serves on what Listen returns: the launcher bound the
// socket itself, so the shard's address is taken from the start and stays
// the same across restarts. The variable is cleared so that the process's
// own children do not inherit the claim.
func Listen(addr string) (net.Listener, error) { return control.Listen(addr) }

// WithParent returns a context that is cancelled, with cause ErrParentGone,
// when the ProcessLauncher that started this process (GOTFLOW_PARENT_PID)
// is no longer its parent: the task then ends even where the kernel's
// parent-death signal did not reach it (other systems, or the launching
// thread exiting first). Without GOTFLOW_PARENT_PID it returns ctx. The
// watch stops when ctx ends; call cancel to stop it earlier.
func WithParent(ctx context.Context) (context.Context, context.CancelFunc) {
	return control.WithParent(ctx)
}
