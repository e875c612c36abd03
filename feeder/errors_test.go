package feeder_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/tf"
)

func oneColumn(mem memory.Allocator, name string, col arrow.Array) arrow.RecordBatch {
	defer col.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: name, Type: col.DataType(), Nullable: true}}, nil)
	return array.NewRecordBatch(schema, []arrow.Array{col}, int64(col.Len()))
}

func requireColumnError(t *testing.T, err error, sentinel error, column string, row int64, contains string) {
	t.Helper()
	require.Error(t, err)
	require.True(t, errors.Is(err, sentinel), "want %v, got %v", sentinel, err)
	var ce *feeder.ColumnError
	require.True(t, errors.As(err, &ce), "want a *ColumnError, got %T: %v", err, err)
	require.Equal(t, column, ce.Column)
	require.Equal(t, row, ce.Row, "row in %v", err)
	require.ErrorContains(t, err, contains)
}

func TestPlanErrors(t *testing.T) {
	mem, _ := cMem(t)
	floats := prim(mem, arrow.PrimitiveTypes.Float32, []float32{1, 2}, nil)
	ints := prim(mem, arrow.PrimitiveTypes.Int64, []int64{1, 2}, nil)
	strs := prim(mem, arrow.BinaryTypes.String, []string{"a", "b"}, nil)
	vec := fsl(mem, 3, prim(mem, arrow.PrimitiveTypes.Float32, seqF32(6), nil), nil)
	defer floats.Release()
	defer ints.Release()
	defer strs.Release()
	defer vec.Release()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "f", Type: floats.DataType()}, {Name: "i", Type: ints.DataType()},
		{Name: "s", Type: strs.DataType()}, {Name: "v", Type: vec.DataType()},
	}, nil)
	tgt := func(name string, dt tf.DataType, shape ...int64) []feeder.Target {
		return []feeder.Target{{TensorSpec: tf.TensorSpec{Name: name, DType: dt, Shape: shape}}}
	}
	cases := []struct {
		name     string
		in       feeder.Input
		targets  []feeder.Target
		sentinel error
		contains string
	}{
		{"missing_column", feeder.Input{Column: "nope", Tensor: "x"}, nil, feeder.ErrMissingColumn, `have: "f", "i", "s", "v"`},
		{"string_into_float", feeder.Input{Column: "s", Tensor: "x"}, tgt("x:0", tf.Float, -1), feeder.ErrType, "string tensors only"},
		{"float_into_string", feeder.Input{Column: "f", Tensor: "x"}, tgt("x", tf.String, -1), feeder.ErrType, "cannot feed the string tensor"},
		{"lossy_without_cast", feeder.Input{Column: "i", Tensor: "x"}, tgt("x", tf.Int32, -1), feeder.ErrType, "set Cast"},
		{"dtype_disagrees_with_target", feeder.Input{Column: "f", Tensor: "x", DType: tf.Double}, tgt("x", tf.Float, -1), feeder.ErrType, "target \"x\" is float32"},
		{"row_shape_mismatch", feeder.Input{Column: "v", Tensor: "x"}, tgt("x", tf.Float, -1, 4), feeder.ErrShape, "do not fit"},
		{"scalar_target", feeder.Input{Column: "f", Tensor: "x"}, []feeder.Target{{TensorSpec: tf.TensorSpec{Name: "x", DType: tf.Float, Shape: []int64{}}}}, feeder.ErrShape, "scalar"},
		{"fill_out_of_range", feeder.Input{Column: "i", Tensor: "x", DType: tf.Int8, Cast: true, Fill: 300}, nil, feeder.ErrType, "does not fit int8"},
		{"fill_not_a_number", feeder.Input{Column: "f", Tensor: "x", Fill: "abc"}, nil, feeder.ErrType, "not a number"},
		{"length_on_fixed_column", feeder.Input{Column: "f", Tensor: "x", Length: 3}, nil, feeder.ErrType, "variable-length lists"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := feeder.NewPlan(schema, feeder.Mapping{c.in}, c.targets)
			requireColumnError(t, err, c.sentinel, c.in.Column, -1, c.contains)
		})
	}
	t.Run("tensor_not_a_target", func(t *testing.T) {
		_, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "f", Tensor: "y"}}, tgt("x", tf.Float, -1))
		require.ErrorContains(t, err, `tensor "y", which is not a target (have: x)`)
	})
	t.Run("tensor_mapped_twice", func(t *testing.T) {
		_, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "f", Tensor: "x"}, {Column: "i", Tensor: "x:0", Cast: true}}, nil)
		require.ErrorContains(t, err, "mapped twice")
	})
	// A target with an Alias is matched and named by it, not by its graph
	// tensor; Plan.Inputs reports both.
	aliased := []feeder.Target{{Alias: "vec", TensorSpec: tf.TensorSpec{Name: "serving_default_vec:0", DType: tf.Double, Shape: []int64{-1, 3}}}}
	t.Run("aliased_target", func(t *testing.T) {
		plan, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "v", Tensor: "vec"}}, aliased)
		require.NoError(t, err)
		require.Equal(t, []feeder.PlannedInput{{Column: "v", Target: feeder.Target{Alias: "vec",
			TensorSpec: tf.TensorSpec{Name: "serving_default_vec:0", DType: tf.Double, Shape: []int64{-1, 3}}}}}, plan.Inputs())
		_, err = feeder.NewPlan(schema, feeder.Mapping{{Column: "v", Tensor: "serving_default_vec"}}, aliased)
		require.ErrorContains(t, err, `tensor "serving_default_vec", which is not a target (have: vec)`)
		_, err = feeder.NewPlan(schema, feeder.Mapping{{Column: "v", Tensor: "vec", DType: tf.Float}}, aliased)
		requireColumnError(t, err, feeder.ErrType, "v", -1, `target "vec" is float64`)
	})
	t.Run("inputs_without_targets", func(t *testing.T) {
		plan, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "v", Tensor: "x"}, {Column: "s", Tensor: "y"}}, nil)
		require.NoError(t, err)
		require.Equal(t, []feeder.PlannedInput{
			{Column: "v", Target: feeder.Target{Alias: "x", TensorSpec: tf.TensorSpec{DType: tf.Float, Shape: []int64{-1, 3}}}},
			{Column: "s", Target: feeder.Target{Alias: "y", TensorSpec: tf.TensorSpec{DType: tf.String, Shape: []int64{-1}}}},
		}, plan.Inputs())
	})
}

func TestConvertErrors(t *testing.T) {
	t.Run("null_without_fill", func(t *testing.T) {
		mem, _ := cMem(t)
		rec := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Float64, []float64{1, 2, 0, 4}, []bool{true, true, false, true}))
		defer rec.Release()
		plan, err := feeder.NewPlan(rec.Schema(), feeder.Mapping{{Column: "v", Tensor: "x"}}, nil)
		require.NoError(t, err)
		_, err = plan.Convert(rec)
		requireColumnError(t, err, feeder.ErrNull, "v", 2, "fill=VALUE")
	})
	t.Run("null_string_without_fill", func(t *testing.T) {
		mem, _ := cMem(t)
		rec := oneColumn(mem, "s", prim(mem, arrow.BinaryTypes.String, []string{"a", ""}, []bool{true, false}))
		defer rec.Release()
		plan, err := feeder.NewPlan(rec.Schema(), feeder.Mapping{{Column: "s", Tensor: "x"}}, nil)
		require.NoError(t, err)
		_, err = plan.Convert(rec)
		requireColumnError(t, err, feeder.ErrNull, "s", 1, "fill=VALUE")
	})
	t.Run("null_row_of_list", func(t *testing.T) {
		mem, _ := cMem(t)
		rec := oneColumn(mem, "v", fsl(mem, 2, prim(mem, arrow.PrimitiveTypes.Int32, seqI32(6), nil), []bool{true, true, false}))
		defer rec.Release()
		plan, err := feeder.NewPlan(rec.Schema(), feeder.Mapping{{Column: "v", Tensor: "x"}}, nil)
		require.NoError(t, err)
		_, err = plan.Convert(rec)
		requireColumnError(t, err, feeder.ErrNull, "v", 2, "fill=VALUE")
	})
	t.Run("ragged_list", func(t *testing.T) {
		mem, _ := cMem(t)
		rec := oneColumn(mem, "l", listOf(mem, arrow.PrimitiveTypes.Int64, [][]any{{int64(1), int64(2)}, {int64(3), int64(4)}, {int64(5)}, {}}))
		defer rec.Release()
		plan, err := feeder.NewPlan(rec.Schema(), feeder.Mapping{{Column: "l", Tensor: "x"}}, nil)
		require.NoError(t, err)
		_, err = plan.Convert(rec)
		requireColumnError(t, err, feeder.ErrRagged, "l", 2, "1 elements, want 2")
	})
	t.Run("fixed_batch_dimension", func(t *testing.T) {
		mem, _ := cMem(t)
		rec := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Float32, seqF32(5), nil))
		defer rec.Release()
		plan, err := feeder.NewPlan(rec.Schema(), feeder.Mapping{{Column: "v", Tensor: "x"}}, []feeder.Target{{TensorSpec: tf.TensorSpec{Name: "x", DType: tf.Float, Shape: []int64{4}}}})
		require.NoError(t, err)
		_, err = plan.Convert(rec)
		requireColumnError(t, err, feeder.ErrShape, "v", -1, "exactly 4 rows, got 5")
	})
	t.Run("null_row_in_stream_counts_from_stream_start", func(t *testing.T) {
		mem, _ := cMem(t)
		a := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Float32, []float32{1, 2, 3}, nil))
		b := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Float32, []float32{1, 0, 3}, []bool{true, false, true}))
		src, err := arrowio.FromRecords(a.Schema(), a, b)
		a.Release()
		b.Release()
		require.NoError(t, err)
		plan, err := feeder.NewPlan(src.Schema(), feeder.Mapping{{Column: "v", Tensor: "x"}}, nil)
		require.NoError(t, err)
		f, err := feeder.New(src, plan, feeder.BatchSize(2), feeder.WithAllocator(mem))
		require.NoError(t, err)
		defer f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for range 2 { // rows 0..3 hold no null
			b, err := f.Next(ctx)
			require.NoError(t, err)
			b.Close()
		}
		_, err = f.Next(ctx)
		requireColumnError(t, err, feeder.ErrNull, "v", 4, "fill=VALUE")
	})
}

// schemaSwitch serves a record of one schema, then one of another.
type schemaSwitch struct {
	recs []arrow.RecordBatch
}

func (s *schemaSwitch) Schema() *arrow.Schema { return s.recs[0].Schema() }
func (s *schemaSwitch) Next(ctx context.Context) (arrow.RecordBatch, error) {
	if len(s.recs) == 0 {
		return nil, io.EOF
	}
	r := s.recs[0]
	s.recs = s.recs[1:]
	return r, nil
}
func (s *schemaSwitch) Close() error {
	for _, r := range s.recs {
		r.Release()
	}
	s.recs = nil
	return nil
}

func TestSchemaChangeMidStream(t *testing.T) {
	mem, _ := cMem(t)
	base := runtime.NumGoroutine()
	defer waitGoroutines(t, base)
	a := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Float32, []float32{1, 2}, nil))
	b := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Int64, []int64{3, 4}, nil))
	src := &schemaSwitch{recs: []arrow.RecordBatch{a, b}}
	plan, err := feeder.NewPlan(src.Schema(), feeder.Mapping{{Column: "v", Tensor: "x"}}, nil)
	require.NoError(t, err)
	f, err := feeder.New(src, plan, feeder.WithAllocator(mem))
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := f.Next(ctx)
	require.NoError(t, err)
	first.Close()
	_, err = f.Next(ctx)
	requireColumnError(t, err, feeder.ErrSchemaChanged, "v", -1, "type changed from float32 to int64")
	_, err = f.Next(ctx)
	require.True(t, errors.Is(err, feeder.ErrSchemaChanged), "the error is sticky: %v", err)
}

func TestTruncatedFiles(t *testing.T) {
	dir := t.TempDir()
	mem, _ := cMem(t)
	base := runtime.NumGoroutine()
	defer waitGoroutines(t, base)
	rec := imageRecord(mem, 64)
	defer rec.Release()
	write := func(name string, create func(string, *arrow.Schema, ...arrowio.SinkOption) (arrowio.Sink, error), opts ...arrowio.SinkOption) string {
		p := filepath.Join(dir, name)
		s, err := create(p, rec.Schema(), opts...)
		require.NoError(t, err)
		require.NoError(t, s.Write(rec))
		require.NoError(t, s.Write(rec))
		require.NoError(t, s.Close())
		return p
	}
	files := map[string]string{
		"parquet":    write("a.parquet", arrowio.CreateParquet),
		"ipc_file":   write("a.arrow", arrowio.CreateIPC),
		"ipc_stream": write("a.arrows", arrowio.CreateIPC, arrowio.IPCStreamFormat()),
	}
	for name, p := range files {
		full, err := os.ReadFile(p)
		require.NoError(t, err)
		for _, frac := range []float64{0.1, 0.5, 0.75, 0.97} {
			t.Run(fmt.Sprintf("%s/%.0f%%", name, frac*100), func(t *testing.T) {
				cut := filepath.Join(dir, "cut-"+filepath.Base(p))
				require.NoError(t, os.WriteFile(cut, full[:int(float64(len(full))*frac)], 0o644))
				err := drain(t, cut, mem)
				require.Error(t, err)
				require.ErrorContains(t, err, cut, "the error names the file")
			})
		}
	}
}

// drain opens path and reads every record through a feeder; it returns the
// first error.
func drain(t *testing.T, path string, mem memory.Allocator) error {
	t.Helper()
	var src feeder.Source
	var err error
	switch filepath.Ext(path) {
	case ".parquet":
		src, err = arrowio.OpenParquet(path, arrowio.WithAllocator(mem))
	default:
		src, err = arrowio.OpenIPC(path, arrowio.WithAllocator(mem))
	}
	if err != nil {
		return err
	}
	plan, err := feeder.NewPlan(src.Schema(), feeder.Mapping{{Column: "pixels", Tensor: "x"}}, nil)
	if err != nil {
		src.Close()
		return err
	}
	f, err := feeder.New(src, plan, feeder.WithAllocator(mem), feeder.BatchSize(32))
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		b, err := f.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b.Close()
	}
}
