package loader

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gotflow/gotflow/tf"
)

// TrainStep runs a bundle's training graph: feed weights, inputs and
// labels; fetch the loss, the gradients, the metrics and the updated state.
// It owns a tf.Graph and a tf.Session; Close frees them (and waits for
// in-flight runs). Run may be called from several goroutines at once.
type TrainStep struct {
	b *Bundle
	graphSession
	weights []tf.Output // per variable; Op nil if the graph does not read it
	inputs  []tf.Output
	labels  []tf.Output
	fetches []tf.Output // loss, gradients, metrics, updates
}

// StepResult is what one training step computed. The caller owns the
// tensors; Close frees them all.
type StepResult struct {
	Loss *tf.Tensor
	// Gradients are in the order of Bundle.Trainable().
	Gradients []*tf.Tensor
	// Metrics are in the order of Bundle.Metrics.
	Metrics []*tf.Tensor
	// Updates hold the new state values, in the order of Bundle.Stateful().
	Updates []*tf.Tensor
}

// Close frees the result's tensors.
func (r *StepResult) Close() error {
	if r == nil {
		return nil
	}
	r.Loss.Close()
	for _, ts := range [][]*tf.Tensor{r.Gradients, r.Metrics, r.Updates} {
		for _, t := range ts {
			t.Close()
		}
	}
	return nil
}

// NewTrainStep imports the training graph and opens a session on it.
func (b *Bundle) NewTrainStep(opts ...tf.SessionOption) (*TrainStep, error) {
	g, err := b.Train.Import()
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", b.Manifest.TrainGraph, err)
	}
	st := &TrainStep{b: b, graphSession: graphSession{g: g}}
	fail := func(err error) (*TrainStep, error) {
		g.Close()
		return nil, fmt.Errorf("loader: train step: %w", err)
	}
	if st.weights, err = weightOutputs(g, b.Train, b.Variables, trainPlaceholder); err != nil {
		return fail(err)
	}
	if st.inputs, err = outputs(g, b.Inputs); err != nil {
		return fail(err)
	}
	if st.labels, err = outputs(g, b.Labels); err != nil {
		return fail(err)
	}
	names := []string{b.Loss.Name}
	for _, i := range b.Trainable() {
		names = append(names, b.Variables[i].Gradient)
	}
	for _, m := range b.Metrics {
		names = append(names, m.Name)
	}
	for _, i := range b.Stateful() {
		names = append(names, b.Variables[i].Update)
	}
	for _, n := range names {
		o, err := g.Output(n)
		if err != nil {
			return fail(err)
		}
		st.fetches = append(st.fetches, o)
	}
	if st.s, err = tf.NewSession(g, opts...); err != nil {
		return fail(err)
	}
	return st, nil
}

// Run runs one step. weights holds one tensor per Bundle.Variables entry
// (nil for variables the training graph does not read), inputs one per
// Bundle.Inputs, labels one per Bundle.Labels. The tensors are borrowed.
func (st *TrainStep) Run(ctx context.Context, weights, inputs, labels []*tf.Tensor) (*StepResult, error) {
	b := st.b
	feeds, err := weightFeeds(b, st.weights, weights, "train")
	if err != nil {
		return nil, err
	}
	if feeds, err = appendFeeds(feeds, "input", b.Inputs, st.inputs, inputs); err != nil {
		return nil, err
	}
	if feeds, err = appendFeeds(feeds, "label", b.Labels, st.labels, labels); err != nil {
		return nil, err
	}
	out, err := st.s.Run(ctx, feeds, st.fetches, nil)
	if err != nil {
		return nil, fmt.Errorf("loader: train step: %w", err)
	}
	nt, nm := len(b.Trainable()), len(b.Metrics)
	return &StepResult{
		Loss:      out[0],
		Gradients: out[1 : 1+nt],
		Metrics:   out[1+nt : 1+nt+nm],
		Updates:   out[1+nt+nm:],
	}, nil
}

// EvalStep runs a bundle's evaluation graph: feed weights, inputs and
// labels; fetch the loss and the metrics. With Bundle.Eval it computes what
// Keras' model.evaluate reports, with training behaviour off (dropout off,
// batch-norm moving statistics). A bundle without an eval graph is
// evaluated with its training graph, fetching only the loss and metrics:
// that runs in training mode (dropout on, batch-norm batch statistics), so
// the values are those of a training step (TrainingMode reports which).
// It owns a tf.Graph and a tf.Session; Close frees them (and waits for
// in-flight runs). Run may be called from several goroutines at once.
type EvalStep struct {
	b *Bundle
	graphSession
	training bool
	weights  []tf.Output // per variable; Op nil if the graph does not read it
	inputs   []tf.Output
	labels   []tf.Output
	fetches  []tf.Output // loss, metrics
}

// EvalResult is what one evaluation step computed. The caller owns the
// tensors; Close frees them all.
type EvalResult struct {
	Loss *tf.Tensor
	// Metrics are in the order of Bundle.Metrics.
	Metrics []*tf.Tensor
}

// Close frees the result's tensors.
func (r *EvalResult) Close() error {
	if r == nil {
		return nil
	}
	r.Loss.Close()
	for _, t := range r.Metrics {
		t.Close()
	}
	return nil
}

// NewEvalStep imports the evaluation graph (the training graph when the
// bundle has none) and opens a session on it.
func (b *Bundle) NewEvalStep(opts ...tf.SessionOption) (*EvalStep, error) {
	def, file := b.Eval, b.Manifest.EvalGraph
	if def == nil {
		def, file = b.Train, b.Manifest.TrainGraph
	}
	g, err := def.Import()
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", file, err)
	}
	st := &EvalStep{b: b, graphSession: graphSession{g: g}, training: b.Eval == nil}
	fail := func(err error) (*EvalStep, error) {
		g.Close()
		return nil, fmt.Errorf("loader: eval step: %s: %w", file, err)
	}
	if st.weights, err = weightOutputs(g, def, b.Variables, trainPlaceholder); err != nil {
		return fail(err)
	}
	if st.inputs, err = outputs(g, b.Inputs); err != nil {
		return fail(err)
	}
	if st.labels, err = outputs(g, b.Labels); err != nil {
		return fail(err)
	}
	if st.fetches, err = outputs(g, append([]BundleTensor{b.Loss}, b.Metrics...)); err != nil {
		return fail(err)
	}
	if st.s, err = tf.NewSession(g, opts...); err != nil {
		return fail(err)
	}
	return st, nil
}

// TrainingMode reports whether the step runs the training graph (the
// bundle has no eval graph), so dropout and batch-norm behave as in
// training.
func (st *EvalStep) TrainingMode() bool { return st.training }

// Run computes the loss and metrics for one batch. weights holds one tensor
// per Bundle.Variables entry (nil for variables the graph does not read),
// inputs one per Bundle.Inputs, labels one per Bundle.Labels. The tensors
// are borrowed.
func (st *EvalStep) Run(ctx context.Context, weights, inputs, labels []*tf.Tensor) (*EvalResult, error) {
	b := st.b
	feeds, err := weightFeeds(b, st.weights, weights, "eval")
	if err != nil {
		return nil, err
	}
	if feeds, err = appendFeeds(feeds, "input", b.Inputs, st.inputs, inputs); err != nil {
		return nil, err
	}
	if feeds, err = appendFeeds(feeds, "label", b.Labels, st.labels, labels); err != nil {
		return nil, err
	}
	out, err := st.s.Run(ctx, feeds, st.fetches, nil)
	if err != nil {
		return nil, fmt.Errorf("loader: eval step: %w", err)
	}
	return &EvalResult{Loss: out[0], Metrics: out[1:]}, nil
}

// Predictor runs a bundle's inference graph with weights fed per call (for
// evaluation during training; a trained model is frozen with Freeze). Run
// may be called from several goroutines at once; Close frees the session and
// graph.
type Predictor struct {
	b *Bundle
	graphSession
	weights []tf.Output
	inputs  []tf.Output
	fetches []tf.Output
}

// NewPredictor imports the inference graph and opens a session on it.
func (b *Bundle) NewPredictor(opts ...tf.SessionOption) (*Predictor, error) {
	g, err := b.Infer.Import()
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", b.Manifest.InferGraph, err)
	}
	p := &Predictor{b: b, graphSession: graphSession{g: g}}
	fail := func(err error) (*Predictor, error) {
		g.Close()
		return nil, fmt.Errorf("loader: predictor: %w", err)
	}
	if p.weights, err = weightOutputs(g, b.Infer, b.Variables, inferPlaceholder); err != nil {
		return fail(err)
	}
	if p.inputs, err = outputs(g, b.Inputs); err != nil {
		return fail(err)
	}
	if p.fetches, err = outputs(g, b.Outputs); err != nil {
		return fail(err)
	}
	if p.s, err = tf.NewSession(g, opts...); err != nil {
		return fail(err)
	}
	return p, nil
}

// Run computes the outputs (in Bundle.Outputs order; the caller owns them).
func (p *Predictor) Run(ctx context.Context, weights, inputs []*tf.Tensor) ([]*tf.Tensor, error) {
	feeds, err := weightFeeds(p.b, p.weights, weights, "infer")
	if err != nil {
		return nil, err
	}
	if feeds, err = appendFeeds(feeds, "input", p.b.Inputs, p.inputs, inputs); err != nil {
		return nil, err
	}
	out, err := p.s.Run(ctx, feeds, p.fetches, nil)
	if err != nil {
		return nil, fmt.Errorf("loader: predictor: %w", err)
	}
	return out, nil
}

// WeightTensors copies the bundle's initial weights into tensors, one per
// variable; the caller owns them.
func (b *Bundle) WeightTensors() ([]*tf.Tensor, error) {
	out := make([]*tf.Tensor, len(b.Weights))
	for i, w := range b.Weights {
		t, err := w.Tensor()
		if err != nil {
			for _, o := range out[:i] {
				o.Close()
			}
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

func trainPlaceholder(v Variable) string { return v.TrainPlaceholder }
func inferPlaceholder(v Variable) string { return v.InferPlaceholder }

// graphSession is a graph imported from a bundle and a session on it.
type graphSession struct {
	g *tf.Graph
	s *tf.Session
}

// Close closes the session (waiting for in-flight runs) and the graph; it
// is idempotent.
func (gs *graphSession) Close() error {
	var err error
	if gs.s != nil {
		err = gs.s.Close()
	}
	return errors.Join(err, gs.g.Close())
}

// weightOutputs looks up each variable's placeholder (named by ph) in g,
// imported from def; the Output's Op is nil for a variable without one or
// whose placeholder def does not have (the graph does not read it).
func weightOutputs(g *tf.Graph, def *GraphDef, vars []Variable, ph func(Variable) string) ([]tf.Output, error) {
	out := make([]tf.Output, len(vars))
	for i, v := range vars {
		name := ph(v)
		if name == "" {
			continue
		}
		if op, _, err := tf.ParseOutputName(name); err == nil {
			if _, ok := def.Node(op); !ok {
				continue
			}
		}
		o, err := g.Output(name)
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

func outputs(g *tf.Graph, ts []BundleTensor) ([]tf.Output, error) {
	out := make([]tf.Output, len(ts))
	for i, t := range ts {
		o, err := g.Output(t.Name)
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

func weightFeeds(b *Bundle, phs []tf.Output, weights []*tf.Tensor, which string) ([]tf.Feed, error) {
	if len(weights) != len(b.Variables) {
		return nil, fmt.Errorf("loader: %s: got %d weight tensors, want %d (one per variable)", which, len(weights), len(b.Variables))
	}
	feeds := make([]tf.Feed, 0, len(weights))
	for i, v := range b.Variables {
		if phs[i].Op == nil {
			continue
		}
		t := weights[i]
		if t == nil {
			return nil, fmt.Errorf("loader: %s: no tensor for variable %q", which, v.Name)
		}
		if t.DataType() != v.DType || !slices.Equal(t.Shape(), v.Shape) {
			return nil, fmt.Errorf("loader: %s: variable %q got a %s%v tensor, want %s%v", which, v.Name, t.DataType(), t.Shape(), v.DType, v.Shape)
		}
		feeds = append(feeds, tf.Feed{Output: phs[i], Tensor: t})
	}
	return feeds, nil
}

func appendFeeds(feeds []tf.Feed, kind string, specs []BundleTensor, outs []tf.Output, ts []*tf.Tensor) ([]tf.Feed, error) {
	if len(ts) != len(specs) {
		return nil, fmt.Errorf("loader: got %d %s tensors, want %d", len(ts), kind, len(specs))
	}
	for i, s := range specs {
		t := ts[i]
		if t == nil {
			return nil, fmt.Errorf("loader: no tensor for %s %q", kind, s.Alias)
		}
		if t.DataType() != s.DType {
			return nil, fmt.Errorf("loader: %s %q got a %s tensor, want %s", kind, s.Alias, t.DataType(), s.DType)
		}
		if sh := t.Shape(); len(sh) != len(s.Shape) || !tf.CompatibleShapes(sh, s.Shape) { // a scalar's Shape is nil
			return nil, fmt.Errorf("loader: %s %q got shape %v, want %v", kind, s.Alias, t.Shape(), s.Shape)
		}
		feeds = append(feeds, tf.Feed{Output: outs[i], Tensor: t})
	}
	return feeds, nil
}
