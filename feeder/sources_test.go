package feeder_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/feeder/arrowio/arrowiotest"
)

func TestSinksAndSources(t *testing.T) {
	dir := t.TempDir()
	mem, _ := cMem(t)
	cases := []struct {
		file string
		opts []arrowio.SinkOption
	}{
		{"ids.parquet", []arrowio.SinkOption{arrowio.RowGroupRows(10)}},
		{"ids.arrow", nil},
		{"ids.arrows", []arrowio.SinkOption{arrowio.IPCStreamFormat()}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			p := filepath.Join(dir, c.file)
			arrowiotest.WriteIDs(t, p, mem, 4, 10, c.opts...)
			var src arrowio.Splitter
			var err error
			if strings.HasSuffix(p, ".parquet") {
				src, err = arrowio.OpenParquet(p, arrowio.WithAllocator(mem))
			} else {
				src, err = arrowio.OpenIPC(p, arrowio.WithAllocator(mem))
			}
			require.NoError(t, err)
			requireSameFields(t, arrowiotest.IDSchema, src.Schema())
			require.Equal(t, arrowiotest.Seq(40), arrowiotest.ReadIDs(t, src))

			// feeding from the file through a plan gives the same tensors
			var src2 feeder.Source
			if strings.HasSuffix(p, ".parquet") {
				src2, err = arrowio.OpenParquet(p, arrowio.WithAllocator(mem))
			} else {
				src2, err = arrowio.OpenIPC(p, arrowio.WithAllocator(mem))
			}
			require.NoError(t, err)
			f := newFeeder(t, src2, feeder.BatchSize(16), feeder.WithAllocator(mem))
			_, ids := collect(t, f)
			require.Equal(t, arrowiotest.Seq(40), ids)
		})
	}
	t.Run("parquet_projection", func(t *testing.T) {
		src, err := arrowio.OpenParquet(filepath.Join(dir, "ids.parquet"), arrowio.Columns("id"), arrowio.WithAllocator(mem))
		require.NoError(t, err)
		require.Equal(t, 1, src.Schema().NumFields())
		require.Equal(t, arrowiotest.Seq(40), arrowiotest.ReadIDs(t, src))
		_, err = arrowio.OpenParquet(filepath.Join(dir, "ids.parquet"), arrowio.Columns("nope"))
		require.ErrorIs(t, err, feeder.ErrMissingColumn)
	})
	t.Run("ipc_projection", func(t *testing.T) {
		src, err := arrowio.OpenIPC(filepath.Join(dir, "ids.arrow"), arrowio.Columns("id"), arrowio.WithAllocator(mem))
		require.NoError(t, err)
		require.Equal(t, 1, src.Schema().NumFields())
		require.Equal(t, arrowiotest.Seq(40), arrowiotest.ReadIDs(t, src))
	})
	t.Run("ipc_split_by_record_batch", func(t *testing.T) {
		src, err := arrowio.OpenIPC(filepath.Join(dir, "ids.arrow"), arrowio.WithAllocator(mem))
		require.NoError(t, err)
		parts, err := src.Split(3)
		require.NoError(t, err)
		require.Len(t, parts, 3)
		require.Equal(t, append(arrowiotest.Seq(10), arrowiotest.Seq(40)[30:]...), arrowiotest.ReadIDs(t, parts[0]))
		require.Equal(t, arrowiotest.Seq(20)[10:], arrowiotest.ReadIDs(t, parts[1]))
		require.Equal(t, arrowiotest.Seq(30)[20:], arrowiotest.ReadIDs(t, parts[2]))
		require.NoError(t, src.Close())
		ds, err := arrowio.OpenDataset(filepath.Join(dir, "ids.arrow"), arrowio.WithAllocator(mem))
		require.NoError(t, err)
		p1, err := ds.Partition(1, 4)
		require.NoError(t, err)
		require.Equal(t, arrowiotest.Seq(20)[10:], arrowiotest.ReadIDs(t, p1), "fewer files than parts: split by record batch")
		require.NoError(t, ds.Close())
	})
	t.Run("parquet_split_by_row_group", func(t *testing.T) {
		src, err := arrowio.OpenParquet(filepath.Join(dir, "ids.parquet"), arrowio.WithAllocator(mem))
		require.NoError(t, err)
		parts, err := src.Split(3)
		require.NoError(t, err)
		require.Len(t, parts, 3)
		require.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39}, arrowiotest.ReadIDs(t, parts[0]))
		require.Equal(t, arrowiotest.Seq(20)[10:], arrowiotest.ReadIDs(t, parts[1]))
		require.NoError(t, src.Close())
		parts[2].Close()
	})
}

func TestCSV(t *testing.T) {
	mem, _ := cMem(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "a.csv")
	require.NoError(t, os.WriteFile(p, []byte("id,score,name,ok\n0,1.5,ann,true\n1,,bob,false\n2,-3.25,\"c,d\",true\n"), 0o644))
	t.Run("inferred", func(t *testing.T) {
		src, err := arrowio.OpenCSV(p, arrowio.WithAllocator(mem))
		require.NoError(t, err)
		want := arrow.NewSchema([]arrow.Field{
			{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
			{Name: "score", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
			{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
			{Name: "ok", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		}, nil)
		require.True(t, src.Schema().Equal(want), "inferred %s", src.Schema())
		id := newIdentity(t, ph{"score", 2, []int64{-1}}, ph{"name", 7, []int64{-1}})
		plan, err := feeder.NewPlan(src.Schema(), feeder.Mapping{
			{Column: "score", Tensor: "score", Fill: 0},
			{Column: "name", Tensor: "name"},
		}, id.targets(t, "score", "name"))
		require.NoError(t, err)
		f, err := feeder.New(src, plan, feeder.WithAllocator(mem))
		require.NoError(t, err)
		defer f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := f.Next(ctx)
		require.NoError(t, err)
		defer b.Close()
		out := id.run(t, b, []string{"score", "name"}, "score_out", "name_out")
		requireData(t, out[0], []int64{3}, []float64{1.5, 0, -3.25})
		s, err := out[1].Strings()
		require.NoError(t, err)
		require.Equal(t, [][]byte{[]byte("ann"), []byte("bob"), []byte("c,d")}, s)
	})
	t.Run("explicit_schema", func(t *testing.T) {
		schema := arrow.NewSchema([]arrow.Field{
			{Name: "id", Type: arrow.PrimitiveTypes.Int32},
			{Name: "score", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
			{Name: "name", Type: arrow.BinaryTypes.String},
			{Name: "ok", Type: arrow.FixedWidthTypes.Boolean},
		}, nil)
		src, err := arrowio.OpenCSV(p, arrowio.CSVSchema(schema), arrowio.WithAllocator(mem), arrowio.ReadRows(2))
		require.NoError(t, err)
		defer src.Close()
		require.True(t, src.Schema().Equal(schema))
		ctx := context.Background()
		var n int64
		for {
			rec, err := src.Next(ctx)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			require.True(t, rec.Schema().Equal(schema))
			n += rec.NumRows()
			rec.Release()
		}
		require.Equal(t, int64(3), n)
	})
	t.Run("bad_value", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.csv")
		require.NoError(t, os.WriteFile(bad, []byte("id\n1\nx\n"), 0o644))
		schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
		src, err := arrowio.OpenCSV(bad, arrowio.CSVSchema(schema), arrowio.WithAllocator(mem), arrowio.ReadRows(1))
		if err == nil {
			defer src.Close()
			for err == nil {
				var rec arrow.RecordBatch
				rec, err = src.Next(context.Background())
				if rec != nil {
					rec.Release()
				}
			}
		}
		require.Error(t, err)
		require.NotErrorIs(t, err, io.EOF)
		require.ErrorContains(t, err, "bad.csv")
	})
}

func TestDatasetPartitions(t *testing.T) {
	mem, _ := cMem(t)
	dir := t.TempDir()
	// three files of 2 row groups × 10 rows; ids continue across files
	for f := 0; f < 3; f++ {
		p := filepath.Join(dir, fmt.Sprintf("part-%d.parquet", f))
		s, err := arrowio.CreateParquet(p, arrowiotest.IDSchema, arrowio.RowGroupRows(10))
		require.NoError(t, err)
		for i, r := range arrowiotest.IDRecords(mem, 6, 10) {
			if i/2 == f {
				require.NoError(t, s.Write(r))
			}
			r.Release()
		}
		require.NoError(t, s.Close())
	}
	ds, err := arrowio.OpenDataset(dir, arrowio.WithAllocator(mem))
	require.NoError(t, err)
	require.Len(t, ds.Files(), 3)
	require.Equal(t, arrowiotest.Seq(60), arrowiotest.ReadIDs(t, ds))

	for _, n := range []int{2, 3, 5, 6} {
		t.Run(fmt.Sprintf("%d_parts", n), func(t *testing.T) {
			ds, err := arrowio.OpenDataset(filepath.Join(dir, "*.parquet"), arrowio.WithAllocator(mem))
			require.NoError(t, err)
			defer ds.Close()
			var all []int64
			for i := range n {
				p, err := ds.Partition(i, n)
				require.NoError(t, err)
				ids := arrowiotest.ReadIDs(t, p)
				if n <= 3 {
					// whole files: each part holds complete files
					for _, f := range p.Files() {
						require.Contains(t, ds.Files(), f)
					}
					require.Equal(t, 0, len(ids)%20)
				} else {
					require.LessOrEqual(t, len(ids), 20)
				}
				all = append(all, ids...)
			}
			slices.Sort(all)
			require.Equal(t, arrowiotest.Seq(60), all, "the parts are disjoint and complete")
		})
	}
	t.Run("bad_partition", func(t *testing.T) {
		_, err := ds.Partition(3, 3)
		require.ErrorContains(t, err, "out of range")
	})
	t.Run("schema_differs_between_files", func(t *testing.T) {
		other := oneColumn(mem, "v", prim(mem, arrow.PrimitiveTypes.Float32, []float32{1}, nil))
		defer other.Release()
		p := filepath.Join(dir, "part-9.parquet")
		s, err := arrowio.CreateParquet(p, other.Schema())
		require.NoError(t, err)
		require.NoError(t, s.Write(other))
		require.NoError(t, s.Close())
		defer os.Remove(p)
		ds, err := arrowio.OpenDataset(dir, arrowio.WithAllocator(mem))
		require.NoError(t, err)
		plan, err := feeder.NewPlan(ds.Schema(), idMapping, nil)
		require.NoError(t, err)
		f, err := feeder.New(ds, plan, feeder.WithAllocator(mem))
		require.NoError(t, err)
		defer f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			b, err := f.Next(ctx)
			if err != nil {
				require.ErrorIs(t, err, feeder.ErrSchemaChanged)
				require.ErrorContains(t, err, "part-9.parquet")
				break
			}
			b.Close()
		}
	})
	t.Run("parallel_readers_over_dataset", func(t *testing.T) {
		ds, err := arrowio.OpenDataset(dir+"/part-[0-2].parquet", arrowio.WithAllocator(mem))
		require.NoError(t, err)
		f := newFeeder(t, ds, feeder.Readers(4), feeder.BatchSize(7), feeder.WithAllocator(mem))
		_, ids := collect(t, f)
		slices.Sort(ids)
		require.Equal(t, arrowiotest.Seq(60), ids)
	})
}

// requireSameFields compares names and types (Parquet adds field metadata).
func requireSameFields(t *testing.T, want, got *arrow.Schema) {
	t.Helper()
	require.Equal(t, want.NumFields(), got.NumFields(), "schema %s", got)
	for i, f := range want.Fields() {
		require.Equal(t, f.Name, got.Field(i).Name)
		require.True(t, arrow.TypeEqual(f.Type, got.Field(i).Type), "field %s: %s, want %s", f.Name, got.Field(i).Type, f.Type)
	}
}
