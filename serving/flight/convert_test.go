package flight

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// fromJSON builds an array; the test releases it at cleanup and checks
// mem for leaks.
func fromJSON(t *testing.T, mem memory.Allocator, dt arrow.DataType, js string) arrow.Array {
	t.Helper()
	a, _, err := array.FromJSON(mem, dt, strings.NewReader(js))
	require.NoError(t, err)
	t.Cleanup(a.Release)
	return a
}

func slice(t *testing.T, a arrow.Array, i, j int64) arrow.Array {
	s := array.NewSlice(a, i, j)
	t.Cleanup(s.Release)
	return s
}

func checkedMem(t *testing.T) *memory.CheckedAllocator {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { mem.AssertSize(t, 0) })
	return mem
}

func col(t *testing.T, dt tf.DataType, shape ...int64) *column {
	t.Helper()
	if shape == nil {
		shape = []int64{}
	}
	c, err := newColumn(serving.TensorInfo{Name: "x", DType: dt, Shape: shape}, "input")
	require.NoError(t, err)
	return c
}

func field(a arrow.Array, md ...string) arrow.Field {
	f := arrow.Field{Name: "x", Type: a.DataType()}
	if len(md) == 2 {
		f.Metadata = arrow.NewMetadata([]string{md[0]}, []string{md[1]})
	}
	return f
}

func tensorOf(t *testing.T, c *column, a arrow.Array, md ...string) *serving.Tensor {
	t.Helper()
	x, err := c.toTensor(field(a, md...), a, a.Len())
	require.NoError(t, err)
	require.NoError(t, x.Check("x"))
	return x
}

func floats(t *testing.T, x *serving.Tensor) []float32 {
	v, err := serving.Values[float32](x)
	require.NoError(t, err)
	return v
}

func requireCode(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "%v", err)
	for _, p := range parts {
		require.Contains(t, err.Error(), p)
	}
}

func TestToTensorPrimitiveSliced(t *testing.T) {
	mem := checkedMem(t)
	a := fromJSON(t, mem, arrow.PrimitiveTypes.Float32, `[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]`)
	x := tensorOf(t, col(t, tf.Float, -1), slice(t, a, 3, 7))
	require.Equal(t, []int64{4}, x.Shape)
	require.Equal(t, []float32{3, 4, 5, 6}, floats(t, x))

	// A [-1, 1] input takes a primitive column as one value per row.
	x = tensorOf(t, col(t, tf.Float, -1, 1), slice(t, a, 8, 10))
	require.Equal(t, []int64{2, 1}, x.Shape)
	require.Equal(t, []float32{8, 9}, floats(t, x))

	// float64 is cast to float32.
	d := fromJSON(t, mem, arrow.PrimitiveTypes.Float64, `[0.5, 1.25, 1e300, -2]`)
	x = tensorOf(t, col(t, tf.Float, -1), slice(t, d, 1, 4))
	require.Equal(t, tf.Float, x.DType)
	require.Equal(t, []float32{1.25, float32(math.Inf(1)), -2}, floats(t, x))

	// Other types are exact.
	i := fromJSON(t, mem, arrow.PrimitiveTypes.Int64, `[1, 2]`)
	_, err := col(t, tf.Float, -1).toTensor(field(i), i, 2)
	requireCode(t, err, codes.InvalidArgument, `column "x": type int64`, "float32")
	_, err = col(t, tf.Int32, -1).toTensor(field(i), i, 2)
	requireCode(t, err, codes.InvalidArgument, `column "x": type int64`, "int32")
	x = tensorOf(t, col(t, tf.Int64, -1), slice(t, i, 1, 2))
	v, err := serving.Values[int64](x)
	require.NoError(t, err)
	require.Equal(t, []int64{2}, v)
}

func TestToTensorFixedSizeListSliced(t *testing.T) {
	mem := checkedMem(t)
	a := fromJSON(t, mem, arrow.FixedSizeListOf(3, arrow.PrimitiveTypes.Float32), `[[0,1,2],[3,4,5],[6,7,8],[9,10,11],[12,13,14]]`)
	x := tensorOf(t, col(t, tf.Float, -1, 3), slice(t, a, 1, 4))
	require.Equal(t, []int64{3, 3}, x.Shape)
	require.Equal(t, []float32{3, 4, 5, 6, 7, 8, 9, 10, 11}, floats(t, x))

	// Rows reshape to the signature's inner shape.
	b := fromJSON(t, mem, arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Float32), `[[0,1,2,3],[4,5,6,7]]`)
	x = tensorOf(t, col(t, tf.Float, -1, 2, 2), slice(t, b, 1, 2))
	require.Equal(t, []int64{1, 2, 2}, x.Shape)
	require.Equal(t, []float32{4, 5, 6, 7}, floats(t, x))

	// Nested fixed-size lists, sliced at both levels.
	inner := arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32)
	n := fromJSON(t, mem, arrow.FixedSizeListOf(2, inner), `[[[0,1],[2,3]],[[4,5],[6,7]],[[8,9],[10,11]]]`)
	x = tensorOf(t, col(t, tf.Float, -1, 2, 2), slice(t, n, 1, 3))
	require.Equal(t, []int64{2, 2, 2}, x.Shape)
	require.Equal(t, []float32{4, 5, 6, 7, 8, 9, 10, 11}, floats(t, x))
	x = tensorOf(t, col(t, tf.Float, -1, -1, -1), slice(t, n, 2, 3))
	require.Equal(t, []int64{1, 2, 2}, x.Shape)

	// Wrong width.
	_, err := col(t, tf.Float, -1, 4).toTensor(field(a), a, a.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": 3 values per row`, "fixed_size_list<float32>[4]")
	// A rank-1 input takes no list.
	_, err = col(t, tf.Float, -1).toTensor(field(a), a, a.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": type fixed_size_list<float32>[3]`, "float32 values in a primitive column")
}

func TestToTensorListSliced(t *testing.T) {
	mem := checkedMem(t)
	a := fromJSON(t, mem, arrow.ListOf(arrow.PrimitiveTypes.Int32), `[[1],[2,3],[4,5],[6,7],[8,9,10]]`)
	x := tensorOf(t, col(t, tf.Int32, -1, 2), slice(t, a, 1, 4))
	require.Equal(t, []int64{3, 2}, x.Shape)
	v, err := serving.Values[int32](x)
	require.NoError(t, err)
	require.Equal(t, []int32{2, 3, 4, 5, 6, 7}, v)

	// An unknown inner dimension is the row length.
	x = tensorOf(t, col(t, tf.Int32, -1, -1), slice(t, a, 1, 3))
	require.Equal(t, []int64{2, 2}, x.Shape)
	x = tensorOf(t, col(t, tf.Int32, -1, -1), slice(t, a, 4, 5))
	require.Equal(t, []int64{1, 3}, x.Shape)

	// Ragged rows.
	_, err = col(t, tf.Int32, -1, -1).toTensor(field(a), a, a.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 0 holds 1 values and row 1 holds 2`)

	// Large lists too.
	l := fromJSON(t, mem, arrow.LargeListOf(arrow.PrimitiveTypes.Int32), `[[1,2],[3,4]]`)
	x = tensorOf(t, col(t, tf.Int32, -1, 2), slice(t, l, 1, 2))
	v, err = serving.Values[int32](x)
	require.NoError(t, err)
	require.Equal(t, []int32{3, 4}, v)

	// Several unknown dimensions: nesting, or the shape in field metadata.
	flat := fromJSON(t, mem, arrow.ListOf(arrow.PrimitiveTypes.Int32), `[[1,2,3,4,5,6]]`)
	_, err = col(t, tf.Int32, -1, -1, -1).toTensor(field(flat), flat, 1)
	requireCode(t, err, codes.InvalidArgument, "several unknown dimensions", MetaShape)
	x = tensorOf(t, col(t, tf.Int32, -1, -1, -1), flat, MetaShape, "[2,3]")
	require.Equal(t, []int64{1, 2, 3}, x.Shape)
	x = tensorOf(t, col(t, tf.Int32, -1, -1, 3), flat, extName, fixedShapeTensor)
	require.Equal(t, []int64{1, 2, 3}, x.Shape)
	_, err = col(t, tf.Int32, -1, -1, -1).toTensor(field(flat, MetaShape, "[4,2]"), flat, 1)
	requireCode(t, err, codes.InvalidArgument, "field metadata shape [4,2]")
	// A schema's own metadata (with -1) is no shape.
	x = tensorOf(t, col(t, tf.Int32, -1, 6), flat, MetaShape, "[-1]")
	require.Equal(t, []int64{1, 6}, x.Shape)
}

func TestToTensorNulls(t *testing.T) {
	mem := checkedMem(t)
	a := fromJSON(t, mem, arrow.PrimitiveTypes.Float32, `[0, null, 2, 3, null]`)
	_, err := col(t, tf.Float, -1).toTensor(field(a), a, a.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 1 is null`)
	s := slice(t, a, 2, 5)
	_, err = col(t, tf.Float, -1).toTensor(field(s), s, s.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 2 is null`)
	// The nulls outside the slice do not matter.
	x := tensorOf(t, col(t, tf.Float, -1), slice(t, a, 2, 4))
	require.Equal(t, []float32{2, 3}, floats(t, x))

	l := fromJSON(t, mem, arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32), `[[0,1],[2,null],null]`)
	_, err = col(t, tf.Float, -1, 2).toTensor(field(l), l, l.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 2 is null`)
	s = slice(t, l, 0, 2)
	_, err = col(t, tf.Float, -1, 2).toTensor(field(s), s, s.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 1: value 1 of the row is null`)
	s = slice(t, l, 2, 3)
	_, err = col(t, tf.Float, -1, 2).toTensor(field(s), s, s.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 0 is null`)

	str := fromJSON(t, mem, arrow.BinaryTypes.String, `["a", null]`)
	_, err = col(t, tf.String, -1).toTensor(field(str), str, str.Len())
	requireCode(t, err, codes.InvalidArgument, `column "x": row 1 is null`)
}

func TestToTensorBoolAndStrings(t *testing.T) {
	mem := checkedMem(t)
	b := fromJSON(t, mem, arrow.FixedWidthTypes.Boolean, `[true,false,true,true,false,false,true,false,true,true,false]`)
	x := tensorOf(t, col(t, tf.Bool, -1), slice(t, b, 5, 11))
	require.Equal(t, []byte{0, 1, 0, 1, 1, 0}, x.Data)

	for _, dt := range []arrow.DataType{arrow.BinaryTypes.Binary, arrow.BinaryTypes.String, arrow.BinaryTypes.LargeBinary, arrow.BinaryTypes.LargeString} {
		js := `["zero", "one", "", "three"]`
		if dt.ID() == arrow.BINARY || dt.ID() == arrow.LARGE_BINARY {
			js = `["emVybw==", "b25l", "", "dGhyZWU="]` // base64, as FromJSON reads binary
		}
		s := fromJSON(t, mem, dt, js)
		x := tensorOf(t, col(t, tf.String, -1), slice(t, s, 1, 4))
		require.Equal(t, [][]byte{[]byte("one"), {}, []byte("three")}, x.Strings, "%s", dt)
		// Each value is its own slice: appending to one leaves the next.
		_ = append(x.Strings[0], 'X')
		require.Equal(t, "three", string(x.Strings[2]))
	}
	ls := fromJSON(t, mem, arrow.FixedSizeListOf(2, arrow.BinaryTypes.String), `[["a","b"],["c","d"]]`)
	x = tensorOf(t, col(t, tf.String, -1, 2), slice(t, ls, 1, 2))
	require.Equal(t, []int64{1, 2}, x.Shape)
	require.Equal(t, [][]byte{[]byte("c"), []byte("d")}, x.Strings)
}

func TestCheckType(t *testing.T) {
	f := func(dt arrow.DataType) arrow.Field { return arrow.Field{Name: "x", Type: dt} }
	require.NoError(t, col(t, tf.Float, -1, 3).checkType(f(arrow.FixedSizeListOf(3, arrow.PrimitiveTypes.Float64))))
	require.NoError(t, col(t, tf.Float, -1, 3).checkType(f(arrow.ListOf(arrow.PrimitiveTypes.Float32))))
	require.NoError(t, col(t, tf.Float, -1, 1).checkType(f(arrow.PrimitiveTypes.Float32)))
	require.NoError(t, col(t, tf.Float, -1, 2, 3).checkType(f(arrow.FixedSizeListOf(2, arrow.FixedSizeListOf(3, arrow.PrimitiveTypes.Float32)))))
	requireCode(t, col(t, tf.Float, -1, 3).checkType(f(arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32))),
		codes.InvalidArgument, `column "x": 2 values per row, input "x" wants float32 values in fixed_size_list<float32>[3]`)
	requireCode(t, col(t, tf.Float, -1, 3).checkType(f(arrow.PrimitiveTypes.Float32)), codes.InvalidArgument, "1 values per row")
	requireCode(t, col(t, tf.Int64, -1).checkType(f(arrow.PrimitiveTypes.Int32)), codes.InvalidArgument, "type int32", "int64 values in a primitive column")
	requireCode(t, col(t, tf.Double, -1).checkType(f(arrow.PrimitiveTypes.Float32)), codes.InvalidArgument, "type float32")
	requireCode(t, col(t, tf.String, -1).checkType(f(arrow.PrimitiveTypes.Uint8)), codes.InvalidArgument, "binary")

	_, err := newColumn(serving.TensorInfo{Name: "s", DType: tf.Float, Shape: []int64{}}, "output")
	requireCode(t, err, codes.FailedPrecondition, `output "s" is a scalar`)
}

func TestSchemaTypes(t *testing.T) {
	for _, tc := range []struct {
		dt    tf.DataType
		shape []int64
		want  string
		meta  string
	}{
		{tf.Float, []int64{-1}, "float32", "[]"},
		{tf.Float, []int64{-1, 1}, "fixed_size_list<item: float32, nullable>[1]", "[1]"},
		{tf.Double, []int64{-1, 28, 28, 1}, "fixed_size_list<item: float64, nullable>[784]", "[28,28,1]"},
		{tf.Int64, []int64{-1, -1}, "list<item: int64, nullable>", "[-1]"},
		{tf.String, []int64{-1}, "binary", "[]"},
		{tf.Bool, []int64{-1, 2}, "fixed_size_list<item: bool, nullable>[2]", "[2]"},
		{tf.Half, []int64{-1}, "float16", "[]"},
		{tf.BFloat16, []int64{-1}, "uint16", "[]"},
		{tf.Int32, nil, "list<item: int32, nullable>", ""},
	} {
		c, err := newColumn(serving.TensorInfo{Name: "x", DType: tc.dt, Shape: tc.shape}, "input")
		require.NoError(t, err)
		require.Equal(t, tc.want, c.field.Type.String(), "%s %v", tc.dt, tc.shape)
		v, ok := c.field.Metadata.GetValue(MetaShape)
		require.Equal(t, tc.meta != "", ok)
		require.Equal(t, tc.meta, v)
		v, _ = c.field.Metadata.GetValue(MetaDType)
		require.Equal(t, tc.dt.String(), v)
	}
}

func TestToArray(t *testing.T) {
	mem := checkedMem(t)
	_ = mem
	out := func(dt tf.DataType, shape ...int64) *column {
		c, err := newColumn(serving.TensorInfo{Name: "y", DType: dt, Shape: shape}, "output")
		require.NoError(t, err)
		return c
	}
	a, err := out(tf.Float, -1, 3).toArray(serving.NewTensor([]int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}), 2)
	require.NoError(t, err)
	require.Equal(t, "[[1 2 3] [4 5 6]]", a.String())
	a.Release()

	a, err = out(tf.Int64, -1, -1).toArray(serving.NewTensor([]int64{2, 2}, []int64{1, 2, 3, 4}), 2)
	require.NoError(t, err)
	require.Equal(t, arrow.LIST, a.DataType().ID())
	require.Equal(t, "[[1 2] [3 4]]", a.String())
	a.Release()

	a, err = out(tf.Bool, -1).toArray(serving.NewTensor([]int64{3}, []bool{true, false, true}), 3)
	require.NoError(t, err)
	require.Equal(t, "[true false true]", a.String())
	a.Release()

	a, err = out(tf.String, -1).toArray(&serving.Tensor{DType: tf.String, Shape: []int64{2}, Strings: [][]byte{[]byte("ab"), []byte("c")}}, 2)
	require.NoError(t, err)
	require.Equal(t, "ab", string(a.(*array.Binary).Value(0)))
	require.Equal(t, "c", string(a.(*array.Binary).Value(1)))
	a.Release()

	c := out(tf.Float, -1, 3)
	a, err = c.toArray(c.emptyTensor(), 0)
	require.NoError(t, err)
	require.Equal(t, 0, a.Len())
	a.Release()

	_, err = out(tf.Float, -1).toArray(serving.NewTensor([]int64{3}, []float32{1, 2, 3}), 2)
	requireCode(t, err, codes.FailedPrecondition, `output "y" has shape [3]: not one row per input row (2 rows)`)
	_, err = out(tf.Float, -1, 3).toArray(serving.NewTensor([]int64{1, 2}, []float32{1, 2}), 1)
	requireCode(t, err, codes.Internal, `output "y" has shape [1 2]`)
}

func TestRequestNoBatch(t *testing.T) {
	mem := checkedMem(t)
	meta := &serving.Metadata{Model: "m", Version: 3, Signatures: map[string]serving.Signature{
		"serving_default": {Key: "serving_default", Servable: true, Inputs: []serving.TensorInfo{{Name: "x", DType: tf.Float, Shape: []int64{-1, 1}}},
			Outputs: []serving.TensorInfo{{Name: "y", DType: tf.Float, Shape: []int64{-1, 1}}}},
	}}
	p, err := newPlan(target{Model: "m", Label: "stable"}, meta)
	require.NoError(t, err)
	a := fromJSON(t, mem, arrow.PrimitiveTypes.Float32, `[1, 2, 3, 4]`)
	sc := arrow.NewSchema([]arrow.Field{{Name: "x", Type: a.DataType()}}, nil)
	require.NoError(t, p.checkSchema(sc))
	for _, tc := range []struct {
		rows, max int
		noBatch   bool
	}{{4, 4, true}, {3, 4, false}, {4, 5, false}, {4, 0, false}, {4, 1, true}} {
		s := slice(t, a, 0, int64(tc.rows))
		rec := array.NewRecordBatch(sc, []arrow.Array{s}, int64(tc.rows))
		req, err := p.request(rec, tc.max)
		rec.Release()
		require.NoError(t, err)
		require.Equal(t, tc.noBatch, req.NoBatch, "%+v", tc)
		require.Equal(t, "stable", req.Label)
		require.Equal(t, serving.APIFlight, req.API)
		require.Equal(t, []int64{int64(tc.rows), 1}, req.Inputs["x"].Shape)
	}
	_, err = newPlan(target{Model: "m", Outputs: []string{"z"}}, meta)
	requireCode(t, err, codes.InvalidArgument, "output tensor alias not found in signature: z")
	_, err = newPlan(target{Model: "m", Signature: "other"}, meta)
	requireCode(t, err, codes.FailedPrecondition, `Serving signature key "other" not found`)
}

func TestParseDescriptor(t *testing.T) {
	path := func(p ...string) *flight.FlightDescriptor {
		return &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: p}
	}
	cmd := func(s string) *flight.FlightDescriptor {
		return &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(s)}
	}
	got, err := parseDescriptor(path("m"))
	require.NoError(t, err)
	require.Equal(t, target{Model: "m"}, got)
	got, err = parseDescriptor(path("m", "12"))
	require.NoError(t, err)
	require.Equal(t, target{Model: "m", Version: 12}, got)
	got, err = parseDescriptor(cmd(`{"model":"m","label":"stable","signature":"s","outputs":["a","b"]}`))
	require.NoError(t, err)
	require.Equal(t, target{Model: "m", Label: "stable", Signature: "s", Outputs: []string{"a", "b"}}, got)
	for _, d := range []*flight.FlightDescriptor{nil, path(), path("m", "x"), path("m", "0"), path("m", "1", "2"), path(""),
		cmd(`{"model":"m","versoin":1}`), cmd(`{"version":1}`), cmd(`{"model":"m","version":1,"label":"a"}`), cmd(`{"model":"m"} {}`), cmd(`[`),
		{Type: flight.DescriptorUNKNOWN}} {
		_, err := parseDescriptor(d)
		requireCode(t, err, codes.InvalidArgument)
	}
	for _, tg := range []target{{Model: "m"}, {Model: "m", Version: 3}, {Model: "m", Label: "x"}, {Model: "m", Signature: "s", Outputs: []string{"y"}}} {
		got, err := parseDescriptor(descriptorFor(tg))
		require.NoError(t, err)
		require.Equal(t, tg, got)
	}
}

func TestJobStore(t *testing.T) {
	mem := checkedMem(t)
	now := time.Unix(1000, 0)
	s := newJobStore(100, time.Hour)
	s.now = func() time.Time { return now }
	newJob := func(n int64) *job {
		require.NoError(t, s.reserve(n))
		a := fromJSON(t, mem, arrow.PrimitiveTypes.Int8, `[1]`)
		sc := arrow.NewSchema([]arrow.Field{{Name: "y", Type: a.DataType()}}, nil)
		return &job{schema: sc, recs: []arrow.RecordBatch{array.NewRecordBatch(sc, []arrow.Array{a}, 1)}, metas: [][]byte{nil}, bytes: n}
	}
	t1, err := s.add(newJob(40))
	require.NoError(t, err)
	t2, err := s.add(newJob(40))
	require.NoError(t, err)
	require.NotEqual(t, t1, t2)
	requireCode(t, s.reserve(30), codes.ResourceExhausted, "more than the 100 allowed")

	j := s.take(t1)
	require.NotNil(t, j)
	require.Nil(t, s.take(t1), "a ticket is used once")
	s.done(j)
	n, b := s.stats()
	require.Equal(t, 1, n)
	require.Equal(t, int64(40), b)

	now = now.Add(time.Hour)
	require.Nil(t, s.take(t2), "expired")
	n, b = s.stats()
	require.Equal(t, 0, n)
	require.Equal(t, int64(0), b)

	// The timer drops a job nobody asks for.
	var fire func()
	s.afterFunc = func(d time.Duration, f func()) *time.Timer {
		require.Equal(t, time.Hour, d)
		fire = f
		return time.NewTimer(d)
	}
	_, err = s.add(newJob(10))
	require.NoError(t, err)
	n, _ = s.stats()
	require.Equal(t, 1, n)
	fire()
	n, b = s.stats()
	require.Equal(t, 0, n)
	require.Equal(t, int64(0), b)
	_, err = s.add(newJob(10))
	require.NoError(t, err)
	s.close()
	n, b = s.stats()
	require.Equal(t, 0, n)
	require.Equal(t, int64(0), b)
	requireCode(t, s.reserve(1), codes.Unavailable)
}
