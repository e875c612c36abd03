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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/internal/filelock"
	"github.com/gotflow/gotflow/internal/tensorboard"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// progressFile records, in ModelDir, how many epochs a Fit completed.
const progressFile = "progress.json"

type progress struct {
	Epochs int   `json:"epochs_done"`
	Steps  []int `json:"worker_steps"`
}

// Fit trains the bundle on data and returns a TFModel over the exported
// model. data is read once, converted by the input and label mappings and
// kept in memory for all epochs (row order is the source's); Fit closes it.
//
// Everything is checked before training starts: the parameters
// (Validate), the bundle (loader.LoadBundle), and the mappings against
// data's schema and the bundle's inputs and labels. With Cluster
// InProcess (the default) workers run as goroutines against an in-process
// parameter server of NumPS shards; with Cluster Processes they run as
// `gotflow worker` and `gotflow ps` processes (see Cluster).
func (e *TFEstimator) Fit(ctx context.Context, data feeder.Source) (*TFModel, error) {
	defer data.Close()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var (
		files []string
		where *RowFilter
		err   error
	)
	if e.Cluster == Processes {
		if files, where, err = jobData(data); err != nil {
			return nil, fmt.Errorf("estimator: Cluster \"processes\": every worker process reads the data itself: %w", err)
		}
	}
	p, err := e.prepare(ctx, data)
	if err != nil {
		return nil, err
	}
	r := &run{e: e, p: p, log: e.logger()}
	r.log.Info("training data loaded", "rows", p.td.rows, "train", len(p.trainRows), "validation", len(p.valRows))
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
		final, err = r.fitProcesses(ctx, files, where)
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

// prepared is what every training mode needs: the bundle, the converted
// data and its split, and the parameter server's variables.
type prepared struct {
	b                  *loader.Bundle
	td                 *trainData
	trainRows, valRows []int
	vars               []ps.Variable // float32 variables, with initial values
	mode               ps.Mode
	opt                ps.OptimizerConfig
}

// prepare loads the bundle, checks the mappings and reads data.
func (e *TFEstimator) prepare(ctx context.Context, data feeder.Source) (*prepared, error) {
	b, err := loader.LoadBundle(e.Bundle)
	if err != nil {
		return nil, err
	}
	p := &prepared{b: b}
	for i, v := range b.Variables {
		if v.Trainable && v.DType != tf.Float {
			return nil, fmt.Errorf("estimator: trainable variable %q has dtype %s; the parameter server trains float32 variables only", v.Name, v.DType)
		}
		if !onParameterServer(v) {
			continue
		}
		init, err := b.Weights[i].Tensor()
		if err != nil {
			return nil, err
		}
		vals, _ := tf.Data[float32](init)
		p.vars = append(p.vars, ps.Variable{Name: v.Name, Shape: v.Shape, Trainable: v.Trainable, Init: append([]float32(nil), vals...)})
		init.Close()
	}
	plan, names, err := e.plan(b, data)
	if err != nil {
		return nil, err
	}
	if e.Readers > 1 {
		if data, err = e.parallelSource(data); err != nil {
			return nil, err
		}
		defer data.Close()
	}
	if p.td, err = loadTrainData(ctx, data, plan, names, len(b.Inputs)); err != nil {
		return nil, err
	}
	if p.td.rows == 0 {
		return nil, errors.New("estimator: the training data is empty")
	}
	p.trainRows, p.valRows = splitRows(p.td.rows, e.ValidationSplit)
	if e.ValidationSplit > 0 && len(p.valRows) == 0 {
		return nil, fmt.Errorf("estimator: ValidationSplit %g of %d rows holds out no row; raise it or drop it", e.ValidationSplit, p.td.rows)
	}
	if len(p.trainRows) < e.Workers {
		return nil, fmt.Errorf("estimator: %d training rows for %d workers; every worker needs at least one row", len(p.trainRows), e.Workers)
	}
	p.mode, _ = e.mode()
	p.opt, _ = e.optimizer()
	return p, nil
}

// plan builds the feeder plan for the bundle's inputs then labels.
func (e *TFEstimator) plan(b *loader.Bundle, data feeder.Source) (*feeder.Plan, []string, error) {
	var mapping feeder.Mapping
	var targets []feeder.Target
	var names []string
	add := func(kind string, specs []loader.BundleTensor, m map[string]string) error {
		byName := map[string]string{}
		for col, t := range m {
			byName[t] = col
		}
		known := map[string]bool{}
		for _, s := range specs {
			known[s.Name] = true
			col, ok := byName[s.Name]
			if !ok {
				col = s.Name
			}
			mapping = append(mapping, feeder.Input{Column: col, Tensor: s.Name, Cast: e.Cast})
			targets = append(targets, feeder.Target{Name: s.Name, DType: s.DType, Shape: s.Shape})
			names = append(names, s.Name)
		}
		for col, t := range m {
			if !known[t] {
				have := make([]string, 0, len(specs))
				for _, s := range specs {
					have = append(have, s.Name)
				}
				return fmt.Errorf("estimator: column %q is mapped to %s %q, which the bundle does not have (have: %v)", col, kind, t, have)
			}
		}
		return nil
	}
	if err := add("input", b.Inputs, e.InputMapping); err != nil {
		return nil, nil, err
	}
	if err := add("label", b.Labels, e.LabelMapping); err != nil {
		return nil, nil, err
	}
	plan, err := feeder.NewPlan(data.Schema(), mapping, targets, feeder.NoZeroCopy())
	if err != nil {
		return nil, nil, fmt.Errorf("estimator: %w", err)
	}
	return plan, names, nil
}

// parallelSource reopens data opened with feeder.OpenDataset (optionally
// filtered by feeder.Where) so that Readers goroutines decode its files and
// row groups at once, keeping the row order.
func (e *TFEstimator) parallelSource(data feeder.Source) (feeder.Source, error) {
	files, where, err := jobData(data)
	if err != nil {
		return nil, fmt.Errorf("estimator: Readers %d: %w", e.Readers, err)
	}
	schema := data.Schema()
	if f, ok := data.(*feeder.Filtered); ok {
		schema = f.Unfiltered().Schema()
	}
	src, err := OpenOrdered(files, e.Readers, ReadRows(schema, e.batchSize()))
	if err != nil {
		return nil, err
	}
	if !src.Schema().Equal(schema) {
		src.Close()
		return nil, fmt.Errorf("estimator: Readers %d reads the files again without the dataset's options, which changes the schema to %s; use Readers 1", e.Readers, src.Schema())
	}
	if where != nil {
		return feeder.Where(src, where.Column, where.Value)
	}
	return src, nil
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
		// In process a crash ends the workers too: nothing to log for.
		ps.WithoutWAL()}
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
	bs := e.batchSize()
	seed := uint64(e.Seed)
	pullEvery := e.PullEvery
	if pullEvery == 0 {
		pullEvery = 1
	}
	r.started, r.startEpoch, r.best = time.Now(), r.done.Epochs, math.Inf(1)
	for epoch := r.done.Epochs; epoch < epochs; epoch++ {
		round := 0
		if e.PartitionShuffles > 0 {
			round = epoch * (e.PartitionShuffles + 1) / epochs
		}
		parts := partition(r.p.trainRows, n, e.PartitionShuffles > 0 || e.ShufflePerIter, seed+uint64(round)*7919)
		steps := 0
		if r.p.mode == ps.Sync { // every worker pushes the same number of times
			steps = math.MaxInt
			for _, p := range parts {
				steps = min(steps, (len(p)+bs-1)/bs)
			}
		}
		t0 := time.Now()
		results := make([]epochResult, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, w := range r.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = w.runEpoch(ctx, r.p.td, epochPlan{
					epoch: epoch, rows: parts[i], batchSize: bs, steps: steps, shuffle: e.ShufflePerIter,
					seed: seed + uint64(epoch)*104729, iters: orDefault(e.MiniStochasticIters, 1),
					pullEvery: pullEvery, maxSteps: e.Steps, overlap: e.OverlapPush,
				}, &r.examples, e.Hooks.OnStep)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
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
				info.Metrics[m.Name] = sums[i] / float64(info.Steps)
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

// resume reads the progress of an earlier Fit with the same ModelDir.
// Step counts are kept per in-process worker; a progress file written by a
// run in Processes mode has none.
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
	if len(p.Steps) != n {
		p.Steps = make([]int, n)
	}
	r.done = p
	for i, w := range r.workers {
		w.steps = p.Steps[i]
	}
	r.log.Info("resuming", "epochs_done", p.Epochs)
	return nil
}

// endEpoch evaluates on the validation rows, reports the epoch (log,
// TensorBoard, hooks) and decides on early stopping.
func (r *run) endEpoch(ctx context.Context, info EpochInfo) (stop bool, err error) {
	e := r.e
	info.ValLoss = math.NaN()
	if len(r.p.valRows) > 0 {
		if info.ValLoss, info.ValMetrics, err = r.evaluate(ctx, r.p.valRows, e.batchSize()); err != nil {
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

// checkpoint snapshots the parameter server and records the progress.
func (r *run) checkpoint(ctx context.Context, epochs int) error {
	if _, err := r.eval.client.Snapshot(ctx); err != nil {
		return fmt.Errorf("estimator: snapshot: %w", err)
	}
	r.done.Epochs = epochs
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

// evaluate computes the mean loss and metrics over rows with the current
// weights, weighting each batch by its rows. It runs the bundle's eval
// graph (training behaviour off, as Keras' model.evaluate), or its
// training graph for a bundle without one.
func (r *run) evaluate(ctx context.Context, rows []int, bs int) (float64, map[string]float64, error) {
	w := r.eval
	st, err := w.evalStep()
	if err != nil {
		return 0, nil, err
	}
	if err := w.pull(ctx); err != nil {
		return 0, nil, err
	}
	var loss float64
	sums := make([]float64, len(r.p.b.Metrics))
	for lo := 0; lo < len(rows); lo += bs {
		hi := min(lo+bs, len(rows))
		inputs, labels, err := r.p.td.gather(rows[lo:hi])
		if err != nil {
			return 0, nil, err
		}
		out, err := st.Run(ctx, w.weights, inputs, labels)
		closeAll(inputs)
		closeAll(labels)
		if err != nil {
			return 0, nil, fmt.Errorf("estimator: evaluate: %w", err)
		}
		l, err := scalar(out.Loss)
		if err == nil {
			loss += l * float64(hi-lo)
			for i, t := range out.Metrics {
				var m float64
				if m, err = scalar(t); err != nil {
					break
				}
				sums[i] += m * float64(hi-lo)
			}
		}
		out.Close()
		if err != nil {
			return 0, nil, fmt.Errorf("estimator: evaluate: %w", err)
		}
	}
	metrics := map[string]float64{}
	for i, m := range r.p.b.Metrics {
		metrics[m.Name] = sums[i] / float64(len(rows))
	}
	return loss / float64(len(rows)), metrics, nil
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
// export directory. Everything is written to a staging directory inside it
// first and moved into place only when complete, so a failed export leaves
// the previous model as it was.
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
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	stage, err := os.MkdirTemp(dir, ".export-")
	if err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	defer os.RemoveAll(stage)
	const frozenFile, weightsFile, smDir = "frozen.pb", "weights.safetensors", "saved_model"
	if err := os.WriteFile(filepath.Join(stage, frozenFile), frozen.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	if err := loader.WriteWeights(filepath.Join(stage, weightsFile), weights, map[string]string{"bundle": b.Dir}); err != nil {
		return nil, err
	}
	if err := savedmodel.Export(filepath.Join(stage, smDir), frozen, savedmodel.SignatureFromBundle(b)); err != nil {
		return nil, err
	}
	m := &TFModel{Path: filepath.Join(stage, smDir), InputMapping: map[string]string{}, LabelMapping: map[string]string{},
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
	// The model's description sits next to it, for `gotflow predict`,
	// `gotflow evaluate` and Load; Path is stored relative to it.
	if err := m.Save(stage); err != nil {
		return nil, err
	}
	// Everything is written: move it into place. The previous SavedModel
	// is moved aside into the staging directory, which is removed last.
	if _, err := os.Stat(filepath.Join(dir, smDir)); err == nil {
		if err := os.Rename(filepath.Join(dir, smDir), filepath.Join(stage, "previous")); err != nil {
			return nil, fmt.Errorf("estimator: export: %w", err)
		}
	}
	for _, name := range []string{smDir, frozenFile, weightsFile, ModelFile} {
		if err := os.Rename(filepath.Join(stage, name), filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("estimator: export: %w", err)
		}
	}
	m.Path = filepath.Join(dir, smDir)
	return m, nil
}
