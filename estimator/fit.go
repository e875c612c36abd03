package estimator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/internal/filelock"
	"github.com/gotflow/gotflow/internal/tensorboard"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// progressFile records, in ModelDir, how many epochs a Fit completed.
const progressFile = "progress.json"

type progress struct {
	Epochs int   `json:"epochs_done"`
	Steps  []int `json:"worker_steps"`
	// Batch is how many batches of epoch Epochs every in-process worker
	// had trained on at the last checkpoint, within the plan Plan names.
	Batch int    `json:"batches_done,omitempty"`
	Plan  string `json:"plan,omitempty"`
}

// Fit trains the bundle on data and returns a TFModel over the exported
// model; Fit closes data. Data opened with arrowio.OpenDataset (optionally
// filtered by arrowio.Where) is streamed from its files every epoch: its
// units (Parquet row groups, IPC record batches) are dealt to the workers
// and read in bounded memory (see ShuffleBuffer, Readers, Prefetch); any
// other source is read into memory once.
//
// Everything is checked before training starts: the parameters
// (Validate), the bundle (loader.LoadBundle), the files' schemas, and the
// mappings against the data's schema and the bundle's inputs and labels.
// With Cluster InProcess (the default) workers run as goroutines against
// an in-process parameter server of NumPS shards; with Cluster Processes
// they run as `gotflow worker` and `gotflow ps` processes (see Cluster).
func (e *TFEstimator) Fit(ctx context.Context, data arrowio.Source) (*TFModel, error) {
	defer data.Close()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var (
		files []string
		where *RowFilter
		root  string
		err   error
	)
	if e.Cluster == Processes {
		if files, where, root, err = jobData(data); err != nil {
			return nil, fmt.Errorf("estimator: Cluster \"processes\": every worker process reads the data itself: %w", err)
		}
	}
	ds, err := scanData(ctx, data)
	if err != nil {
		return nil, fmt.Errorf("estimator: training data: %w", err)
	}
	p, err := e.prepare(ds)
	if err != nil {
		return nil, err
	}
	defer p.close()
	r := &run{e: e, p: p, log: e.logger()}
	info := e.planInfo(p.data, e.Workers)
	r.log.Info("training data", "plan", info.String())
	if e.Hooks.OnPlan != nil {
		e.Hooks.OnPlan(info)
	}
	if r.modelDir = e.ModelDir; r.modelDir == "" {
		if r.modelDir, err = os.MkdirTemp("", "gotflow-fit-"); err != nil {
			return nil, fmt.Errorf("estimator: %w", err)
		}
		defer os.RemoveAll(r.modelDir)
	} else if err := os.MkdirAll(r.modelDir, 0o755); err != nil {
		return nil, fmt.Errorf("estimator: model dir: %w", err)
	}
	// One Fit at a time per ModelDir: a second one would share its
	// snapshots, logs and job file.
	lock, _, err := filelock.Acquire(filepath.Join(r.modelDir, "fit.lock"))
	if errors.Is(err, filelock.ErrLocked) {
		return nil, fmt.Errorf("estimator: ModelDir %s is in use by another Fit: %w; wait for it to end or use another ModelDir", r.modelDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("estimator: model dir lock: %w", err)
	}
	defer lock.Release()
	if err := lock.Write(filelock.Holder()); err != nil {
		return nil, fmt.Errorf("estimator: model dir lock: %w", err)
	}
	if e.TensorBoardDir != "" {
		if r.tb, err = tensorboard.NewWriter(e.TensorBoardDir); err != nil {
			return nil, fmt.Errorf("estimator: tensorboard: %w", err)
		}
		defer r.tb.Close()
	}
	defer r.close()
	var final []loader.Weight
	if e.Cluster == Processes {
		final, err = r.fitProcesses(ctx, files, where, root)
	} else {
		final, err = r.fitInProcess(ctx)
	}
	if err != nil {
		return nil, err
	}
	return r.export(final)
}

func (e *TFEstimator) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// prepared is what every training mode needs: the bundle, the training
// data's plan and split, and the parameter server's variables.
type prepared struct {
	b    *loader.Bundle
	data *trainSet
	vars []ps.Variable // float32 variables, with initial values
	mode ps.Mode
	opt  optim.Config
}

func (p *prepared) close() { p.data.close() }

// prepare loads the bundle and checks the mappings against ds, which it
// takes over.
func (e *TFEstimator) prepare(ds *arrowio.StreamDataset) (*prepared, error) {
	b, err := loader.LoadBundle(e.Bundle)
	if err != nil {
		ds.Close()
		return nil, err
	}
	p := &prepared{b: b}
	for i, v := range b.Variables {
		if v.Trainable && v.DType != tf.Float {
			ds.Close()
			return nil, fmt.Errorf("estimator: trainable variable %q has dtype %s; the parameter server trains float32 variables only", v.Name, v.DType)
		}
		if !onParameterServer(v) {
			continue
		}
		init, err := b.Weights[i].Tensor()
		if err != nil {
			ds.Close()
			return nil, err
		}
		vals, _ := tf.Data[float32](init)
		p.vars = append(p.vars, ps.Variable{Name: v.Name, Shape: v.Shape, Trainable: v.Trainable, Init: append([]float32(nil), vals...)})
		init.Close()
	}
	if p.data, err = e.openTrainSet(p, ds); err != nil {
		return nil, err
	}
	p.mode, _ = e.mode()
	p.opt, _ = e.optimizer()
	return p, nil
}

// run is the state of one Fit.
type run struct {
	e        *TFEstimator
	p        *prepared
	log      *slog.Logger
	modelDir string
	tb       *tensorboard.Writer

	creds      ps.Credentials // how this run's clients reach shards in other processes
	clients    []*ps.Client
	workers    []*trainWorker // in-process workers
	eval       *trainWorker   // the chief's view, for evaluation and export
	done       progress
	examples   atomic.Int64
	started    time.Time // when this run's first epoch started
	startEpoch int       // the epoch this run started at (resumed runs skip the others)
	best       float64   // early stopping: best monitored value so far
	bad        int       // early stopping: epochs without improvement
}

func (e *TFEstimator) sessionOptions() []tf.SessionOption {
	return []tf.SessionOption{tf.WithIntraOpThreads(e.IntraOpThreads), tf.WithInterOpThreads(e.InterOpThreads)}
}

// serverOptions configures parameter-server shards for this run.
func (r *run) serverOptions() []ps.ServerOption {
	pol, _ := r.e.straggler() // checked by Validate
	o := []ps.ServerOption{ps.WithMode(r.p.mode), ps.WithOptimizer(r.p.opt), ps.WithWorkers(r.e.Workers),
		ps.WithSnapshotDir(filepath.Join(r.modelDir, "ps"), 0, 0), ps.WithSyncTimeout(r.e.syncTimeout(), pol),
		// In process a crash ends the workers too: nothing to log for. The
		// snapshots are the checkpoints', each paired with its position in
		// the data plan, so none is written on stop.
		ps.WithoutWAL(), ps.WithoutFinalSnapshot()}
	if r.p.mode == ps.BoundedStaleness {
		o = append(o, ps.WithMaxStaleness(uint64(orDefault(r.e.MaxStaleness, 4))))
	}
	return o
}

// connect registers the variables through client and opens a worker on it.
func (r *run) connect(ctx context.Context, id int, client *ps.Client) (*trainWorker, error) {
	r.clients = append(r.clients, client)
	if err := client.Register(ctx, r.p.vars); err != nil {
		return nil, fmt.Errorf("estimator: register variables: %w", err)
	}
	return newTrainWorker(ctx, id, r.p.b, client, r.e.sessionOptions())
}

func (r *run) close() {
	for _, w := range r.workers {
		w.Close()
	}
	if r.eval != nil {
		r.eval.Close()
	}
	for _, c := range r.clients {
		c.Close()
	}
}

// fitInProcess trains with goroutine workers and an in-process parameter
// server, and returns the final weights.
func (r *run) fitInProcess(ctx context.Context) ([]loader.Weight, error) {
	e, n := r.e, r.e.Workers
	cluster, err := ps.NewLocalCluster(orDefault(e.NumPS, 1), r.serverOptions()...)
	if err != nil {
		return nil, err
	}
	defer cluster.Close()
	defer r.close()           // before the cluster stops
	for i := 0; i <= n; i++ { // n workers, then the chief's evaluation client
		c, err := cluster.Dial(ctx, ps.WithWorkerID("worker-"+strconv.Itoa(i)))
		if err != nil {
			return nil, err
		}
		w, err := r.connect(ctx, i, c)
		if err != nil {
			return nil, err
		}
		if i < n {
			r.workers = append(r.workers, w)
		} else {
			r.eval = w
		}
	}
	if err := r.resume(); err != nil {
		return nil, err
	}
	epochs := orDefault(e.Epochs, DefaultEpochs)
	pullEvery := e.PullEvery
	if pullEvery == 0 {
		pullEvery = 1
	}
	every := e.CheckpointEvery
	if every == 0 {
		every = 500
	}
	r.started, r.startEpoch, r.best = time.Now(), r.done.Epochs, math.Inf(1)
	for epoch := r.done.Epochs; epoch < epochs; epoch++ {
		_, shares, firsts, layouts, _ := e.shares(r.p.data, epoch, n)
		skip := 0
		if epoch == r.done.Epochs {
			skip = r.done.Batch // resumed within this epoch
		}
		t0 := time.Now()
		results := make([]epochResult, n)
		errs := make([]error, n)
		ectx, cancel := context.WithCancel(ctx)
		bar := &barrier{n: n, gen: &barrierGen{done: make(chan struct{})}}
		var wg sync.WaitGroup
		for i, w := range r.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if errs[i] != nil {
						cancel() // the others must not wait for this one at a checkpoint
					}
				}()
				cfg := e.streamConfig(r.p.data, epoch, firsts[i], layouts[i], skip)
				s, err := feeder.NewStream(ectx, r.p.data.ds, shares[i], cfg)
				if err != nil {
					errs[i] = fmt.Errorf("estimator: worker %d: %w", i, err)
					return
				}
				defer s.Close()
				results[i], errs[i] = w.runEpoch(ectx, s, epochPlan{
					epoch: epoch, iters: orDefault(e.MiniStochasticIters, 1),
					pullEvery: pullEvery, maxSteps: e.Steps, overlap: e.OverlapPush,
					onBatch: func(index, _ int, _ float64) error {
						done := index + 1
						if every < 0 || done%every != 0 || done >= len(layouts[i]) {
							return nil
						}
						// A consistent point: every worker has pushed the
						// steps of its first done batches, and nothing else.
						if err := w.settle(); err != nil {
							return err
						}
						return bar.wait(ectx, func() error { return r.checkpointAt(ectx, epoch, done) })
					},
				}, &r.examples, e.Hooks.OnStep)
			}()
		}
		wg.Wait()
		cancel()
		if err := errors.Join(errs...); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("estimator: %w", ctx.Err())
			}
			return nil, err
		}
		info := EpochInfo{Epoch: epoch, Epochs: epochs, Metrics: map[string]float64{}, Elapsed: time.Since(t0)}
		rows, allDone := 0, true
		sums := make([]float64, len(r.p.b.Metrics))
		for _, res := range results {
			info.Steps += res.steps
			info.Loss += res.loss
			rows += res.rows
			for i, m := range res.metrics {
				sums[i] += m
			}
			allDone = allDone && res.done
		}
		if info.Steps > 0 {
			info.Loss /= float64(info.Steps)
			for i, m := range r.p.b.Metrics {
				info.Metrics[m.Alias] = sums[i] / float64(info.Steps)
			}
		}
		info.ExamplesSec = float64(rows) / info.Elapsed.Seconds()
		stop, err := r.endEpoch(ctx, info)
		if err != nil {
			return nil, err
		}
		if err := r.checkpoint(ctx, epoch+1); err != nil {
			return nil, err
		}
		if stop || (allDone && e.Steps > 0) {
			break
		}
	}
	return r.weights(ctx)
}

// barrier holds the in-process workers at a mid-epoch checkpoint: the last
// to arrive runs it, and every worker gets its error.
type barrier struct {
	n     int
	mu    sync.Mutex
	count int
	gen   *barrierGen
}

type barrierGen struct {
	done chan struct{}
	err  error
}

func (b *barrier) wait(ctx context.Context, fn func() error) error {
	b.mu.Lock()
	g := b.gen
	b.count++
	if b.count == b.n {
		g.err = fn()
		b.count, b.gen = 0, &barrierGen{done: make(chan struct{})}
		close(g.done)
		b.mu.Unlock()
		return g.err
	}
	b.mu.Unlock()
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// resume reads the progress of an earlier Fit with the same ModelDir: the
// epochs it completed and, for an in-process run, how far into the next
// one it checkpointed. Step counts are kept per in-process worker; a
// progress file written by a run in Processes mode has none.
func (r *run) resume() error {
	n := len(r.workers)
	r.done = progress{Steps: make([]int, n)}
	data, err := os.ReadFile(filepath.Join(r.modelDir, progressFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("estimator: %w", err)
	}
	var p progress
	if err := json.Unmarshal(data, &p); err != nil || (len(p.Steps) != 0 && n != 0 && len(p.Steps) != n) {
		return fmt.Errorf("estimator: %s in %s does not match this run (%d workers); use another ModelDir", progressFile, r.modelDir, n)
	}
	if p.Batch > 0 && (p.Plan != r.planKey()) {
		// The position is within another plan: start the epoch over.
		r.log.Warn("the data or its plan changed since the checkpoint; the epoch in progress starts over", "epoch", p.Epochs+1)
		p.Batch = 0
	}
	if len(p.Steps) != n {
		p.Steps = make([]int, n)
	}
	r.done = p
	for i, w := range r.workers {
		w.steps = p.Steps[i]
	}
	r.log.Info("resuming", "epochs_done", p.Epochs, "batches_done", p.Batch)
	return nil
}

// planKey identifies the data plan a mid-epoch position refers to.
func (r *run) planKey() string { return r.e.planKey(r.p.data, r.e.Workers) }

// planKey identifies the data plan of workers workers over t.
func (e *TFEstimator) planKey(t *trainSet, workers int) string {
	return fmt.Sprintf("rows=%d units=%d workers=%d batch=%d seed=%d shuffle=%t/%d/%d", t.rows, len(t.ds.Units()),
		workers, e.batchSize(), e.Seed, e.ShufflePerIter, e.shuffleBuffer(), e.PartitionShuffles)
}

// endEpoch evaluates on the validation rows, reports the epoch (log,
// TensorBoard, hooks) and decides on early stopping.
func (r *run) endEpoch(ctx context.Context, info EpochInfo) (stop bool, err error) {
	e := r.e
	info.ValLoss = math.NaN()
	if len(r.p.data.val) > 0 {
		if info.ValLoss, info.ValMetrics, err = r.evaluate(ctx, r.p.data.val); err != nil {
			return false, err
		}
	}
	per := time.Since(r.started) / time.Duration(info.Epoch-r.startEpoch+1)
	info.ETA = per * time.Duration(info.Epochs-info.Epoch-1)
	r.log.Info("epoch", "epoch", info.Epoch+1, "of", info.Epochs, "loss", info.Loss, "val_loss", info.ValLoss, "examples/s", info.ExamplesSec)
	if r.tb != nil {
		if err := writeEpochSummary(r.tb, info); err != nil {
			return false, err
		}
	}
	if e.Hooks.OnEpoch != nil {
		e.Hooks.OnEpoch(info)
	}
	es := e.EarlyStopping
	if es == nil {
		return false, nil
	}
	v := info.ValLoss
	if es.Monitor != "" && es.Monitor != "loss" {
		m, ok := info.ValMetrics[es.Monitor]
		if !ok {
			return false, fmt.Errorf("estimator: EarlyStopping monitors %q, which the bundle does not compute", es.Monitor)
		}
		v = -m
	}
	if v < r.best-es.MinDelta {
		r.best, r.bad = v, 0
		return false, nil
	}
	r.bad++
	if r.bad > es.Patience {
		r.log.Info("early stopping", "epoch", info.Epoch+1)
		return true, nil
	}
	return false, nil
}

func writeEpochSummary(tb *tensorboard.Writer, info EpochInfo) error {
	step := int64(info.Epoch + 1)
	scalars := []tensorboard.Scalar{{Tag: "loss", Value: info.Loss}, {Tag: "examples_per_sec", Value: info.ExamplesSec}}
	for k, v := range info.Metrics {
		scalars = append(scalars, tensorboard.Scalar{Tag: k, Value: v})
	}
	if !math.IsNaN(info.ValLoss) {
		scalars = append(scalars, tensorboard.Scalar{Tag: "val_loss", Value: info.ValLoss})
		for k, v := range info.ValMetrics {
			scalars = append(scalars, tensorboard.Scalar{Tag: "val_" + k, Value: v})
		}
	}
	if err := tb.AddScalars(step, scalars...); err != nil {
		return fmt.Errorf("estimator: tensorboard: %w", err)
	}
	return tb.Flush()
}

// checkpoint snapshots the parameter server and records that epochs
// epochs are complete.
func (r *run) checkpoint(ctx context.Context, epochs int) error {
	return r.checkpointAt(ctx, epochs, 0)
}

// checkpointAt snapshots the parameter server and records the position:
// epoch complete epochs and batch batches of the next one. The in-process
// workers are all stopped at that position.
func (r *run) checkpointAt(ctx context.Context, epoch, batch int) error {
	if _, err := r.eval.client.Snapshot(ctx); err != nil {
		return fmt.Errorf("estimator: snapshot: %w", err)
	}
	r.done.Epochs, r.done.Batch, r.done.Plan = epoch, batch, ""
	if batch > 0 {
		r.done.Plan = r.planKey()
	}
	for i, w := range r.workers {
		r.done.Steps[i] = w.steps
	}
	return r.saveProgress()
}

// saveProgress records r.done in ModelDir.
func (r *run) saveProgress() error {
	data, _ := json.Marshal(r.done)
	return writeFileAtomic(filepath.Join(r.modelDir, progressFile), data)
}

// evaluate computes the mean loss and metrics over pieces with the
// current weights, weighting each batch by its rows. It runs the bundle's
// eval graph (training behaviour off, as Keras' model.evaluate), or its
// training graph for a bundle without one.
func (r *run) evaluate(ctx context.Context, pieces []arrowio.Piece) (float64, map[string]float64, error) {
	w := r.eval
	st, err := w.evalStep()
	if err != nil {
		return 0, nil, err
	}
	if err := w.pull(ctx); err != nil {
		return 0, nil, err
	}
	var loss float64
	var rows int
	sums := make([]float64, len(r.p.b.Metrics))
	nIn := len(r.p.b.Inputs)
	err = r.e.batches(ctx, r.p.data, pieces, func(b *feeder.StreamBatch) error {
		out, err := st.Run(ctx, w.weights, b.Tensors[:nIn], b.Tensors[nIn:])
		if err != nil {
			return fmt.Errorf("estimator: evaluate: %w", err)
		}
		defer out.Close()
		l, err := scalar(out.Loss)
		if err != nil {
			return fmt.Errorf("estimator: evaluate: %w", err)
		}
		loss += l * float64(b.Rows)
		for i, t := range out.Metrics {
			m, err := scalar(t)
			if err != nil {
				return fmt.Errorf("estimator: evaluate: %w", err)
			}
			sums[i] += m * float64(b.Rows)
		}
		rows += b.Rows
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	metrics := map[string]float64{}
	for i, m := range r.p.b.Metrics {
		metrics[m.Alias] = sums[i] / float64(max(rows, 1))
	}
	return loss / float64(max(rows, 1)), metrics, nil
}

// weights pulls the current weights through the chief's client.
func (r *run) weights(ctx context.Context) ([]loader.Weight, error) {
	w := r.eval
	if err := w.pull(ctx); err != nil {
		return nil, err
	}
	out := make([]loader.Weight, len(r.p.b.Variables))
	for i, v := range r.p.b.Variables {
		wt, err := loader.WeightOf(v.Name, w.weights[i])
		if err != nil {
			return nil, err
		}
		out[i] = wt
	}
	return out, nil
}

// export freezes the inference graph with the trained weights and writes
// frozen.pb, saved_model/, weights.safetensors and tfmodel.json to the
// export directory. Each is staged beside its target (internal/atomicfile)
// and committed only when all four are complete, saved_model/ first and
// tfmodel.json last, so a failed export leaves the previous model as it
// was; the previous saved_model/ is replaced whole and removed.
func (r *run) export(weights []loader.Weight) (*TFModel, error) {
	b := r.p.b
	frozen, err := b.Freeze(weights)
	if err != nil {
		return nil, fmt.Errorf("estimator: freeze: %w", err)
	}
	dir := r.e.ExportDir
	if dir == "" {
		dir = filepath.Join(r.e.ModelDir, "export")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	const frozenFile, weightsFile, smDir = "frozen.pb", "weights.safetensors", exportSavedModel
	sm, err := atomicfile.CreateDir(filepath.Join(dir, smDir))
	if err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	defer sm.Abort()
	if err := savedmodel.Export(sm.Path(), frozen, savedmodel.SignatureFromBundle(b)); err != nil {
		return nil, err
	}
	var files []*atomicfile.File
	defer func() {
		for _, f := range files {
			f.Abort()
		}
	}()
	stage := func(name string, data []byte) error {
		f, err := atomicfile.Create(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("estimator: export: %w", err)
		}
		files = append(files, f)
		if _, err := f.Write(data); err != nil {
			return fmt.Errorf("estimator: export: %s: %w", name, err)
		}
		return nil
	}
	if err := stage(frozenFile, frozen.Bytes()); err != nil {
		return nil, err
	}
	encoded, err := loader.EncodeWeights(weights, map[string]string{"bundle": b.Dir})
	if err != nil {
		return nil, err
	}
	if err := stage(weightsFile, encoded); err != nil {
		return nil, err
	}
	m := &TFModel{Path: filepath.Join(dir, smDir), InputMapping: map[string]string{}, LabelMapping: map[string]string{},
		Weights: filepath.Join(dir, weightsFile), Logger: r.e.Logger}
	if m.Bundle, err = filepath.Abs(b.Dir); err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	for col, in := range r.e.InputMapping {
		m.InputMapping[col] = in
	}
	for col, l := range r.e.LabelMapping {
		m.LabelMapping[col] = l
	}
	// The full mappings: the inputs' for predict, the labels' for evaluate.
	for _, in := range r.e.Inputs {
		if slices.ContainsFunc(b.Labels, func(l loader.BundleTensor) bool { return l.Alias == in.Tensor }) {
			m.Labels = append(m.Labels, in)
		} else {
			m.Inputs = append(m.Inputs, in)
		}
	}
	// The model's description sits next to it, for `gotflow predict`,
	// `gotflow evaluate` and Load; Path is stored relative to it.
	desc, err := m.encode(dir)
	if err != nil {
		return nil, err
	}
	if err := stage(ModelFile, desc); err != nil {
		return nil, err
	}
	// Everything is written: move it into place.
	if err := sm.Commit(); err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	for _, f := range files {
		if err := f.Commit(); err != nil {
			return nil, fmt.Errorf("estimator: export: %w", err)
		}
	}
	return m, nil
}
