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
// data's schema and the bundle's inputs and labels. Workers run as
// goroutines against an in-process parameter server of NumPS shards.
func (e *TFEstimator) Fit(ctx context.Context, data feeder.Source) (*TFModel, error) {
	defer data.Close()
	if err := e.Validate(); err != nil {
		return nil, err
	}
	log := e.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := loader.LoadBundle(e.Bundle)
	if err != nil {
		return nil, err
	}
	for _, v := range b.Variables {
		if v.Trainable && v.DType != tf.Float {
			return nil, fmt.Errorf("estimator: trainable variable %q has dtype %s; the parameter server trains float32 variables only", v.Name, v.DType)
		}
	}
	plan, names, err := e.plan(b, data)
	if err != nil {
		return nil, err
	}
	td, err := loadTrainData(ctx, data, plan, names, len(b.Inputs))
	if err != nil {
		return nil, err
	}
	if td.rows == 0 {
		return nil, errors.New("estimator: the training data is empty")
	}
	trainRows, valRows := splitRows(td.rows, e.ValidationSplit)
	workers := e.Workers
	if len(trainRows) < workers {
		return nil, fmt.Errorf("estimator: %d training rows for %d workers; every worker needs at least one row", len(trainRows), workers)
	}
	log.Info("training data loaded", "rows", td.rows, "train", len(trainRows), "validation", len(valRows))

	modelDir := e.ModelDir
	if modelDir == "" {
		if modelDir, err = os.MkdirTemp("", "gotflow-fit-"); err != nil {
			return nil, fmt.Errorf("estimator: %w", err)
		}
		defer os.RemoveAll(modelDir)
	} else if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return nil, fmt.Errorf("estimator: model dir: %w", err)
	}
	mode, _ := e.mode()
	opt, _ := e.optimizer()
	srvOpts := []ps.ServerOption{ps.WithMode(mode), ps.WithOptimizer(opt), ps.WithWorkers(workers),
		ps.WithSnapshotDir(filepath.Join(modelDir, "ps"), 0, 0)}
	if mode == ps.BoundedStaleness {
		srvOpts = append(srvOpts, ps.WithMaxStaleness(uint64(orDefault(e.MaxStaleness, 4))))
	}
	cluster, err := ps.NewLocalCluster(orDefault(e.NumPS, 1), srvOpts...)
	if err != nil {
		return nil, err
	}
	defer cluster.Close()

	r := &run{e: e, b: b, td: td, log: log, cluster: cluster, modelDir: modelDir, mode: mode}
	if err := r.start(ctx, workers); err != nil {
		r.close()
		return nil, err
	}
	defer r.close()
	if err := r.train(ctx, trainRows, valRows); err != nil {
		return nil, err
	}
	return r.export(ctx)
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

// run is the state of one Fit.
type run struct {
	e        *TFEstimator
	b        *loader.Bundle
	td       *trainData
	log      *slog.Logger
	cluster  *ps.LocalCluster
	modelDir string
	mode     ps.Mode

	clients  []*ps.Client
	workers  []*trainWorker
	eval     *trainWorker // the chief's view, for evaluation and export
	done     progress
	examples atomic.Int64
}

func (r *run) sessionOptions() []tf.SessionOption {
	return []tf.SessionOption{tf.WithIntraOpThreads(r.e.IntraOpThreads), tf.WithInterOpThreads(r.e.InterOpThreads)}
}

func (r *run) start(ctx context.Context, n int) error {
	var vars []ps.Variable
	for i, v := range r.b.Variables {
		if !onParameterServer(v) {
			continue
		}
		init, err := r.b.Weights[i].Tensor()
		if err != nil {
			return err
		}
		vals, _ := tf.Data[float32](init)
		vars = append(vars, ps.Variable{Name: v.Name, Shape: v.Shape, Trainable: v.Trainable, Init: append([]float32(nil), vals...)})
		init.Close()
	}
	for i := 0; i <= n; i++ { // n workers, then the chief's evaluation client
		c, err := r.cluster.Dial(ctx, ps.WithWorkerID("worker-"+strconv.Itoa(i)))
		if err != nil {
			return err
		}
		r.clients = append(r.clients, c)
		if err := c.Register(ctx, vars); err != nil {
			return fmt.Errorf("estimator: register variables: %w", err)
		}
		w, err := newTrainWorker(ctx, i, r.b, c, r.sessionOptions())
		if err != nil {
			return err
		}
		if i < n {
			r.workers = append(r.workers, w)
		} else {
			r.eval = w
		}
	}
	r.done = progress{Steps: make([]int, n)}
	if data, err := os.ReadFile(filepath.Join(r.modelDir, progressFile)); err == nil {
		var p progress
		if err := json.Unmarshal(data, &p); err != nil || len(p.Steps) != n {
			return fmt.Errorf("estimator: %s in %s does not match this run (%d workers); use another ModelDir", progressFile, r.modelDir, n)
		}
		r.done = p
		for i, w := range r.workers {
			w.steps = p.Steps[i]
		}
		r.log.Info("resuming", "epochs_done", p.Epochs)
	}
	return nil
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

func (r *run) train(ctx context.Context, trainRows, valRows []int) error {
	e := r.e
	epochs := orDefault(e.Epochs, DefaultEpochs)
	bs := e.batchSize()
	n := len(r.workers)
	seed := uint64(e.Seed)
	pullEvery := e.PullEvery
	if pullEvery == 0 {
		pullEvery = 1
	}
	var tb *tensorboard.Writer
	if e.TensorBoardDir != "" {
		var err error
		if tb, err = tensorboard.NewWriter(e.TensorBoardDir); err != nil {
			return fmt.Errorf("estimator: tensorboard: %w", err)
		}
		defer tb.Close()
	}
	best, bad := math.Inf(1), 0
	started := time.Now()
	for epoch := r.done.Epochs; epoch < epochs; epoch++ {
		round := 0
		if e.PartitionShuffles > 0 {
			round = epoch * (e.PartitionShuffles + 1) / epochs
		}
		parts := partition(trainRows, n, e.PartitionShuffles > 0 || e.ShufflePerIter, seed+uint64(round)*7919)
		steps := 0
		if r.mode == ps.Sync { // every worker pushes the same number of times
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
				results[i], errs[i] = w.runEpoch(ctx, r.td, epochPlan{
					epoch: epoch, rows: parts[i], batchSize: bs, steps: steps, shuffle: e.ShufflePerIter,
					seed: seed + uint64(epoch)*104729, iters: orDefault(e.MiniStochasticIters, 1),
					pullEvery: pullEvery, maxSteps: e.Steps,
				}, &r.examples, e.Hooks.OnStep)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		info := EpochInfo{Epoch: epoch, Epochs: epochs, Metrics: map[string]float64{}, ValLoss: math.NaN(), Elapsed: time.Since(t0)}
		rows, allDone := 0, true
		sums := make([]float64, len(r.b.Metrics))
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
			for i, m := range r.b.Metrics {
				info.Metrics[m.Name] = sums[i] / float64(info.Steps)
			}
		}
		info.ExamplesSec = float64(rows) / info.Elapsed.Seconds()
		if len(valRows) > 0 {
			var err error
			if info.ValLoss, info.ValMetrics, err = r.evaluate(ctx, valRows, bs); err != nil {
				return err
			}
		}
		per := time.Since(started) / time.Duration(epoch-r.done.Epochs+1)
		info.ETA = per * time.Duration(epochs-epoch-1)
		r.log.Info("epoch", "epoch", epoch+1, "of", epochs, "loss", info.Loss, "val_loss", info.ValLoss, "examples/s", info.ExamplesSec)
		if tb != nil {
			if err := writeEpochSummary(tb, info); err != nil {
				return err
			}
		}
		if e.Hooks.OnEpoch != nil {
			e.Hooks.OnEpoch(info)
		}
		if err := r.checkpoint(ctx, epoch+1); err != nil {
			return err
		}
		if allDone && e.Steps > 0 {
			break
		}
		if es := e.EarlyStopping; es != nil {
			v := info.ValLoss
			if es.Monitor != "" && es.Monitor != "loss" {
				m, ok := info.ValMetrics[es.Monitor]
				if !ok {
					return fmt.Errorf("estimator: EarlyStopping monitors %q, which the bundle does not compute", es.Monitor)
				}
				v = -m
			}
			if v < best-es.MinDelta {
				best, bad = v, 0
			} else if bad++; bad > es.Patience {
				r.log.Info("early stopping", "epoch", epoch+1)
				break
			}
		}
	}
	return nil
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
	data, _ := json.Marshal(r.done)
	return writeFileAtomic(filepath.Join(r.modelDir, progressFile), data)
}

// evaluate computes the mean loss and metrics over rows with the current
// weights, weighting each batch by its rows.
func (r *run) evaluate(ctx context.Context, rows []int, bs int) (float64, map[string]float64, error) {
	w := r.eval
	if err := w.pull(ctx); err != nil {
		return 0, nil, err
	}
	var loss float64
	sums := make([]float64, len(r.b.Metrics))
	for lo := 0; lo < len(rows); lo += bs {
		hi := min(lo+bs, len(rows))
		inputs, labels, err := r.td.gather(rows[lo:hi])
		if err != nil {
			return 0, nil, err
		}
		out, err := w.step.Run(ctx, w.weights, inputs, labels)
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
	for i, m := range r.b.Metrics {
		metrics[m.Name] = sums[i] / float64(len(rows))
	}
	return loss / float64(len(rows)), metrics, nil
}

// export freezes the inference graph with the trained weights and writes
// it as frozen.pb and saved_model/ in the export directory.
func (r *run) export(ctx context.Context) (*TFModel, error) {
	w := r.eval
	if err := w.pull(ctx); err != nil {
		return nil, err
	}
	weights := make([]loader.Weight, len(r.b.Variables))
	for i, v := range r.b.Variables {
		wt, err := loader.WeightOf(v.Name, w.weights[i])
		if err != nil {
			return nil, err
		}
		weights[i] = wt
	}
	frozen, err := r.b.Freeze(weights)
	if err != nil {
		return nil, fmt.Errorf("estimator: freeze: %w", err)
	}
	dir := r.e.ExportDir
	if dir == "" {
		if r.e.ModelDir == "" {
			return nil, errors.New("estimator: set ExportDir (or ModelDir) to keep the trained model")
		}
		dir = filepath.Join(r.e.ModelDir, "export")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "frozen.pb"), frozen.Bytes()); err != nil {
		return nil, err
	}
	smDir := filepath.Join(dir, "saved_model")
	if err := os.RemoveAll(smDir); err != nil {
		return nil, fmt.Errorf("estimator: export: %w", err)
	}
	if err := savedmodel.Export(smDir, frozen, savedmodel.SignatureFromBundle(r.b)); err != nil {
		return nil, err
	}
	m := &TFModel{Path: smDir, InputMapping: map[string]string{}, Logger: r.e.Logger}
	for col, in := range r.e.InputMapping {
		m.InputMapping[col] = in
	}
	return m, nil
}
