package arrowio_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/feeder/arrowio/arrowiotest"
)

// pairSchema has one column "v" of 2 float32s.
var pairSchema = arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32)}}, nil)

// pairRecord makes a record of pairSchema whose row i is [10i, 10i+1],
// and returns it with the values of all its rows in order.
func pairRecord(mem memory.Allocator, rows int) (arrow.RecordBatch, []float32) {
	b := array.NewRecordBuilder(mem, pairSchema)
	defer b.Release()
	lb := b.Field(0).(*array.FixedSizeListBuilder)
	vb := lb.ValueBuilder().(*array.Float32Builder)
	var vals []float32
	for i := range rows {
		lb.Append(true)
		v := []float32{float32(10 * i), float32(10*i + 1)}
		vb.AppendValues(v, nil)
		vals = append(vals, v...)
	}
	return b.NewRecordBatch(), vals
}

// readPairs reads the Parquet file at path back and returns the values of
// its column of fixed-size lists, row after row.
func readPairs(t *testing.T, path string) []float32 {
	t.Helper()
	src, err := arrowio.OpenParquet(path)
	require.NoError(t, err)
	defer src.Close()
	var got []float32
	for {
		r, err := src.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return got
		}
		require.NoError(t, err)
		got = append(got, r.Column(0).(*array.FixedSizeList).ListValues().(*array.Float32).Float32Values()...)
		r.Release()
	}
}

// TestParquetSinkWritesSlicedLists writes records that are slices (non-zero
// offset) of a larger record holding a fixed-size-list column, as Where and
// Transform produce, and reads back exactly the sliced rows.
func TestParquetSinkWritesSlicedLists(t *testing.T) {
	mem := arrowiotest.CheckedMem(t)
	rec, _ := pairRecord(mem, 6)
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "out.parquet")
	sink, err := arrowio.CreateParquet(path, pairSchema, arrowio.WithAllocator(mem))
	require.NoError(t, err)
	for _, r := range [][2]int64{{1, 3}, {4, 6}} {
		s := rec.NewSlice(r[0], r[1])
		require.NoError(t, sink.Write(s))
		s.Release()
	}
	require.NoError(t, sink.Close())
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	require.Equal(t, []float32{10, 11, 20, 21, 40, 41, 50, 51}, readPairs(t, path))
}

// TestParquetSinkSplitsRowGroups writes one record longer than a row group:
// every row group must hold its own rows (pqarrow's own split would write
// the list values of every row group from the start of the buffer).
func TestParquetSinkSplitsRowGroups(t *testing.T) {
	mem := arrowiotest.CheckedMem(t)
	rec, want := pairRecord(mem, 7)
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "out.parquet")
	sink, err := arrowio.CreateParquet(path, pairSchema, arrowio.WithAllocator(mem), arrowio.RowGroupRows(3))
	require.NoError(t, err)
	require.NoError(t, sink.Write(rec))
	require.NoError(t, sink.Close())
	require.Equal(t, want, readPairs(t, path))
}

func TestParquetSinkRejectsBadRowGroups(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Float32}}, nil)
	for _, n := range []int64{0, -1} {
		_, err := arrowio.CreateParquet(filepath.Join(t.TempDir(), "x.parquet"), schema, arrowio.RowGroupRows(n))
		require.ErrorContains(t, err, "want at least 1")
	}
}
