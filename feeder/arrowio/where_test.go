package arrowio_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/feeder/arrowio/arrowiotest"
)

func TestWhere(t *testing.T) {
	mem := arrowiotest.CheckedMem(t)
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "split", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	splits := []string{"train", "train", "test", "train", "", "test", "train"}
	for i, s := range splits {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		if s == "" {
			b.Field(1).AppendNull()
		} else {
			b.Field(1).(*array.StringBuilder).Append(s)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	src, err := arrowio.FromRecords(schema, rec, rec)
	require.NoError(t, err)

	w, err := arrowio.Where(src, "split", "train")
	require.NoError(t, err)
	defer w.Close()
	var ids []int64
	ctx := context.Background()
	for {
		r, err := w.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		ids = append(ids, r.Column(0).(*array.Int64).Int64Values()...)
		r.Release()
	}
	require.Equal(t, []int64{0, 1, 3, 6, 0, 1, 3, 6}, ids)

	src3, err := arrowio.FromRecords(schema, rec)
	require.NoError(t, err)
	byID, err := arrowio.Where(src3, "id", "3")
	require.NoError(t, err, "integers compare as text")
	r, err := byID.Next(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, r.NumRows())
	r.Release()
	require.NoError(t, byID.Close())

	src2, err := arrowio.FromRecords(schema)
	require.NoError(t, err)
	_, err = arrowio.Where(src2, "nope", "x")
	require.ErrorIs(t, err, arrowio.ErrMissingColumn)
}
