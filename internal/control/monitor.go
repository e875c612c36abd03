package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// TaskState is what a task says it is doing in a heartbeat.
type TaskState int

const (
	// StateRunning: working through assigned ranges.
	StateRunning TaskState = iota + 1
	// StateIdle: every assigned row of the epoch consumed; waiting.
	StateIdle
	// StateFailed: the task failed and is about to exit.
	StateFailed
)

func (s TaskState) String() string {
	switch s {
	case StateRunning:
		return "running"
	case StateIdle:
		return "idle"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("TaskState(%d)", int(s))
}

// Beat is one heartbeat: a task's identity and progress.
type Beat struct {
	Task        Task
	Incarnation uint64 // constant for one start of the task's process
	State       TaskState
	Epoch       int   // epoch RowsDone refers to
	RowsDone    int64 // rows of the epoch's ranges consumed, in order
	Step        int64 // optimizer steps taken by this task
	Loss        float64
	Message     string // failure reason when State is StateFailed
}

// Command tells a task what to do next.
type Command int

const (
	// CommandRun: work through Reply.Ranges of Reply.Epoch.
	CommandRun Command = iota + 1
	// CommandWait: no work now; keep beating.
	CommandWait
	// CommandStop: exit; Reply.Reason says why.
	CommandStop
)

func (c Command) String() string {
	switch c {
	case CommandRun:
		return "run"
	case CommandWait:
		return "wait"
	case CommandStop:
		return "stop"
	}
	return fmt.Sprintf("Command(%d)", int(c))
}

// Reply is the coordinator's answer to a Beat.
type Reply struct {
	Command     Command
	Epoch       int
	PlanVersion uint64
	Ranges      []Range // the task's whole work list for Epoch
	Interval    time.Duration
	Reason      string // why the task must stop
	Failed      bool   // the job failed
}

// Coordinator receives heartbeats. *Monitor implements it in process;
// *CoordinatorClient implements it over gRPC.
type Coordinator interface {
	Beat(ctx context.Context, b Beat) (Reply, error)
}

// ErrUnknownTask is returned for a heartbeat from a task the Monitor does
// not track.
var ErrUnknownTask = errors.New("distributed: heartbeat from a task that is not part of the job")

// MonitorConfig configures a Monitor. The zero values of the durations
// select the defaults.
type MonitorConfig struct {
	// Trainers are the tasks that compute gradients, in rank order (see
	// distributed.ClusterSpec.TrainingTasks). Required.
	Trainers []Task
	// Rows is the number of training rows, split over the trainers each
	// epoch. Zero means no data plan: replies carry no ranges and the job
	// ends only through Stop.
	Rows int64
	// RankRows, if set, gives each trainer its own rows instead: rank i is
	// dealt rows [sum(RankRows[:i]), sum(RankRows[:i+1])) every epoch, the
	// rows of data only it holds (a Spark task's partition). Rows must be
	// their sum. Nobody else can train on a dead rank's rows, so a trainer
	// declared dead stops the job as failed.
	RankRows []int64
	// Epochs is the number of passes over Rows (default 1).
	Epochs int
	// Interval is how often tasks beat (default 500ms).
	Interval time.Duration
	// Timeout is how long a task may stay silent before it is declared dead
	// (default 10 × Interval).
	Timeout time.Duration
	// StartTimeout is how long a task may take to send its first beat
	// (default 60s: process start plus loading a model).
	StartTimeout time.Duration
	// Hooks are called from Run's goroutine, never with a lock held.
	Hooks MonitorHooks
	// Logger receives debug and warning logs (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests substitute it.
	Now func() time.Time
}

// MonitorHooks are callbacks for job events. Any may be nil.
type MonitorHooks struct {
	// OnDead is called once for each trainer declared dead, with the reason
	// and the ranks that received its remaining rows.
	OnDead func(t Task, reason string, receivers []Task)
	// OnEpochEnd is called when every live trainer has consumed its rows for
	// epoch, before the next epoch is handed out; returning true stops the
	// job (early stopping). Trainers wait (beating) while it runs.
	OnEpochEnd func(epoch int) (stop bool)
}

func (c *MonitorConfig) setDefaults() {
	if c.Epochs == 0 {
		c.Epochs = 1
	}
	if c.Interval == 0 {
		c.Interval = 500 * time.Millisecond
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * c.Interval
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration.
func (c MonitorConfig) Validate() error {
	if len(c.Trainers) == 0 {
		return errors.New("distributed: monitor has no trainers, expected at least one")
	}
	seen := map[Task]bool{}
	for _, t := range c.Trainers {
		if !t.Trains() {
			return fmt.Errorf("distributed: monitor trainer %s is not a chief or worker task", t)
		}
		if seen[t] {
			return fmt.Errorf("distributed: monitor trainer %s listed twice", t)
		}
		seen[t] = true
	}
	if c.Rows < 0 {
		return fmt.Errorf("distributed: monitor rows %d, expected >= 0", c.Rows)
	}
	if c.Epochs < 0 {
		return fmt.Errorf("distributed: monitor epochs %d, expected >= 1", c.Epochs)
	}
	if c.RankRows != nil {
		if len(c.RankRows) != len(c.Trainers) {
			return fmt.Errorf("distributed: monitor has rows for %d ranks and %d trainers, expected one count per trainer", len(c.RankRows), len(c.Trainers))
		}
		var sum int64
		for i, n := range c.RankRows {
			if n < 0 {
				return fmt.Errorf("distributed: monitor rank %d has %d rows, expected >= 0", i, n)
			}
			sum += n
		}
		if sum != c.Rows {
			return fmt.Errorf("distributed: monitor ranks hold %d rows in all but Rows is %d", sum, c.Rows)
		}
	}
	for name, d := range map[string]time.Duration{"interval": c.Interval, "timeout": c.Timeout, "start timeout": c.StartTimeout} {
		if d < 0 {
			return fmt.Errorf("distributed: monitor %s %v, expected > 0", name, d)
		}
	}
	if c.Interval > 0 && c.Timeout > 0 && c.Timeout <= c.Interval {
		return fmt.Errorf("distributed: monitor timeout %v must exceed the heartbeat interval %v", c.Timeout, c.Interval)
	}
	return nil
}

// TaskStatus is the Monitor's view of one trainer.
type TaskStatus struct {
	Task        Task
	Rank        int
	Seen        bool      // at least one beat received
	LastSeen    time.Time // time of the last beat
	State       TaskState
	Epoch       int
	RowsDone    int64
	Step        int64
	Loss        float64
	Dead        bool
	DeadReason  string
	Incarnation uint64
}

// Monitor is the coordinator: it tracks trainers' heartbeats, declares
// silent or failed ones dead, reassigns their rows to the survivors, drives
// epochs and tells every task when to stop.
type Monitor struct {
	cfg     MonitorConfig
	created time.Time

	mu       sync.Mutex
	tasks    []*TaskStatus // by rank
	byTask   map[Task]int
	epoch    int
	plan     *WorkPlan
	stopped  bool
	reason   string
	failed   bool
	done     chan struct{} // closed when stopped
	events   []func()      // hook calls queued for Run
	wake     chan struct{} // nudges Run
	changed  chan struct{} // closed (and replaced) when the epoch, plan or stop state changes
	epochEnd bool          // OnEpochEnd is running for epoch
}

// NewMonitor validates cfg and builds a Monitor whose epoch 0 is assigned.
// Call Run to enforce timeouts and advance epochs.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m := &Monitor{
		cfg:     cfg,
		byTask:  make(map[Task]int, len(cfg.Trainers)),
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
		changed: make(chan struct{}),
	}
	m.created = cfg.Now()
	for i, t := range cfg.Trainers {
		m.tasks = append(m.tasks, &TaskStatus{Task: t, Rank: i})
		m.byTask[t] = i
	}
	m.newEpochLocked(0)
	return m, nil
}

// newEpochLocked splits the rows over the live trainers for epoch e.
func (m *Monitor) newEpochLocked(e int) {
	m.epoch = e
	alive := make([]bool, len(m.tasks))
	for i, s := range m.tasks {
		alive[i] = !s.Dead
	}
	if m.cfg.RankRows != nil {
		m.plan = newWorkPlanOwn(m.cfg.RankRows, alive)
	} else {
		m.plan = newWorkPlanAlive(m.cfg.Rows, alive)
	}
	m.changedLocked()
}

// changedLocked wakes the idle tasks whose heartbeats wait for news.
func (m *Monitor) changedLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Beat records a heartbeat and returns the task's instructions.
func (m *Monitor) Beat(ctx context.Context, b Beat) (Reply, error) {
	if err := ctx.Err(); err != nil {
		return Reply{}, err
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	rank, ok := m.byTask[b.Task]
	if !ok {
		return Reply{}, fmt.Errorf("%w: %s", ErrUnknownTask, b.Task)
	}
	s := m.tasks[rank]
	if s.Dead {
		return m.stopReplyLocked("task " + b.Task.String() + " was declared dead: " + s.DeadReason), nil
	}
	if s.Seen && b.Incarnation != s.Incarnation {
		// The process restarted: the old one died with its progress.
		m.declareDeadLocked(rank, fmt.Sprintf("restarted (incarnation %d, was %d)", b.Incarnation, s.Incarnation))
		return m.stopReplyLocked("task " + b.Task.String() + " restarted; its rows were reassigned"), nil
	}
	s.Seen, s.LastSeen, s.Incarnation = true, now, b.Incarnation
	s.Step, s.Loss = b.Step, b.Loss
	if b.Epoch == m.epoch {
		s.State, s.Epoch, s.RowsDone = b.State, b.Epoch, b.RowsDone
	} else {
		// Progress for an older epoch: the task has not seen this epoch yet.
		s.State, s.Epoch, s.RowsDone = StateRunning, m.epoch, 0
	}
	if b.State == StateFailed {
		msg := b.Message
		if msg == "" {
			msg = "no message"
		}
		m.declareDeadLocked(rank, "failed: "+msg)
		return m.stopReplyLocked("task failed"), nil
	}
	if m.epochCompleteLocked() {
		m.nudge()
	}
	reply := m.replyLocked(rank)
	// An idle task has nothing to do until the next epoch or a reassignment:
	// hold its heartbeat (long poll, at most one interval) so it hears of
	// new work at once instead of at its next beat.
	if b.State == StateIdle && reply.Command != CommandStop && (reply.Command == CommandWait || b.Epoch == reply.Epoch) {
		ch := m.changed
		m.mu.Unlock()
		t := time.NewTimer(m.cfg.Interval)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		m.mu.Lock()
		// The task was waiting on us, not silent: count the wait as heard.
		if st := m.tasks[rank]; !st.Dead && st.Incarnation == b.Incarnation {
			st.LastSeen = m.cfg.Now()
		}
		reply = m.replyLocked(rank)
	}
	return reply, nil
}

// replyLocked is what rank is told to do now.
func (m *Monitor) replyLocked(rank int) Reply {
	s := m.tasks[rank]
	switch {
	case s.Dead:
		return m.stopReplyLocked("task " + s.Task.String() + " was declared dead: " + s.DeadReason)
	case m.stopped:
		return m.stopReplyLocked(m.reason)
	case m.epochEnd:
		return Reply{Command: CommandWait, Epoch: m.epoch, Interval: m.cfg.Interval}
	}
	return Reply{
		Command:     CommandRun,
		Epoch:       m.epoch,
		PlanVersion: m.plan.Version(),
		Ranges:      m.plan.Ranges(rank),
		Interval:    m.cfg.Interval,
	}
}

func (m *Monitor) stopReplyLocked(reason string) Reply {
	return Reply{Command: CommandStop, Epoch: m.epoch, Interval: m.cfg.Interval, Reason: reason, Failed: m.failed}
}

func (m *Monitor) nudge() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// rowsOf returns the rows assigned to rank in the current plan.
func (m *Monitor) rowsOf(rank int) int64 {
	var n int64
	for _, r := range m.plan.Ranges(rank) {
		n += r.Len()
	}
	return n
}

// epochCompleteLocked reports whether every live trainer is idle with all
// its rows of the current epoch consumed.
func (m *Monitor) epochCompleteLocked() bool {
	if m.cfg.Rows == 0 || m.stopped {
		return false
	}
	for i, s := range m.tasks {
		if s.Dead {
			continue
		}
		if !s.Seen || s.State != StateIdle || s.Epoch != m.epoch || s.RowsDone < m.rowsOf(i) {
			return false
		}
	}
	return true
}

// MarkDead declares t dead (its process exited, say) and reassigns its
// unconsumed rows. It is a no-op for a task already dead or after the job
// stopped; an unknown task is an error.
func (m *Monitor) MarkDead(t Task, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rank, ok := m.byTask[t]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownTask, t)
	}
	if !m.tasks[rank].Dead && !m.stopped {
		m.declareDeadLocked(rank, reason)
	}
	return nil
}

func (m *Monitor) declareDeadLocked(rank int, reason string) {
	s := m.tasks[rank]
	s.Dead, s.DeadReason = true, reason
	var done int64
	if s.Epoch == m.epoch {
		done = s.RowsDone
	}
	var receivers []Task
	finished := m.cfg.RankRows != nil && done >= m.cfg.RankRows[rank] && m.epoch >= m.cfg.Epochs-1
	if m.cfg.RankRows != nil && !m.stopped && !finished {
		// Its rows are on its own machine: nobody can take them over.
		m.stopLocked("trainer "+s.Task.String()+" died ("+reason+"); its rows are its own data, which no other trainer holds", true)
	} else if m.cfg.RankRows == nil && m.plan.Alive(rank) {
		got, err := m.plan.Reassign(rank, done)
		if err != nil {
			// The last trainer died: nobody can take its rows.
			m.stopLocked("every trainer is dead (last: "+s.Task.String()+" "+reason+")", true)
		}
		for _, r := range got {
			receivers = append(receivers, m.tasks[r].Task)
		}
	}
	m.changedLocked()
	m.cfg.Logger.Warn("task declared dead", "task", s.Task, "reason", reason, "rows_done", done, "receivers", receivers)
	if h := m.cfg.Hooks.OnDead; h != nil {
		t := s.Task
		m.events = append(m.events, func() { h(t, reason, receivers) })
	}
	m.nudge()
}

// Stop ends the job: every later reply says stop with reason. failed marks
// the job as failed. Only the first call has an effect.
func (m *Monitor) Stop(reason string, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked(reason, failed)
}

func (m *Monitor) stopLocked(reason string, failed bool) {
	if m.stopped {
		return
	}
	m.stopped, m.reason, m.failed = true, reason, failed
	close(m.done)
	m.changedLocked()
	m.nudge()
}

// Done is closed when the job stopped: all epochs completed, an OnEpochEnd
// hook asked to stop, Stop was called, or every trainer died.
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Result returns why the job stopped and whether it failed; ok is false
// while it runs.
func (m *Monitor) Result() (reason string, failed, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reason, m.failed, m.stopped
}

// Status returns a copy of every trainer's status, by rank.
func (m *Monitor) Status() []TaskStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]TaskStatus, len(m.tasks))
	for i, s := range m.tasks {
		out[i] = *s
	}
	return out
}

// Epoch returns the current epoch.
func (m *Monitor) Epoch() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.epoch
}

// Interval returns the heartbeat interval the Monitor asks tasks to keep
// (MonitorConfig.Interval, or its default).
func (m *Monitor) Interval() time.Duration { return m.cfg.Interval }

// Check declares dead every live trainer silent for longer than the timeout
// (or never heard from within the start timeout) at time now, and returns
// them.
func (m *Monitor) Check(now time.Time) []Task {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return nil
	}
	var dead []Task
	for i, s := range m.tasks {
		if s.Dead {
			continue
		}
		switch {
		case s.Seen && now.Sub(s.LastSeen) > m.cfg.Timeout:
			m.declareDeadLocked(i, fmt.Sprintf("no heartbeat for %v (timeout %v)", now.Sub(s.LastSeen).Round(time.Millisecond), m.cfg.Timeout))
		case !s.Seen && now.Sub(m.created) > m.cfg.StartTimeout:
			m.declareDeadLocked(i, fmt.Sprintf("no first heartbeat within %v", m.cfg.StartTimeout))
		default:
			continue
		}
		dead = append(dead, s.Task)
	}
	return dead
}

// Run enforces timeouts, calls hooks and advances epochs until the job
// stops or ctx is done. It returns nil when the job completed, an error
// naming the cause when it failed, and ctx's error when cancelled (the job
// is then stopped as failed so tasks exit).
func (m *Monitor) Run(ctx context.Context) error {
	tick := min(m.cfg.Interval, m.cfg.Timeout/4)
	t := time.NewTimer(tick)
	defer t.Stop()
	for {
		m.Check(m.cfg.Now())
		m.runEvents()
		if m.maybeEndEpoch() {
			continue
		}
		m.mu.Lock()
		stopped, reason, failed := m.stopped, m.reason, m.failed
		m.mu.Unlock()
		if stopped {
			m.runEvents()
			if failed {
				return fmt.Errorf("distributed: job failed: %s", reason)
			}
			return nil
		}
		t.Reset(tick)
		select {
		case <-ctx.Done():
			m.Stop("cancelled: "+ctx.Err().Error(), true)
			return ctx.Err()
		case <-m.wake:
		case <-t.C:
		}
	}
}

func (m *Monitor) runEvents() {
	m.mu.Lock()
	evs := m.events
	m.events = nil
	m.mu.Unlock()
	for _, f := range evs {
		f()
	}
}

// maybeEndEpoch finishes the current epoch if it is complete: it runs
// OnEpochEnd, then hands out the next epoch or stops. It reports whether it
// did.
func (m *Monitor) maybeEndEpoch() bool {
	m.mu.Lock()
	if !m.epochCompleteLocked() {
		m.mu.Unlock()
		return false
	}
	e := m.epoch
	m.epochEnd = true
	m.mu.Unlock()

	stop := false
	if h := m.cfg.Hooks.OnEpochEnd; h != nil {
		stop = h(e)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	m.epochEnd = false
	switch {
	case m.stopped:
	case stop:
		m.stopLocked(fmt.Sprintf("stopped after epoch %d by the epoch-end hook", e), false)
	case e+1 >= m.cfg.Epochs:
		m.stopLocked(fmt.Sprintf("completed %d epochs", m.cfg.Epochs), false)
	default:
		m.newEpochLocked(e + 1)
	}
	return true
}
