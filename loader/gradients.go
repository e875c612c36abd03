package loader

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gotflow/gotflow/tf"
)

// NoGradientError lists the operations on the path from the weights to the
// loss for which TensorFlow's C++ gradient registry has no gradient, so the
// graph cannot be differentiated outside Python.
type NoGradientError struct {
	// Ops maps each op type without a gradient to one node using it.
	Ops map[string]string
}

func (e *NoGradientError) Error() string {
	types := make([]string, 0, len(e.Ops))
	for t := range e.Ops {
		types = append(types, t)
	}
	sort.Strings(types)
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf("%s (node %q)", t, e.Ops[t])
	}
	return "loader: gradients: TensorFlow has no C++ gradient for " + strings.Join(parts, ", ") +
		"; convert the model in Python with `gotflow convert` instead"
}

// AddGradients differentiates a graph built without the converter: given a
// GraphDef, its scalar loss tensor and the weight placeholders ("op:idx"),
// it adds gradient operations (TF_AddGradients, the C++ gradient registry)
// under the name scope "gradients" and returns the new graph with the
// gradient tensor of each weight, in order.
//
// Before differentiating, every op type on a path from the weights to the
// loss is checked for a registered C++ gradient; when some have none the
// error is a *NoGradientError listing all of them (TensorFlow itself
// reports only the first).
func AddGradients(def *GraphDef, loss string, weights []string) (*GraphDef, []string, error) {
	if len(weights) == 0 {
		return nil, nil, fmt.Errorf("loader: gradients: no weights given")
	}
	lossName, err := def.Resolve(loss)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: gradients: loss: %w", err)
	}
	wnames := make([]string, len(weights))
	for i, w := range weights {
		if wnames[i], err = def.Resolve(w); err != nil {
			return nil, nil, fmt.Errorf("loader: gradients: weight: %w", err)
		}
		op, _, _ := tf.ParseOutputName(wnames[i])
		j, _ := def.Node(op)
		if typ := def.Def.Node[j].GetOp(); typ != "Placeholder" {
			return nil, nil, fmt.Errorf("loader: gradients: weight %q is a %s op, want a Placeholder", w, typ)
		}
	}
	g, err := def.Import()
	if err != nil {
		return nil, nil, fmt.Errorf("loader: gradients: %w", err)
	}
	defer g.Close()
	y, err := g.Output(lossName)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: gradients: %w", err)
	}
	if sh, ok, err := y.Shape(); err != nil || !ok || len(sh) != 0 {
		if err != nil {
			return nil, nil, fmt.Errorf("loader: gradients: loss %q: %w", loss, err)
		}
		return nil, nil, fmt.Errorf("loader: gradients: loss %q has shape %v, want a scalar", loss, sh)
	}
	xs := make([]tf.Output, len(wnames))
	for i, w := range wnames {
		if xs[i], err = g.Output(w); err != nil {
			return nil, nil, fmt.Errorf("loader: gradients: %w", err)
		}
	}
	if err := checkGradientOps(def, g, lossName, wnames); err != nil {
		return nil, nil, err
	}
	dys, err := g.AddGradients(freePrefix(def, "gradients"), []tf.Output{y}, xs, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: gradients: %w", err)
	}
	raw, err := g.GraphDef()
	if err != nil {
		return nil, nil, fmt.Errorf("loader: gradients: %w", err)
	}
	out, err := ParseGraphDef(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: gradients: %w", err)
	}
	names := make([]string, len(dys))
	for i, d := range dys {
		names[i] = d.Name()
	}
	return out, names, nil
}

// freePrefix returns base, or base_N, such that no node lives under it.
func freePrefix(def *GraphDef, base string) string {
	for n := 0; ; n++ {
		p := base
		if n > 0 {
			p = fmt.Sprintf("%s_%d", base, n)
		}
		taken := false
		for _, node := range def.Def.GetNode() {
			if node.GetName() == p || strings.HasPrefix(node.GetName(), p+"/") {
				taken = true
				break
			}
		}
		if !taken {
			return p
		}
	}
}

// checkGradientOps finds the nodes on a differentiable path from the
// weights to the loss (edges carrying floating-point tensors) and asks
// TensorFlow, one op type at a time in a scratch graph, whether it can
// differentiate them.
func checkGradientOps(def *GraphDef, g *tf.Graph, loss string, weights []string) error {
	nodes := def.Def.GetNode()
	// Backward reachability from the loss (data inputs only).
	back := map[string]bool{}
	lossOp, _, _ := tf.ParseOutputName(loss)
	stack := []string{lossOp}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if back[n] {
			continue
		}
		back[n] = true
		i, _ := def.Node(n)
		for _, in := range nodes[i].GetInput() {
			if strings.HasPrefix(in, "^") {
				continue
			}
			src, _, _ := splitInput(in)
			stack = append(stack, src)
		}
	}
	// Forward reachability from the weights, restricted to back.
	consumers := map[string][]string{}
	for _, n := range nodes {
		for _, in := range n.GetInput() {
			if strings.HasPrefix(in, "^") {
				continue
			}
			src, idx, _ := splitInput(in)
			if !floating(g, src, idx) {
				continue // integer and boolean tensors carry no gradient
			}
			consumers[src] = append(consumers[src], n.GetName())
		}
	}
	onPath := map[string]bool{}
	stack = stack[:0]
	for _, w := range weights {
		op, _, _ := tf.ParseOutputName(w)
		stack = append(stack, op)
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if onPath[n] || !back[n] {
			continue
		}
		onPath[n] = true
		stack = append(stack, consumers[n]...)
	}
	// One representative node per op type.
	rep := map[string]string{}
	for _, n := range nodes {
		if onPath[n.GetName()] && n.GetOp() != "Placeholder" {
			if _, ok := rep[n.GetOp()]; !ok {
				rep[n.GetOp()] = n.GetName()
			}
		}
	}
	missing := map[string]string{}
	for typ, name := range rep {
		ok, err := hasGradient(def, name, onPath)
		if err != nil {
			return err
		}
		if !ok {
			missing[typ] = name
		}
	}
	if len(missing) > 0 {
		return &NoGradientError{Ops: missing}
	}
	return nil
}

// hasGradient differentiates node's first output with respect to its data
// inputs that lie on the path, in a fresh copy of the graph.
func hasGradient(def *GraphDef, node string, onPath map[string]bool) (bool, error) {
	g, err := def.Import()
	if err != nil {
		return false, fmt.Errorf("loader: gradients: %w", err)
	}
	defer g.Close()
	op, err := g.Operation(node)
	if err != nil {
		return false, fmt.Errorf("loader: gradients: %w", err)
	}
	if op.NumOutputs() == 0 {
		return true, nil
	}
	var xs []tf.Output
	for i := 0; i < op.NumInputs(); i++ {
		in, err := op.Input(i)
		if err != nil {
			return false, fmt.Errorf("loader: gradients: %w", err)
		}
		if onPath[in.Op.Name()] {
			xs = append(xs, in)
		}
	}
	if len(xs) == 0 {
		return true, nil
	}
	_, err = g.AddGradients(freePrefix(def, "probe"), []tf.Output{op.Output(0)}, xs, nil)
	if err != nil && strings.Contains(err.Error(), "No gradient defined for op") {
		return false, nil
	}
	// Other failures (e.g. an integer output) are not about the registry;
	// the real differentiation reports them.
	return true, nil
}

func floating(g *tf.Graph, op string, idx int) bool {
	o, err := g.Output(fmt.Sprintf("%s:%d", op, idx))
	if err != nil {
		return false
	}
	switch o.DataType() {
	case tf.Float, tf.Double, tf.Half, tf.BFloat16:
		return true
	}
	return false
}
