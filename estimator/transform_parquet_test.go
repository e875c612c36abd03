package estimator_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/stretchr/testify/require"
)

// TestTransformFromParquetAnySettings runs the MLP over a Parquet file with
// every combination of OpenOrdered readers and decode-ahead window and
// TFModel.InFlight, and requires the rows in file order with the outputs of
// the same rows transformed from memory, bit for bit.
func TestTransformFromParquetAnySettings(t *testing.T) {
	const rows, width, rowGroup, batch = 3000, 32, 700, 64
	ctx := testCtx(t)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "features", Type: arrow.FixedSizeListOf(width, arrow.PrimitiveTypes.Float32)},
	}, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	var recs []arrow.RecordBatch
	for off := 0; off < rows; off += rowGroup {
		n := min(rowGroup, rows-off)
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		lb := b.Field(1).(*array.FixedSizeListBuilder)
		vb := lb.ValueBuilder().(*array.Float32Builder)
		for r := off; r < off+n; r++ {
			b.Field(0).(*array.Int64Builder).Append(int64(r))
			lb.Append(true)
			for range width {
				vb.Append(float32(rng.NormFloat64()))
			}
		}
		recs = append(recs, b.NewRecordBatch())
		b.Release()
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	path := filepath.Join(t.TempDir(), "features.parquet")
	sink, err := arrowio.CreateParquet(path, schema, arrowio.RowGroupRows(rowGroup))
	require.NoError(t, err)
	for _, r := range recs {
		require.NoError(t, sink.Write(r))
	}
	require.NoError(t, sink.Close())

	m := &estimator.TFModel{Path: testmodels.Dir("mlp_savedmodel"), BatchSize: batch,
		OutputMapping: map[string]string{"output_0": "out"}}
	defer m.Close()
	// run returns the ids and outputs of a Transform, in the order read.
	run := func(m *estimator.TFModel, src arrowio.Source) ([]int64, []float32) {
		s, err := m.Transform(ctx, src)
		require.NoError(t, err)
		defer s.Close()
		var ids []int64
		var outs []float32
		for s.Next() {
			rec := s.RecordBatch()
			ids = append(ids, rec.Column(0).(*array.Int64).Int64Values()...)
			out := rec.Column(2).(*array.FixedSizeList)
			w := int(out.DataType().(*arrow.FixedSizeListType).Len())
			vals := out.ListValues().(*array.Float32).Float32Values()
			outs = append(outs, vals[out.Offset()*w:(out.Offset()+out.Len())*w]...)
		}
		require.NoError(t, s.Err())
		return ids, outs
	}
	mem, err := arrowio.FromRecords(schema, recs...)
	require.NoError(t, err)
	wantIDs, wantOuts := run(m, mem)
	require.Len(t, wantIDs, rows)
	for i, id := range wantIDs {
		require.Equal(t, int64(i), id)
	}
	for _, readers := range []int{0, 1, 3} {
		for _, ahead := range []int{0, 1} {
			for _, inFlight := range []int{1, 2, 5} {
				t.Run(fmt.Sprintf("readers=%d/ahead=%d/in-flight=%d", readers, ahead, inFlight), func(t *testing.T) {
					mm := &estimator.TFModel{Path: m.Path, BatchSize: batch, InFlight: inFlight,
						OutputMapping: m.OutputMapping}
					defer mm.Close()
					readRows := arrowio.RowsPerRecord(schema, batch)
					if ahead > 0 { // small records too: several per row group
						readRows = 2 * batch
					}
					src, err := arrowio.OpenOrdered([]string{path}, readers, readRows, arrowio.DecodeAhead(ahead))
					require.NoError(t, err)
					ids, outs := run(mm, src)
					require.Equal(t, wantIDs, ids)
					require.Equal(t, wantOuts, outs)
				})
			}
		}
	}
}
