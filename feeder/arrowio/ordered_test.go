package arrowio_test

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
)

func TestOpenOrderedKeepsRowOrder(t *testing.T) {
	dir := t.TempDir()
	var files []string
	next := int64(0)
	// two Parquet files of several row groups, and an IPC file
	for i, n := range []int{1000, 2500} {
		path := filepath.Join(dir, fmt.Sprintf("part%d.parquet", i))
		writeSeq(t, path, &next, n, 300)
		files = append(files, path)
	}
	ipcPath := filepath.Join(dir, "part2.arrow")
	writeSeq(t, ipcPath, &next, 700, 0)
	files = append(files, ipcPath)

	// readers 0 is DefaultReaders; DecodeAhead 0 its default
	for _, readers := range []int{0, 1, 2, 3} {
		for _, ahead := range []int{0, 1, 3} {
			src, err := arrowio.OpenOrdered(files, readers, 128, arrowio.DecodeAhead(ahead))
			require.NoError(t, err)
			var want int64
			for {
				rec, err := src.Next(testCtx(t))
				if err != nil {
					require.ErrorIs(t, err, io.EOF)
					break
				}
				for _, v := range rec.Column(0).(*array.Int64).Int64Values() {
					require.Equal(t, want, v, "readers=%d ahead=%d", readers, ahead)
					want++
				}
				rec.Release()
			}
			require.Equal(t, next, want)
			require.NoError(t, src.Close())
		}
	}
	// closing early leaks nothing and does not block
	src, err := arrowio.OpenOrdered(files, 2, 64)
	require.NoError(t, err)
	rec, err := src.Next(testCtx(t))
	require.NoError(t, err)
	rec.Release()
	require.NoError(t, src.Close())
	require.NoError(t, src.Close())
}

// writeSeq writes n rows of consecutive int64 ids starting at *next, in row
// groups of rowGroup rows (Parquet) or as an IPC file when rowGroup is 0.
func writeSeq(t *testing.T, path string, next *int64, n, rowGroup int) {
	t.Helper()
	b := array.NewInt64Builder(leakcheck.Allocator())
	for range n {
		b.Append(*next)
		*next++
	}
	col := b.NewArray()
	b.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(n))
	col.Release()
	defer rec.Release()
	var sink arrowio.Sink
	var err error
	if rowGroup > 0 {
		sink, err = arrowio.CreateParquet(path, schema, arrowio.RowGroupRows(int64(rowGroup)))
	} else {
		sink, err = arrowio.CreateIPC(path, schema)
	}
	require.NoError(t, err)
	require.NoError(t, sink.Write(rec))
	require.NoError(t, sink.Close())
}

// TestOpenOrderedFastPathValues reads fixed-size-list and flat columns
// through the direct Parquet decoder and, with a null present, through the
// general reader, and checks every value.
func TestOpenOrderedFastPathValues(t *testing.T) {
	for _, withNull := range []bool{false, true} {
		t.Run(fmt.Sprint("null=", withNull), func(t *testing.T) {
			const rows, width = 3000, 5
			mem := leakcheck.Allocator()
			var schema *arrow.Schema
			// makeRec builds rows [start, start+n) from scratch: arrow-go
			// v18.8.0's Parquet writer ignores the offset of a sliced
			// fixed-size list and writes the values from the start.
			makeRec := func(start, n int) arrow.RecordBatch {
				lb := array.NewFixedSizeListBuilder(mem, width, arrow.PrimitiveTypes.Float32)
				vb := lb.ValueBuilder().(*array.Float32Builder)
				db := array.NewFloat64Builder(mem)
				ib := array.NewInt32Builder(mem)
				for r := start; r < start+n; r++ {
					lb.Append(true)
					for k := range width {
						vb.Append(float32(r*width + k))
					}
					if withNull && r == 1234 {
						db.AppendNull()
					} else {
						db.Append(float64(r) / 4)
					}
					ib.Append(int32(-r))
				}
				cols := []arrow.Array{lb.NewArray(), db.NewArray(), ib.NewArray()}
				lb.Release()
				db.Release()
				ib.Release()
				schema = arrow.NewSchema([]arrow.Field{
					{Name: "v", Type: cols[0].DataType(), Nullable: true},
					{Name: "d", Type: cols[1].DataType(), Nullable: true},
					{Name: "i", Type: cols[2].DataType(), Nullable: true}}, nil)
				rec := array.NewRecordBatch(schema, cols, int64(n))
				for _, c := range cols {
					c.Release()
				}
				return rec
			}
			first := makeRec(0, 700)
			path := filepath.Join(t.TempDir(), "data.parquet")
			sink, err := arrowio.CreateParquet(path, schema, arrowio.RowGroupRows(700))
			require.NoError(t, err)
			require.NoError(t, sink.Write(first))
			first.Release()
			for off := 700; off < rows; off += 700 {
				part := makeRec(off, min(700, rows-off))
				require.NoError(t, sink.Write(part))
				part.Release()
			}
			require.NoError(t, sink.Close())

			readers := 2
			if withNull { // the general reader, default readers
				readers = 0
			}
			src, err := arrowio.OpenOrdered([]string{path}, readers, 256)
			require.NoError(t, err)
			defer src.Close()
			r := 0
			for {
				rec, err := src.Next(testCtx(t))
				if err != nil {
					require.ErrorIs(t, err, io.EOF)
					break
				}
				require.LessOrEqual(t, rec.NumRows(), int64(256))
				l := rec.Column(0).(*array.FixedSizeList)
				vals := l.ListValues().(*array.Float32)
				d := rec.Column(1).(*array.Float64)
				in := rec.Column(2).(*array.Int32)
				for j := 0; j < int(rec.NumRows()); j++ {
					for k := range width {
						require.Equal(t, float32(r*width+k), vals.Value((l.Offset()+j)*width+k))
					}
					if withNull && r == 1234 {
						require.True(t, d.IsNull(j))
					} else {
						require.Equal(t, float64(r)/4, d.Value(j))
					}
					require.Equal(t, int32(-r), in.Value(j))
					r++
				}
				rec.Release()
			}
			require.Equal(t, rows, r)
		})
	}
}

// TestOpenOrderedEmptyFile: a Parquet file without row groups is an empty
// stream, whatever the readers.
func TestOpenOrderedEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.parquet")
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
	sink, err := arrowio.CreateParquet(path, schema)
	require.NoError(t, err)
	require.NoError(t, sink.Close())
	for _, readers := range []int{0, 2} {
		src, err := arrowio.OpenOrdered([]string{path}, readers, 64)
		require.NoError(t, err)
		_, err = src.Next(testCtx(t))
		require.ErrorIs(t, err, io.EOF)
		require.NoError(t, src.Close())
	}
}
