package estimator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/tf"
)

// trainWorker runs training steps for one data partition: it feeds the
// weights it last pulled, computes loss and gradients with the bundle's
// training graph, and pushes the gradients to the parameter server.
type trainWorker struct {
	id     int
	b      *loader.Bundle
	step   *loader.TrainStep
	client *ps.Client
	opts   []tf.SessionOption
	// eval computes validation loss and metrics with training behaviour
	// off; only the chief's worker evaluates, so it is opened on first use
	// (evalStep).
	eval *loader.EvalStep

	// Variables live on the parameter server (float32) or, for
	// non-trainable state of other types such as a dropout layer's RNG
	// state, in the worker itself: each worker then draws its own stream.
	onPS    []int        // bundle variable indices on the parameter server
	vars    []ps.Tensor  // last pulled values, one per onPS entry
	weights []*tf.Tensor // one per bundle variable, fed to the step
	grads   []ps.Tensor  // one per trainable variable; Values alias step results
	updates []ps.Tensor  // one per stateful variable on the parameter server
	stateAt []int        // per Stateful() entry: index into updates, or -1 if local
	steps   int          // steps run so far
	pending *inflight    // the push still running while the next step computes
}

// inflight is a push (with its state assignments) that runs while the next
// step computes (OverlapPush).
type inflight struct {
	out  *loader.StepResult // kept open: the pushed values alias its tensors
	pull bool
	step int
	done chan error
}

// settle waits for the in-flight push, if any, and applies the weights it
// pulled.
func (w *trainWorker) settle() error {
	p := w.pending
	if p == nil {
		return nil
	}
	w.pending = nil
	err := <-p.done
	p.out.Close()
	if err != nil {
		return fmt.Errorf("estimator: worker %d step %d: push gradients: %w", w.id, p.step, err)
	}
	if p.pull {
		return w.refresh()
	}
	return nil
}

// push sends a step's state assignments and gradients, pulling the new
// weights into w.vars when pull is set; pos, if not nil, is the input
// position the shards keep with the gradients.
func (w *trainWorker) push(ctx context.Context, grads, updates []ps.Tensor, pull bool, pos []byte) error {
	if len(updates) > 0 {
		if err := w.client.Assign(ctx, updates); err != nil {
			return fmt.Errorf("assign state: %w", err)
		}
	}
	var opts []ps.PushOption
	if pos != nil {
		opts = append(opts, ps.AtPosition(pos))
	}
	var err error
	if pull {
		_, err = w.client.PushPull(ctx, grads, w.vars, opts...)
	} else {
		_, err = w.client.Push(ctx, grads, opts...)
	}
	return err
}

// onParameterServer reports whether a variable is kept by the parameter
// server (float32) rather than by each worker.
func onParameterServer(v loader.Variable) bool { return v.DType == tf.Float }

func newTrainWorker(ctx context.Context, id int, b *loader.Bundle, client *ps.Client, opts []tf.SessionOption) (*trainWorker, error) {
	step, err := b.NewTrainStep(opts...)
	if err != nil {
		return nil, err
	}
	w := &trainWorker{id: id, b: b, step: step, client: client, opts: opts, weights: make([]*tf.Tensor, len(b.Variables))}
	for i, v := range b.Variables {
		if onParameterServer(v) {
			w.onPS = append(w.onPS, i)
			w.vars = append(w.vars, ps.Tensor{Name: v.Name, Values: make([]float32, elements(v.Shape))})
			continue
		}
		if w.weights[i], err = b.Weights[i].Tensor(); err != nil {
			w.Close()
			return nil, err
		}
	}
	for _, i := range b.Trainable() {
		w.grads = append(w.grads, ps.Tensor{Name: b.Variables[i].Name})
	}
	for _, i := range b.Stateful() {
		if onParameterServer(b.Variables[i]) {
			w.stateAt = append(w.stateAt, len(w.updates))
			w.updates = append(w.updates, ps.Tensor{Name: b.Variables[i].Name})
		} else {
			w.stateAt = append(w.stateAt, -1)
		}
	}
	if err := w.pull(ctx); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

func elements(shape []int64) int {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	return n
}

// pull fetches the current weights from the parameter server.
func (w *trainWorker) pull(ctx context.Context) error {
	if err := w.client.Pull(ctx, w.vars); err != nil {
		return fmt.Errorf("estimator: worker %d: pull weights: %w", w.id, err)
	}
	return w.refresh()
}

// refresh rebuilds the parameter-server weight tensors from the pulled
// values.
func (w *trainWorker) refresh() error {
	for k, i := range w.onPS {
		v := w.b.Variables[i]
		t, err := tf.NewTensor(v.Shape, w.vars[k].Values)
		if err != nil {
			return fmt.Errorf("estimator: weight %s: %w", v.Name, err)
		}
		w.weights[i].Close()
		w.weights[i] = t
	}
	return nil
}

// epochPlan is how one worker runs its share of an epoch.
type epochPlan struct {
	epoch     int
	iters     int  // steps per mini-batch (MiniStochasticIters)
	pullEvery int  // <0: once per epoch
	maxSteps  int  // stop after this many steps in total (0: no limit)
	overlap   bool // push while the next step computes (OverlapPush)
	// onBatch, if set, is called after each batch's steps with the batch's
	// index in the share, its rows and its last loss; an error ends the
	// epoch.
	onBatch func(index, rows int, loss float64) error
	// position, if set, gives the input position to push with the last
	// step of batch index (ps.AtPosition): the batches done once it is
	// applied, and the worker's steps.
	position func(batches, steps int) []byte
}

// epochResult sums what a worker saw in one epoch.
type epochResult struct {
	steps   int
	rows    int
	loss    float64
	metrics []float64
	done    bool // the worker reached maxSteps
}

// runEpoch trains on every batch of s: the one training loop of every
// cluster mode.
func (w *trainWorker) runEpoch(ctx context.Context, s *feeder.Stream, p epochPlan, examples *atomic.Int64, onStep func(StepInfo)) (res epochResult, err error) {
	defer func() {
		if err != nil {
			w.settle() // do not leave a push running past a failed epoch
		}
	}()
	res = epochResult{metrics: make([]float64, len(w.b.Metrics))}
	nIn := len(w.b.Inputs)
	sincePull := 0
	for {
		b, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("estimator: worker %d: read data: %w", w.id, err)
		}
		inputs, labels := b.Tensors[:nIn], b.Tensors[nIn:]
		var loss float64
		for it := 0; it < p.iters; it++ {
			if p.maxSteps > 0 && w.steps >= p.maxSteps {
				res.done = true
				break
			}
			sincePull++
			pull := p.pullEvery > 0 && sincePull >= p.pullEvery
			var pos []byte
			if p.position != nil && it == p.iters-1 {
				pos = p.position(b.Index+1, w.steps+1)
			}
			loss, err = w.trainStep(ctx, inputs, labels, pull, p.overlap, pos, &res)
			if err != nil {
				b.Close()
				return res, err
			}
			if pull {
				sincePull = 0
			}
			n := examples.Add(int64(b.Rows))
			res.rows += b.Rows
			if onStep != nil {
				onStep(StepInfo{Worker: w.id, Epoch: p.epoch, Batch: b.Index, Step: w.steps, Rows: b.Rows, Loss: loss, Examples: n})
			}
		}
		b.Close() // an in-flight push (OverlapPush) reads the step's results, not its inputs
		if res.done {
			break
		}
		if p.onBatch != nil {
			if err := p.onBatch(b.Index, b.Rows, loss); err != nil {
				return res, err
			}
		}
	}
	if err := w.settle(); err != nil {
		return res, err
	}
	if p.pullEvery < 0 || sincePull > 0 {
		if err := w.pull(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}

// trainStep runs one step and pushes its gradients (pulling the new
// weights in the same round trip when pull is set). With overlap, the push
// runs while the next step computes on the weights from before this one:
// one more step of staleness, in exchange for hiding the round trip.
func (w *trainWorker) trainStep(ctx context.Context, inputs, labels []*tf.Tensor, pull, overlap bool, pos []byte, res *epochResult) (float64, error) {
	out, err := w.step.Run(ctx, w.weights, inputs, labels)
	if err != nil {
		return 0, fmt.Errorf("estimator: worker %d step %d: %w", w.id, w.steps, err)
	}
	keep := false
	defer func() {
		if !keep {
			out.Close()
		}
	}()
	loss, err := scalar(out.Loss)
	if err != nil {
		return 0, fmt.Errorf("estimator: loss: %w", err)
	}
	for i, t := range out.Metrics {
		m, err := scalar(t)
		if err != nil {
			return 0, fmt.Errorf("estimator: metric %s: %w", w.b.Metrics[i].Alias, err)
		}
		res.metrics[i] += m
	}
	grads, updates := w.grads, w.updates
	if overlap { // the previous step's push may still read w.grads and w.updates
		grads, updates = append([]ps.Tensor(nil), w.grads...), append([]ps.Tensor(nil), w.updates...)
	}
	for i, g := range out.Gradients {
		if grads[i].Values, err = tf.Data[float32](g); err != nil {
			return 0, fmt.Errorf("estimator: gradient of %s: %w", grads[i].Name, err)
		}
	}
	for k, u := range out.Updates {
		if at := w.stateAt[k]; at >= 0 {
			if updates[at].Values, err = tf.Data[float32](u); err != nil {
				return 0, fmt.Errorf("estimator: state update of %s: %w", updates[at].Name, err)
			}
			continue
		}
		i := w.b.Stateful()[k]
		// Local state: keep a copy of the new value for the next step.
		t, err := tf.NewTensorFill(u.DataType(), u.Shape(), func(buf []byte) error { copy(buf, u.Bytes()); return nil })
		if err != nil {
			return 0, fmt.Errorf("estimator: state update of %s: %w", w.b.Variables[i].Name, err)
		}
		w.weights[i].Close()
		w.weights[i] = t
	}
	if err := w.settle(); err != nil {
		return 0, err
	}
	if overlap {
		p := &inflight{out: out, pull: pull, step: w.steps, done: make(chan error, 1)}
		keep = true
		w.pending = p
		go func() { p.done <- w.push(ctx, grads, updates, pull, pos) }()
	} else {
		if err := w.push(ctx, grads, updates, pull, pos); err != nil {
			return 0, fmt.Errorf("estimator: worker %d step %d: push gradients: %w", w.id, w.steps, err)
		}
		if pull {
			if err := w.refresh(); err != nil {
				return 0, err
			}
		}
	}
	w.steps++
	res.steps++
	res.loss += loss
	return loss, nil
}

func closeAll(ts []*tf.Tensor) {
	for _, t := range ts {
		t.Close()
	}
}

// scalar reads a float32 (or float64) tensor with one element.
func scalar(t *tf.Tensor) (float64, error) {
	if t.NumElements() != 1 {
		return 0, fmt.Errorf("want a scalar, got shape %v", t.Shape())
	}
	switch t.DataType() {
	case tf.Float:
		v, err := tf.Data[float32](t)
		if err != nil {
			return 0, err
		}
		return float64(v[0]), nil
	case tf.Double:
		v, err := tf.Data[float64](t)
		if err != nil {
			return 0, err
		}
		return v[0], nil
	}
	return 0, fmt.Errorf("want float32 or float64, got %s", t.DataType())
}

// evalStep returns the worker's evaluation step, opening it on first use.
// It runs the bundle's eval graph, or its training graph (in training
// mode) for a bundle without one.
func (w *trainWorker) evalStep() (*loader.EvalStep, error) {
	if w.eval == nil {
		st, err := w.b.NewEvalStep(w.opts...)
		if err != nil {
			return nil, fmt.Errorf("estimator: evaluate: %w", err)
		}
		w.eval = st
	}
	return w.eval, nil
}

// Close frees the worker's sessions and tensors; the client is the caller's.
func (w *trainWorker) Close() error {
	w.settle() // an in-flight push (OverlapPush) must end before its tensors and client go
	closeAll(w.weights)
	w.weights = nil
	var err error
	if w.eval != nil {
		err = w.eval.Close()
	}
	return errors.Join(w.step.Close(), err)
}
