package control

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// EnvParentPID carries the launcher's process id to its tasks (set by
// ProcessRunner); WithParent reads it.
const EnvParentPID = "GOTFLOW_PARENT_PID"

// parentPollInterval is how often WithParent checks the parent.
const parentPollInterval = 250 * time.Millisecond

// ErrParentGone is the cause of a WithParent context cancelled because the
// launcher that started this process has exited.
var ErrParentGone = fmt.Errorf("distributed: the launching process exited")

// WithParent returns a context that is cancelled, with cause ErrParentGone,
// when the process named by EnvParentPID is no longer this process's
// parent: a task started by a ProcessRunner then ends even where the
// kernel's parent-death signal did not reach it (other systems, or the
// launching thread exiting first). Without EnvParentPID it returns ctx.
// The watch stops when ctx ends; call cancel to stop it earlier.
func WithParent(ctx context.Context) (context.Context, context.CancelFunc) {
	v := os.Getenv(EnvParentPID)
	ppid, err := strconv.Atoi(v)
	if v == "" || err != nil || ppid <= 1 {
		return context.WithCancel(ctx)
	}
	cctx, cancel := context.WithCancelCause(ctx)
	if os.Getppid() != ppid {
		cancel(fmt.Errorf("%w (pid %d; this process's parent is now %d)", ErrParentGone, ppid, os.Getppid()))
		return cctx, func() { cancel(nil) }
	}
	go func() {
		t := time.NewTicker(parentPollInterval)
		defer t.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-t.C:
				if now := os.Getppid(); now != ppid {
					cancel(fmt.Errorf("%w (pid %d; this process's parent is now %d)", ErrParentGone, ppid, now))
					return
				}
			}
		}
	}()
	return cctx, func() { cancel(nil) }
}
