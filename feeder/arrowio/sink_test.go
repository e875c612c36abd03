package arrowio_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

// TestParquetSinkWritesSlicedLists writes records that are slices (non-zero
// offset) of a larger record holding a fixed-size-list column, as Where and
// Transform produce, and reads back exactly the sliced rows.
func TestParquetSinkWritesSlicedLists(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32)}}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	lb := b.Field(0).(*array.FixedSizeListBuilder)
	vb := lb.ValueBuilder().(*array.Float32Builder)
	for i := range 6 {
		lb.Append(true)
		vb.AppendValues([]float32{float32(10 * i), float32(10*i + 1)}, nil)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "out.parquet")
	sink, err := arrowio.CreateParquet(path, schema, arrowio.WithAllocator(mem))
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

	src, err := arrowio.OpenParquet(path)
	require.NoError(t, err)
	defer src.Close()
	var got []float32
	for {
		r, err := src.Next(context.Background())
		if err != nil {
			break
		}
		got = append(got, r.Column(0).(*array.FixedSizeList).ListValues().(*array.Float32).Float32Values()...)
		r.Release()
	}
	require.Equal(t, []float32{10, 11, 20, 21, 40, 41, 50, 51}, got)
}

// TestParquetSinkSplitsRowGroups writes one record longer than a row group:
// every row group must hold its own rows (pqarrow's own split would write
// the list values of every row group from the start of the buffer).
func TestParquetSinkSplitsRowGroups(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32)}}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	lb := b.Field(0).(*array.FixedSizeListBuilder)
	vb := lb.ValueBuilder().(*array.Float32Builder)
	var want []float32
	for i := range 7 {
		lb.Append(true)
		v := []float32{float32(10 * i), float32(10*i + 1)}
		vb.AppendValues(v, nil)
		want = append(want, v...)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "out.parquet")
	sink, err := arrowio.CreateParquet(path, schema, arrowio.WithAllocator(mem), arrowio.RowGroupRows(3))
	require.NoError(t, err)
	require.NoError(t, sink.Write(rec))
	require.NoError(t, sink.Close())

	src, err := arrowio.OpenParquet(path)
	require.NoError(t, err)
	defer src.Close()
	var got []float32
	for {
		r, err := src.Next(context.Background())
		if err != nil {
			break
		}
		got = append(got, r.Column(0).(*array.FixedSizeList).ListValues().(*array.Float32).Float32Values()...)
		r.Release()
	}
	require.Equal(t, want, got)
}

func TestParquetSinkRejectsBadRowGroups(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Float32}}, nil)
	for _, n := range []int64{0, -1} {
		_, err := arrowio.CreateParquet(filepath.Join(t.TempDir(), "x.parquet"), schema, arrowio.RowGroupRows(n))
		require.ErrorContains(t, err, "want at least 1")
	}
}
