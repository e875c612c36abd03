package savedmodel

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	attrpb "github.com/wamuir/graft/tensorflow/core/framework/attr_value_go_proto"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	versionspb "github.com/wamuir/graft/tensorflow/core/framework/versions_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

// Combine is how an ensemble merges its members' outputs.
type Combine string

const (
	// CombineMean averages each output across members (for example
	// logits).
	CombineMean Combine = "mean"
	// CombineSoftmax averages the members' softmax of each output over its
	// last axis: the ensemble's class probabilities.
	CombineSoftmax Combine = "softmax"
	// CombineVote gives, per class (the output's last axis), the fraction
	// of members whose highest score is that class.
	CombineVote Combine = "vote"
)

// ParseCombine checks a combine mode's name.
func ParseCombine(s string) (Combine, error) {
	switch c := Combine(s); c {
	case CombineMean, CombineSoftmax, CombineVote:
		return c, nil
	case "":
		return CombineMean, nil
	}
	return "", fmt.Errorf("savedmodel: ensemble combine %q: want mean, softmax or vote", s)
}

// EnsembleGraph builds one frozen graph that runs the members side by side
// on shared inputs and combines each of their outputs. Every member is a
// frozen graph (no variables) with its serving signature; all must have
// the same input and output aliases, with the same dtypes. Member i's
// nodes are imported under the prefix member_i/; the shared inputs are the
// placeholders ensemble_input/<alias>, and output <alias> is the tensor
// ensemble/<alias>. The returned signature maps the aliases to them.
func EnsembleGraph(members []*loader.GraphDef, sigs []Signature, how Combine) (*loader.GraphDef, Signature, error) {
	if len(members) < 2 || len(members) != len(sigs) {
		return nil, Signature{}, fmt.Errorf("savedmodel: ensemble needs at least 2 members with a signature each, got %d graphs and %d signatures", len(members), len(sigs))
	}
	if _, err := ParseCombine(string(how)); err != nil {
		return nil, Signature{}, err
	}
	first := sigs[0]
	for i, s := range sigs[1:] {
		if err := sameSpecs("input", first.Inputs, s.Inputs); err != nil {
			return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d: %w", i+1, err)
		}
		if err := sameSpecs("output", first.Outputs, s.Outputs); err != nil {
			return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d: %w", i+1, err)
		}
	}
	out := &graphpb.GraphDef{}
	if v := members[0].Def.GetVersions(); v != nil {
		out.Versions = proto.Clone(v).(*versionspb.VersionDef)
	}
	sig := Signature{Key: DefaultSignatureKey, MethodName: PredictMethodName}
	shared := map[string]string{} // alias -> shared placeholder op
	taken := map[string]string{}  // node name -> the alias it was made for
	for _, in := range first.Inputs {
		name := "ensemble_input/" + nodeSafe(in.Alias)
		if other, dup := taken[name]; dup {
			return nil, Signature{}, fmt.Errorf("savedmodel: ensemble inputs %q and %q both map to node %q; rename one of them", other, in.Alias, name)
		}
		taken[name] = in.Alias
		shared[in.Alias] = name
		b := &nodes{def: out}
		b.placeholder(name, in.DType, in.Shape)
		sig.Inputs = append(sig.Inputs, SignatureTensor{Alias: in.Alias, TensorSpec: tf.TensorSpec{Name: name + ":0", DType: in.DType, Shape: slices.Clone(in.Shape)}})
	}
	for _, o := range first.Outputs {
		name := "ensemble/" + nodeSafe(o.Alias)
		if other, dup := taken[name]; dup {
			return nil, Signature{}, fmt.Errorf("savedmodel: ensemble outputs %q and %q both map to node %q; rename one of them", other, o.Alias, name)
		}
		taken[name] = o.Alias
	}
	for i, g := range members {
		if lib := g.Def.GetLibrary(); lib != nil && (len(lib.GetFunction()) > 0 || len(lib.GetGradient()) > 0) {
			return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d has a function library; only plain frozen graphs can be combined", i)
		}
		// The member's input placeholders become the shared ones.
		rename := map[string]string{}
		for _, in := range sigs[i].Inputs {
			resolved, err := g.Resolve(in.Name)
			if err != nil {
				return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d input %q: %w", i, in.Alias, err)
			}
			op, port, err := tf.ParseOutputName(resolved)
			if err != nil {
				return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d input %q: %w", i, in.Alias, err)
			}
			idx, ok := g.Node(op)
			if port != 0 || !ok || (g.Def.Node[idx].GetOp() != "Placeholder" && g.Def.Node[idx].GetOp() != "PlaceholderWithDefault") {
				return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d input %q is %s, not a placeholder's output 0; only graphs fed through placeholders can share inputs", i, in.Alias, resolved)
			}
			rename[op] = shared[in.Alias]
		}
		prefix := "member_" + strconv.Itoa(i) + "/"
		for _, n := range g.Def.GetNode() {
			switch n.GetOp() {
			case "VarHandleOp", "VariableV2", "Variable", "ReadVariableOp":
				return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d: node %q is a %s: the graph must be frozen", i, n.GetName(), n.GetOp())
			}
			if _, ok := rename[n.GetName()]; ok {
				continue // replaced by the shared placeholder
			}
			c := proto.Clone(n).(*nodepb.NodeDef)
			c.Name = prefix + n.GetName()
			if cls := c.GetAttr()["_class"].GetList(); cls != nil {
				// Colocation constraints name nodes too ("loc:@node").
				for k, v := range cls.S {
					if loc, ok := strings.CutPrefix(string(v), "loc:@"); ok {
						if to, ok := rename[loc]; ok {
							loc = to
						} else {
							loc = prefix + loc
						}
						cls.S[k] = []byte("loc:@" + loc)
					}
				}
			}
			for k, in := range c.Input {
				ctrl := strings.HasPrefix(in, "^")
				op, port, _ := strings.Cut(strings.TrimPrefix(in, "^"), ":")
				if to, ok := rename[op]; ok {
					op = to
				} else {
					op = prefix + op
				}
				if port != "" {
					op += ":" + port
				}
				if ctrl {
					op = "^" + op
				}
				c.Input[k] = op
			}
			out.Node = append(out.Node, c)
		}
	}
	k := len(members)
	b := &nodes{def: out}
	for _, o := range first.Outputs {
		if o.DType != tf.Float {
			return nil, Signature{}, fmt.Errorf("savedmodel: ensemble output %q is %s; only float32 outputs can be combined", o.Alias, o.DType)
		}
		base := "ensemble/" + nodeSafe(o.Alias)
		ts := make([]string, k)
		for i, g := range members {
			spec, _ := sigs[i].Output(o.Alias)
			resolved, err := g.Resolve(spec.Name)
			if err != nil {
				return nil, Signature{}, fmt.Errorf("savedmodel: ensemble member %d output %q: %w", i, o.Alias, err)
			}
			ts[i] = "member_" + strconv.Itoa(i) + "/" + resolved
		}
		switch how {
		case CombineSoftmax:
			for i := range ts {
				ts[i] = b.add(base+"/softmax_"+strconv.Itoa(i), "Softmax", []string{ts[i]}, typeAttr("T", tf.Float))
			}
			fallthrough
		case CombineMean, "":
			stack := b.add(base+"/stack", "Pack", ts, typeAttr("T", tf.Float), intAttr("N", k), intAttr("axis", 0))
			axis := b.constInt(base+"/axis", 0)
			b.add(base, "Mean", []string{stack, axis}, typeAttr("T", tf.Float), typeAttr("Tidx", tf.Int32), boolAttr("keep_dims", false))
		case CombineVote:
			classes := int64(-1)
			if n := len(o.Shape); n > 0 {
				classes = o.Shape[n-1]
			}
			if classes < 1 {
				return nil, Signature{}, fmt.Errorf("savedmodel: ensemble vote on output %q needs a known last dimension (the classes), shape %v", o.Alias, o.Shape)
			}
			last := b.constInt(base+"/last_axis", -1)
			depth := b.constInt(base+"/classes", int32(classes))
			on, off := b.constFloat(base+"/on", 1), b.constFloat(base+"/off", 0)
			var votes []string
			for i, t := range ts {
				am := b.add(base+"/argmax_"+strconv.Itoa(i), "ArgMax", []string{t, last}, typeAttr("T", tf.Float), typeAttr("Tidx", tf.Int32), typeAttr("output_type", tf.Int32))
				votes = append(votes, b.add(base+"/vote_"+strconv.Itoa(i), "OneHot", []string{am, depth, on, off}, typeAttr("T", tf.Float), typeAttr("TI", tf.Int32), intAttr("axis", -1)))
			}
			sum := b.add(base+"/votes", "AddN", votes, typeAttr("T", tf.Float), intAttr("N", k))
			b.add(base, "Mul", []string{sum, b.constFloat(base+"/scale", 1/float32(k))}, typeAttr("T", tf.Float))
		}
		sig.Outputs = append(sig.Outputs, SignatureTensor{Alias: o.Alias, TensorSpec: tf.TensorSpec{Name: base + ":0", DType: tf.Float, Shape: slices.Clone(o.Shape)}})
	}
	g, err := loader.NewGraphDef(out)
	if err != nil {
		return nil, Signature{}, fmt.Errorf("savedmodel: ensemble: %w", err)
	}
	return g, sig, nil
}

// ExportEnsemble reads the members' SavedModels (frozen graphs, as
// Export writes them, under {serve} and serving_default) and writes the
// ensemble EnsembleGraph builds to dir as one SavedModel.
func ExportEnsemble(dir string, members []string, how Combine) error {
	var graphs []*loader.GraphDef
	var sigs []Signature
	for _, m := range members {
		info, err := Read(m)
		if err != nil {
			return fmt.Errorf("savedmodel: ensemble member %s: %w", m, err)
		}
		mg, err := info.MetaGraph([]string{DefaultTag})
		if err != nil {
			return fmt.Errorf("savedmodel: ensemble member %s: %w", m, err)
		}
		sig, err := mg.Signature(DefaultSignatureKey)
		if err != nil {
			return fmt.Errorf("savedmodel: ensemble member %s: %w", m, err)
		}
		g, err := loader.NewGraphDef(mg.Def().GetGraphDef())
		if err != nil {
			return fmt.Errorf("savedmodel: ensemble member %s: %w", m, err)
		}
		graphs, sigs = append(graphs, g), append(sigs, *sig)
	}
	g, sig, err := EnsembleGraph(graphs, sigs, how)
	if err != nil {
		return err
	}
	return Export(dir, g, sig)
}

func sameSpecs(kind string, want, got []SignatureTensor) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d %ss, the first member has %d", len(got), kind, len(want))
	}
	for _, w := range want {
		g, ok := findAlias(got, w.Alias)
		if !ok {
			return fmt.Errorf("no %s %q (the first member has %v)", kind, w.Alias, aliases(want))
		}
		if g.DType != w.DType {
			return fmt.Errorf("%s %q is %s, the first member's is %s", kind, w.Alias, g.DType, w.DType)
		}
		if !tf.CompatibleShapes(w.Shape, g.Shape) {
			return fmt.Errorf("%s %q has shape %v, the first member's is %v", kind, w.Alias, g.Shape, w.Shape)
		}
	}
	return nil
}

var unsafeNodeChars = regexp.MustCompile(`[^A-Za-z0-9_.\-/]`)

// nodeSafe turns an alias into a valid node name part.
func nodeSafe(s string) string {
	s = unsafeNodeChars.ReplaceAllString(s, "_")
	if s == "" || !(s[0] == '.' || s[0] >= '0' && s[0] <= '9' || s[0] >= 'A' && s[0] <= 'Z' || s[0] >= 'a' && s[0] <= 'z') {
		s = "x" + s
	}
	return s
}

// nodes appends NodeDefs to a graph.
type nodes struct{ def *graphpb.GraphDef }

type attr struct {
	name string
	v    *attrpb.AttrValue
}

func typeAttr(name string, t tf.DataType) attr {
	return attr{name, &attrpb.AttrValue{Value: &attrpb.AttrValue_Type{Type: typespb.DataType(t)}}}
}

func intAttr(name string, v int) attr {
	return attr{name, &attrpb.AttrValue{Value: &attrpb.AttrValue_I{I: int64(v)}}}
}

func boolAttr(name string, v bool) attr {
	return attr{name, &attrpb.AttrValue{Value: &attrpb.AttrValue_B{B: v}}}
}

// add appends a node and returns its output 0.
func (b *nodes) add(name, op string, inputs []string, attrs ...attr) string {
	n := &nodepb.NodeDef{Name: name, Op: op, Input: slices.Clone(inputs), Attr: map[string]*attrpb.AttrValue{}}
	for _, a := range attrs {
		n.Attr[a.name] = a.v
	}
	b.def.Node = append(b.def.Node, n)
	return name
}

func (b *nodes) placeholder(name string, dt tf.DataType, shape []int64) string {
	sh := &tspb.TensorShapeProto{UnknownRank: shape == nil}
	for _, d := range shape {
		sh.Dim = append(sh.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	return b.add(name, "Placeholder", nil, typeAttr("dtype", dt), attr{"shape", &attrpb.AttrValue{Value: &attrpb.AttrValue_Shape{Shape: sh}}})
}

func (b *nodes) constInt(name string, v int32) string {
	return b.add(name, "Const", nil, typeAttr("dtype", tf.Int32), attr{"value", &attrpb.AttrValue{Value: &attrpb.AttrValue_Tensor{
		Tensor: &tensorpb.TensorProto{Dtype: typespb.DataType(tf.Int32), TensorShape: &tspb.TensorShapeProto{}, IntVal: []int32{v}}}}})
}

func (b *nodes) constFloat(name string, v float32) string {
	return b.add(name, "Const", nil, typeAttr("dtype", tf.Float), attr{"value", &attrpb.AttrValue{Value: &attrpb.AttrValue_Tensor{
		Tensor: &tensorpb.TensorProto{Dtype: typespb.DataType(tf.Float), TensorShape: &tspb.TensorShapeProto{}, FloatVal: []float32{v}}}}})
}
