package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// ErrStopped is wrapped by Agent.Next when the coordinator told the task to
// stop; the message carries the coordinator's reason.
var ErrStopped = errors.New("distributed: stopped by the coordinator")

// ErrCoordinatorLost is wrapped by Agent.Run and Agent.Next when no
// heartbeat got an answer for longer than AgentConfig.LostAfter.
var ErrCoordinatorLost = errors.New("distributed: coordinator unreachable")

// AgentConfig configures an Agent. Zero durations select the defaults.
type AgentConfig struct {
	Task Task
	// Incarnation identifies this start of the task (default: random).
	Incarnation uint64
	// Interval between beats until the coordinator sets one (default 500ms).
	Interval time.Duration
	// RPCTimeout bounds each heartbeat call (default 5s).
	RPCTimeout time.Duration
	// LostAfter is how long the coordinator may stay unreachable before the
	// agent gives up (default 30s).
	LostAfter time.Duration
	Logger    *slog.Logger
}

// Work is a batch of rows a trainer must consume.
type Work struct {
	Epoch  int
	Ranges []Range
}

// Rows returns the number of rows in w.
func (w Work) Rows() int64 {
	var n int64
	for _, r := range w.Ranges {
		n += r.Len()
	}
	return n
}

// Agent is a trainer's side of the heartbeat protocol. Run sends beats in
// the background; the training loop calls Next for work and Advance as it
// consumes rows:
//
//	go agent.Run(ctx)
//	for {
//		w, err := agent.Next(ctx)
//		if errors.Is(err, ErrStopped) { break } // job over
//		if err != nil { return err }
//		for _, r := range w.Ranges { /* train on rows r; agent.Advance(n, step, loss) */ }
//	}
type Agent struct {
	cfg   AgentConfig
	coord Coordinator

	mu          sync.Mutex
	epoch       int // epoch of assigned
	assigned    []Range
	haveWork    bool
	consumed    int64 // rows of assigned consumed
	step        int64
	loss        float64
	failMsg     string
	stopReason  string
	stopFailed  bool
	stopped     bool
	lost        error
	lastOK      time.Time
	interval    time.Duration
	changed     chan struct{} // closed and replaced on every state change
	beatNow     chan struct{}
	runFinished bool
}

// NewAgent builds an agent that beats to coord.
func NewAgent(coord Coordinator, cfg AgentConfig) (*Agent, error) {
	if coord == nil {
		return nil, errors.New("distributed: agent needs a coordinator")
	}
	if !cfg.Task.Trains() {
		return nil, fmt.Errorf("distributed: agent task %s is not a chief or worker task", cfg.Task)
	}
	if cfg.Incarnation == 0 {
		cfg.Incarnation = rand.Uint64() | 1
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.RPCTimeout <= 0 {
		cfg.RPCTimeout = 5 * time.Second
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{
		cfg: cfg, coord: coord, epoch: -1, interval: cfg.Interval,
		changed: make(chan struct{}), beatNow: make(chan struct{}, 1),
	}, nil
}

func (a *Agent) signalLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Advance records that rows more rows of the current work were consumed,
// with the task's optimizer step count and last loss.
func (a *Agent) Advance(rows, step int64, loss float64) {
	a.mu.Lock()
	a.consumed += rows
	a.step, a.loss = step, loss
	a.mu.Unlock()
}

// Fail reports a failure on the next beat; the coordinator reassigns the
// task's rows. Run returns after that beat.
func (a *Agent) Fail(msg string) {
	a.mu.Lock()
	a.failMsg = msg
	a.mu.Unlock()
	a.kick()
}

func (a *Agent) kick() {
	select {
	case a.beatNow <- struct{}{}:
	default:
	}
}

// Next returns the rows the task has not consumed yet in its current work
// list, waiting (while beating) for more work when everything is consumed.
// Callers consume all of the returned Work, calling Advance, before calling
// Next again. It returns an error wrapping ErrStopped when the job is over,
// ErrCoordinatorLost when the coordinator vanished, or ctx's error.
func (a *Agent) Next(ctx context.Context) (Work, error) {
	for {
		a.mu.Lock()
		if a.stopped {
			r, failed := a.stopReason, a.stopFailed
			a.mu.Unlock()
			if failed {
				return Work{}, fmt.Errorf("%w (job failed): %s", ErrStopped, r)
			}
			return Work{}, fmt.Errorf("%w: %s", ErrStopped, r)
		}
		if a.lost != nil {
			err := a.lost
			a.mu.Unlock()
			return Work{}, err
		}
		if a.runFinished {
			a.mu.Unlock()
			return Work{}, errors.New("distributed: agent is not running (Run returned)")
		}
		if a.haveWork {
			if rest := skipRows(a.assigned, a.consumed); len(rest) > 0 {
				w := Work{Epoch: a.epoch, Ranges: rest}
				a.mu.Unlock()
				return w, nil
			}
		}
		ch := a.changed
		a.mu.Unlock()
		a.kick() // tell the coordinator we are idle now
		select {
		case <-ctx.Done():
			return Work{}, ctx.Err()
		case <-ch:
		}
	}
}

// beat builds the current heartbeat.
func (a *Agent) beatLocked() Beat {
	b := Beat{
		Task: a.cfg.Task, Incarnation: a.cfg.Incarnation, State: StateRunning,
		Epoch: a.epoch, RowsDone: a.consumed, Step: a.step, Loss: a.loss,
	}
	if a.epoch < 0 {
		b.Epoch, b.RowsDone = 0, 0
	}
	var total int64
	for _, r := range a.assigned {
		total += r.Len()
	}
	if a.haveWork && a.consumed >= total {
		b.State = StateIdle
	}
	if a.failMsg != "" {
		b.State, b.Message = StateFailed, a.failMsg
	}
	return b
}

// Run beats until the coordinator says stop (returns nil), the task failed
// (returns nil after reporting it), the coordinator stays unreachable for
// LostAfter (returns an error wrapping ErrCoordinatorLost) or ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		a.mu.Lock()
		a.runFinished = true
		a.signalLocked()
		a.mu.Unlock()
	}()
	a.mu.Lock()
	a.lastOK = time.Now()
	a.mu.Unlock()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-a.beatNow:
		}
		done, err := a.beatOnce(ctx)
		if done || err != nil {
			return err
		}
		a.mu.Lock()
		iv := a.interval
		a.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(iv)
	}
}

func (a *Agent) beatOnce(ctx context.Context) (done bool, err error) {
	a.mu.Lock()
	b := a.beatLocked()
	a.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, a.cfg.RPCTimeout)
	reply, err := a.coord.Beat(rctx, b)
	cancel()
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		if errors.Is(err, ErrUnknownTask) || errors.Is(err, ErrUnauthenticated) {
			a.lost = err
			a.signalLocked()
			return true, err
		}
		a.cfg.Logger.Debug("heartbeat failed", "task", a.cfg.Task, "err", err)
		if now.Sub(a.lastOK) > a.cfg.LostAfter {
			a.lost = fmt.Errorf("%w: no answer for %v: %v", ErrCoordinatorLost, now.Sub(a.lastOK).Round(time.Millisecond), err)
			a.signalLocked()
			return true, a.lost
		}
		return false, nil
	}
	a.lastOK = now
	if reply.Interval > 0 {
		a.interval = reply.Interval
	}
	if b.State == StateFailed {
		a.stopped, a.stopReason, a.stopFailed = true, "task failed: "+b.Message, true
		a.signalLocked()
		return true, nil
	}
	switch reply.Command {
	case CommandStop:
		a.stopped, a.stopReason, a.stopFailed = true, reply.Reason, reply.Failed
		a.signalLocked()
		return true, nil
	case CommandRun:
		// Wake Next only when the work changed: an idle task that is told
		// the same thing again keeps waiting until the next interval.
		changed := !a.haveWork || reply.Epoch != a.epoch || !slices.Equal(reply.Ranges, a.assigned)
		if reply.Epoch != a.epoch {
			a.epoch, a.consumed = reply.Epoch, 0
		}
		a.assigned, a.haveWork = reply.Ranges, true
		if changed {
			a.signalLocked()
		}
	}
	return false, nil
}

func agentConfig(env TaskEnv) AgentConfig {
	c := AgentConfig{Task: env.Task, Interval: env.Heartbeat.Interval}
	if env.Heartbeat.Timeout > 0 {
		c.RPCTimeout = env.Heartbeat.Timeout / 2
		c.LostAfter = 3 * env.Heartbeat.Timeout
	}
	return c
}

// AgentConfigFor returns the AgentConfig a trainer process should use for
// env (the job's heartbeat timing, its task).
func AgentConfigFor(env TaskEnv) AgentConfig { return agentConfig(env) }

// RunAgent runs a trainer body with an Agent beating to coord: it starts
// the agent, calls body, reports body's error to the coordinator (so the
// task's rows are reassigned at once) and returns after the agent stopped.
func RunAgent(ctx context.Context, coord Coordinator, cfg AgentConfig, body func(ctx context.Context, a *Agent) error) error {
	a, err := NewAgent(coord, cfg)
	if err != nil {
		return err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(actx) }()
	berr := body(actx, a)
	if berr != nil {
		a.Fail(berr.Error())
		// Give the agent one beat to deliver the failure, bounded by its
		// RPC timeout.
		t := time.NewTimer(a.cfg.RPCTimeout + a.cfg.Interval)
		select {
		case <-runErr:
			t.Stop()
			return berr
		case <-t.C:
		}
	}
	cancel()
	rerr := <-runErr
	if berr != nil {
		return berr
	}
	if rerr != nil && !errors.Is(rerr, context.Canceled) {
		return rerr
	}
	return nil
}
