package arrowio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/feeder/arrowio/arrowiotest"
	"github.com/gotflow/gotflow/internal/leakcheck"
)

func TestSinkIsAtomic(t *testing.T) {
	dir := t.TempDir()
	mem := arrowiotest.CheckedMem(t)
	for _, name := range []string{"out.parquet", "out.arrow"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			create := arrowio.CreateIPC
			if strings.HasSuffix(name, ".parquet") {
				create = arrowio.CreateParquet
			}
			s, err := create(p, arrowiotest.IDSchema)
			require.NoError(t, err)
			for _, r := range arrowiotest.IDRecords(mem, 2, 5) {
				require.NoError(t, s.Write(r))
				r.Release()
			}
			_, err = os.Stat(p)
			require.True(t, os.IsNotExist(err), "the output must not exist before Close")
			require.NoError(t, s.Abort())
			_, err = os.Stat(p)
			require.True(t, os.IsNotExist(err), "Abort leaves no output")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, entries, "Abort removes the temporary file")

			s, err = create(p, arrowiotest.IDSchema)
			require.NoError(t, err)
			other := floatRecord(mem, "v", 1)
			require.ErrorIs(t, s.Write(other), arrowio.ErrSchemaChanged)
			other.Release()
			require.NoError(t, s.Close())
			require.NoError(t, s.Close())
			require.NoError(t, s.Abort(), "Abort after Close is a no-op")
			_, err = os.Stat(p)
			require.NoError(t, err)
			require.NoError(t, os.Remove(p))
		})
	}
}

func TestFromTable(t *testing.T) {
	mem := arrowiotest.CheckedMem(t)
	recs := arrowiotest.IDRecords(mem, 3, 5)
	tbl := array.NewTableFromRecords(arrowiotest.IDSchema, recs)
	for _, r := range recs {
		r.Release()
	}
	defer tbl.Release()
	src, err := arrowio.FromTable(tbl, 4)
	require.NoError(t, err)
	parts, err := src.Split(2)
	require.NoError(t, err)
	a, b := arrowiotest.ReadIDs(t, parts[0]), arrowiotest.ReadIDs(t, parts[1])
	// chunks of at most 4 rows within each 5-row record: [0-3] [4] [5-8] [9]
	// [10-13] [14], dealt round-robin to the parts
	require.Equal(t, []int64{0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13}, a)
	all := append(a, b...)
	slices.Sort(all)
	require.Equal(t, arrowiotest.Seq(15), all)
	require.NoError(t, src.Close())
}

// TestEmptyCSVWithSchemaAndColumns: a CSV file holding only its header,
// read with an explicit schema and a projection, is an empty source.
func TestEmptyCSVWithSchemaAndColumns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.csv")
	require.NoError(t, os.WriteFile(path, []byte("a,b\n"), 0o644))
	schema := arrow.NewSchema([]arrow.Field{{Name: "a", Type: arrow.PrimitiveTypes.Int64}, {Name: "b", Type: arrow.PrimitiveTypes.Float64}}, nil)
	src, err := arrowio.OpenCSV(path, arrowio.CSVSchema(schema), arrowio.Columns("b"))
	require.NoError(t, err)
	defer src.Close()
	require.Equal(t, []string{"b"}, []string{src.Schema().Field(0).Name})
	_, err = src.Next(context.Background())
	require.True(t, errors.Is(err, io.EOF), "got %v", err)
}

// TestIPCStreamLargeSchema reads a stream whose schema message is larger
// than the reader's buffer, which is verified in full, not skipped.
func TestIPCStreamLargeSchema(t *testing.T) {
	mem := leakcheck.Allocator()
	var fields []arrow.Field
	for i := range 2000 {
		fields = append(fields, arrow.Field{Name: fmt.Sprintf("a_rather_long_column_name_to_grow_the_schema_%05d", i), Type: arrow.PrimitiveTypes.Int32})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for i := range fields {
		b.Field(i).(*array.Int32Builder).Append(int32(i))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())

	src, err := arrowio.NewIPCStream(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	defer src.Close()
	got, err := src.Next(context.Background())
	require.NoError(t, err)
	defer got.Release()
	require.EqualValues(t, 1999, got.Column(1999).(*array.Int32).Value(0))
}
