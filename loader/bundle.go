package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/internal/names"
	"github.com/gotflow/gotflow/tf"
)

// Bundle is a loaded and validated model bundle (see `gotflow convert` and
// loader/schema/bundle-v1.schema.json): a training graph that is a pure
// function (weights, inputs, labels) -> (loss, gradients, metrics, state
// updates), an inference graph (weights, inputs) -> outputs, optionally an
// evaluation graph (weights, inputs, labels) -> (loss, metrics), and initial
// weights.
type Bundle struct {
	// Dir is the bundle directory.
	Dir string
	// Manifest is the decoded manifest.json.
	Manifest *Manifest
	// Train and Infer are train.pb and infer.pb.
	Train, Infer *GraphDef
	// Eval is eval.pb, or nil for a bundle without one: the loss and
	// metrics with training behaviour off (dropout off, batch-norm moving
	// statistics), no gradients and no state updates. It uses Train's
	// tensor names: variables are fed at their TrainPlaceholder (where Eval
	// has that node), and Inputs, Labels, Loss and Metrics name the same
	// tensors in both graphs.
	Eval *GraphDef
	// Variables lists the weights in manifest order; Weights holds their
	// initial values in the same order.
	Variables []Variable
	Weights   []Weight
	// Inputs are fed to every graph, Labels to Train and Eval; Outputs are
	// fetched from Infer, Loss and Metrics from Train and Eval. They are
	// the Manifest's own values, not copies.
	Inputs, Labels, Outputs, Metrics []BundleTensor
	Loss                             BundleTensor
}

// Variable is a weight of a bundle: a trainable parameter or non-trainable
// state (batch-norm statistics, RNG state).
type Variable struct {
	Name      string
	DType     tf.DataType
	Shape     []int64
	Trainable bool
	// TrainPlaceholder and InferPlaceholder are the tensors ("op:idx") fed
	// with the variable's value in Train and Infer; empty if that graph does
	// not read the variable.
	TrainPlaceholder, InferPlaceholder string
	// Gradient is d loss / d variable in Train (trainable variables only).
	Gradient string
	// Update is the variable's new value after a training step, in Train
	// (non-trainable state that the step changes), or empty.
	Update string
}

// BundleTensor is a tensor of a bundle: the name the manifest gives it and
// the graph tensor it is. In manifest.json it is the object
// {"name": Alias, "tensor": Name, "dtype": DType, "shape": Shape}.
type BundleTensor struct {
	// Alias is the user-facing name ("x", "logits", "accuracy").
	Alias string
	// TensorSpec is the graph tensor ("op:idx"), its dtype and its static
	// shape (-1 for dimensions of unknown size).
	tf.TensorSpec
}

// LoadBundle reads the bundle in dir and checks it: the manifest parses and
// validates (ParseManifest), the graphs parse (ParseGraphDef), every tensor
// the manifest names exists in its graph with the declared dtype and a
// compatible shape, placeholders are Placeholder ops, every trainable
// variable has a gradient of its own dtype and shape, and the weights file
// holds exactly the variables with their dtypes and shapes. An eval graph,
// when the manifest names one, must hold the inputs, labels, loss and
// metrics, and every Placeholder in it must be a variable's train
// placeholder, an input or a label.
func LoadBundle(dir string) (*Bundle, error) {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("loader: bundle %s does not exist: %w", dir, err)
		}
		return nil, fmt.Errorf("loader: bundle: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("loader: bundle %s is not a directory", dir)
	}
	mpath := filepath.Join(dir, "manifest.json")
	raw, err := os.ReadFile(mpath)
	if err != nil {
		return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mpath, err)
	}
	b := &Bundle{Dir: dir, Manifest: m}
	if b.Train, err = LoadGraphDef(filepath.Join(dir, m.TrainGraph)); err != nil {
		return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
	}
	if b.Infer, err = LoadGraphDef(filepath.Join(dir, m.InferGraph)); err != nil {
		return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
	}
	if m.EvalGraph != "" {
		if b.Eval, err = LoadGraphDef(filepath.Join(dir, m.EvalGraph)); err != nil {
			return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
		}
	}
	b.convert()
	ws, err := ReadWeights(filepath.Join(dir, m.Weights))
	if err != nil {
		return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
	}
	if b.Weights, err = b.orderWeights(ws); err != nil {
		return nil, fmt.Errorf("loader: bundle %s: %s: %w", dir, m.Weights, err)
	}
	for _, gd := range []struct {
		file string
		def  *GraphDef
	}{{m.TrainGraph, b.Train}, {m.InferGraph, b.Infer}, {m.EvalGraph, b.Eval}} {
		if gd.def == nil {
			continue
		}
		if err := checkStateless(gd.file, gd.def); err != nil {
			return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
		}
	}
	if err := b.checkGraphs(); err != nil {
		return nil, fmt.Errorf("loader: bundle %s: %w", dir, err)
	}
	return b, nil
}

func (b *Bundle) convert() {
	dt := func(s string) tf.DataType { d, _ := tf.ParseDataType(s); return d } // validated
	m := b.Manifest
	b.Inputs, b.Labels, b.Outputs, b.Metrics, b.Loss = m.Inputs, m.Labels, m.Outputs, m.Metrics, m.Loss
	b.Variables = make([]Variable, len(m.Variables))
	for i, v := range m.Variables {
		b.Variables[i] = Variable{
			Name: v.Name, DType: dt(v.DType), Shape: slices.Clone(v.Shape), Trainable: v.Trainable,
			TrainPlaceholder: v.TrainPlaceholder, InferPlaceholder: v.InferPlaceholder,
			Gradient: v.Gradient, Update: v.Update,
		}
	}
}

// orderWeights matches the weights file against the variables.
func (b *Bundle) orderWeights(ws []Weight) ([]Weight, error) {
	byName := make(map[string]Weight, len(ws))
	for _, w := range ws {
		byName[w.Name] = w
	}
	out := make([]Weight, len(b.Variables))
	for i, v := range b.Variables {
		w, ok := byName[v.Name]
		if !ok {
			return nil, fmt.Errorf("variable %q has no entry in the weights file", v.Name)
		}
		if w.DType != v.DType || !slices.Equal(w.Shape, v.Shape) {
			return nil, fmt.Errorf("weight %q is %s%v, the manifest says %s%v", v.Name, w.DType, w.Shape, v.DType, v.Shape)
		}
		out[i] = w
		delete(byName, v.Name)
	}
	if len(byName) > 0 {
		extra := make([]string, 0, len(byName))
		for n := range byName {
			extra = append(extra, n)
		}
		slices.Sort(extra)
		return nil, fmt.Errorf("weights file has entries for no variable: %v", extra)
	}
	return out, nil
}

// statefulOps are ops that keep state between runs: a bundle graph is a
// pure function of its feeds and must not contain them.
var statefulOps = map[string]bool{
	"VarHandleOp": true, "VariableV2": true, "Variable": true, "ReadVariableOp": true,
	"AssignVariableOp": true, "AssignAddVariableOp": true, "AssignSubVariableOp": true,
	"Assign": true, "AssignAdd": true, "AssignSub": true,
	"HashTableV2": true, "MutableHashTableV2": true, "MutableHashTableOfTensorsV2": true,
}

func checkStateless(file string, def *GraphDef) error {
	for _, n := range def.Def.GetNode() {
		if statefulOps[n.GetOp()] {
			return fmt.Errorf("%s: node %q is a %s op; bundle graphs must be pure functions of their feeds (variables become placeholders)", file, n.GetName(), n.GetOp())
		}
	}
	return nil
}

// WriteWeights writes weights to path in the safetensors layout
// (EncodeWeights), through a temporary file renamed at the end.
func WriteWeights(path string, ws []Weight, metadata map[string]string) error {
	data, err := EncodeWeights(ws, metadata)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("loader: weights: %w", err)
	}
	return nil
}

// checkGraphs verifies every named tensor against its graph.
func (b *Bundle) checkGraphs() error {
	train, err := b.Train.Import()
	if err != nil {
		return fmt.Errorf("%s: %w", b.Manifest.TrainGraph, err)
	}
	defer train.Close()
	infer, err := b.Infer.Import()
	if err != nil {
		return fmt.Errorf("%s: %w", b.Manifest.InferGraph, err)
	}
	defer infer.Close()
	tg := checker{file: b.Manifest.TrainGraph, def: b.Train, g: train}
	ig := checker{file: b.Manifest.InferGraph, def: b.Infer, g: infer}
	for _, v := range b.Variables {
		what := fmt.Sprintf("variable %q", v.Name)
		if v.TrainPlaceholder != "" {
			if err := tg.placeholder(what, v.TrainPlaceholder, v.DType, v.Shape); err != nil {
				return err
			}
		}
		if v.InferPlaceholder != "" {
			if err := ig.placeholder(what, v.InferPlaceholder, v.DType, v.Shape); err != nil {
				return err
			}
		}
		if v.Gradient != "" {
			if err := tg.tensor(what+" gradient", v.Gradient, v.DType, v.Shape); err != nil {
				return err
			}
		}
		if v.Update != "" {
			if err := tg.tensor(what+" update", v.Update, v.DType, v.Shape); err != nil {
				return err
			}
		}
	}
	for _, t := range b.Inputs {
		if err := tg.tensor(fmt.Sprintf("input %q", t.Alias), t.Name, t.DType, t.Shape); err != nil {
			return err
		}
		if err := ig.tensor(fmt.Sprintf("input %q", t.Alias), t.Name, t.DType, t.Shape); err != nil {
			return err
		}
	}
	for _, t := range b.Labels {
		if err := tg.tensor(fmt.Sprintf("label %q", t.Alias), t.Name, t.DType, t.Shape); err != nil {
			return err
		}
	}
	for _, t := range b.Metrics {
		if err := tg.tensor(fmt.Sprintf("metric %q", t.Alias), t.Name, t.DType, t.Shape); err != nil {
			return err
		}
	}
	if err := tg.tensor("loss", b.Loss.Name, b.Loss.DType, b.Loss.Shape); err != nil {
		return err
	}
	for _, t := range b.Outputs {
		if err := ig.tensor(fmt.Sprintf("output %q", t.Alias), t.Name, t.DType, t.Shape); err != nil {
			return err
		}
	}
	if b.Eval != nil {
		return b.checkEval()
	}
	return nil
}

// checkEval verifies the eval graph against train.pb's names: the
// variables' train placeholders it has, the inputs, labels, loss and
// metrics, and that nothing else in it waits for a feed.
func (b *Bundle) checkEval() error {
	file := b.Manifest.EvalGraph
	g, err := b.Eval.Import()
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	defer g.Close()
	eg := checker{file: file, def: b.Eval, g: g}
	fed := map[string]bool{}
	for _, v := range b.Variables {
		op, _, err := tf.ParseOutputName(v.TrainPlaceholder)
		if v.TrainPlaceholder == "" || err != nil {
			continue
		}
		if _, ok := b.Eval.Node(op); !ok {
			continue // the eval graph does not read this variable
		}
		if err := eg.placeholder(fmt.Sprintf("variable %q", v.Name), v.TrainPlaceholder, v.DType, v.Shape); err != nil {
			return err
		}
		fed[op] = true
	}
	for _, set := range []struct {
		kind string
		ts   []BundleTensor
		feed bool
	}{{"input", b.Inputs, true}, {"label", b.Labels, true}, {"metric", b.Metrics, false}} {
		for _, t := range set.ts {
			if err := eg.tensor(fmt.Sprintf("%s %q", set.kind, t.Alias), t.Name, t.DType, t.Shape); err != nil {
				return err
			}
			if set.feed {
				op, _, _ := tf.ParseOutputName(t.Name)
				fed[op] = true
			}
		}
	}
	if err := eg.tensor("loss", b.Loss.Name, b.Loss.DType, b.Loss.Shape); err != nil {
		return err
	}
	for _, n := range b.Eval.Def.GetNode() {
		if n.GetOp() == "Placeholder" && !fed[n.GetName()] {
			return fmt.Errorf("%s: placeholder %q is not a variable's train_placeholder, an input or a label, so nothing feeds it", file, n.GetName())
		}
	}
	return nil
}

type checker struct {
	file string
	def  *GraphDef
	g    *tf.Graph
}

func (c checker) tensor(what, name string, dt tf.DataType, shape []int64) error {
	if _, err := c.def.Resolve(name); err != nil {
		return fmt.Errorf("%s: %s tensor %q: %w", c.file, what, name, err)
	}
	out, err := c.g.Output(name)
	if err != nil {
		return fmt.Errorf("%s: %s tensor %q: %w", c.file, what, name, err)
	}
	if got := out.DataType(); got != dt {
		return fmt.Errorf("%s: %s tensor %q has dtype %s, the manifest says %s", c.file, what, name, got, dt)
	}
	got, ok, err := out.Shape()
	if err != nil {
		return fmt.Errorf("%s: %s tensor %q: %w", c.file, what, name, err)
	}
	if ok && !tf.CompatibleShapes(got, shape) {
		return fmt.Errorf("%s: %s tensor %q has shape %v, the manifest says %v", c.file, what, name, got, shape)
	}
	return nil
}

func (c checker) placeholder(what, name string, dt tf.DataType, shape []int64) error {
	if err := c.tensor(what+" placeholder", name, dt, shape); err != nil {
		return err
	}
	op, _, _ := tf.ParseOutputName(name)
	i, _ := c.def.Node(op)
	if typ := c.def.Def.Node[i].GetOp(); typ != "Placeholder" {
		return fmt.Errorf("%s: %s placeholder %q is a %s op, want Placeholder", c.file, what, name, typ)
	}
	return nil
}

// Variable returns the variable called name and its index in Variables.
func (b *Bundle) Variable(name string) (Variable, int, error) {
	for i, v := range b.Variables {
		if v.Name == name {
			return v, i, nil
		}
	}
	vnames := make([]string, len(b.Variables))
	for i, v := range b.Variables {
		vnames[i] = v.Name
	}
	return Variable{}, -1, fmt.Errorf("loader: bundle: %w", &tf.Error{Code: tf.NotFound, Op: name, Msg: names.NotFound("variable", name, vnames)})
}

// Trainable returns the indices (into Variables) of the trainable variables,
// in order: the order of TrainStep's gradients.
func (b *Bundle) Trainable() []int {
	var out []int
	for i, v := range b.Variables {
		if v.Trainable {
			out = append(out, i)
		}
	}
	return out
}

// Stateful returns the indices (into Variables) of the variables a training
// step updates, in order: the order of TrainStep's updates.
func (b *Bundle) Stateful() []int {
	var out []int
	for i, v := range b.Variables {
		if v.Update != "" {
			out = append(out, i)
		}
	}
	return out
}
