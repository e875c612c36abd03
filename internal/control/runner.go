package control

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
)

// Runner starts tasks. ProcessRunner runs them as local processes,
// InProcessRunner as goroutines; the Supervisor drives either the same way.
type Runner interface {
	// Start starts attempt (0 for the first start, then 1, 2, … for
	// restarts) of task t. ctx bounds the start itself, not the task's life.
	Start(ctx context.Context, t Task, attempt int) (Handle, error)
}

// Handle is one running attempt of a task.
type Handle interface {
	// Done is closed when the task has exited.
	Done() <-chan struct{}
	// Err is the task's exit error (nil for a clean exit); valid after Done.
	Err() error
	// Terminate asks the task to exit (SIGTERM to a process group,
	// cancellation for a goroutine). Safe to call repeatedly and after exit.
	Terminate()
	// Kill forces the task to exit (SIGKILL to the process group; for a
	// goroutine the same as Terminate, which is all Go allows).
	Kill()
	// String describes the attempt, e.g. "pid 4242".
	String() string
}

// InProcessRunner runs each task as a goroutine calling Func. Func must
// return when ctx is cancelled; a panic in Func is recovered and becomes the
// attempt's error.
type InProcessRunner struct {
	Func func(ctx context.Context, t Task, attempt int) error
}

// Start implements Runner.
func (r InProcessRunner) Start(ctx context.Context, t Task, attempt int) (Handle, error) {
	if r.Func == nil {
		return nil, errors.New("distributed: InProcessRunner has no Func")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The task outlives ctx (which bounds the start only): its own context
	// ends with Terminate/Kill.
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &goroutineHandle{cancel: cancel, done: make(chan struct{}), name: fmt.Sprintf("goroutine %s#%d", t, attempt)}
	go func() {
		defer close(h.done)
		defer cancel()
		defer func() {
			if p := recover(); p != nil {
				h.err = fmt.Errorf("distributed: task %s panicked: %v\n%s", t, p, debug.Stack())
			}
		}()
		h.err = r.Func(tctx, t, attempt)
	}()
	return h, nil
}

type goroutineHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	name   string
	once   sync.Once
}

func (h *goroutineHandle) Done() <-chan struct{} { return h.done }
func (h *goroutineHandle) Err() error {
	select {
	case <-h.done:
		return h.err
	default:
		return errors.New("distributed: task still running")
	}
}
func (h *goroutineHandle) Terminate()     { h.cancel() }
func (h *goroutineHandle) Kill()          { h.cancel() }
func (h *goroutineHandle) String() string { return h.name }
