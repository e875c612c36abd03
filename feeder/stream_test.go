package feeder_test

import (
	"context"
	"crypto/sha256"
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
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/tf"
)

var streamSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "x", Type: arrow.FixedSizeListOf(4, arrow.PrimitiveTypes.Float32)},
	{Name: "tag", Type: arrow.BinaryTypes.String},
}, nil)

// writeStreamFiles writes files of uneven sizes and row groups under dir
// (Hive-partitioned by split) and returns the total rows. Row i has id i,
// x = [i, i+.25, i+.5, i+.75] and tag "t<i%3>".
func writeStreamFiles(t *testing.T, dir string, sizes [][]int) int {
	t.Helper()
	id := 0
	for f, groups := range sizes {
		part := filepath.Join(dir, "split=train")
		require.NoError(t, os.MkdirAll(part, 0o755))
		path := filepath.Join(part, fmt.Sprintf("part-%03d.parquet", f))
		// Each group is written as its own record and row group.
		maxG := slices.Max(groups)
		sink, err := arrowio.CreateParquet(path, streamSchema, arrowio.RowGroupRows(int64(maxG)))
		require.NoError(t, err)
		for _, n := range groups {
			ib := array.NewInt64Builder(leakcheck.Allocator())
			xb := array.NewFixedSizeListBuilder(leakcheck.Allocator(), 4, arrow.PrimitiveTypes.Float32)
			vb := xb.ValueBuilder().(*array.Float32Builder)
			sb := array.NewStringBuilder(leakcheck.Allocator())
			for range n {
				ib.Append(int64(id))
				xb.Append(true)
				for k := range 4 {
					vb.Append(float32(id) + float32(k)/4)
				}
				sb.Append(fmt.Sprintf("t%d", id%3))
				id++
			}
			cols := []arrow.Array{ib.NewArray(), xb.NewArray(), sb.NewArray()}
			rec := array.NewRecordBatch(streamSchema, cols, int64(n))
			require.NoError(t, sink.Write(rec))
			rec.Release()
			for _, c := range cols {
				c.Release()
			}
			ib.Release()
			xb.Release()
			sb.Release()
		}
		require.NoError(t, sink.Close())
	}
	return id
}

// unevenSizes is 7 files of 1 to 3 row groups of 5 to 41 rows.
var unevenSizes = [][]int{{17, 5}, {41}, {9, 23, 11}, {30}, {6, 6}, {38, 12}, {19}}

func streamPlan(t *testing.T, schema *arrow.Schema) *feeder.Plan {
	t.Helper()
	p, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "id", Tensor: "id"}, {Column: "x", Tensor: "x"}},
		[]feeder.Target{{TensorSpec: tf.TensorSpec{Name: "id", DType: tf.Int64, Shape: []int64{-1}}}, {TensorSpec: tf.TensorSpec{Name: "x", DType: tf.Float, Shape: []int64{-1, 4}}}})
	require.NoError(t, err)
	return p
}

type epochRun struct {
	ids    [][]int64 // per batch
	digest [32]byte  // of every batch's bytes in order
}

// readShare streams one worker's share of an epoch and checks each row's
// values against its id.
func readShare(t *testing.T, d *arrowio.StreamDataset, pieces []arrowio.Piece, cfg feeder.StreamConfig) epochRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := feeder.NewStream(ctx, d, pieces, cfg)
	require.NoError(t, err)
	defer s.Close()
	h := sha256.New()
	var run epochRun
	for {
		b, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		ids, err := tf.Data[int64](b.Tensors[0])
		require.NoError(t, err)
		xs, err := tf.Data[float32](b.Tensors[1])
		require.NoError(t, err)
		for j, id := range ids {
			for k := range 4 {
				require.Equal(t, float32(id)+float32(k)/4, xs[j*4+k], "row %d", id)
			}
		}
		run.ids = append(run.ids, slices.Clone(ids))
		h.Write(b.Tensors[0].Bytes())
		h.Write(b.Tensors[1].Bytes())
		b.Close()
	}
	copy(run.digest[:], h.Sum(nil))
	return run
}

func TestStreamEpochContract(t *testing.T) {
	dir := t.TempDir()
	total := writeStreamFiles(t, dir, unevenSizes)
	d, err := arrowio.ScanDataset(dir, arrowio.ScanConfig{})
	require.NoError(t, err)
	require.Equal(t, int64(total), d.NumRows())
	require.Len(t, d.Units(), 12)
	require.Equal(t, "split", d.Schema().Field(3).Name, "the Hive partition becomes a column")
	d, err = d.Project([]string{"id", "x"})
	require.NoError(t, err)
	plan := streamPlan(t, d.Schema())
	const batch = 8
	for _, world := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("W=%d", world), func(t *testing.T) {
			var prevOrder []int64
			for epoch := range 3 {
				order := arrowio.EpochOrder(d.Pieces(), 42, epoch, true)
				shares := arrowio.Deal(order, world)
				rows := make([]int64, world)
				for w := range shares {
					rows[w] = arrowio.RowsOf(shares[w])
				}
				steps := arrowio.EqualSteps(rows, batch)
				seen := map[int64]int{}
				var all []int64
				for w := range world {
					require.Zero(t, steps.Dropped[w])
					cfg := feeder.StreamConfig{Plan: plan, Batches: arrowio.BatchLayout(rows[w], steps.Steps, batch),
						Readers: 3, ShuffleBytes: 1 << 10, ShuffleRows: true, Seed: uint64(epoch*1000 + w)}
					a := readShare(t, d, shares[w], cfg)
					b := readShare(t, d, shares[w], feeder.StreamConfig{Plan: plan, Batches: cfg.Batches, Readers: 1,
						ShuffleBytes: cfg.ShuffleBytes, ShuffleRows: true, Seed: cfg.Seed})
					require.Equal(t, a.digest, b.digest, "byte-identical batches with 3 readers and 1")
					require.Len(t, a.ids, steps.Steps, "worker %d runs the common step count", w)
					for _, ids := range a.ids {
						require.LessOrEqual(t, len(ids), batch)
						for _, id := range ids {
							seen[id]++
							all = append(all, id)
						}
					}
					// Resume: skipping k batches gives the rest of the same sequence.
					for _, k := range []int{1, len(a.ids) / 2, len(a.ids) - 1} {
						cfg.Skip = k
						r := readShare(t, d, shares[w], cfg)
						require.Equal(t, a.ids[k:], r.ids, "resumed at batch %d", k)
					}
				}
				require.Len(t, seen, total, "every row once per epoch")
				for id, n := range seen {
					require.Equal(t, 1, n, "row %d", id)
				}
				require.NotEqual(t, prevOrder, all, "epoch %d repeats the order of the one before", epoch)
				prevOrder = all
			}
		})
	}
}

func TestStreamNoShuffleKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	total := writeStreamFiles(t, dir, unevenSizes)
	d, err := arrowio.ScanDataset(dir, arrowio.ScanConfig{Options: []arrowio.SourceOption{arrowio.Columns("id", "x")}})
	require.NoError(t, err)
	d, err = d.Project([]string{"id", "x"})
	require.NoError(t, err)
	run := readShare(t, d, arrowio.EpochOrder(d.Pieces(), 1, 0, false), feeder.StreamConfig{Plan: streamPlan(t, d.Schema()), BatchRows: 10, Readers: 2})
	var ids []int64
	for _, b := range run.ids {
		ids = append(ids, b...)
	}
	require.Len(t, ids, total)
	for i, id := range ids {
		require.Equal(t, int64(i), id)
	}
}

func TestStreamMemoryBound(t *testing.T) {
	dir := t.TempDir()
	writeStreamFiles(t, dir, [][]int{{400, 300}, {500}, {250, 250, 250}, {600}})
	d, err := arrowio.ScanDataset(dir, arrowio.ScanConfig{})
	require.NoError(t, err)
	d, err = d.Project([]string{"id", "x"})
	require.NoError(t, err)
	checked := memory.NewCheckedAllocator(memory.NewGoAllocator())
	budget := feeder.NewBudgetAllocator(checked, 0)
	cfg := feeder.StreamConfig{Plan: streamPlan(t, d.Schema()), BatchRows: 32, Readers: 2, ShuffleBytes: 40 << 10, Prefetch: 3, Mem: budget}
	bound := feeder.Bound(d, cfg)
	cfg.Limit = bound.Total
	cfg.Mem = budget
	run := readShare(t, d, arrowio.EpochOrder(d.Pieces(), 7, 0, true), cfg)
	require.NotEmpty(t, run.ids)
	require.Positive(t, budget.Peak())
	require.LessOrEqual(t, budget.Peak(), bound.Total, "peak %d over the bound %s", budget.Peak(), bound)
	t.Logf("peak %d of bound %s", budget.Peak(), bound)
	checked.AssertSize(t, 0)

	// A limit below what one unit needs fails with ErrMemoryBudget.
	cfg.Limit = 1 << 10
	ctx := context.Background()
	s, err := feeder.NewStream(ctx, d, d.Pieces(), cfg)
	require.NoError(t, err)
	_, err = s.Next(ctx)
	require.ErrorIs(t, err, feeder.ErrMemoryBudget)
	require.NoError(t, s.Close())
	checked.AssertSize(t, 0)
}

func TestStreamBadInput(t *testing.T) {
	t.Run("schemas disagree", func(t *testing.T) {
		dir := t.TempDir()
		writeStreamFiles(t, dir, [][]int{{3}})
		other := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int32}}, nil)
		sink, err := arrowio.CreateParquet(filepath.Join(dir, "split=train", "zz.parquet"), other)
		require.NoError(t, err)
		b := array.NewInt32Builder(leakcheck.Allocator())
		defer b.Release()
		b.Append(1)
		col := b.NewArray()
		defer col.Release()
		rec := array.NewRecordBatch(other, []arrow.Array{col}, 1)
		defer rec.Release()
		require.NoError(t, sink.Write(rec))
		require.NoError(t, sink.Close())
		_, err = arrowio.ScanDataset(dir, arrowio.ScanConfig{})
		require.ErrorIs(t, err, feeder.ErrSchemaChanged)
		require.ErrorContains(t, err, "zz.parquet")
	})
	t.Run("where matches no row", func(t *testing.T) {
		dir := t.TempDir()
		writeStreamFiles(t, dir, [][]int{{10, 10}})
		_, err := arrowio.ScanDataset(dir, arrowio.ScanConfig{WhereColumn: "tag", WhereValue: "nope"})
		require.ErrorIs(t, err, arrowio.ErrNoRows)
		require.ErrorContains(t, err, `tag = "nope"`)
	})
	t.Run("unit over the shuffle buffer", func(t *testing.T) {
		dir := t.TempDir()
		writeStreamFiles(t, dir, [][]int{{1000}})
		d, err := arrowio.ScanDataset(dir, arrowio.ScanConfig{})
		require.NoError(t, err)
		d, err = d.Project([]string{"id", "x"})
		require.NoError(t, err)
		err = feeder.CheckBudget(d, feeder.StreamConfig{Plan: streamPlan(t, d.Schema()), ShuffleBytes: 1 << 10})
		require.ErrorIs(t, err, feeder.ErrMemoryBudget)
		require.ErrorContains(t, err, "row group 0 holds 1000 rows")
		require.ErrorContains(t, err, "raise the shuffle buffer to at least 23.4 KiB")
	})
}

func TestStreamWhere(t *testing.T) {
	dir := t.TempDir()
	total := writeStreamFiles(t, dir, unevenSizes)
	d, err := arrowio.ScanDataset(dir, arrowio.ScanConfig{WhereColumn: "tag", WhereValue: "t1"})
	require.NoError(t, err)
	want := 0
	for i := range total {
		if i%3 == 1 {
			want++
		}
	}
	require.Equal(t, int64(want), d.NumRows())
	d, err = d.Project([]string{"id", "x"})
	require.NoError(t, err)
	run := readShare(t, d, d.Pieces(), feeder.StreamConfig{Plan: streamPlan(t, d.Schema()), BatchRows: 7})
	n := 0
	for _, b := range run.ids {
		for _, id := range b {
			require.Equal(t, int64(1), id%3)
			n++
		}
	}
	require.Equal(t, want, n)

	// A partition column filters whole files; a row group whose
	// statistics exclude the value is never read.
	d, err = arrowio.ScanDataset(dir, arrowio.ScanConfig{WhereColumn: "split", WhereValue: "train"})
	require.NoError(t, err)
	require.Equal(t, int64(total), d.NumRows())
	d, err = d.Project([]string{"id", "x"}) // the partition filter is applied already
	require.NoError(t, err)
	run = readShare(t, d, d.Pieces(), feeder.StreamConfig{Plan: streamPlan(t, d.Schema()), BatchRows: 16})
	n = 0
	for _, b := range run.ids {
		n += len(b)
	}
	require.Equal(t, total, n)
	d, err = arrowio.ScanDataset(dir, arrowio.ScanConfig{WhereColumn: "id", WhereValue: "0"})
	require.NoError(t, err)
	require.Len(t, d.Units(), 1)
	require.Equal(t, int64(1), d.NumRows())
}

func TestStreamCSVChunks(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("id,x,tag\n")
	const n = 1000
	for i := range n {
		fmt.Fprintf(&b, "%d,%d.5,t%d\n", i, i, i%3)
	}
	path := filepath.Join(dir, "rows.csv")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	d, err := arrowio.ScanDataset(path, arrowio.ScanConfig{CSVChunkBytes: 2 << 10})
	require.NoError(t, err)
	require.Greater(t, len(d.Units()), 5, "the file is cut into byte ranges")
	require.Equal(t, int64(n), d.NumRows())
	d, err = d.Project([]string{"id", "x"})
	require.NoError(t, err)
	plan, err := feeder.NewPlan(d.Schema(), feeder.Mapping{{Column: "id", Tensor: "id"}, {Column: "x", Tensor: "x", Cast: true}},
		[]feeder.Target{{TensorSpec: tf.TensorSpec{Name: "id", DType: tf.Int64, Shape: []int64{-1}}}, {TensorSpec: tf.TensorSpec{Name: "x", DType: tf.Float, Shape: []int64{-1}}}})
	require.NoError(t, err)
	ctx := context.Background()
	s, err := feeder.NewStream(ctx, d, d.Pieces(), feeder.StreamConfig{Plan: plan, BatchRows: 64, Readers: 3})
	require.NoError(t, err)
	defer s.Close()
	next := int64(0)
	for {
		batch, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		ids, _ := tf.Data[int64](batch.Tensors[0])
		xs, _ := tf.Data[float32](batch.Tensors[1])
		for j, id := range ids {
			require.Equal(t, next, id)
			require.Equal(t, float32(id)+0.5, xs[j])
			next++
		}
		batch.Close()
	}
	require.Equal(t, int64(n), next)
	st := s.Stats()
	require.Equal(t, int64(n), st.Rows)
	require.Equal(t, int64(len(d.Units())), st.Pieces)
	require.Equal(t, int64((n+63)/64), st.Batches)

	// The filter counts rows chunk by chunk too.
	d, err = arrowio.ScanDataset(path, arrowio.ScanConfig{CSVChunkBytes: 2 << 10, WhereColumn: "tag", WhereValue: "t2"})
	require.NoError(t, err)
	require.Equal(t, int64(333), d.NumRows())
}

// TestDatasetGlobPartitions opens a Hive tree through a glob: the keys
// below the glob's fixed prefix become columns.
func TestDatasetGlobPartitions(t *testing.T) {
	dir := t.TempDir()
	total := writeStreamFiles(t, dir, [][]int{{4}, {6}})
	ds, err := arrowio.OpenDataset(filepath.Join(dir, "split=*", "*.parquet"))
	require.NoError(t, err)
	require.Equal(t, dir, ds.Root())
	d, err := ds.Scan(arrowio.ScanConfig{WhereColumn: "split", WhereValue: "train"})
	require.NoError(t, err)
	require.Equal(t, int64(total), d.NumRows())
	require.True(t, d.Schema().HasField("split"))
}
