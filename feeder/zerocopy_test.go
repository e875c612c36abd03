package feeder_test

import (
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/tf"
)

// imageRecord makes rows×784 float32 pixels as a FixedSizeList<784> column.
func imageRecord(mem memory.Allocator, rows int) arrow.RecordBatch {
	vals := make([]float32, rows*784)
	for i := range vals {
		vals[i] = float32(i%1000) / 7
	}
	col := fsl(mem, 784, prim(mem, arrow.PrimitiveTypes.Float32, vals, nil), nil)
	defer col.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "pixels", Type: col.DataType()}}, nil)
	return array.NewRecordBatch(schema, []arrow.Array{col}, int64(rows))
}

func imageValues(from, to int) []float32 {
	out := make([]float32, 0, (to-from)*784)
	for i := from * 784; i < to*784; i++ {
		out = append(out, float32(i%1000)/7)
	}
	return out
}

func TestZeroCopy(t *testing.T) {
	id := newIdentity(t, ph{"x", tf.Float, []int64{-1, 784}})
	mapping := feeder.Mapping{{Column: "pixels", Tensor: "x"}}

	t.Run("c_memory_is_aliased_and_outlives_the_record", func(t *testing.T) {
		mem, ca := cMem(t)
		rec := imageRecord(mem, 8)
		plan, err := feeder.NewPlan(rec.Schema(), mapping, id.targets(t, "x"), feeder.RequireZeroCopy())
		require.NoError(t, err)
		b, err := plan.Convert(rec)
		require.NoError(t, err)
		st := plan.Stats()
		require.Equal(t, int64(1), st.TensorsAliased)
		require.Equal(t, int64(8*784*4), st.BytesAliased)
		require.Zero(t, st.BytesCopied)
		out := id.run(t, b, []string{"x"}, "x_out")[0]
		// drop every Go-side reference: TF's output may still share the buffer
		b.Close()
		rec.Release()
		requireData(t, out, []int64{8, 784}, imageValues(0, 8))
		// Identity forwards its input buffer: the Arrow column stays
		// allocated until TF drops the output, then the release runs.
		require.Positive(t, ca.CurrentAlloc(), "the aliased column was released while TF still used it")
		out.Close()
		require.Zero(t, ca.CurrentAlloc())
	})

	t.Run("slice_on_aligned_rows_is_aliased", func(t *testing.T) {
		mem, _ := cMem(t)
		rec := imageRecord(mem, 8)
		defer rec.Release()
		plan, err := feeder.NewPlan(rec.Schema(), mapping, nil, feeder.RequireZeroCopy())
		require.NoError(t, err)
		b, err := plan.ConvertRows(rec, 3, 4) // 3*784*4 bytes is a multiple of 64
		require.NoError(t, err)
		defer b.Close()
		require.Equal(t, int64(1), plan.Stats().TensorsAliased)
		requireData(t, id.run(t, b, []string{"x"}, "x_out")[0], []int64{4, 784}, imageValues(3, 7))
	})

	copyCases := []struct {
		name string
		make func(t *testing.T) (arrow.RecordBatch, feeder.Mapping)
		why  string
	}{
		{"go_heap", func(t *testing.T) (arrow.RecordBatch, feeder.Mapping) {
			return imageRecord(goMem(t), 4), mapping
		}, "not from a C allocator"},
		{"misaligned", func(t *testing.T) (arrow.RecordBatch, feeder.Mapping) {
			mem, _ := cMem(t)
			vals := seqF32(10)
			col := prim(mem, arrow.PrimitiveTypes.Float32, vals, nil)
			defer col.Release()
			schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: col.DataType()}}, nil)
			full := array.NewRecordBatch(schema, []arrow.Array{col}, 10)
			defer full.Release()
			return full.NewSlice(1, 5), feeder.Mapping{{Column: "v", Tensor: "x"}}
		}, "not 64-byte aligned"},
		{"nulls", func(t *testing.T) (arrow.RecordBatch, feeder.Mapping) {
			mem, _ := cMem(t)
			col := prim(mem, arrow.PrimitiveTypes.Float32, []float32{1, 2, 3}, []bool{true, false, true})
			defer col.Release()
			schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: col.DataType(), Nullable: true}}, nil)
			return array.NewRecordBatch(schema, []arrow.Array{col}, 3), feeder.Mapping{{Column: "v", Tensor: "x", Fill: 0}}
		}, "hold nulls"},
		{"conversion", func(t *testing.T) (arrow.RecordBatch, feeder.Mapping) {
			mem, _ := cMem(t)
			col := prim(mem, arrow.PrimitiveTypes.Int32, []int32{1, 2, 3}, nil)
			defer col.Release()
			schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: col.DataType()}}, nil)
			return array.NewRecordBatch(schema, []arrow.Array{col}, 3), feeder.Mapping{{Column: "v", Tensor: "x", DType: tf.Int64}}
		}, "converted to int64"},
	}
	for _, c := range copyCases {
		t.Run("copy_"+c.name, func(t *testing.T) {
			rec, m := c.make(t)
			defer rec.Release()
			plan, err := feeder.NewPlan(rec.Schema(), m, nil)
			require.NoError(t, err)
			b, err := plan.Convert(rec)
			require.NoError(t, err)
			st := plan.Stats()
			require.Zero(t, st.TensorsAliased)
			require.Equal(t, int64(1), st.TensorsCopied)
			require.Equal(t, int64(len(b.Tensors[0].Bytes())), st.BytesCopied)
			b.Close()

			strict, err := feeder.NewPlan(rec.Schema(), m, nil, feeder.RequireZeroCopy())
			require.NoError(t, err)
			_, err = strict.Convert(rec)
			require.Error(t, err)
			require.True(t, errors.Is(err, feeder.ErrNotZeroCopy), "%v", err)
			require.ErrorContains(t, err, c.why)
		})
	}
}

func TestConvertInto(t *testing.T) {
	mem, _ := cMem(t)
	id := newIdentity(t, ph{"x", tf.Float, []int64{-1, 784}})
	rec := imageRecord(mem, 5)
	defer rec.Release()
	plan, err := feeder.NewPlan(rec.Schema(), feeder.Mapping{{Column: "pixels", Tensor: "x"}}, id.targets(t, "x"))
	require.NoError(t, err)
	dst, err := tf.AllocateTensor(tf.Float, []int64{5, 784})
	require.NoError(t, err)
	defer dst.Close()
	for _, from := range []int{0, 3} { // sliced records
		part := rec.NewSlice(int64(from), int64(from+2))
		small, err := tf.AllocateTensor(tf.Float, []int64{2, 784})
		require.NoError(t, err)
		require.NoError(t, plan.ConvertInto(part, []*tf.Tensor{small}))
		got, err := tf.Data[float32](small)
		require.NoError(t, err)
		require.Equal(t, imageValues(from, from+2), got)
		small.Close()
		part.Release()
	}
	require.NoError(t, plan.ConvertInto(rec, []*tf.Tensor{dst}))
	b, err := plan.Convert(rec) // same values through the allocating path
	require.NoError(t, err)
	defer b.Close()
	want, err := tf.Data[float32](b.Tensors[0])
	require.NoError(t, err)
	got, err := tf.Data[float32](dst)
	require.NoError(t, err)
	require.Equal(t, want, got)

	wrong, err := tf.AllocateTensor(tf.Float, []int64{4, 784})
	require.NoError(t, err)
	defer wrong.Close()
	requireColumnError(t, plan.ConvertInto(rec, []*tf.Tensor{wrong}), feeder.ErrShape, "pixels", -1, "5 rows need")
	ints, err := tf.AllocateTensor(tf.Int32, []int64{5, 784})
	require.NoError(t, err)
	defer ints.Close()
	requireColumnError(t, plan.ConvertInto(rec, []*tf.Tensor{ints}), feeder.ErrType, "pixels", -1, "is not float32")
}
