package arrowio_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

// checkedMem returns an allocator whose outstanding bytes must be zero when
// the test ends.
func checkedMem(t *testing.T) memory.Allocator {
	t.Helper()
	ca := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { ca.AssertSize(t, 0) })
	return ca
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var idSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "x", Type: arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Float32)},
}, nil)

// idRecords makes nrec records of per rows; row i has id i and x = [i, i+0.25, i+0.5, i+0.75].
func idRecords(mem memory.Allocator, nrec, per int) []arrow.RecordBatch {
	var out []arrow.RecordBatch
	for r := range nrec {
		b := array.NewRecordBuilder(mem, idSchema)
		ib := b.Field(0).(*array.Int64Builder)
		lb := b.Field(1).(*array.FixedSizeListBuilder)
		vb := lb.ValueBuilder().(*array.Float32Builder)
		for i := range per {
			v := int64(r*per + i)
			ib.Append(v)
			lb.Append(true)
			vb.AppendValues([]float32{float32(v), float32(v) + 0.25, float32(v) + 0.5, float32(v) + 0.75}, nil)
		}
		out = append(out, b.NewRecordBatch())
		b.Release()
	}
	return out
}

func seq(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

// readIDs reads every record of src, closes it and returns the id column.
func readIDs(t *testing.T, src arrowio.Source) []int64 {
	t.Helper()
	defer src.Close()
	var ids []int64
	for {
		rec, err := src.Next(testCtx(t))
		if errors.Is(err, io.EOF) {
			return ids
		}
		require.NoError(t, err)
		idx := rec.Schema().FieldIndices("id")
		require.Len(t, idx, 1)
		ids = append(ids, rec.Column(idx[0]).(*array.Int64).Int64Values()...)
		rec.Release()
	}
}

// floatRecord is a record of one nullable float32 column.
func floatRecord(mem memory.Allocator, name string, vals ...float32) arrow.RecordBatch {
	b := array.NewFloat32Builder(mem)
	defer b.Release()
	b.AppendValues(vals, nil)
	col := b.NewArray()
	defer col.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: name, Type: col.DataType(), Nullable: true}}, nil)
	return array.NewRecordBatch(schema, []arrow.Array{col}, int64(col.Len()))
}
