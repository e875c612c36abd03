package feeder_test

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/tf"
)

// A feeder re-chunks records into batches of tensors.
func Example() {
	mem := feeder.NewCAllocator()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "features", Type: arrow.FixedSizeListOf(2, arrow.PrimitiveTypes.Float32)},
		{Name: "label", Type: arrow.PrimitiveTypes.Int64},
	}, nil)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	fb := b.Field(0).(*array.FixedSizeListBuilder)
	for i := range 5 {
		fb.Append(true)
		fb.ValueBuilder().(*array.Float32Builder).AppendValues([]float32{float32(i), float32(i) / 2}, nil)
		b.Field(1).(*array.Int64Builder).Append(int64(i % 2))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()

	src, _ := arrowio.FromRecords(schema, rec)
	plan, err := feeder.NewPlan(schema, feeder.Mapping{
		{Column: "features", Tensor: "x"},
		{Column: "label", Tensor: "y", DType: tf.Int32, Cast: true},
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	f, _ := feeder.New(src, plan, feeder.BatchSize(2))
	defer f.Close()
	for {
		batch, err := f.Next(context.Background())
		if err == io.EOF {
			break
		}
		x, _ := tf.Data[float32](batch.Tensors[0])
		y, _ := tf.Data[int32](batch.Tensors[1])
		fmt.Println(batch.Tensors[0].Shape(), x, y)
		batch.Close()
	}
	// Output:
	// [2 2] [0 0 1 0.5] [0 1]
	// [2 2] [2 1 3 1.5] [0 1]
	// [1 2] [4 2] [0]
}

// ParseMapping reads mappings written on a command line or in a config file.
func ExampleParseMapping() {
	m, err := feeder.ParseMapping("pixels=x:0 dtype=float32 shape=[28,28,1]; label=y cast fill=0")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m)
	_, err = feeder.ParseMapping("pixels=x shape=[28,a]")
	fmt.Println(err)
	// Output:
	// pixels=x:0 dtype=float32 shape=[28,28,1]; label=y fill=0 cast
	// feeder: mapping "pixels": shape wants dimensions ≥ -1 like [28,28], got "[28,a]"
}
