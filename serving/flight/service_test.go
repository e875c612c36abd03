package flight_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	attrpb "github.com/wamuir/graft/tensorflow/core/framework/attr_value_go_proto"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/internal/tftest"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/serving"
	flightsvc "github.com/gotflow/gotflow/serving/flight"
	"github.com/gotflow/gotflow/tf"
)

// env is a serving.Server with the Flight service on a local port and a
// Go Flight client. Both sides allocate Arrow memory from checked
// allocators that must be empty once the test is over.
type env struct {
	addr   string
	srv    *serving.Server
	svc    *flightsvc.Service
	client flight.Client
	mem    *memory.CheckedAllocator
}

// halfPlusTwo copies TF's half_plus_two SavedModel into base/123.
func halfPlusTwo(t *testing.T, base string) { testmodels.HalfPlusTwo(t, base, 123) }

// fixture copies a Python-made SavedModel of scripts/fixtures into
// base/<version>.
func fixture(t *testing.T, name, base string, version int) {
	t.Helper()
	require.NoError(t, os.CopyFS(filepath.Join(base, fmt.Sprint(version)), os.DirFS(testmodels.Dir(name))))
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The models tests serve.
func hptModel(t *testing.T) serving.ModelConfig {
	base := t.TempDir()
	halfPlusTwo(t, base)
	return serving.ModelConfig{Name: "half_plus_two", BasePath: base}
}

func tf2Model(t *testing.T) serving.ModelConfig {
	base := t.TempDir()
	fixture(t, "tf2_savedmodel", base, 1)
	return serving.ModelConfig{Name: "tf2", BasePath: base}
}

// scaleModel exports a model with a rank-3 input and an input whose
// inner dimension is unknown: a float32 [-1,2,3] → a2 = 2a, b int32
// [-1,-1] → b1 = b + 1.
func scaleModel(t *testing.T) serving.ModelConfig {
	t.Helper()
	base := t.TempDir()
	attrType := func(dt typespb.DataType) *attrpb.AttrValue {
		return &attrpb.AttrValue{Value: &attrpb.AttrValue_Type{Type: dt}}
	}
	shape := func(dims ...int64) *attrpb.AttrValue {
		s := &tspb.TensorShapeProto{}
		for _, d := range dims {
			s.Dim = append(s.Dim, &tspb.TensorShapeProto_Dim{Size: d})
		}
		return &attrpb.AttrValue{Value: &attrpb.AttrValue_Shape{Shape: s}}
	}
	konst := func(name string, tp *tensorpb.TensorProto) *nodepb.NodeDef {
		tp.TensorShape = &tspb.TensorShapeProto{}
		return &nodepb.NodeDef{Name: name, Op: "Const", Attr: map[string]*attrpb.AttrValue{"dtype": attrType(tp.Dtype), "value": {Value: &attrpb.AttrValue_Tensor{Tensor: tp}}}}
	}
	f32, i32 := attrType(typespb.DataType_DT_FLOAT), attrType(typespb.DataType_DT_INT32)
	def := &graphpb.GraphDef{Node: []*nodepb.NodeDef{
		{Name: "a", Op: "Placeholder", Attr: map[string]*attrpb.AttrValue{"dtype": f32, "shape": shape(-1, 2, 3)}},
		{Name: "b", Op: "Placeholder", Attr: map[string]*attrpb.AttrValue{"dtype": i32, "shape": shape(-1, -1)}},
		konst("two", &tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, FloatVal: []float32{2}}),
		konst("one", &tensorpb.TensorProto{Dtype: typespb.DataType_DT_INT32, IntVal: []int32{1}}),
		{Name: "a2", Op: "Mul", Input: []string{"a", "two"}, Attr: map[string]*attrpb.AttrValue{"T": f32}},
		{Name: "b1", Op: "AddV2", Input: []string{"b", "one"}, Attr: map[string]*attrpb.AttrValue{"T": i32}},
	}}
	g, err := loader.NewGraphDef(def)
	require.NoError(t, err)
	sig := savedmodel.Signature{Key: "serving_default", MethodName: savedmodel.PredictMethodName,
		Inputs: []savedmodel.SignatureTensor{
			{Alias: "a", TensorSpec: tf.TensorSpec{Name: "a:0", DType: tf.Float, Shape: []int64{-1, 2, 3}}},
			{Alias: "b", TensorSpec: tf.TensorSpec{Name: "b:0", DType: tf.Int32, Shape: []int64{-1, -1}}}},
		Outputs: []savedmodel.SignatureTensor{
			{Alias: "a2", TensorSpec: tf.TensorSpec{Name: "a2:0", DType: tf.Float, Shape: []int64{-1, 2, 3}}},
			{Alias: "b1", TensorSpec: tf.TensorSpec{Name: "b1:0", DType: tf.Int32, Shape: []int64{-1, -1}}}}}
	require.NoError(t, savedmodel.Export(filepath.Join(base, "5"), g, sig))
	return serving.ModelConfig{Name: "scale", BasePath: base}
}

// start serves the models.
func start(t *testing.T, models []serving.ModelConfig, batching *serving.BatchingParameters, opts ...flightsvc.Option) *env {
	t.Helper()
	ctx := testCtx(t, 2*time.Minute)
	srvMem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	e := &env{mem: memory.NewCheckedAllocator(memory.NewGoAllocator())}
	t.Cleanup(func() {
		srvMem.AssertSize(t, 0)
		e.mem.AssertSize(t, 0)
	})
	srv, err := serving.NewServer(ctx, serving.Config{Models: models, PollInterval: -1, Batching: batching})
	require.NoError(t, err)
	e.srv = srv
	e.svc = flightsvc.Register(srv, append([]flightsvc.Option{flightsvc.WithAllocator(srvMem)}, opts...)...)
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(glis, nil) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		select {
		case err := <-served:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after Close")
		}
		e.svc.Close()
	})
	require.NoError(t, srv.WaitReady(ctx))
	e.addr = glis.Addr().String()
	e.client, err = flight.NewClientWithMiddleware(e.addr, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { e.client.Close() })
	return e
}

func pathDesc(p ...string) *flight.FlightDescriptor {
	return &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: p}
}

func cmdDesc(js string) *flight.FlightDescriptor {
	return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(js)}
}

// result is what came back for one batch.
type result struct {
	rec  arrow.RecordBatch
	meta flightsvc.BatchMetadata
}

// exchange runs one DoExchange: each batch is written and its answer read
// before the next is written. It returns the answers received (retained,
// released at cleanup) and the stream's error.
func (e *env) exchange(t *testing.T, ctx context.Context, d *flight.FlightDescriptor, recs ...arrow.RecordBatch) ([]result, error) {
	t.Helper()
	stream, err := e.client.DoExchange(ctx)
	require.NoError(t, err)
	w := flight.NewRecordWriter(stream, ipc.WithSchema(recs[0].Schema()), ipc.WithAllocator(e.mem))
	defer w.Close()
	w.SetFlightDescriptor(d)
	var rdr *flight.Reader
	defer func() {
		if rdr != nil {
			rdr.Release()
		}
	}()
	var out []result
	for _, rec := range recs {
		if err := w.Write(rec); err != nil && !errors.Is(err, io.EOF) {
			return out, err
		}
		if rdr == nil {
			var err error
			if rdr, err = flight.NewRecordReader(stream, ipc.WithAllocator(e.mem)); err != nil {
				return out, err
			}
		}
		if !rdr.Next() {
			if rdr.Err() == nil {
				return out, errors.New("the stream ended without an answer")
			}
			return out, rdr.Err()
		}
		r := result{rec: rdr.RecordBatch()}
		r.rec.Retain()
		t.Cleanup(r.rec.Release)
		require.NoError(t, json.Unmarshal(rdr.LatestAppMetadata(), &r.meta))
		out = append(out, r)
	}
	require.NoError(t, stream.CloseSend())
	if rdr.Next() {
		return out, errors.New("an answer too many")
	}
	return out, rdr.Err()
}

// newRecord builds a record batch from columns, released at cleanup.
func newRecord(t *testing.T, names []string, cols ...arrow.Array) arrow.RecordBatch {
	t.Helper()
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{Name: names[i], Type: c.DataType(), Nullable: true}
		defer c.Release()
	}
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, int64(cols[0].Len()))
	t.Cleanup(rec.Release)
	return rec
}

func float32s(mem memory.Allocator, v []float32) arrow.Array {
	b := array.NewFloat32Builder(mem)
	defer b.Release()
	b.AppendValues(v, nil)
	return b.NewArray()
}

func jsonArray(t *testing.T, mem memory.Allocator, dt arrow.DataType, js string) arrow.Array {
	a, _, err := array.FromJSON(mem, dt, strings.NewReader(js))
	require.NoError(t, err)
	return a
}

// fixedList wraps values into fixed_size_list<values>[w].
func fixedList(values arrow.Array, w int) arrow.Array {
	defer values.Release()
	d := array.NewData(arrow.FixedSizeListOf(int32(w), values.DataType()), values.Len()/w, []*memory.Buffer{nil}, []arrow.ArrayData{values.Data()}, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// listOf wraps values into list<values> with w values per row.
func listOf(values arrow.Array, w int) arrow.Array {
	defer values.Release()
	n := values.Len() / w
	offs := make([]int32, n+1)
	for i := range offs {
		offs[i] = int32(i * w)
	}
	d := array.NewData(arrow.ListOf(values.DataType()), n, []*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs))}, []arrow.ArrayData{values.Data()}, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// values flattens a float column of answers (primitive, fixed-size list or
// list) to float64.
func values(t *testing.T, a arrow.Array) []float64 {
	t.Helper()
	switch l := a.(type) {
	case *array.FixedSizeList:
		w := int(l.DataType().(*arrow.FixedSizeListType).Len())
		return values(t, array.NewSlice(l.ListValues(), int64(l.Offset()*w), int64((l.Offset()+l.Len())*w)))
	case *array.List:
		o := l.Offsets()
		return values(t, array.NewSlice(l.ListValues(), int64(o[l.Offset()]), int64(o[l.Offset()+l.Len()])))
	case *array.Float32:
		out := make([]float64, l.Len())
		for i, v := range l.Float32Values() {
			out[i] = float64(v)
		}
		return out
	case *array.Float64:
		return append([]float64(nil), l.Float64Values()...)
	case *array.Int64:
		out := make([]float64, l.Len())
		for i, v := range l.Int64Values() {
			out[i] = float64(v)
		}
		return out
	case *array.Int32:
		out := make([]float64, l.Len())
		for i, v := range l.Int32Values() {
			out[i] = float64(v)
		}
		return out
	}
	t.Fatalf("unexpected column type %s", a.DataType())
	return nil
}

// halfPlusTwoOf is y = 0.5x + 2 in float32, as the model computes it.
func halfPlusTwoOf(xs []float32) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(float32(0.5*x) + 2)
	}
	return out
}

func xs(n int, from float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = from + float32(i)*0.37
	}
	return out
}

func requireCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "%v", err)
	for _, p := range parts {
		require.Contains(t, status.Convert(err).Message(), p)
	}
}

func TestFlight(t *testing.T) {
	e := start(t, []serving.ModelConfig{hptModel(t), tf2Model(t), scaleModel(t)}, nil)
	t.Run("ExchangeHalfPlusTwo", func(t *testing.T) { testExchangeHalfPlusTwo(t, e) })
	t.Run("ExchangeMultiColumn", func(t *testing.T) { testExchangeMultiColumn(t, e) })
	t.Run("ExchangeShapes", func(t *testing.T) { testExchangeShapes(t, e) })
	t.Run("ExchangeStrings", func(t *testing.T) { testExchangeStrings(t, e) })
	t.Run("SchemaAndInfo", func(t *testing.T) { testSchemaAndInfo(t, e) })
	t.Run("PutGet", func(t *testing.T) { testPutGet(t, e) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, e) })
	t.Run("Python", func(t *testing.T) { testPython(t, e) })
}

// testExchangeHalfPlusTwo sends several batches per stream, as a plain
// float32 column, a fixed-size list, a list, a float64 column (cast) and
// a sliced batch, and gets exactly 0.5x + 2 per row, in order.
func testExchangeHalfPlusTwo(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	sizes := []int{1, 3, 0, 5, 2}
	var recs []arrow.RecordBatch
	var want [][]float64
	for i, n := range sizes {
		x := xs(n, float32(i)*10-7)
		recs = append(recs, newRecord(t, []string{"x"}, float32s(e.mem, x)))
		want = append(want, halfPlusTwoOf(x))
	}
	check := func(t *testing.T, got []result, want [][]float64) {
		t.Helper()
		require.Len(t, got, len(want))
		for i, r := range got {
			require.Equal(t, int64(len(want[i])), r.rec.NumRows(), "batch %d", i)
			require.Equal(t, 1, int(r.rec.NumCols()))
			require.Equal(t, "y", r.rec.ColumnName(0))
			require.Equal(t, "fixed_size_list<item: float32, nullable>[1]", r.rec.Column(0).DataType().String())
			require.Equal(t, want[i], values(t, r.rec.Column(0)), "batch %d", i)
			require.Equal(t, "half_plus_two", r.meta.Model)
			require.EqualValues(t, 123, r.meta.Version)
			require.Equal(t, "serving_default", r.meta.Signature)
			require.Equal(t, []int64{int64(len(want[i])), 1}, r.meta.Shapes["y"])
		}
	}
	got, err := e.exchange(t, ctx, pathDesc("half_plus_two"), recs...)
	require.NoError(t, err)
	check(t, got, want)

	// The same batches as fixed_size_list<float32>[1], list<float32> and
	// float64 (cast), by version.
	for _, wrap := range []func(arrow.Array) arrow.Array{
		func(a arrow.Array) arrow.Array { return fixedList(a, 1) },
		func(a arrow.Array) arrow.Array { return listOf(a, 1) },
	} {
		var wrapped []arrow.RecordBatch
		for i, n := range sizes {
			wrapped = append(wrapped, newRecord(t, []string{"x"}, wrap(float32s(e.mem, xs(n, float32(i)*10-7)))))
		}
		got, err := e.exchange(t, ctx, pathDesc("half_plus_two", "123"), wrapped...)
		require.NoError(t, err)
		check(t, got, want)
	}
	d := jsonArray(t, e.mem, arrow.PrimitiveTypes.Float64, `[1.5, -3, 1e6]`)
	got, err = e.exchange(t, ctx, cmdDesc(`{"model":"half_plus_two","version":123}`), newRecord(t, []string{"x"}, d))
	require.NoError(t, err)
	check(t, got, [][]float64{{2.75, 0.5, 500002}})

	// A sliced batch sends the rows of its slice.
	all := newRecord(t, []string{"x"}, float32s(e.mem, xs(10, 0)))
	part := all.NewSlice(3, 8)
	defer part.Release()
	got, err = e.exchange(t, ctx, pathDesc("half_plus_two"), part)
	require.NoError(t, err)
	check(t, got, [][]float64{halfPlusTwoOf(xs(10, 0)[3:8])})
}

// testExchangeMultiColumn runs tf2_savedmodel's serving_default (k int64
// [-1], x float32 [-1,4] → total float64 [-1], y float32 [-1,3]) in two
// batches and compares with what Python TensorFlow computed.
func testExchangeMultiColumn(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	exp := testmodels.MustLoadExpected(t, "tf2_savedmodel")
	var c *testmodels.Case
	for i := range exp.Cases {
		if exp.Cases[i].Name == "serving_default_batch5" {
			c = &exp.Cases[i]
		}
	}
	require.NotNil(t, c)
	k, x := c.Feeds["k"], c.Feeds["x"]
	batch := func(from, to int, wrap func(arrow.Array, int) arrow.Array, names ...string) arrow.RecordBatch {
		kb := array.NewInt64Builder(e.mem)
		defer kb.Release()
		kb.AppendValues(k.Int64[from:to], nil)
		cols := []arrow.Array{kb.NewArray(), wrap(float32s(e.mem, x.Float32[from*4:to*4]), 4)}
		if len(names) == 0 {
			names = []string{"k", "x"}
		}
		return newRecord(t, names, cols...)
	}
	wantTotal, err := c.Fetches["total"].AsFloat64()
	require.NoError(t, err)
	wantY, err := c.Fetches["y"].AsFloat64()
	require.NoError(t, err)
	for _, wrap := range []func(arrow.Array, int) arrow.Array{fixedList, listOf} {
		// Columns in any order.
		got, err := e.exchange(t, ctx, pathDesc("tf2"), batch(0, 2, wrap, "k", "x"), batch(2, 5, wrap, "k", "x"))
		require.NoError(t, err)
		require.Len(t, got, 2)
		var total, y []float64
		for _, r := range got {
			require.Equal(t, []string{"total", "y"}, []string{r.rec.ColumnName(0), r.rec.ColumnName(1)})
			require.Equal(t, arrow.FLOAT64, r.rec.Column(0).DataType().ID())
			require.Equal(t, "fixed_size_list<item: float32, nullable>[3]", r.rec.Column(1).DataType().String())
			total = append(total, values(t, r.rec.Column(0))...)
			y = append(y, values(t, r.rec.Column(1))...)
		}
		require.NoError(t, tftest.CompareFloats(wantTotal, total))
		require.NoError(t, tftest.CompareFloats(wantY, y))
		require.Equal(t, []int64{3, 3}, got[1].meta.Shapes["y"])
	}

	// The output filter: only y.
	got, err := e.exchange(t, ctx, cmdDesc(`{"model":"tf2","outputs":["y"]}`), batch(0, 5, fixedList))
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.EqualValues(t, 1, got[0].rec.NumCols())
	require.Equal(t, "y", got[0].rec.ColumnName(0))
	require.NoError(t, tftest.CompareFloats(wantY, values(t, got[0].rec.Column(0))))
}

// testExchangeShapes runs the scale model: a rank-3 input sent as nested
// fixed-size lists or as one flat fixed-size list (its output a
// fixed_size_list<float32>[6] with the row shape in the field metadata),
// and an input of unknown inner dimension sent as a list or a
// fixed-size list (its output a list, the row shape in the batch
// metadata).
func testExchangeShapes(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	a := []float32{1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6.5}
	b := []int32{10, 20, 30, 40, 50, 60}
	int32s := func(v []int32) arrow.Array {
		bb := array.NewInt32Builder(e.mem)
		defer bb.Release()
		bb.AppendValues(v, nil)
		return bb.NewArray()
	}
	for i, rec := range []arrow.RecordBatch{
		newRecord(t, []string{"a", "b"}, fixedList(fixedList(float32s(e.mem, a), 3), 2), listOf(int32s(b), 3)),
		newRecord(t, []string{"b", "a"}, fixedList(int32s(b), 3), fixedList(float32s(e.mem, a), 6)),
	} {
		got, err := e.exchange(t, ctx, pathDesc("scale"), rec)
		require.NoError(t, err, "variant %d", i)
		require.Len(t, got, 1)
		out := got[0].rec
		require.Equal(t, "a2", out.ColumnName(0))
		require.Equal(t, "fixed_size_list<item: float32, nullable>[6]", out.Column(0).DataType().String())
		require.Equal(t, "[2,3]", meta(t, out.Schema().Field(0), flightsvc.MetaShape))
		var want []float64
		for _, v := range a {
			want = append(want, float64(2*v))
		}
		require.Equal(t, want, values(t, out.Column(0)))
		require.Equal(t, "b1", out.ColumnName(1))
		require.Equal(t, "list<item: int32, nullable>", out.Column(1).DataType().String())
		require.Equal(t, "[-1]", meta(t, out.Schema().Field(1), flightsvc.MetaShape))
		require.Equal(t, []float64{11, 21, 31, 41, 51, 61}, values(t, out.Column(1)))
		require.Equal(t, []int64{2, 3}, got[0].meta.Shapes["b1"])
		require.Equal(t, []int64{2, 2, 3}, got[0].meta.Shapes["a2"])
	}
	// A rank-3 input's rows must hold 6 values.
	_, err := e.exchange(t, ctx, pathDesc("scale"), newRecord(t, []string{"a", "b"}, fixedList(float32s(e.mem, a[:8]), 4), listOf(int32s(b[:2]), 1)))
	requireCode(t, err, codes.InvalidArgument, `column "a": 4 values per row`, "shape [-1,2,3]")
}

// testExchangeStrings runs tf2_savedmodel's "strings" signature: a string
// input and int64, int32, float32 and string outputs.
func testExchangeStrings(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	exp := testmodels.MustLoadExpected(t, "tf2_savedmodel")
	var c *testmodels.Case
	for i := range exp.Cases {
		if exp.Cases[i].Name == "strings_all" {
			c = &exp.Cases[i]
		}
	}
	require.NotNil(t, c)
	text := c.Feeds["text"].Bytes
	sb := array.NewStringBuilder(e.mem)
	defer sb.Release()
	for _, s := range text {
		sb.Append(string(s))
	}
	bb := array.NewBinaryBuilder(e.mem, arrow.BinaryTypes.Binary)
	defer bb.Release()
	bb.AppendValues(text, nil)
	for _, col := range []arrow.Array{sb.NewArray(), bb.NewArray()} {
		got, err := e.exchange(t, ctx, cmdDesc(`{"model":"tf2","signature":"strings"}`), newRecord(t, []string{"text"}, col))
		require.NoError(t, err)
		require.Len(t, got, 1)
		rec := got[0].rec
		require.Equal(t, "strings", got[0].meta.Signature)
		for i, name := range []string{"bucket", "length", "scaled", "upper"} {
			require.Equal(t, name, rec.ColumnName(i))
		}
		upper := rec.Column(3).(*array.Binary)
		for i, want := range c.Fetches["upper"].Bytes {
			require.Equal(t, string(want), string(upper.Value(i)), "row %d", i)
		}
		for i, name := range []string{"bucket", "length", "scaled"} {
			want, err := c.Fetches[name].AsFloat64()
			require.NoError(t, err)
			require.NoError(t, tftest.CompareFloats(want, values(t, rec.Column(i))), name)
		}
	}
}

func readSchema(t *testing.T, b []byte, mem memory.Allocator) *arrow.Schema {
	t.Helper()
	s, err := flight.DeserializeSchema(b, mem)
	require.NoError(t, err)
	return s
}

func meta(t *testing.T, f arrow.Field, key string) string {
	t.Helper()
	v, ok := f.Metadata.GetValue(key)
	require.True(t, ok, "field %s has no %s", f.Name, key)
	return v
}

func testSchemaAndInfo(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	sr, err := e.client.GetSchema(ctx, pathDesc("half_plus_two"))
	require.NoError(t, err)
	s := readSchema(t, sr.GetSchema(), e.mem)
	require.Equal(t, 1, s.NumFields())
	require.Equal(t, "x", s.Field(0).Name)
	require.Equal(t, "fixed_size_list<item: float32, nullable>[1]", s.Field(0).Type.String())
	require.Equal(t, "[1]", meta(t, s.Field(0), flightsvc.MetaShape))
	require.Equal(t, "float32", meta(t, s.Field(0), flightsvc.MetaDType))

	d := pathDesc("tf2", "1")
	sr, err = e.client.GetSchema(ctx, d)
	require.NoError(t, err)
	in := readSchema(t, sr.GetSchema(), e.mem)
	require.Equal(t, "k", in.Field(0).Name)
	require.Equal(t, arrow.PrimitiveTypes.Int64, in.Field(0).Type)
	require.Equal(t, "[]", meta(t, in.Field(0), flightsvc.MetaShape))
	require.Equal(t, "x", in.Field(1).Name)
	require.Equal(t, "fixed_size_list<item: float32, nullable>[4]", in.Field(1).Type.String())
	require.Equal(t, "[4]", meta(t, in.Field(1), flightsvc.MetaShape))

	info, err := e.client.GetFlightInfo(ctx, d)
	require.NoError(t, err)
	require.True(t, readSchema(t, info.GetSchema(), e.mem).Equal(in), "FlightInfo's schema is GetSchema's")
	require.EqualValues(t, -1, info.GetTotalRecords())
	var im flightsvc.InfoMetadata
	require.NoError(t, json.Unmarshal(info.GetAppMetadata(), &im))
	require.Equal(t, "tf2", im.Model)
	require.EqualValues(t, 1, im.Version)
	require.Equal(t, "serving_default", im.Signature)
	require.Equal(t, "tensorflow/serving/predict", im.Method)
	require.Equal(t, []flightsvc.TensorMetadata{{Name: "k", DType: "int64", Shape: []int64{-1}}, {Name: "x", DType: "float32", Shape: []int64{-1, 4}}}, im.Inputs)
	out := readSchema(t, im.OutputSchema, e.mem)
	require.Equal(t, "total", out.Field(0).Name)
	require.Equal(t, arrow.PrimitiveTypes.Float64, out.Field(0).Type)
	require.Equal(t, "y", out.Field(1).Name)
	require.Equal(t, "fixed_size_list<item: float32, nullable>[3]", out.Field(1).Type.String())
	require.Equal(t, "[3]", meta(t, out.Field(1), flightsvc.MetaShape))

	// The endpoint points back here; its ticket streams the input schema.
	require.Len(t, info.GetEndpoint(), 1)
	ep := info.GetEndpoint()[0]
	require.Equal(t, flight.LocationReuseConnection, ep.GetLocation()[0].GetUri())
	stream, err := e.client.DoGet(ctx, ep.GetTicket())
	require.NoError(t, err)
	rdr, err := flight.NewRecordReader(stream, ipc.WithAllocator(e.mem))
	require.NoError(t, err)
	require.True(t, rdr.Schema().Equal(in))
	require.False(t, rdr.Next())
	require.NoError(t, rdr.Err())
	rdr.Release()

	// Unknown models, versions, signatures and descriptors.
	_, err = e.client.GetSchema(ctx, pathDesc("nope"))
	requireCode(t, err, codes.NotFound, "nope")
	_, err = e.client.GetFlightInfo(ctx, pathDesc("tf2", "9"))
	requireCode(t, err, codes.NotFound)
	_, err = e.client.GetFlightInfo(ctx, cmdDesc(`{"model":"tf2","signature":"nope"}`))
	requireCode(t, err, codes.FailedPrecondition, `"nope" not found`, "strings")
	_, err = e.client.GetFlightInfo(ctx, pathDesc("tf2", "one"))
	requireCode(t, err, codes.InvalidArgument, "not a positive integer")
	_, err = e.client.GetSchema(ctx, cmdDesc(`{"model":"tf2","verison":1}`))
	requireCode(t, err, codes.InvalidArgument, "verison")

	// ListFlights: one per model.
	lf, err := e.client.ListFlights(ctx, &flight.Criteria{})
	require.NoError(t, err)
	var names []string
	for {
		info, err := lf.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		names = append(names, strings.Join(info.GetFlightDescriptor().GetPath(), "/"))
		require.NoError(t, json.Unmarshal(info.GetAppMetadata(), &im))
		require.Equal(t, names[len(names)-1], im.Model)
	}
	require.Equal(t, []string{"half_plus_two", "scale", "tf2"}, names)
}

// put uploads batches and returns the PutResult's metadata.
func (e *env) put(t *testing.T, ctx context.Context, d *flight.FlightDescriptor, recs ...arrow.RecordBatch) (flightsvc.PutMetadata, error) {
	t.Helper()
	var pm flightsvc.PutMetadata
	stream, err := e.client.DoPut(ctx)
	require.NoError(t, err)
	w := flight.NewRecordWriter(stream, ipc.WithSchema(recs[0].Schema()), ipc.WithAllocator(e.mem))
	w.SetFlightDescriptor(d)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			break // the server's answer says why
		}
	}
	w.Close()
	require.NoError(t, stream.CloseSend())
	res, err := stream.Recv()
	if err != nil {
		return pm, err
	}
	require.NoError(t, json.Unmarshal(res.GetAppMetadata(), &pm))
	_, err = stream.Recv()
	require.ErrorIs(t, err, io.EOF)
	return pm, nil
}

// get downloads a job's predictions.
func (e *env) get(t *testing.T, ctx context.Context, ticket string) ([]result, error) {
	t.Helper()
	stream, err := e.client.DoGet(ctx, &flight.Ticket{Ticket: []byte(ticket)})
	require.NoError(t, err)
	rdr, err := flight.NewRecordReader(stream, ipc.WithAllocator(e.mem))
	if err != nil {
		return nil, err
	}
	defer rdr.Release()
	var out []result
	for rdr.Next() {
		r := result{rec: rdr.RecordBatch()}
		r.rec.Retain()
		t.Cleanup(r.rec.Release)
		require.NoError(t, json.Unmarshal(rdr.LatestAppMetadata(), &r.meta))
		out = append(out, r)
	}
	return out, rdr.Err()
}

func testPutGet(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	sizes := []int{4, 1, 7}
	var recs []arrow.RecordBatch
	var want [][]float64
	for i, n := range sizes {
		x := xs(n, float32(i)*3-2)
		recs = append(recs, newRecord(t, []string{"x"}, float32s(e.mem, x)))
		want = append(want, halfPlusTwoOf(x))
	}
	pm, err := e.put(t, ctx, pathDesc("half_plus_two"), recs...)
	require.NoError(t, err)
	require.EqualValues(t, 12, pm.Rows)
	require.Equal(t, 3, pm.Batches)
	require.True(t, pm.Expires.After(time.Now()))
	require.True(t, strings.HasPrefix(pm.Ticket, "job:"), pm.Ticket)
	jobs, bytes := e.svc.Jobs()
	require.Equal(t, 1, jobs)
	require.Equal(t, pm.Bytes, bytes)

	got, err := e.get(t, ctx, pm.Ticket)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, r := range got {
		require.Equal(t, want[i], values(t, r.rec.Column(0)), "batch %d", i)
		require.Equal(t, len(want[i]), r.meta.Rows)
		require.EqualValues(t, 123, r.meta.Version)
	}
	jobs, bytes = e.svc.Jobs()
	require.Zero(t, jobs)
	require.Zero(t, bytes)

	// A ticket works once; unknown tickets are not found.
	_, err = e.get(t, ctx, pm.Ticket)
	requireCode(t, err, codes.NotFound, "already used")
	_, err = e.get(t, ctx, "job:0123")
	requireCode(t, err, codes.NotFound)
	_, err = e.get(t, ctx, "whatever")
	requireCode(t, err, codes.NotFound)

	// A failed upload stores nothing.
	bad := newRecord(t, []string{"x"}, jsonArray(t, e.mem, arrow.PrimitiveTypes.Float32, `[1, null]`))
	_, err = e.put(t, ctx, pathDesc("half_plus_two"), recs[0], bad)
	requireCode(t, err, codes.InvalidArgument, `column "x": row 1 is null`)
	jobs, bytes = e.svc.Jobs()
	require.Zero(t, jobs)
	require.Zero(t, bytes)
}

// testBadInput sends wrong columns, types, shapes and nulls: each stream
// fails with INVALID_ARGUMENT naming the column, and the server keeps
// serving, including a stream open while another one fails.
func testBadInput(t *testing.T, e *env) {
	ctx := testCtx(t, time.Minute)
	good := newRecord(t, []string{"x"}, float32s(e.mem, []float32{1, 2}))
	open, err := e.client.DoExchange(ctx)
	require.NoError(t, err)
	ow := flight.NewRecordWriter(open, ipc.WithSchema(good.Schema()), ipc.WithAllocator(e.mem))
	ow.SetFlightDescriptor(pathDesc("half_plus_two"))
	require.NoError(t, ow.Write(good))
	ordr, err := flight.NewRecordReader(open, ipc.WithAllocator(e.mem))
	require.NoError(t, err)
	require.True(t, ordr.Next())
	require.Equal(t, []float64{2.5, 3}, values(t, ordr.RecordBatch().Column(0)))

	k := func() arrow.Array { return jsonArray(t, e.mem, arrow.PrimitiveTypes.Int64, `[1, 2]`) }
	x4 := func() arrow.Array { return fixedList(float32s(e.mem, make([]float32, 8)), 4) }
	for _, tc := range []struct {
		name  string
		d     *flight.FlightDescriptor
		recs  []arrow.RecordBatch
		code  codes.Code
		parts []string
	}{
		{"unknown column", pathDesc("half_plus_two"), []arrow.RecordBatch{newRecord(t, []string{"z"}, float32s(e.mem, []float32{1}))},
			codes.InvalidArgument, []string{`column "z" is not an input`, "inputs: x"}},
		{"wrong type", pathDesc("half_plus_two"), []arrow.RecordBatch{newRecord(t, []string{"x"}, jsonArray(t, e.mem, arrow.PrimitiveTypes.Int32, `[1]`))},
			codes.InvalidArgument, []string{`column "x": type int32`, "float32"}},
		{"null", pathDesc("half_plus_two"), []arrow.RecordBatch{newRecord(t, []string{"x"}, jsonArray(t, e.mem, arrow.PrimitiveTypes.Float32, `[1, 2, null]`))},
			codes.InvalidArgument, []string{`column "x": row 2 is null`}},
		{"null in a list", pathDesc("tf2"), []arrow.RecordBatch{newRecord(t, []string{"k", "x"}, k(), jsonArray(t, e.mem, arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Float32), `[[1,2,3,4],[5,6,null,8]]`))},
			codes.InvalidArgument, []string{`column "x": row 1: value 2 of the row is null`}},
		{"null in the second batch", pathDesc("half_plus_two"), []arrow.RecordBatch{good, newRecord(t, []string{"x"}, jsonArray(t, e.mem, arrow.PrimitiveTypes.Float32, `[null]`))},
			codes.InvalidArgument, []string{`column "x": row 0 is null`}},
		{"missing column", pathDesc("tf2"), []arrow.RecordBatch{newRecord(t, []string{"x"}, x4())},
			codes.InvalidArgument, []string{"missing column for input k"}},
		{"duplicate column", pathDesc("tf2"), []arrow.RecordBatch{newRecord(t, []string{"k", "x", "k"}, k(), x4(), k())},
			codes.InvalidArgument, []string{`column "k" appears twice`}},
		{"wrong width", pathDesc("tf2"), []arrow.RecordBatch{newRecord(t, []string{"k", "x"}, k(), fixedList(float32s(e.mem, make([]float32, 6)), 3))},
			codes.InvalidArgument, []string{`column "x": 3 values per row`, "fixed_size_list<float32>[4]"}},
		{"ragged list", pathDesc("tf2"), []arrow.RecordBatch{newRecord(t, []string{"k", "x"}, k(), jsonArray(t, e.mem, arrow.ListOf(arrow.PrimitiveTypes.Float32), `[[1,2,3,4],[1,2,3]]`))},
			codes.InvalidArgument, []string{`column "x": row 0 holds 4 values and row 1 holds 3`}},
		{"no descriptor", nil, []arrow.RecordBatch{good}, codes.InvalidArgument, []string{"no flight descriptor"}},
		{"unknown model", pathDesc("nope"), []arrow.RecordBatch{good}, codes.NotFound, []string{"nope"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.exchange(t, ctx, tc.d, tc.recs...)
			requireCode(t, err, tc.code, tc.parts...)
			require.Len(t, got, len(tc.recs)-1, "the batches before the bad one are answered")
			// The server still serves.
			got, err = e.exchange(t, ctx, pathDesc("half_plus_two"), good)
			require.NoError(t, err)
			require.Equal(t, []float64{2.5, 3}, values(t, got[0].rec.Column(0)))
		})
	}

	// The stream opened before the failures still works.
	require.NoError(t, ow.Write(good))
	require.True(t, ordr.Next())
	require.Equal(t, []float64{2.5, 3}, values(t, ordr.RecordBatch().Column(0)))
	require.NoError(t, ow.Close())
	require.NoError(t, open.CloseSend())
	require.False(t, ordr.Next())
	require.NoError(t, ordr.Err())
	ordr.Release()
}

// TestBatchingAndJobLimit serves with the batcher on (max batch 4): large
// batches bypass it and small ones go through it, with the same answers;
// a bulk job over the store's limit fails with RESOURCE_EXHAUSTED and
// leaves nothing behind.
func TestBatchingAndJobLimit(t *testing.T) {
	e := start(t, []serving.ModelConfig{hptModel(t)}, &serving.BatchingParameters{MaxBatchSize: 4}, flightsvc.WithJobLimit(64))
	ctx := testCtx(t, time.Minute)
	var recs []arrow.RecordBatch
	var want [][]float64
	for i, n := range []int{9, 3, 4, 1} {
		x := xs(n, float32(i))
		recs = append(recs, newRecord(t, []string{"x"}, float32s(e.mem, x)))
		want = append(want, halfPlusTwoOf(x))
	}
	t.Run("concurrent", func(t *testing.T) {
		for g := range 3 {
			t.Run(fmt.Sprint(g), func(t *testing.T) {
				t.Parallel()
				got, err := e.exchange(t, ctx, pathDesc("half_plus_two"), recs...)
				require.NoError(t, err)
				require.Len(t, got, len(want))
				for i, r := range got {
					require.Equal(t, want[i], values(t, r.rec.Column(0)), "batch %d", i)
				}
			})
		}
	})

	pm, err := e.put(t, ctx, pathDesc("half_plus_two"), recs[1], recs[3])
	require.NoError(t, err)
	require.EqualValues(t, 16, pm.Bytes)
	_, err = e.put(t, ctx, pathDesc("half_plus_two"), recs...)
	requireCode(t, err, codes.ResourceExhausted, "more than the 64 allowed")
	jobs, bytes := e.svc.Jobs()
	require.Equal(t, 1, jobs)
	require.EqualValues(t, 16, bytes)
}

// testPython runs the pyarrow client of testdata/client.py against the
// server and compares what it prints with the expected values.
func testPython(t *testing.T, e *env) {
	python := os.Getenv("GOTFLOW_PYTHON")
	if python == "" {
		t.Skip("GOTFLOW_PYTHON is not set (the interpreter of a venv with pyarrow)")
	}
	ctx := testCtx(t, 2*time.Minute)
	out := runPython(t, ctx, python, "testdata/client.py", "grpc://"+e.addr, filepath.Join(testmodels.Dir("tf2_savedmodel"), "expected.json"))
	var got struct {
		Schema []struct {
			Name     string            `json:"name"`
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"schema"`
		Exchange []struct {
			Y        [][]float64    `json:"y"`
			Metadata map[string]any `json:"metadata"`
		} `json:"exchange"`
		ExchangeTF2 struct {
			Total []float64   `json:"total"`
			Y     [][]float64 `json:"y"`
		} `json:"exchange_tf2"`
		ExchangeTensor struct {
			A2     [][]float64        `json:"a2"`
			B1     [][]int64          `json:"b1"`
			Shapes map[string][]int64 `json:"shapes"`
		} `json:"exchange_tensor"`
		Info struct {
			Model        string   `json:"model"`
			Version      int64    `json:"version"`
			OutputSchema []string `json:"output_schema"`
			Location     string   `json:"location"`
			TicketSchema []string `json:"ticket_schema"`
		} `json:"info"`
		Put struct {
			Rows int64       `json:"rows"`
			Y    [][]float64 `json:"y"`
		} `json:"put"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)

	require.Len(t, got.Schema, 1)
	require.Equal(t, "x", got.Schema[0].Name)
	require.Equal(t, "fixed_size_list<item: float>[1]", got.Schema[0].Type)
	require.Equal(t, map[string]string{flightsvc.MetaDType: "float32", flightsvc.MetaShape: "[1]"}, got.Schema[0].Metadata)

	// The script sends x = [0, 1, 2], [3.5], [-4, 10] (float32).
	batches := [][]float32{{0, 1, 2}, {3.5}, {-4, 10}}
	require.Len(t, got.Exchange, len(batches))
	for i, b := range batches {
		var y []float64
		for _, row := range got.Exchange[i].Y {
			require.Len(t, row, 1)
			y = append(y, row[0])
		}
		require.Equal(t, halfPlusTwoOf(b), y, "batch %d", i)
		require.Equal(t, "half_plus_two", got.Exchange[i].Metadata["model"])
		require.EqualValues(t, 123, got.Exchange[i].Metadata["version"])
	}

	exp := testmodels.MustLoadExpected(t, "tf2_savedmodel")
	for _, c := range exp.Cases {
		if c.Name != "serving_default_batch5" {
			continue
		}
		wantTotal, _ := c.Fetches["total"].AsFloat64()
		wantY, _ := c.Fetches["y"].AsFloat64()
		require.NoError(t, tftest.CompareFloats(wantTotal, got.ExchangeTF2.Total))
		var y []float64
		for _, row := range got.ExchangeTF2.Y {
			require.Len(t, row, 3)
			y = append(y, row...)
		}
		require.NoError(t, tftest.CompareFloats(wantY, y))
	}

	require.Equal(t, [][]float64{{0, 2, 4, 6, 8, 10}, {12, 14, 16, 18, 20, 22}}, got.ExchangeTensor.A2)
	require.Equal(t, [][]int64{{2, 3, 4}, {5, 6, 7}}, got.ExchangeTensor.B1)
	require.Equal(t, map[string][]int64{"a2": {2, 2, 3}, "b1": {2, 3}}, got.ExchangeTensor.Shapes)

	require.Equal(t, "half_plus_two", got.Info.Model)
	require.EqualValues(t, 123, got.Info.Version)
	require.Equal(t, []string{"y: fixed_size_list<item: float>[1]"}, got.Info.OutputSchema)
	require.Equal(t, flight.LocationReuseConnection, got.Info.Location)
	require.Equal(t, []string{"x: fixed_size_list<item: float>[1]"}, got.Info.TicketSchema)

	require.EqualValues(t, 4, got.Put.Rows)
	require.Equal(t, [][]float64{{2}, {2.5}, {3}, {3.5}}, got.Put.Y)

	// pyarrow raises ArrowInvalid for INVALID_ARGUMENT.
	require.Equal(t, "ArrowInvalid", got.Error.Type, got.Error.Message)
	require.Contains(t, got.Error.Message, "invalid argument")
	require.Contains(t, got.Error.Message, `column "x": row 1 is null`)
}

// runPython runs a script with the context's deadline; the child dies
// with the test process.
func runPython(t *testing.T, ctx context.Context, python string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.SysProcAttr = pdeathsig()
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s\nstdout: %s", stderr.String(), out)
	return out
}
