package feeder_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/memory/mallocator"
	"github.com/stretchr/testify/require"
	attrpb "github.com/wamuir/graft/tensorflow/core/framework/attr_value_go_proto"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"
	shapepb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/tf"
)

// cMem returns a C allocator whose outstanding bytes must be zero when the
// test ends, after every other cleanup (it is registered first).
func cMem(t *testing.T) (memory.Allocator, *memory.CheckedAllocator) {
	t.Helper()
	ca := memory.NewCheckedAllocator(mallocator.NewMallocator())
	live := tf.LiveTensors()
	t.Cleanup(func() {
		require.Equal(t, live, tf.LiveTensors(), "tensors left open")
		// aliased tensors release their Arrow columns when TF frees them,
		// which can lag Close by a moment.
		deadline := time.Now().Add(2 * time.Second)
		for ca.CurrentAlloc() != 0 && time.Now().Before(deadline) {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		ca.AssertSize(t, 0)
	})
	return feeder.TrackCMemory(ca), ca
}

// goMem is a Go-heap allocator (never aliased), checked like cMem.
func goMem(t *testing.T) memory.Allocator {
	t.Helper()
	ca := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { ca.AssertSize(t, 0) })
	return ca
}

// ph describes a placeholder of the identity graph.
type ph struct {
	name  string
	dt    tf.DataType
	shape []int64 // nil: unknown rank
}

func shapeProto(s []int64) *shapepb.TensorShapeProto {
	if s == nil {
		return &shapepb.TensorShapeProto{UnknownRank: true}
	}
	p := &shapepb.TensorShapeProto{}
	for _, d := range s {
		p.Dim = append(p.Dim, &shapepb.TensorShapeProto_Dim{Size: d})
	}
	return p
}

// identityGraphDef builds placeholders NAME feeding Identity ops NAME_out,
// and, for string placeholders, StringLength ops NAME_len (bytes) and
// NAME_chars (UTF-8 characters).
func identityGraphDef(phs []ph) []byte {
	g := &graphpb.GraphDef{}
	for _, p := range phs {
		dt := &attrpb.AttrValue{Value: &attrpb.AttrValue_Type{Type: typespb.DataType(p.dt)}}
		g.Node = append(g.Node,
			&nodepb.NodeDef{Name: p.name, Op: "Placeholder", Attr: map[string]*attrpb.AttrValue{
				"dtype": dt,
				"shape": {Value: &attrpb.AttrValue_Shape{Shape: shapeProto(p.shape)}},
			}},
			&nodepb.NodeDef{Name: p.name + "_out", Op: "Identity", Input: []string{p.name}, Attr: map[string]*attrpb.AttrValue{"T": dt}},
		)
		if p.dt == tf.String {
			g.Node = append(g.Node,
				&nodepb.NodeDef{Name: p.name + "_len", Op: "StringLength", Input: []string{p.name}, Attr: map[string]*attrpb.AttrValue{
					"unit": {Value: &attrpb.AttrValue_S{S: []byte("BYTE")}}}},
				&nodepb.NodeDef{Name: p.name + "_chars", Op: "StringLength", Input: []string{p.name}, Attr: map[string]*attrpb.AttrValue{
					"unit": {Value: &attrpb.AttrValue_S{S: []byte("UTF8_CHAR")}}}},
			)
		}
	}
	b, err := proto.Marshal(g)
	if err != nil {
		panic(err)
	}
	return b
}

type identity struct {
	g *tf.Graph
	s *tf.Session
}

func newIdentity(t *testing.T, phs ...ph) *identity {
	t.Helper()
	g, err := tf.ImportGraphDef(identityGraphDef(phs))
	require.NoError(t, err)
	s, err := tf.NewSession(g)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close(); g.Close() })
	return &identity{g: g, s: s}
}

// targets describes the named placeholders.
func (id *identity) targets(t *testing.T, names ...string) []feeder.Target {
	t.Helper()
	var out []feeder.Target
	for _, n := range names {
		o, err := id.g.Output(n)
		require.NoError(t, err)
		tg, err := feeder.TargetOf(o)
		require.NoError(t, err)
		out = append(out, tg)
	}
	return out
}

// run feeds the batch to the placeholders and fetches the named outputs.
func (id *identity) run(t *testing.T, b *feeder.Batch, inputs []string, fetches ...string) []*tf.Tensor {
	t.Helper()
	var ins []tf.Output
	for _, n := range inputs {
		o, err := id.g.Output(n)
		require.NoError(t, err)
		ins = append(ins, o)
	}
	feeds, err := b.Feeds(ins)
	require.NoError(t, err)
	var outs []tf.Output
	for _, n := range fetches {
		o, err := id.g.Output(n)
		require.NoError(t, err)
		outs = append(outs, o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := id.s.Run(ctx, feeds, outs, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, r := range res {
			r.Close()
		}
	})
	return res
}

func requireData[T tf.Numeric](t *testing.T, got *tf.Tensor, shape []int64, want []T) {
	t.Helper()
	require.Equal(t, shape, got.Shape(), "shape")
	d, err := tf.Data[T](got)
	require.NoError(t, err)
	if len(want) == 0 {
		require.Empty(t, d)
		return
	}
	require.Equal(t, want, d)
}
