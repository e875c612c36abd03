package feeder_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/feeder/arrowio/arrowiotest"
	"github.com/gotflow/gotflow/tf"
)

func idSource(t *testing.T, mem memory.Allocator, nrec, per int) feeder.Source {
	t.Helper()
	recs := arrowiotest.IDRecords(mem, nrec, per)
	src, err := arrowio.FromRecords(arrowiotest.IDSchema, recs...)
	require.NoError(t, err)
	for _, r := range recs {
		r.Release()
	}
	return src
}

var idMapping = feeder.Mapping{{Column: "id", Tensor: "id"}, {Column: "x", Tensor: "x"}}

// collect reads every batch, checks that x matches id row by row, and
// returns the batch sizes and ids in order.
func collect(t *testing.T, f *feeder.Feeder) (sizes []int, ids []int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		b, err := f.Next(ctx)
		if errors.Is(err, io.EOF) {
			return sizes, ids
		}
		require.NoError(t, err)
		sizes = append(sizes, b.NumRows())
		got, err := tf.Data[int64](b.Tensors[0])
		require.NoError(t, err)
		xs, err := tf.Data[float32](b.Tensors[1])
		require.NoError(t, err)
		require.Equal(t, []int64{int64(b.NumRows()), 4}, b.Tensors[1].Shape())
		for i, v := range got {
			require.Equal(t, []float32{float32(v), float32(v) + 0.25, float32(v) + 0.5, float32(v) + 0.75}, xs[i*4:i*4+4], "row %d", i)
		}
		// the batch's record holds the same rows
		rec, err := b.Record()
		require.NoError(t, err)
		require.Equal(t, got, rec.Column(0).(*array.Int64).Int64Values())
		ids = append(ids, got...)
		require.NoError(t, b.Close())
	}
}

func newFeeder(t *testing.T, src feeder.Source, opts ...feeder.Option) *feeder.Feeder {
	t.Helper()
	plan, err := feeder.NewPlan(src.Schema(), idMapping, nil)
	require.NoError(t, err)
	f, err := feeder.New(src, plan, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, f.Close()) })
	return f
}

func TestRechunk(t *testing.T) {
	cases := []struct {
		name  string
		opts  []feeder.Option
		sizes []int
		rows  int
	}{
		{"per_record", nil, []int{7, 7, 7, 7, 7, 7, 7, 7, 7, 7}, 70},
		{"exact_16", []feeder.Option{feeder.BatchSize(16)}, []int{16, 16, 16, 16, 6}, 70},
		{"drop_last", []feeder.Option{feeder.BatchSize(16), feeder.DropLast()}, []int{16, 16, 16, 16}, 64},
		{"smaller_than_record", []feeder.Option{feeder.BatchSize(3)}, append(slices.Repeat([]int{3}, 23), 1), 70},
		{"larger_than_stream", []feeder.Option{feeder.BatchSize(100)}, []int{70}, 70},
		{"larger_than_stream_dropped", []feeder.Option{feeder.BatchSize(100), feeder.DropLast()}, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem, _ := cMem(t)
			f := newFeeder(t, idSource(t, mem, 10, 7), append(c.opts, feeder.WithAllocator(mem))...)
			sizes, ids := collect(t, f)
			require.Equal(t, c.sizes, sizes)
			require.Equal(t, arrowiotest.Seq(c.rows), orNil(ids))
			st := f.Stats()
			require.Equal(t, int64(c.rows), st.Rows)
			require.Equal(t, int64(len(c.sizes)), st.Batches)
			require.Equal(t, int64(10), st.RecordsRead)
		})
	}
}

func orNil(s []int64) []int64 {
	if len(s) == 0 {
		return arrowiotest.Seq(0)
	}
	return s
}

func TestShuffle(t *testing.T) {
	run := func(t *testing.T, seed uint64) []int64 {
		mem, _ := cMem(t)
		f := newFeeder(t, idSource(t, mem, 10, 7), feeder.BatchSize(8), feeder.Shuffle(20, seed), feeder.WithAllocator(mem))
		sizes, ids := collect(t, f)
		require.Equal(t, []int{8, 8, 8, 8, 8, 8, 8, 8, 6}, sizes)
		return ids
	}
	a, b, c := run(t, 1), run(t, 1), run(t, 2)
	require.Equal(t, a, b, "same seed, same order")
	require.NotEqual(t, a, c, "another seed, another order")
	require.NotEqual(t, arrowiotest.Seq(70), a, "shuffled")
	for _, ids := range [][]int64{a, c} {
		s := slices.Clone(ids)
		slices.Sort(s)
		require.Equal(t, arrowiotest.Seq(70), s, "every row exactly once")
	}
	// the buffer holds at most 20 rows + a batch + a record: no row can
	// come out earlier than that many places ahead of its input position
	for pos, id := range a {
		require.LessOrEqual(t, int(id), pos+20+8+7, "row %d came out at %d", id, pos)
	}
}

func TestParallelReadersParquet(t *testing.T) {
	mem, _ := cMem(t)
	path := filepath.Join(t.TempDir(), "ids.parquet")
	arrowiotest.WriteIDs(t, path, mem, 20, 50, arrowio.RowGroupRows(50))

	for _, readers := range []int{1, 3, 8} {
		t.Run("readers_"+string(rune('0'+readers)), func(t *testing.T) {
			src, err := arrowio.OpenParquet(path, arrowio.WithAllocator(mem), arrowio.ReadRows(32))
			require.NoError(t, err)
			f := newFeeder(t, src, feeder.Readers(readers), feeder.BatchSize(64), feeder.Prefetch(3), feeder.WithAllocator(mem))
			_, ids := collect(t, f)
			if readers == 1 {
				require.Equal(t, arrowiotest.Seq(1000), ids, "one reader keeps file order")
			}
			slices.Sort(ids)
			require.Equal(t, arrowiotest.Seq(1000), ids)
		})
	}
}

func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > want {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, want ≤ %d:\n%s", n, want, buf[:runtime.Stack(buf, true)])
	}
}

func TestCloseMidStream(t *testing.T) {
	for _, readers := range []int{1, 4} {
		t.Run("readers_"+string(rune('0'+readers)), func(t *testing.T) {
			mem, _ := cMem(t)
			base := runtime.NumGoroutine()
			src := idSource(t, mem, 200, 33)
			plan, err := feeder.NewPlan(src.Schema(), idMapping, nil)
			require.NoError(t, err)
			f, err := feeder.New(src, plan, feeder.Readers(readers), feeder.BatchSize(50), feeder.Shuffle(100, 7), feeder.WithAllocator(mem))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := f.Next(ctx)
			require.NoError(t, err)
			// a canceled Next abandons only its own wait
			cctx, ccancel := context.WithCancel(ctx)
			ccancel()
			_, err = f.Next(cctx)
			require.ErrorIs(t, err, context.Canceled)
			b2, err := f.Next(ctx)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			require.NoError(t, f.Close(), "idempotent")
			_, err = f.Next(ctx)
			require.ErrorIs(t, err, feeder.ErrClosed)
			// batches handed out stay valid after Close
			_, err = tf.Data[int64](b.Tensors[0])
			require.NoError(t, err)
			b.Close()
			b2.Close()
			waitGoroutines(t, base)
		})
	}
}
