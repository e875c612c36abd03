package feeder_test

import (
	"context"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/tf"
)

// TestFillOutOfRange: a float fill value outside an int64/uint64 column's
// range is an error, not an implementation-defined conversion.
func TestFillOutOfRange(t *testing.T) {
	for _, c := range []struct {
		typ  arrow.DataType
		dt   tf.DataType
		fill any
		ok   bool
	}{
		{arrow.PrimitiveTypes.Int64, tf.Int64, 1e19, false},
		{arrow.PrimitiveTypes.Int64, tf.Int64, -1e19, false},
		{arrow.PrimitiveTypes.Int64, tf.Int64, 1e18, true},
		{arrow.PrimitiveTypes.Uint64, tf.Uint64, 2e19, false},
		{arrow.PrimitiveTypes.Uint64, tf.Uint64, 1e19, true},
	} {
		schema := arrow.NewSchema([]arrow.Field{{Name: "c", Type: c.typ, Nullable: true}}, nil)
		_, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "c", Tensor: "c", Fill: c.fill}}, nil)
		if c.ok {
			require.NoError(t, err, "%v into %s", c.fill, c.dt)
		} else {
			require.ErrorContains(t, err, "does not fit", "%v into %s", c.fill, c.dt)
		}
	}
}

// TestMalformedListBitmap: a list column whose validity bitmap is shorter
// than its rows is an error naming the column, not a panic.
func TestMalformedListBitmap(t *testing.T) {
	mem := leakcheck.Allocator()
	vb := array.NewFloat32Builder(mem)
	vb.AppendValues(make([]float32, 40), nil)
	values := vb.NewArray()
	defer values.Release()
	offsets := make([]int32, 21)
	for i := range offsets {
		offsets[i] = int32(2 * i)
	}
	offBuf := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offsets))
	short := memory.NewBufferBytes([]byte{0xfe}) // 8 bits for 20 rows, one null
	data := array.NewData(arrow.ListOf(arrow.PrimitiveTypes.Float32), 20, []*memory.Buffer{short, offBuf}, []arrow.ArrayData{values.Data()}, 1, 0)
	defer data.Release()
	col := array.NewListData(data)
	defer col.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "v", Type: col.DataType(), Nullable: true}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, 20)
	defer rec.Release()
	plan, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "v", Tensor: "v", Fill: 0}}, nil)
	require.NoError(t, err)
	b, err := plan.Convert(rec)
	if b != nil {
		b.Close()
	}
	require.ErrorContains(t, err, "validity bitmap too short")
}

// blockingSource never yields a record until its context ends.
type blockingSource struct{ schema *arrow.Schema }

func (b blockingSource) Schema() *arrow.Schema { return b.schema }
func (b blockingSource) Next(ctx context.Context) (arrow.RecordBatch, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (b blockingSource) Close() error { return nil }

// TestFeederCloseWhileNextWaits: Close returns while another goroutine
// waits in Next on a source that has nothing yet; that Next ends too.
func TestFeederCloseWhileNextWaits(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Float32}}, nil)
	plan, err := feeder.NewPlan(schema, feeder.Mapping{{Column: "x", Tensor: "x"}}, nil)
	require.NoError(t, err)
	f, err := feeder.New(blockingSource{schema}, plan, feeder.BatchSize(4))
	require.NoError(t, err)
	nextDone := make(chan error, 1)
	go func() {
		_, err := f.Next(context.Background())
		nextDone <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Next block
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while Next waited")
	}
	select {
	case err := <-nextDone:
		require.ErrorIs(t, err, feeder.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Next did not return after Close")
	}
}
