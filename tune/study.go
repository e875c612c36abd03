package tune

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/internal/filelock"
	"github.com/gotflow/gotflow/loader"
)

// Trial states.
const (
	Pending   = "pending"
	Running   = "running"
	Completed = "completed" // trained all its epochs (or the estimator's own early stopping ended it)
	Stopped   = "stopped"   // stopped by the scheduler or the time budget
	Failed    = "failed"
)

// Trial is one training run of a study.
type Trial struct {
	ID     string           `json:"id"`
	Params map[string]Value `json:"params"`
	Status string           `json:"status"`
	// Metrics is the objective after each epoch (NaN where the trial
	// reported none).
	Metrics    []Metric  `json:"metrics"`
	Best       Metric    `json:"best"`       // the best of Metrics
	BestEpoch  int       `json:"best_epoch"` // 1-based; 0 before the first epoch
	Final      Metric    `json:"final"`      // the last of Metrics: the exported weights'
	Wall       float64   `json:"wall_seconds"`
	StopReason string    `json:"stop_reason,omitempty"`
	Error      string    `json:"error,omitempty"`
	Export     string    `json:"export,omitempty"` // the trained model (completed trials)
	Started    time.Time `json:"started,omitzero"`
	Ended      time.Time `json:"ended,omitzero"`
}

// Finished reports whether the trial ended (completed, stopped or failed).
func (t *Trial) Finished() bool {
	return t.Status == Completed || t.Status == Stopped || t.Status == Failed
}

// Metric is a float64 that is written as null in JSON when it is NaN or
// infinite.
type Metric float64

// MarshalJSON writes null for NaN and infinities.
func (m Metric) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(m))
}

// UnmarshalJSON reads null as NaN.
func (m *Metric) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*m = Metric(math.NaN())
		return nil
	}
	var f float64
	err := json.Unmarshal(b, &f)
	*m = Metric(f)
	return err
}

// Event is what a study reports as it runs (Study.OnEvent).
type Event struct {
	Kind   string // started, epoch, completed, stopped, failed
	Trial  Trial  // a copy
	Epoch  int    // 1-based, for epoch events
	Epochs int    // the trial's planned epochs
}

// Study runs a search: trials of Base with the parameters the space's
// algorithm samples, in parallel, with early stopping, recorded in Dir.
type Study struct {
	// Dir holds the study: space.json, study.json (every trial, written
	// after each event), trials.csv and trials.parquet, trials/<id>/ (each
	// trial's model dir and export), tensorboard/<id>/ and best/ (the best
	// completed trial's export). A study run again on its directory
	// resumes: finished trials are kept, the others run again, resuming
	// from their model dirs.
	Dir   string
	Space *Space
	// Base is the estimator every trial starts from; the parameters
	// override its fields, and the study sets ModelDir, ExportDir,
	// TensorBoardDir and, when Base leaves them 0, the thread counts.
	Base estimator.TFEstimator
	// Data opens the training data for one trial (Fit closes it).
	Data func() (arrowio.Source, error)
	// CPUs is the cores the study may use (default runtime.NumCPU()); each
	// trial gets CPUs / (parallel trials × workers) intra-op threads.
	CPUs int
	// OnEvent, if set, is called for every trial event, one at a time.
	OnEvent func(Event)
	Logger  *slog.Logger
}

// Result is a finished study.
type Result struct {
	Trials []Trial
	// Best is the completed trial with the best final objective (nil if
	// none completed); its export is copied to Dir/best.
	Best *Trial
	// Reason says why the study ended.
	Reason string
}

// state is study.json.
type state struct {
	Format string   `json:"format"`
	Space  *Space   `json:"space"`
	Trials []*Trial `json:"trials"`
	// Reports is every (trial, epoch, objective) in the order the
	// scheduler saw them, so that a resumed study rebuilds its rungs.
	Reports []report `json:"reports"`
}

type report struct {
	Trial string `json:"trial"`
	Epoch int    `json:"epoch"`
	Value Metric `json:"value"`
}

const stateFormat = "gotflow.study/v1"

// errStopTrial cancels a trial the scheduler stopped.
var errStopTrial = errors.New("tune: stopped by the scheduler")

// errTimeBudget cancels the trials running when the time budget ends.
var errTimeBudget = errors.New("tune: time budget used up")

// runner is one Run of a study.
type runner struct {
	s       *Study
	log     *slog.Logger
	sign    float64 // 1 to minimise, -1 to maximise
	epochs  int
	threads int
	sampler sampler
	sched   scheduler

	mu      sync.Mutex // guards st, running, sched and the files
	st      *state
	running map[string]bool // trials this run started
	eventMu sync.Mutex
}

// Run runs the study until its trial budget, its goal, its failure budget
// or its time budget ends it, or ctx is cancelled (a later Run resumes).
func (s *Study) Run(ctx context.Context) (*Result, error) {
	if s.Space == nil || s.Data == nil || s.Dir == "" {
		return nil, errors.New("tune: a study needs Dir, Space and Data")
	}
	if err := s.Space.Check(); err != nil {
		return nil, fmt.Errorf("tune: space: %w", err)
	}
	// Exports and model dirs are recorded absolute, so that the study can
	// be resumed and its trials read from any working directory.
	abs, err := filepath.Abs(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("tune: study dir %s: %w", s.Dir, err)
	}
	s = &Study{Dir: abs, Space: s.Space, Base: s.Base, Data: s.Data, CPUs: s.CPUs, OnEvent: s.OnEvent, Logger: s.Logger}
	r := &runner{s: s, log: s.Logger, sign: 1, sampler: newSampler(s.Space), running: map[string]bool{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if s.Space.Objective.Type == "maximize" {
		r.sign = -1
	}
	if err := r.checkObjective(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	lock, holder, err := filelock.Acquire(filepath.Join(s.Dir, "study.lock"))
	if err != nil {
		if holder != "" {
			return nil, fmt.Errorf("tune: study %s is in use by %s", s.Dir, holder)
		}
		return nil, fmt.Errorf("tune: lock study %s: %w", s.Dir, err)
	}
	defer lock.Release()
	if err := lock.Write(filelock.Holder()); err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.epochs = max(s.Base.Epochs, 1)
	for _, p := range s.Space.Parameters {
		if p.Name == "epochs" {
			r.epochs = max(r.epochs, int(maxEpochs(p)))
		}
	}
	r.sched = newScheduler(s.Space, r.epochs)
	for _, rep := range r.st.Reports { // the rungs as they were
		r.sched.report(rep.Trial, rep.Epoch, r.sign*float64(rep.Value))
	}
	par := s.Space.ParallelTrialCount
	cpus := cmp.Or(s.CPUs, runtime.NumCPU())
	workers := max(s.Base.Workers, 1)
	r.threads = max(1, cpus/(par*workers))
	if par*workers > cpus {
		r.log.Warn("more trial workers than CPUs: trials share cores", "parallelTrialCount", par, "workers_per_trial", workers, "cpus", cpus, "intra_op_threads_per_trial", r.threads)
	}
	return r.run(ctx)
}

// maxEpochs is the largest value an epochs parameter can take.
func maxEpochs(p Parameter) float64 {
	if len(p.FeasibleSpace.List) > 0 {
		m := 0.0
		for _, v := range p.FeasibleSpace.List {
			var x float64
			fmt.Sscan(string(v), &x)
			m = math.Max(m, x)
		}
		return m
	}
	var x float64
	fmt.Sscan(string(p.FeasibleSpace.Max), &x)
	return x
}

// checkObjective refuses an objective metric that no trial's bundle
// reports.
func (r *runner) checkObjective() error {
	name := r.s.Space.Objective.ObjectiveMetricName
	bundles := []string{r.s.Base.Bundle}
	for _, p := range r.s.Space.Parameters {
		if p.Name == "bundle" {
			bundles = nil
			for _, v := range p.FeasibleSpace.List {
				bundles = append(bundles, string(v))
			}
		}
	}
	base := strings.TrimPrefix(name, "val_")
	for _, b := range bundles {
		if base == "loss" {
			break
		}
		raw, err := os.ReadFile(filepath.Join(b, "manifest.json"))
		if err != nil {
			return fmt.Errorf("tune: bundle: %w", err)
		}
		m, err := loader.ParseManifest(raw)
		if err != nil {
			return fmt.Errorf("tune: bundle %s: %w", b, err)
		}
		var names []string
		for _, mt := range m.Metrics {
			names = append(names, mt.Alias)
		}
		if !slices.Contains(names, base) {
			return fmt.Errorf("tune: objective.objectiveMetricName %q: bundle %s reports loss and %v; want loss, val_loss or one of those (val_ for the validation split)", name, b, names)
		}
	}
	if strings.HasPrefix(name, "val_") && r.s.Base.ValidationSplit <= 0 && !slices.ContainsFunc(r.s.Space.Parameters, func(p Parameter) bool { return p.Name == "validation_split" }) {
		return fmt.Errorf("tune: objective.objectiveMetricName %q needs a validation split: set the estimator's validation_split (e.g. 0.2)", name)
	}
	return nil
}

// load reads study.json, or starts a new study.
func (r *runner) load() error {
	path := filepath.Join(r.s.Dir, "study.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		r.st = &state{Format: stateFormat, Space: r.s.Space}
		if err := atomicfile.WriteFile(filepath.Join(r.s.Dir, "space.json"), r.s.Space.marshal()); err != nil {
			return fmt.Errorf("tune: %w", err)
		}
		return r.saveLocked()
	}
	if err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.Format != stateFormat {
		return fmt.Errorf("tune: %s is not a study file of this version (%v)", path, err)
	}
	if string(st.Space.marshal()) != string(r.s.Space.marshal()) {
		return fmt.Errorf("tune: the study in %s searches another space (its space.json); resume it with that space or use another directory", r.s.Dir)
	}
	r.st = &st
	done := 0
	for _, t := range st.Trials {
		if t.Finished() {
			done++
		}
	}
	r.log.Info("resuming study", "dir", r.s.Dir, "trials", len(st.Trials), "finished", done)
	return nil
}

// saveLocked writes study.json, trials.csv and trials.parquet.
func (r *runner) saveLocked() error {
	b, err := json.MarshalIndent(r.st, "", "  ")
	if err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(r.s.Dir, "study.json"), append(b, '\n')); err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	return writeTables(r.s.Dir, r.s.Space, r.st.Trials)
}

func (r *runner) event(kind string, t *Trial, epoch int) {
	if r.s.OnEvent == nil {
		return
	}
	r.mu.Lock()
	cp := *t
	cp.Params = mapsClone(t.Params)
	cp.Metrics = slices.Clone(t.Metrics)
	r.mu.Unlock()
	r.eventMu.Lock()
	defer r.eventMu.Unlock()
	r.s.OnEvent(Event{Kind: kind, Trial: cp, Epoch: epoch, Epochs: r.trialEpochs(cp.Params)})
}

func mapsClone(m map[string]Value) map[string]Value {
	out := make(map[string]Value, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// trialEpochs is how many epochs a trial with params trains.
func (r *runner) trialEpochs(params map[string]Value) int {
	if v, ok := params["epochs"]; ok {
		var n int
		fmt.Sscan(string(v), &n)
		return n
	}
	return max(r.s.Base.Epochs, 1)
}

func (r *runner) run(ctx context.Context) (*Result, error) {
	sp := r.s.Space
	var deadline <-chan time.Time
	if sp.TimeBudget > 0 {
		tm := time.NewTimer(time.Duration(sp.TimeBudget))
		defer tm.Stop()
		deadline = tm.C
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-deadline:
			cancel(errTimeBudget)
		case <-ctx.Done():
		}
	}()
	var (
		wg     sync.WaitGroup
		reason string
		slots  = make(chan struct{}, sp.ParallelTrialCount)
	)
	for {
		// A free slot first, then the sample: a model-based sampler sees
		// every trial finished so far.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		t, why := r.next(ctx)
		if t == nil {
			<-slots
			reason = why
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			r.runTrial(ctx, t)
		}()
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
		if errors.Is(cause, errTimeBudget) {
			reason = "time budget used up"
		} else {
			return r.result("interrupted"), fmt.Errorf("tune: study interrupted (run it again on %s to resume): %w", r.s.Dir, cause)
		}
	}
	res := r.result(reason)
	if res.Best != nil {
		if err := copyDir(res.Best.Export, filepath.Join(r.s.Dir, "best")); err != nil {
			return res, fmt.Errorf("tune: best trial's export: %w", err)
		}
	}
	r.mu.Lock()
	failed := r.failedLocked()
	r.mu.Unlock()
	if failed > *sp.MaxFailedTrialCount {
		return res, fmt.Errorf("tune: %d trials failed, more than maxFailedTrialCount %d; the last error: %s", failed, *sp.MaxFailedTrialCount, r.lastError())
	}
	return res, nil
}

func (r *runner) failedLocked() int {
	n := 0
	for _, t := range r.st.Trials {
		if t.Status == Failed {
			n++
		}
	}
	return n
}

func (r *runner) lastError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.st.Trials) - 1; i >= 0; i-- {
		if e := r.st.Trials[i].Error; e != "" {
			return r.st.Trials[i].ID + ": " + e
		}
	}
	return ""
}

// next returns the next trial to run: an unfinished one of an earlier run,
// or a new one sampled now; nil and the reason when the study is over.
func (r *runner) next(ctx context.Context) (*Trial, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sp := r.s.Space
	if ctx.Err() != nil {
		return nil, "interrupted"
	}
	if r.failedLocked() > *sp.MaxFailedTrialCount {
		return nil, "too many failed trials"
	}
	if g := sp.Objective.Goal; g != nil {
		for _, t := range r.st.Trials {
			if t.Status == Completed && r.sign*float64(t.Final) <= r.sign**g {
				return nil, fmt.Sprintf("goal %v reached by %s", *g, t.ID)
			}
		}
	}
	for _, t := range r.st.Trials {
		if !t.Finished() && !r.running[t.ID] {
			// Left unfinished by an earlier run (or not started yet).
			r.running[t.ID] = true
			return t, ""
		}
	}
	if len(r.st.Trials) >= sp.MaxTrialCount {
		return nil, fmt.Sprintf("all %d trials run", sp.MaxTrialCount)
	}
	id := len(r.st.Trials)
	var done []observation
	for _, t := range r.st.Trials {
		if (t.Status == Completed || t.Status == Stopped) && len(t.Metrics) > 0 {
			done = append(done, observation{params: t.Params, value: r.sign * float64(t.Final), stopped: t.Status == Stopped})
		}
	}
	params, err := r.sampler.sample(id, done)
	if err != nil {
		return nil, err.Error()
	}
	t := &Trial{ID: fmt.Sprintf("trial-%04d", id), Params: params, Status: Pending, Best: Metric(math.NaN()), Final: Metric(math.NaN())}
	r.st.Trials = append(r.st.Trials, t)
	if err := r.saveLocked(); err != nil {
		r.log.Error("saving the study failed", "err", err)
	}
	r.running[t.ID] = true
	return t, ""
}

// estimatorFor applies a trial's parameters to the base estimator.
func (r *runner) estimatorFor(t *Trial) (estimator.TFEstimator, error) {
	b, err := json.Marshal(r.s.Base)
	if err != nil {
		return estimator.TFEstimator{}, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return estimator.TFEstimator{}, err
	}
	fields := estimatorFields()
	for name, v := range t.Params {
		x, err := convert(v, fields[name])
		if err != nil {
			return estimator.TFEstimator{}, fmt.Errorf("parameter %s: %w", name, err)
		}
		m[name] = x
	}
	b, err = json.Marshal(m)
	if err != nil {
		return estimator.TFEstimator{}, err
	}
	var e estimator.TFEstimator
	if err := json.Unmarshal(b, &e); err != nil {
		return estimator.TFEstimator{}, fmt.Errorf("parameters %v: %w", t.Params, err)
	}
	e.Hooks, e.Logger, e.PSAuth.Token = r.s.Base.Hooks, r.s.Base.Logger, r.s.Base.PSAuth.Token
	dir := filepath.Join(r.s.Dir, "trials", t.ID)
	e.ModelDir, e.ExportDir = filepath.Join(dir, "model"), filepath.Join(dir, "export")
	e.TensorBoardDir = filepath.Join(r.s.Dir, "tensorboard", t.ID)
	if e.IntraOpThreads == 0 {
		e.IntraOpThreads = r.threads
	}
	if e.InterOpThreads == 0 {
		e.InterOpThreads = 1
	}
	return e, nil
}

// metric reads the objective from an epoch's results.
func metric(name string, i estimator.EpochInfo) float64 {
	switch {
	case name == "loss":
		return i.Loss
	case name == "val_loss":
		return i.ValLoss
	case strings.HasPrefix(name, "val_"):
		if v, ok := i.ValMetrics[strings.TrimPrefix(name, "val_")]; ok {
			return v
		}
	default:
		if v, ok := i.Metrics[name]; ok {
			return v
		}
	}
	return math.NaN()
}

// runTrial trains one trial and records how it ended.
func (r *runner) runTrial(ctx context.Context, t *Trial) {
	start := time.Now()
	r.mu.Lock()
	t.Status, t.Error, t.StopReason = Running, "", ""
	if t.Started.IsZero() {
		t.Started = start
	}
	if err := r.saveLocked(); err != nil {
		r.log.Error("saving the study failed", "err", err)
	}
	r.mu.Unlock()
	r.event("started", t, 0)
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	e, err := r.estimatorFor(t)
	var m *estimator.TFModel
	if err == nil {
		name := r.s.Space.Objective.ObjectiveMetricName
		user := e.Hooks.OnEpoch
		e.Hooks.OnEpoch = func(i estimator.EpochInfo) {
			if user != nil {
				user(i)
			}
			v := metric(name, i)
			r.mu.Lock()
			t.Metrics = append(t.Metrics[:min(len(t.Metrics), i.Epoch)], Metric(v))
			r.st.Reports = append(r.st.Reports, report{Trial: t.ID, Epoch: i.Epoch + 1, Value: Metric(v)})
			stop, why := r.sched.report(t.ID, i.Epoch+1, r.sign*v)
			if i.Epoch+1 >= i.Epochs {
				stop = false // trained all its epochs: it completes and exports
			}
			r.summarize(t)
			if stop {
				t.StopReason = why
			}
			if err := r.saveLocked(); err != nil {
				r.log.Error("saving the study failed", "err", err)
			}
			r.mu.Unlock()
			r.event("epoch", t, i.Epoch+1)
			if stop {
				cancel(errStopTrial)
			}
		}
		var src arrowio.Source
		if src, err = r.s.Data(); err == nil {
			m, err = e.Fit(tctx, src)
		}
	}
	r.mu.Lock()
	t.Wall += time.Since(start).Seconds()
	kind := ""
	switch cause := context.Cause(tctx); {
	case err == nil:
		t.Status, t.Export, kind = Completed, e.ExportDir, "completed"
		m.Close()
	case tctx.Err() != nil && errors.Is(cause, errStopTrial):
		t.Status, kind = Stopped, "stopped"
	case tctx.Err() != nil && errors.Is(cause, errTimeBudget):
		t.Status, t.StopReason, kind = Stopped, "time budget used up", "stopped"
	case ctx.Err() != nil:
		// The study was interrupted: the trial stays running, and a
		// resumed study runs it again from its model dir.
		r.mu.Unlock()
		return
	default:
		t.Status, t.Error, kind = Failed, err.Error(), "failed"
	}
	t.Ended = time.Now()
	r.summarize(t)
	if err := r.saveLocked(); err != nil {
		r.log.Error("saving the study failed", "err", err)
	}
	r.mu.Unlock()
	r.event(kind, t, len(t.Metrics))
}

// summarize sets a trial's best and final objective from its metrics.
func (r *runner) summarize(t *Trial) {
	t.Best, t.BestEpoch, t.Final = Metric(math.NaN()), 0, Metric(math.NaN())
	for i, v := range t.Metrics {
		if math.IsNaN(float64(v)) {
			continue
		}
		if t.BestEpoch == 0 || r.sign*float64(v) < r.sign*float64(t.Best) {
			t.Best, t.BestEpoch = v, i+1
		}
	}
	if n := len(t.Metrics); n > 0 {
		t.Final = t.Metrics[n-1]
	}
}

// result ranks the trials: the best is the completed one with the best
// final objective (ties: the earlier trial).
func (r *runner) result(reason string) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Reason: reason}
	for _, t := range r.st.Trials {
		cp := *t
		res.Trials = append(res.Trials, cp)
	}
	for i := range res.Trials {
		t := &res.Trials[i]
		if t.Status != Completed || math.IsNaN(float64(t.Final)) || t.Export == "" {
			continue
		}
		if res.Best == nil || r.sign*float64(t.Final) < r.sign*float64(res.Best.Final) {
			res.Best = t
		}
	}
	return res
}

// Ranked returns the completed trials best first: the lowest final
// objective for minimize, the highest for maximize.
func (res *Result) Ranked(objective Objective) []Trial {
	var out []Trial
	for _, t := range res.Trials {
		if t.Status == Completed && !math.IsNaN(float64(t.Final)) {
			out = append(out, t)
		}
	}
	sign := 1.0
	if objective.Type == "maximize" {
		sign = -1
	}
	slices.SortStableFunc(out, func(a, b Trial) int { return cmp.Compare(sign*float64(a.Final), sign*float64(b.Final)) })
	return out
}
