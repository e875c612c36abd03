package arrowiotest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

// CheckedMem returns a Go-memory allocator whose outstanding bytes must be
// zero when the test ends.
func CheckedMem(t *testing.T) memory.Allocator {
	t.Helper()
	ca := memory.NewCheckedAllocator(memory.NewGoAllocator())
	t.Cleanup(func() { ca.AssertSize(t, 0) })
	return ca
}

// IDSchema is the schema of IDRecords: an int64 column "id" and a column
// "x" of 4 float32s.
var IDSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "x", Type: arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Float32)},
}, nil)

// IDRecords makes nrec records of per rows; row i has id i and
// x = [i, i+0.25, i+0.5, i+0.75].
func IDRecords(mem memory.Allocator, nrec, per int) []arrow.RecordBatch {
	var out []arrow.RecordBatch
	for r := range nrec {
		b := array.NewRecordBuilder(mem, IDSchema)
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

// WriteIDs writes IDRecords(mem, nrec, per) to path, a Parquet file if
// its name ends in ".parquet" and an IPC file otherwise.
func WriteIDs(t *testing.T, path string, mem memory.Allocator, nrec, per int, opts ...arrowio.SinkOption) {
	t.Helper()
	var s arrowio.Sink
	var err error
	if strings.HasSuffix(path, ".parquet") {
		s, err = arrowio.CreateParquet(path, IDSchema, opts...)
	} else {
		s, err = arrowio.CreateIPC(path, IDSchema, opts...)
	}
	require.NoError(t, err)
	for _, r := range IDRecords(mem, nrec, per) {
		require.NoError(t, s.Write(r))
		r.Release()
	}
	require.NoError(t, s.Close())
}

// ReadIDs reads every record of src, closes it and returns the "id"
// column in order.
func ReadIDs(t *testing.T, src arrowio.Source) []int64 {
	t.Helper()
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ids []int64
	for {
		rec, err := src.Next(ctx)
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

// Seq returns the ids 0..n-1.
func Seq(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}
