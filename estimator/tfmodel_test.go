package estimator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/internal/tftest"
	"github.com/gotflow/gotflow/tf"
	"github.com/stretchr/testify/require"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// column builds an Arrow column from a fixture array: rank 1 → flat, rank ≥ 2
// → fixed-size list of the row's elements.
func column(t testing.TB, mem memory.Allocator, a *testmodels.Array) arrow.Array {
	t.Helper()
	rows := int(a.Shape[0])
	width := 1
	for _, d := range a.Shape[1:] {
		width *= int(d)
	}
	var leaf arrow.Array
	switch a.DType {
	case "float32":
		b := array.NewFloat32Builder(mem)
		b.AppendValues(a.Float32, nil)
		leaf = b.NewArray()
		b.Release()
	case "float64":
		b := array.NewFloat64Builder(mem)
		b.AppendValues(a.Float64, nil)
		leaf = b.NewArray()
		b.Release()
	case "int64":
		b := array.NewInt64Builder(mem)
		b.AppendValues(a.Int64, nil)
		leaf = b.NewArray()
		b.Release()
	case "int32":
		b := array.NewInt32Builder(mem)
		b.AppendValues(a.Int32, nil)
		leaf = b.NewArray()
		b.Release()
	case "string":
		b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
		b.AppendValues(a.Bytes, nil)
		leaf = b.NewArray()
		b.Release()
	default:
		t.Fatalf("column: dtype %s", a.DType)
	}
	if len(a.Shape) == 1 {
		return leaf
	}
	data := array.NewData(arrow.FixedSizeListOf(int32(width), leaf.DataType()), rows, []*memory.Buffer{nil}, []arrow.ArrayData{leaf.Data()}, 0, 0)
	leaf.Release()
	defer data.Release()
	return array.MakeFromData(data)
}

// reader builds a source over the named columns, cut into records of at
// most chunk rows.
func reader(t testing.TB, mem memory.Allocator, cols map[string]*testmodels.Array, chunk int) arrowio.Source {
	t.Helper()
	var names []string
	for k := range cols {
		names = append(names, k)
	}
	sortStrings(names)
	var fields []arrow.Field
	var arrs []arrow.Array
	var rows int64
	for _, n := range names {
		a := column(t, mem, cols[n])
		fields = append(fields, arrow.Field{Name: n, Type: a.DataType()})
		arrs = append(arrs, a)
		rows = int64(a.Len())
	}
	schema := arrow.NewSchema(fields, nil)
	full := array.NewRecordBatch(schema, arrs, rows)
	for _, a := range arrs {
		a.Release()
	}
	var recs []arrow.RecordBatch
	for off := int64(0); off < rows; off += int64(chunk) {
		recs = append(recs, full.NewSlice(off, min(off+int64(chunk), rows)))
	}
	full.Release()
	rr, err := arrowio.FromRecords(schema, recs...)
	require.NoError(t, err)
	for _, r := range recs {
		r.Release()
	}
	return rr
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// collect drains a stream into per-column float64 (or byte-string) values.
func collect(t testing.TB, s *estimator.Stream) (map[string][]float64, map[string][][]byte, int64) {
	t.Helper()
	nums := map[string][]float64{}
	strs := map[string][][]byte{}
	var rows int64
	for s.Next() {
		rec := s.RecordBatch()
		rows += rec.NumRows()
		for i, f := range rec.Schema().Fields() {
			col := rec.Column(i)
			if l, ok := col.(*array.FixedSizeList); ok {
				col = array.NewSlice(l.ListValues(), int64(l.Offset()*int(l.DataType().(*arrow.FixedSizeListType).Len())), int64((l.Offset()+l.Len())*int(l.DataType().(*arrow.FixedSizeListType).Len())))
				defer col.Release()
			}
			switch c := col.(type) {
			case *array.List:
				// variable-length pass-through columns are not compared
			case *array.Float32:
				for _, v := range c.Float32Values() {
					nums[f.Name] = append(nums[f.Name], float64(v))
				}
			case *array.Float64:
				nums[f.Name] = append(nums[f.Name], c.Float64Values()...)
			case *array.Int32:
				for _, v := range c.Int32Values() {
					nums[f.Name] = append(nums[f.Name], float64(v))
				}
			case *array.Int64:
				for _, v := range c.Int64Values() {
					nums[f.Name] = append(nums[f.Name], float64(v))
				}
			case *array.String:
				for j := 0; j < c.Len(); j++ {
					strs[f.Name] = append(strs[f.Name], []byte(c.Value(j)))
				}
			case *array.Binary:
				for j := 0; j < c.Len(); j++ {
					strs[f.Name] = append(strs[f.Name], append([]byte{}, c.Value(j)...))
				}
			default:
				t.Fatalf("collect: column %s type %s", f.Name, col.DataType())
			}
		}
	}
	require.NoError(t, s.Err())
	return nums, strs, rows
}

func requireMatches(t testing.TB, want *testmodels.Array, nums []float64, strs [][]byte, what string) {
	t.Helper()
	if want.DType == "string" {
		require.Equal(t, want.Bytes, strs, what)
		return
	}
	w, err := want.AsFloat64()
	require.NoError(t, err)
	require.NoError(t, tftest.CompareFloats(w, nums), what)
}

type styleCase struct {
	name    string
	model   func() *estimator.TFModel
	fixture string
	caseN   string
	inMap   map[string]string // column → input; columns are named after feed keys with ':' replaced
	outMap  map[string]string // output → column
}

func colName(key string) string { return strings.NewReplacer(":", "_", "/", "_").Replace(key) }

func TestTransformStylesMatchPython(t *testing.T) {
	cases := []styleCase{
		{name: "signature", fixture: "tf2_savedmodel", caseN: "serving_default_batch5",
			model: func() *estimator.TFModel { return &estimator.TFModel{Path: testmodels.Dir("tf2_savedmodel")} }},
		{name: "signature_strings", fixture: "tf2_savedmodel", caseN: "strings_all",
			model: func() *estimator.TFModel {
				return &estimator.TFModel{Path: testmodels.Dir("tf2_savedmodel"), SignatureDefKey: "strings", BinaryStrings: true}
			}},
		{name: "raw_tensor_names", fixture: "tf2_savedmodel", caseN: "raw_serving_default_batch5",
			model: func() *estimator.TFModel {
				return &estimator.TFModel{Path: testmodels.Dir("tf2_savedmodel"), RawTensorNames: true}
			}},
		{name: "tf1_custom_tags", fixture: "tf1_savedmodel", caseN: "custom_batch6",
			model: func() *estimator.TFModel {
				return &estimator.TFModel{Path: testmodels.Dir("tf1_savedmodel"), TagSet: []string{"train", "custom"}, SignatureDefKey: "predict_custom"}
			}},
		{name: "tf1_serve_scores", fixture: "tf1_savedmodel", caseN: "serve_scores_batch6",
			model: func() *estimator.TFModel {
				return &estimator.TFModel{Path: testmodels.Dir("tf1_savedmodel"), SignatureDefKey: "scores"}
			}},
		{name: "checkpoint", fixture: "tf1_checkpoint", caseN: "batch3",
			model: func() *estimator.TFModel { return &estimator.TFModel{Path: testmodels.Dir("tf1_checkpoint")} }},
		{name: "frozen_graph", fixture: "mlp_frozen", caseN: "batch7",
			model: func() *estimator.TFModel {
				return &estimator.TFModel{Path: filepath.Join(testmodels.Dir("mlp_frozen"), "model.pb")}
			}},
		{name: "keras_cnn", fixture: "cnn_savedmodel", caseN: "serving_default_batch2",
			model: func() *estimator.TFModel { return &estimator.TFModel{Path: testmodels.Dir("cnn_savedmodel")} }},
	}
	for _, tc := range cases {
		for _, bs := range []int{1, 2, 1024} {
			t.Run(tc.name+"/batch"+strconv.Itoa(bs), func(t *testing.T) {
				exp := testmodels.MustLoadExpected(t, tc.fixture)
				c, err := exp.Case(tc.caseN)
				require.NoError(t, err)
				mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
				cols := map[string]*testmodels.Array{}
				m := tc.model()
				m.BatchSize = bs
				if c.Style == "raw" {
					m.InputMapping = map[string]string{}
					m.OutputMapping = map[string]string{}
					for k, a := range c.Feeds {
						cols[colName(k)] = a
						m.InputMapping[colName(k)] = k
					}
					for k, a := range c.Fetches {
						if len(a.Shape) > 0 { // scalars (a checkpoint's step) are not per-row outputs
							m.OutputMapping[k] = "out_" + colName(k)
						}
					}
				} else {
					for k, a := range c.Feeds {
						cols[k] = a
					}
				}
				t.Cleanup(func() { m.Close() })
				rr := reader(t, mem, cols, 3)
				s, err := m.Transform(testCtx(t), rr)
				require.NoError(t, err)
				nums, strs, rows := collect(t, s)
				require.NoError(t, s.Close())
				rr.Close()
				require.Equal(t, int64(cols[firstKey(cols)].Shape[0]), rows)
				for k, want := range c.Fetches {
					if len(want.Shape) == 0 {
						continue
					}
					col := k
					if c.Style == "raw" {
						col = "out_" + colName(k)
					}
					requireMatches(t, want, nums[col], strs[col], k)
				}
				// input columns pass through unchanged
				for k, want := range cols {
					requireMatches(t, want, nums[k], strs[k], "input "+k)
				}
				mem.AssertSize(t, 0)
			})
		}
	}
}

func firstKey(m map[string]*testmodels.Array) string {
	for k := range m {
		return k
	}
	return ""
}

func TestTransformErrors(t *testing.T) {
	ctx := testCtx(t)
	exp := testmodels.MustLoadExpected(t, "tf2_savedmodel")
	c, err := exp.Case("serving_default_batch5")
	require.NoError(t, err)
	dir := testmodels.Dir("tf2_savedmodel")
	mem := leakcheck.Allocator()

	t.Run("unmapped required input", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, InputMapping: map[string]string{"x": "x"}}
		defer m.Close()
		rr := reader(t, mem, map[string]*testmodels.Array{"x": c.Feeds["x"], "kk": c.Feeds["k"]}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `signature "serving_default" input(s) k not mapped`)
	})
	t.Run("missing column", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, InputMapping: map[string]string{"kcol": "k"}}
		defer m.Close()
		rr := reader(t, mem, map[string]*testmodels.Array{"x": c.Feeds["x"]}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `column "kcol": missing column: not in the schema (have: "x")`)
	})
	t.Run("dtype mismatch", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, InputMapping: map[string]string{"x": "x", "kf": "k"}}
		defer m.Close()
		kf := &testmodels.Array{DType: "float64", Shape: []int64{5}, Float64: []float64{1, 2, 3, 4, 5}}
		rr := reader(t, mem, map[string]*testmodels.Array{"x": c.Feeds["x"], "kf": kf}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `column "kf": type mismatch: float64 values do not convert to int64 without loss`)
	})
	t.Run("width mismatch", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, InputMapping: map[string]string{"x3": "x", "k": "k"}}
		defer m.Close()
		x3 := &testmodels.Array{DType: "float32", Shape: []int64{1, 3}, Float32: []float32{1, 2, 3}}
		k := &testmodels.Array{DType: "int64", Shape: []int64{1}, Int64: []int64{1}}
		rr := reader(t, mem, map[string]*testmodels.Array{"x3": x3, "k": k}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `column "x3": shape mismatch: rows of shape [3] (3 elements) do not fit target "x" rows [4]`)
	})
	t.Run("input mapped twice", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, InputMapping: map[string]string{"x": "x", "k2": "k"},
			Inputs: feeder.Mapping{{Column: "k", Tensor: "k", Cast: true}}}
		require.EqualError(t, m.Validate(), `estimator: columns "k2" and "k" are both mapped to "k" (InputMapping and Inputs may each name an input once)`)
	})
	t.Run("unknown output", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, OutputMapping: map[string]string{"z": "z"}}
		defer m.Close()
		rr := reader(t, mem, map[string]*testmodels.Array{"x": c.Feeds["x"], "k": c.Feeds["k"]}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `output "z" not found in signature "serving_default" (have: total, y)`)
	})
	t.Run("output collides with input column", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, OutputMapping: map[string]string{"y": "x"}}
		defer m.Close()
		rr := reader(t, mem, map[string]*testmodels.Array{"x": c.Feeds["x"], "k": c.Feeds["k"]}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `column "x", which the input already has`)
	})
	t.Run("scalar output", func(t *testing.T) {
		m := estimator.TFModel{Path: testmodels.Dir("tf1_checkpoint"), InputMapping: map[string]string{"x": "input:0"},
			OutputMapping: map[string]string{"step_value:0": "step"}}
		defer m.Close()
		x := &testmodels.Array{DType: "float32", Shape: []int64{1, 5}, Float32: []float32{1, 2, 3, 4, 5}}
		rr := reader(t, mem, map[string]*testmodels.Array{"x": x}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorContains(t, err, `output "step_value:0" is a scalar`)
	})
	t.Run("wrong signature", func(t *testing.T) {
		m := estimator.TFModel{Path: dir, SignatureDefKey: "predict"}
		defer m.Close()
		_, err := m.Open(ctx)
		require.ErrorContains(t, err, `(have: serving_default, strings)`)
	})
	t.Run("not a model", func(t *testing.T) {
		m := estimator.TFModel{Path: t.TempDir()}
		_, err := m.Open(ctx)
		require.ErrorContains(t, err, "is not a model")
	})
	t.Run("closed", func(t *testing.T) {
		m := estimator.TFModel{Path: dir}
		require.NoError(t, m.Close())
		rr := reader(t, mem, map[string]*testmodels.Array{"x": c.Feeds["x"], "k": c.Feeds["k"]}, 5)

		_, err := m.Transform(ctx, rr)
		require.ErrorIs(t, err, tf.ErrClosed)
	})
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	m := &estimator.TFModel{Path: testmodels.Dir("tf1_savedmodel"), TagSet: []string{"serve"}, SignatureDefKey: "scores",
		InputMapping: map[string]string{"feat": "features"}, OutputMapping: map[string]string{"probs": "p"}, BatchSize: 7, IntraOpThreads: 1, InFlight: 3}
	require.NoError(t, m.Save(dir))
	got, err := estimator.Load(dir)
	require.NoError(t, err)
	require.Equal(t, m.Path, got.Path)
	require.Equal(t, m.TagSet, got.TagSet)
	require.Equal(t, m.SignatureDefKey, got.SignatureDefKey)
	require.Equal(t, m.InputMapping, got.InputMapping)
	require.Equal(t, m.OutputMapping, got.OutputMapping)
	require.Equal(t, 7, got.BatchSize)
	require.Equal(t, 3, got.InFlight)

	// A model inside the directory is stored relative to it.
	inner := filepath.Join(dir, "model")
	require.NoError(t, os.CopyFS(inner, os.DirFS(testmodels.Dir("mlp_frozen"))))
	m2 := &estimator.TFModel{Path: filepath.Join(inner, "model.pb")}
	require.NoError(t, m2.Save(dir))
	b, err := os.ReadFile(filepath.Join(dir, estimator.ModelFile))
	require.NoError(t, err)
	require.Contains(t, string(b), `"model": "model/model.pb"`)
	got, err = estimator.Load(dir)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(inner, "model.pb"), got.Path)

	for name, doc := range map[string]string{
		"bad json":      `{`,
		"wrong format":  `{"format":"x","model":"m"}`,
		"unknown field": `{"format":"gotflow.tfmodel/v1","model":"m","batchsize":3}`,
		"negative":      `{"format":"gotflow.tfmodel/v1","model":"m","batch_size":-3}`,
		"no model":      `{"format":"gotflow.tfmodel/v1"}`,
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(d, estimator.ModelFile), []byte(doc), 0o644))
			_, err := estimator.Load(d)
			require.Error(t, err)
			require.ErrorContains(t, err, estimator.ModelFile)
		})
	}
}

// rss returns the process's resident set size in bytes.
func rss(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	require.NoError(t, err)
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	return pages * int64(os.Getpagesize())
}

func TestMillionRowsKeepRSSFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("long memory test")
	}
	const rows, width = 1 << 14, 32
	vals := make([]float32, rows*width)
	for i := range vals {
		vals[i] = float32(i%97) / 97
	}
	in := &testmodels.Array{DType: "float32", Shape: []int64{rows, width}, Float32: vals}
	m := estimator.TFModel{Path: testmodels.Dir("mlp_savedmodel"), BatchSize: 1024}
	defer m.Close()
	pass := func() {
		rr := reader(t, memory.DefaultAllocator, map[string]*testmodels.Array{"features": in}, 4096)
		s, err := m.Transform(testCtx(t), rr)
		require.NoError(t, err)
		var n int64
		for s.Next() {
			n += s.RecordBatch().NumRows()
		}
		require.NoError(t, s.Close())
		rr.Close()
		require.Equal(t, int64(rows), n)
	}
	// The allocators and TensorFlow's thread pools grow to a plateau over
	// the first passes, later under load (the machine's other work decides
	// how many threads race, and each new thread's malloc arena faults in
	// in steps): the leak check is the growth over a second million rows
	// past the highest RSS seen during the first million. A leak of even
	// 16 bytes a row would add 16 MiB in that second million.
	const million = 1_000_000
	blocks := million/(rows*20) + 1 // blocks of 20 passes per million rows
	for range 40 {                  // warm up to the plateau
		pass()
	}
	var base, end int64
	for b := range 2 * blocks {
		for range 20 {
			pass()
		}
		runtime.GC()
		r := rss(t)
		if b < blocks {
			base = max(base, r)
		}
		end = r
		t.Logf("after %d rows: RSS %.1f MiB (plateau %.1f MiB)", int64(b+1)*20*rows, float64(r)/(1<<20), float64(base)/(1<<20))
	}
	require.LessOrEqual(t, float64(end), float64(base)*1.02+12<<20,
		fmt.Sprintf("RSS grew from %d (highest over the first %d rows) to %d over %d more rows", base, blocks*20*rows, end, blocks*20*rows))
}

func TestNullStopsStreamAfterEarlierBatches(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	b := array.NewFixedSizeListBuilder(mem, 5, arrow.PrimitiveTypes.Float32)
	vb := b.ValueBuilder().(*array.Float32Builder)
	for r := range 6 {
		if r == 3 {
			b.AppendNull() // appends 5 placeholder values itself
			continue
		}
		b.Append(true)
		vb.AppendValues([]float32{1, 2, 3, 4, float32(r)}, nil)
	}
	col := b.NewArray()
	b.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: col.DataType(), Nullable: true}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, 6)
	col.Release()
	src, err := arrowio.FromRecords(schema, rec)
	require.NoError(t, err)
	rec.Release()

	m := &estimator.TFModel{Path: testmodels.Dir("tf1_checkpoint"), BatchSize: 2,
		InputMapping: map[string]string{"x": "input:0"}, OutputMapping: map[string]string{"output:0": "y"}}
	defer m.Close()
	s, err := m.Transform(testCtx(t), src)
	require.NoError(t, err)
	require.Equal(t, []string{"x", "y"}, []string{s.Schema().Field(0).Name, s.Schema().Field(1).Name})
	var rows int64
	for s.Next() {
		require.True(t, s.RecordBatch().Schema().Equal(s.Schema()))
		rows += s.RecordBatch().NumRows()
	}
	require.Equal(t, int64(2), rows, "the batch before the null is delivered")
	require.ErrorIs(t, s.Err(), feeder.ErrNull)
	require.ErrorContains(t, s.Close(), `column "x"`)
	mem.AssertSize(t, 0)
}

func TestHooksSeeEveryBatch(t *testing.T) {
	exp := testmodels.MustLoadExpected(t, "tf2_savedmodel")
	c, err := exp.Case("serving_default_batch5")
	require.NoError(t, err)
	var seen []estimator.BatchInfo
	m := &estimator.TFModel{Path: testmodels.Dir("tf2_savedmodel"), BatchSize: 2, InFlight: 3,
		Hooks: estimator.Hooks{OnBatch: func(b estimator.BatchInfo) { seen = append(seen, b) }}}
	defer m.Close()
	s, err := m.Transform(testCtx(t), reader(t, leakcheck.Allocator(), map[string]*testmodels.Array{"x": c.Feeds["x"], "k": c.Feeds["k"]}, 5))
	require.NoError(t, err)
	for s.Next() {
	}
	require.NoError(t, s.Close())
	require.Equal(t, []estimator.BatchInfo{{Rows: 2, TotalRows: 2, Batches: 1}, {Rows: 2, TotalRows: 4, Batches: 2}, {Rows: 1, TotalRows: 5, Batches: 3}}, seen)
}

func TestBundleStyleMatchesPython(t *testing.T) {
	dir := filepath.Join(testmodels.Root(), "loader", "testdata", "bundles")
	b, err := os.ReadFile(filepath.Join(dir, "mlp.expected.json"))
	require.NoError(t, err)
	var exp struct {
		Inputs  map[string]*testmodels.Array `json:"inputs"`
		Outputs map[string]*testmodels.Array `json:"outputs"`
	}
	require.NoError(t, json.Unmarshal(b, &exp))
	m := &estimator.TFModel{Path: filepath.Join(dir, "mlp"), BatchSize: 3}
	defer m.Close()
	kind, err := estimator.DetectKind(m.Path)
	require.NoError(t, err)
	require.Equal(t, estimator.KindBundle, kind)
	s, err := m.Transform(testCtx(t), reader(t, leakcheck.Allocator(), exp.Inputs, 4))
	require.NoError(t, err)
	nums, strs, rows := collect(t, s)
	require.NoError(t, s.Close())
	require.Equal(t, exp.Inputs["x"].Shape[0], rows)
	require.NotEmpty(t, exp.Outputs)
	for k, want := range exp.Outputs {
		requireMatches(t, want, nums[k], strs[k], k)
	}
}

// BenchmarkTransform measures TFModel.Transform over in-memory records of
// the MLP fixture (32 float32 features per row). The records live in Go
// memory, so feeds take the copy path; bench/inference measures the
// zero-copy path from Parquet.
func BenchmarkTransform(b *testing.B) {
	const rows, width = 16384, 32
	vals := make([]float32, rows*width)
	for i := range vals {
		vals[i] = float32(i%101) / 101
	}
	in := &testmodels.Array{DType: "float32", Shape: []int64{rows, width}, Float32: vals}
	for _, batch := range []int{64, 1024} {
		b.Run(fmt.Sprintf("mlp/batch%d", batch), func(b *testing.B) {
			m := &estimator.TFModel{Path: testmodels.Dir("mlp_savedmodel"), BatchSize: batch}
			defer m.Close()
			b.SetBytes(rows * width * 4)
			b.ReportAllocs()
			for b.Loop() {
				s, err := m.Transform(context.Background(), reader(b, memory.DefaultAllocator, map[string]*testmodels.Array{"features": in}, 4096))
				if err != nil {
					b.Fatal(err)
				}
				for s.Next() {
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func TestTransformCancelStopsAndFreesEverything(t *testing.T) {
	const rows, width = 4096, 32
	vals := make([]float32, rows*width)
	in := &testmodels.Array{DType: "float32", Shape: []int64{rows, width}, Float32: vals}
	m := &estimator.TFModel{Path: testmodels.Dir("mlp_savedmodel"), BatchSize: 16, InFlight: 3}
	defer m.Close()
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	before := runtime.NumGoroutine()
	for _, early := range []bool{false, true} {
		ctx, cancel := context.WithCancel(testCtx(t))
		s, err := m.Transform(ctx, reader(t, mem, map[string]*testmodels.Array{"features": in}, 1000))
		require.NoError(t, err)
		require.True(t, s.Next())
		if early { // close without draining or canceling
			require.NoError(t, s.Close())
			cancel()
			continue
		}
		cancel()
		for s.Next() {
		}
		require.ErrorIs(t, s.Err(), context.Canceled)
		require.NoError(t, s.Close(), "a canceled stream closes cleanly")
		require.Less(t, s.Rows(), int64(rows))
	}
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+1 }, 5*time.Second, 10*time.Millisecond)
	mem.AssertSize(t, 0)
}
