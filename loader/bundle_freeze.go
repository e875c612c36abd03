package loader

import (
	"fmt"
	"slices"

	attrpb "github.com/wamuir/graft/tensorflow/core/framework/attr_value_go_proto"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/tf"
)

// Freeze returns the inference graph with every variable placeholder
// replaced by a Const node holding the variable's value: a frozen GraphDef
// whose only placeholders are the bundle's inputs. weights must hold a value
// for every variable the inference graph reads (by name, with the
// variable's dtype and shape); weights of variables inference does not read
// (optimizer-free training state such as RNG seeds) may be left out. Nil
// weights freezes the bundle's initial weights.
func (b *Bundle) Freeze(weights []Weight) (*GraphDef, error) {
	if weights == nil {
		weights = b.Weights
	}
	byName := make(map[string]Weight, len(weights))
	for _, w := range weights {
		if _, dup := byName[w.Name]; dup {
			return nil, fmt.Errorf("loader: freeze: weight %q given twice", w.Name)
		}
		byName[w.Name] = w
	}
	consts := map[string]*nodepb.NodeDef{}
	for _, v := range b.Variables {
		w, ok := byName[v.Name]
		delete(byName, v.Name)
		if v.InferPlaceholder == "" {
			continue
		}
		if !ok {
			return nil, fmt.Errorf("loader: freeze: no weight for variable %q", v.Name)
		}
		if w.DType != v.DType || !slices.Equal(w.Shape, v.Shape) {
			return nil, fmt.Errorf("loader: freeze: weight %q is %s%v, variable is %s%v", v.Name, w.DType, w.Shape, v.DType, v.Shape)
		}
		if err := w.check(); err != nil {
			return nil, fmt.Errorf("loader: freeze: %w", err)
		}
		op, idx, err := tf.ParseOutputName(v.InferPlaceholder)
		if err != nil || idx != 0 {
			return nil, fmt.Errorf("loader: freeze: variable %q placeholder %q is not an op's output 0", v.Name, v.InferPlaceholder)
		}
		consts[op] = constNode(op, w)
	}
	if len(byName) > 0 {
		extra := make([]string, 0, len(byName))
		for n := range byName {
			extra = append(extra, n)
		}
		slices.Sort(extra)
		return nil, fmt.Errorf("loader: freeze: weights for unknown variables: %v", extra)
	}
	def := proto.Clone(b.Infer.Def).(*graphpb.GraphDef)
	for i, n := range def.Node {
		c, ok := consts[n.GetName()]
		if !ok {
			continue
		}
		if n.GetOp() != "Placeholder" {
			return nil, fmt.Errorf("loader: freeze: %q is a %s op, want Placeholder", n.GetName(), n.GetOp())
		}
		c.Device = n.GetDevice()
		def.Node[i] = c
		delete(consts, n.GetName())
	}
	for op := range consts {
		return nil, fmt.Errorf("loader: freeze: placeholder %q not found in %s", op, b.Manifest.InferGraph)
	}
	return NewGraphDef(def)
}

// constNode builds a Const node named name holding w.
func constNode(name string, w Weight) *nodepb.NodeDef {
	shape := &tspb.TensorShapeProto{}
	for _, d := range w.Shape {
		shape.Dim = append(shape.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	dt := typespb.DataType(w.DType)
	return &nodepb.NodeDef{
		Name: name,
		Op:   "Const",
		Attr: map[string]*attrpb.AttrValue{
			"dtype": {Value: &attrpb.AttrValue_Type{Type: dt}},
			"value": {Value: &attrpb.AttrValue_Tensor{Tensor: &tensorpb.TensorProto{
				Dtype:         dt,
				TensorShape:   shape,
				TensorContent: slices.Clone(w.Data),
			}}},
		},
	}
}
