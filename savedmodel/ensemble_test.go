package savedmodel_test

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	attrpb "github.com/wamuir/graft/tensorflow/core/framework/attr_value_go_proto"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// runModel runs a SavedModel's serving signature on x in Go.
func runModel(t *testing.T, dir string, x []float32, shape []int64, output string) []float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := savedmodel.Load(ctx, dir)
	require.NoError(t, err)
	defer m.Close()
	in, err := tf.NewTensor(shape, x)
	require.NoError(t, err)
	defer in.Close()
	res, err := m.Run(ctx, map[string]*tf.Tensor{m.Inputs()[0].Alias: in}, output)
	require.NoError(t, err)
	defer res[0].Close()
	d, err := tf.Data[float32](res[0])
	require.NoError(t, err)
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v)
	}
	return out
}

// TestEnsembleExport combines three members (the mlp bundle with its
// weights scaled differently) each way: in Go the ensemble's output is
// the mean of the members' outputs, of their softmaxes, or the fraction
// of their votes, computed here from the members run alone; and Python
// TensorFlow loads the ensemble SavedModel and agrees within 1e-6.
func TestEnsembleExport(t *testing.T) {
	b, exp := exportBundle(t, "mlp")
	var members []string
	for i := range 3 {
		ws := make([]loader.Weight, len(b.Weights))
		for j, w := range b.Weights {
			ws[j] = w
			if w.DType == tf.Float {
				data := slices.Clone(w.Data)
				for k := 0; k+4 <= len(data); k += 4 {
					v := math.Float32frombits(binary.LittleEndian.Uint32(data[k:]))
					binary.LittleEndian.PutUint32(data[k:], math.Float32bits(v*(1+0.3*float32(i))-0.05*float32(i)))
				}
				ws[j].Data = data
			}
		}
		frozen, err := b.Freeze(ws)
		require.NoError(t, err)
		dir := filepath.Join(t.TempDir(), "member")
		require.NoError(t, savedmodel.Export(dir, frozen, savedmodel.SignatureFromBundle(b)))
		members = append(members, dir)
	}
	inputs := exp["inputs"].(map[string]any)
	var alias string
	for k := range inputs {
		alias = k
	}
	xs := floats(inputs[alias])
	shp := shape(inputs[alias])
	x := make([]float32, len(xs))
	for i, v := range xs {
		x[i] = float32(v)
	}
	out := b.Outputs[0].Alias
	classes := int(b.Outputs[0].Shape[len(b.Outputs[0].Shape)-1])
	var each [][]float64
	for _, m := range members {
		each = append(each, runModel(t, m, x, shp, out))
	}
	rows := len(each[0]) / classes
	want := map[savedmodel.Combine][]float64{}
	for _, how := range []savedmodel.Combine{savedmodel.CombineMean, savedmodel.CombineSoftmax, savedmodel.CombineVote} {
		w := make([]float64, len(each[0]))
		for _, e := range each {
			for r := range rows {
				row := e[r*classes : (r+1)*classes]
				switch how {
				case savedmodel.CombineMean:
					for c, v := range row {
						w[r*classes+c] += v / 3
					}
				case savedmodel.CombineSoftmax:
					mx := slices.Max(row)
					var sum float64
					for _, v := range row {
						sum += math.Exp(v - mx)
					}
					for c, v := range row {
						w[r*classes+c] += math.Exp(v-mx) / sum / 3
					}
				case savedmodel.CombineVote:
					w[r*classes+slices.Index(row, slices.Max(row))] += 1.0 / 3
				}
			}
		}
		want[how] = w
	}
	var jobs []pyJob
	var dirs []string
	for _, how := range []savedmodel.Combine{savedmodel.CombineMean, savedmodel.CombineSoftmax, savedmodel.CombineVote} {
		dir := filepath.Join(t.TempDir(), string(how))
		require.NoError(t, savedmodel.ExportEnsemble(dir, members, how))
		got := runModel(t, dir, x, shp, out)
		require.InDeltaSlice(t, want[how], got, 1e-6, "%s in Go", how)
		dirs = append(dirs, dir)
		jobs = append(jobs, pyJob{Dir: dir, Inputs: inputs})
	}
	py := pythonPredict(t, jobs)
	for i, dir := range dirs {
		require.InDeltaSlice(t, runModel(t, dir, x, shp, out), py[i][out], 1e-6, "Python TF loads %s", dir)
	}

	// Members that disagree on their signature are refused.
	_, err := savedmodel.ParseCombine("median")
	require.ErrorContains(t, err, `combine "median"`)
	require.ErrorContains(t, savedmodel.ExportEnsemble(filepath.Join(t.TempDir(), "one"), members[:1], savedmodel.CombineMean), "at least 2 members")
}

// identityMember is a frozen graph y = Identity(Identity(x)) whose nodes
// carry colocation constraints, as graphs frozen by TensorFlow do.
func identityMember(t *testing.T, in, out string, shape []int64) (*loader.GraphDef, savedmodel.Signature) {
	t.Helper()
	dims := &tspb.TensorShapeProto{}
	for _, d := range shape {
		dims.Dim = append(dims.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	float := &attrpb.AttrValue{Value: &attrpb.AttrValue_Type{Type: typespb.DataType_DT_FLOAT}}
	loc := func(n string) *attrpb.AttrValue {
		return &attrpb.AttrValue{Value: &attrpb.AttrValue_List{List: &attrpb.AttrValue_ListValue{S: [][]byte{[]byte("loc:@" + n)}}}}
	}
	def := &graphpb.GraphDef{Node: []*nodepb.NodeDef{
		{Name: "x", Op: "Placeholder", Attr: map[string]*attrpb.AttrValue{"dtype": float, "shape": {Value: &attrpb.AttrValue_Shape{Shape: dims}}}},
		{Name: "h", Op: "Identity", Input: []string{"x"}, Attr: map[string]*attrpb.AttrValue{"T": float, "_class": loc("x")}},
		{Name: "y", Op: "Identity", Input: []string{"h"}, Attr: map[string]*attrpb.AttrValue{"T": float, "_class": loc("h")}},
	}}
	g, err := loader.NewGraphDef(def)
	require.NoError(t, err)
	return g, savedmodel.Signature{Key: savedmodel.DefaultSignatureKey, MethodName: savedmodel.PredictMethodName,
		Inputs:  []savedmodel.SignatureTensor{{Alias: in, TensorSpec: tf.TensorSpec{Name: "x:0", DType: tf.Float, Shape: shape}}},
		Outputs: []savedmodel.SignatureTensor{{Alias: out, TensorSpec: tf.TensorSpec{Name: "y:0", DType: tf.Float, Shape: shape}}}}
}

// TestEnsembleGraphChecks: colocation constraints follow the renamed
// nodes (TensorFlow refuses to import a graph colocated with a missing
// node), and members whose shapes differ, aliases that collide as node
// names, and inputs that are not placeholders are refused by name.
func TestEnsembleGraphChecks(t *testing.T) {
	a, sa := identityMember(t, "x", "y", []int64{-1, 2})
	b, sb := identityMember(t, "x", "y", []int64{-1, 2})
	g, sig, err := savedmodel.EnsembleGraph([]*loader.GraphDef{a, b}, []savedmodel.Signature{sa, sb}, savedmodel.CombineMean)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "ens")
	require.NoError(t, savedmodel.Export(dir, g, sig))
	require.Equal(t, []float64{1, -2, 3.5, 4}, runModel(t, dir, []float32{1, -2, 3.5, 4}, []int64{2, 2}, "y"))

	c, sc := identityMember(t, "x", "y", []int64{-1, 3})
	_, _, err = savedmodel.EnsembleGraph([]*loader.GraphDef{a, c}, []savedmodel.Signature{sa, sc}, savedmodel.CombineMean)
	require.ErrorContains(t, err, `input "x" has shape [-1 3], the first member's is [-1 2]`)

	// "x!" and "x?" both become the node name ensemble_input/x_.
	d, sd := identityMember(t, "x", "y", []int64{-1, 2})
	extra := []savedmodel.SignatureTensor{{Alias: "x!", TensorSpec: tf.TensorSpec{Name: "h:0", DType: tf.Float}}, {Alias: "x?", TensorSpec: tf.TensorSpec{Name: "h:0", DType: tf.Float}}}
	sd.Inputs = append(sd.Inputs, extra...)
	sa2 := sa
	sa2.Inputs = append(slices.Clone(sa.Inputs), extra...)
	_, _, err = savedmodel.EnsembleGraph([]*loader.GraphDef{a, d}, []savedmodel.Signature{sa2, sd}, savedmodel.CombineMean)
	require.ErrorContains(t, err, `inputs "x!" and "x?" both map to node "ensemble_input/x_"`)

	sn := sa
	sn.Inputs = []savedmodel.SignatureTensor{{Alias: "x", TensorSpec: tf.TensorSpec{Name: "h:0", DType: tf.Float, Shape: []int64{-1, 2}}}}
	_, _, err = savedmodel.EnsembleGraph([]*loader.GraphDef{a, b}, []savedmodel.Signature{sn, sb}, savedmodel.CombineMean)
	require.ErrorContains(t, err, `not a placeholder's output 0`)
}
