package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// SupervisorConfig configures a Supervisor. Zero durations select defaults.
type SupervisorConfig struct {
	// Runner starts the tasks. Required.
	Runner Runner
	// Tasks to run: ps tasks are started first (and restarted when they
	// die), then chief and workers, then any evaluator.
	Tasks []Task
	// Monitor, if set, is the job's coordinator: trainers that exit early
	// are marked dead in it, trainers it declares dead are killed, and the
	// job ends when it is Done. Without a Monitor the job ends when every
	// trainer has exited.
	Monitor *Monitor
	// Ready, if set, is called after each ps start and must return once the
	// task serves (e.g. a ps client's first successful RPC); it gets a
	// context bounded by ReadyTimeout. A ps that is not ready counts as a
	// failed start.
	Ready        func(ctx context.Context, t Task) error
	ReadyTimeout time.Duration // default 30s
	// MaxRestarts is how often one ps task may be restarted (default 3).
	MaxRestarts int
	// RestartBackoff is the pause before a restart (default 200ms).
	RestartBackoff time.Duration
	// StopGrace is how long tasks get between SIGTERM and SIGKILL
	// (default 5s).
	StopGrace time.Duration
	// KillWait bounds the wait after SIGKILL (default 5s); a task still not
	// gone is reported in Stop's error rather than waited on forever.
	KillWait time.Duration
	// FinishTimeout is how long trainers may take to exit after the Monitor
	// is Done before they are stopped (default 30s).
	FinishTimeout time.Duration
	// PollInterval is how often the Monitor's verdicts are checked
	// (default 100ms).
	PollInterval time.Duration
	Hooks        SupervisorHooks
	Logger       *slog.Logger
}

// SupervisorHooks are callbacks from the Supervisor's Run goroutine. Any may
// be nil; they must not block for long.
type SupervisorHooks struct {
	OnStart      func(t Task, attempt int, h Handle)
	OnExit       func(t Task, attempt int, err error)
	OnRestart    func(t Task, attempt int)
	OnWorkerDead func(t Task, reason string)
}

// Exit records one attempt's end.
type Exit struct {
	Task    Task
	Attempt int
	Err     error // nil for a clean exit
	Handle  string
}

// SupervisorResult summarises a finished job.
type SupervisorResult struct {
	Exits    []Exit       // every attempt that ended, in order
	Restarts map[Task]int // restarts per ps task
	Dead     []Task       // trainers reported dead
}

// Supervisor starts a job's tasks through a Runner, restarts parameter
// servers that die, reports dead workers and stops every task it started
// when the job ends, fails or is cancelled.
type Supervisor struct {
	cfg SupervisorConfig
}

// NewSupervisor validates cfg.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.Runner == nil {
		return nil, errors.New("distributed: supervisor has no Runner")
	}
	if len(cfg.Tasks) == 0 {
		return nil, errors.New("distributed: supervisor has no tasks, expected at least one")
	}
	seen := map[Task]bool{}
	trainers := 0
	for _, t := range cfg.Tasks {
		if _, err := ParseRole(string(t.Role)); err != nil || t.Index < 0 {
			return nil, fmt.Errorf("distributed: supervisor task %s is not a valid task", t)
		}
		if seen[t] {
			return nil, fmt.Errorf("distributed: supervisor task %s listed twice", t)
		}
		seen[t] = true
		if t.Trains() {
			trainers++
		}
	}
	if trainers == 0 {
		return nil, errors.New("distributed: supervisor has no chief or worker task, expected at least one")
	}
	if cfg.MaxRestarts < 0 {
		return nil, fmt.Errorf("distributed: supervisor MaxRestarts %d, expected >= 0", cfg.MaxRestarts)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.MaxRestarts == 0 {
		cfg.MaxRestarts = 3
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = 200 * time.Millisecond
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 5 * time.Second
	}
	if cfg.KillWait <= 0 {
		cfg.KillWait = 5 * time.Second
	}
	if cfg.FinishTimeout <= 0 {
		cfg.FinishTimeout = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{cfg: cfg}, nil
}

type running struct {
	task    Task
	attempt int
	h       Handle
}

type exitEvent struct {
	r   *running
	err error
}

// run is the state of one Run call.
type run struct {
	cfg      SupervisorConfig
	live     map[Task]*running
	exits    chan exitEvent
	watchers sync.WaitGroup
	res      SupervisorResult
	dead     map[Task]bool
	finished map[Task]bool // trainers that exited cleanly after the job ended
}

func order(tasks []Task) []Task {
	var out []Task
	for _, pass := range [][]Role{{RolePS}, {RoleChief, RoleWorker}, {RoleEvaluator}} {
		for _, t := range tasks {
			for _, r := range pass {
				if t.Role == r {
					out = append(out, t)
				}
			}
		}
	}
	return out
}

// Run starts every task and supervises the job until it ends. It returns
// only after every task it started has exited (or, for a task that survived
// SIGKILL, after KillWait, with an error naming it). The error is nil when
// the job completed (dead workers included, as long as the Monitor
// finished or, without one, one trainer exited cleanly), ctx's error when
// cancelled, and otherwise names the failure.
func (s *Supervisor) Run(ctx context.Context) (SupervisorResult, error) {
	r := &run{
		cfg:      s.cfg,
		live:     map[Task]*running{},
		exits:    make(chan exitEvent),
		res:      SupervisorResult{Restarts: map[Task]int{}},
		dead:     map[Task]bool{},
		finished: map[Task]bool{},
	}
	err := r.loop(ctx)
	if serr := r.stopAll(); serr != nil {
		// Some task survived SIGKILL (or a goroutine ignores its context):
		// report it instead of waiting for it.
		return r.res, errors.Join(err, serr)
	}
	r.watchers.Wait()
	return r.res, err
}

func (r *run) start(ctx context.Context, t Task, attempt int) error {
	h, err := r.cfg.Runner.Start(ctx, t, attempt)
	if err != nil {
		return err
	}
	rn := &running{task: t, attempt: attempt, h: h}
	r.live[t] = rn
	r.cfg.Logger.Info("task started", "task", t, "attempt", attempt, "handle", h.String())
	if f := r.cfg.Hooks.OnStart; f != nil {
		f(t, attempt, h)
	}
	r.watchers.Add(1)
	go func() {
		defer r.watchers.Done()
		<-h.Done()
		r.exits <- exitEvent{r: rn, err: h.Err()}
	}()
	if t.Role == RolePS && r.cfg.Ready != nil {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.ReadyTimeout)
		defer cancel()
		// A task that exits while it is awaited ends the wait at once: its
		// own exit error says why, not a timeout.
		go func() {
			select {
			case <-h.Done():
				cancel()
			case <-rctx.Done():
			}
		}()
		if err := r.cfg.Ready(rctx, t); err != nil {
			select {
			case <-h.Done():
				if xerr := h.Err(); xerr != nil {
					return fmt.Errorf("distributed: task %s exited during start-up: %w", t, xerr)
				}
				return fmt.Errorf("distributed: task %s (%s) exited during start-up without an error", t, h)
			default:
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("distributed: task %s (%s) not ready within %v: %w", t, h, r.cfg.ReadyTimeout, err)
		}
	}
	return nil
}

func (r *run) loop(ctx context.Context) error {
	for _, t := range order(r.cfg.Tasks) {
		if err := r.start(ctx, t, 0); err != nil {
			return err
		}
	}
	var monDone <-chan struct{}
	if r.cfg.Monitor != nil {
		monDone = r.cfg.Monitor.Done()
	}
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	var finish *time.Timer
	var finishC <-chan time.Time
	defer func() {
		if finish != nil {
			finish.Stop()
		}
	}()
	jobOver := false
	for {
		if jobOver && r.trainersLive() == 0 {
			return r.monitorVerdict()
		}
		if !jobOver && r.cfg.Monitor == nil && r.trainersLive() == 0 {
			for t := range r.finished {
				if t.Trains() {
					return nil
				}
			}
			return fmt.Errorf("distributed: every trainer failed: %s", r.deadSummary())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-monDone:
			monDone = nil
			jobOver = true
			finish = time.NewTimer(r.cfg.FinishTimeout)
			finishC = finish.C
			if _, failed, _ := r.cfg.Monitor.Result(); failed {
				return r.monitorVerdict()
			}
		case <-finishC:
			return fmt.Errorf("distributed: trainers %s did not exit within %v after the job ended", r.liveTrainers(), r.cfg.FinishTimeout)
		case <-poll.C:
			r.killDeclaredDead()
		case ev := <-r.exits:
			if err := r.handleExit(ctx, ev, jobOver); err != nil {
				return err
			}
		}
	}
}

func (r *run) monitorVerdict() error {
	if r.cfg.Monitor == nil {
		return nil
	}
	reason, failed, _ := r.cfg.Monitor.Result()
	if failed {
		return fmt.Errorf("distributed: job failed: %s", reason)
	}
	return nil
}

func (r *run) trainersLive() int {
	n := 0
	for t := range r.live {
		if t.Trains() {
			n++
		}
	}
	return n
}

func (r *run) liveTrainers() string {
	var s []string
	for t, rn := range r.live {
		if t.Trains() {
			s = append(s, t.String()+" ("+rn.h.String()+")")
		}
	}
	return strings.Join(s, ", ")
}

func (r *run) deadSummary() string {
	var s []string
	for _, e := range r.res.Exits {
		if e.Task.Trains() && e.Err != nil {
			s = append(s, e.Err.Error())
		}
	}
	return strings.Join(s, "; ")
}

// killDeclaredDead kills trainers the Monitor declared dead (silent but
// still running).
func (r *run) killDeclaredDead() {
	if r.cfg.Monitor == nil {
		return
	}
	for _, st := range r.cfg.Monitor.Status() {
		rn, ok := r.live[st.Task]
		if !st.Dead || !ok {
			continue
		}
		if !r.dead[st.Task] {
			r.reportDead(st.Task, st.DeadReason)
		}
		r.cfg.Logger.Warn("killing task declared dead", "task", st.Task, "handle", rn.h.String(), "reason", st.DeadReason)
		rn.h.Kill()
	}
}

func (r *run) reportDead(t Task, reason string) {
	r.dead[t] = true
	r.res.Dead = append(r.res.Dead, t)
	if f := r.cfg.Hooks.OnWorkerDead; f != nil {
		f(t, reason)
	}
}

func (r *run) handleExit(ctx context.Context, ev exitEvent, jobOver bool) error {
	t := ev.r.task
	if cur, ok := r.live[t]; ok && cur == ev.r {
		delete(r.live, t)
	}
	r.res.Exits = append(r.res.Exits, Exit{Task: t, Attempt: ev.r.attempt, Err: ev.err, Handle: ev.r.h.String()})
	r.cfg.Logger.Info("task exited", "task", t, "attempt", ev.r.attempt, "err", ev.err)
	if f := r.cfg.Hooks.OnExit; f != nil {
		f(t, ev.r.attempt, ev.err)
	}
	if !jobOver && r.cfg.Monitor != nil {
		// The Monitor may have finished just before this exit was seen.
		_, _, jobOver = r.cfg.Monitor.Result()
	}
	switch {
	case t.Role == RolePS:
		if jobOver {
			return nil
		}
		if r.res.Restarts[t] >= r.cfg.MaxRestarts {
			return fmt.Errorf("distributed: task %s died and was already restarted %d times (last exit: %v)", t, r.cfg.MaxRestarts, ev.err)
		}
		r.res.Restarts[t]++
		attempt := ev.r.attempt + 1
		if f := r.cfg.Hooks.OnRestart; f != nil {
			f(t, attempt)
		}
		r.cfg.Logger.Warn("restarting task", "task", t, "attempt", attempt, "last_exit", ev.err)
		bo := time.NewTimer(r.cfg.RestartBackoff)
		select {
		case <-ctx.Done():
			bo.Stop()
			return ctx.Err()
		case <-bo.C:
		}
		return r.start(ctx, t, attempt)
	case t.Trains():
		if ev.err == nil && (jobOver || r.cfg.Monitor == nil) {
			r.finished[t] = true
			return nil
		}
		reason := "exited before the job ended"
		if ev.err != nil {
			reason = ev.err.Error()
		}
		if r.cfg.Monitor != nil {
			if err := r.cfg.Monitor.MarkDead(t, reason); err != nil {
				return err
			}
		}
		if !r.dead[t] {
			r.reportDead(t, reason)
		}
	}
	return nil
}

// stopAll terminates every live task, escalates to SIGKILL after StopGrace
// and gives up after KillWait, naming what survived.
func (r *run) stopAll() error {
	if len(r.live) == 0 {
		return nil
	}
	for _, rn := range r.live {
		rn.h.Terminate()
	}
	wait := func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		for len(r.live) > 0 {
			select {
			case ev := <-r.exits:
				r.recordStopped(ev)
			case <-t.C:
				return
			}
		}
	}
	wait(r.cfg.StopGrace)
	if len(r.live) == 0 {
		return nil
	}
	for _, rn := range r.live {
		r.cfg.Logger.Warn("task ignored SIGTERM; killing", "task", rn.task, "handle", rn.h.String())
		rn.h.Kill()
	}
	wait(r.cfg.KillWait)
	if len(r.live) == 0 {
		return nil
	}
	var s []string
	for _, rn := range r.live {
		s = append(s, rn.task.String()+" ("+rn.h.String()+")")
	}
	// Drain the watchers of the survivors in the background so Run can
	// return; they exit when their task finally does.
	go func(n int) {
		for range n {
			<-r.exits
		}
	}(len(r.live))
	return fmt.Errorf("distributed: tasks %s still running %v after SIGKILL", strings.Join(s, ", "), r.cfg.KillWait)
}

func (r *run) recordStopped(ev exitEvent) {
	t := ev.r.task
	if cur, ok := r.live[t]; ok && cur == ev.r {
		delete(r.live, t)
	}
	r.res.Exits = append(r.res.Exits, Exit{Task: t, Attempt: ev.r.attempt, Err: ev.err, Handle: ev.r.h.String()})
	if f := r.cfg.Hooks.OnExit; f != nil {
		f(t, ev.r.attempt, ev.err)
	}
}
