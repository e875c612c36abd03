package feeder_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/tf"
)

// BenchmarkConvertImages converts [batch, 784] float32 batches on the
// zero-copy and the copy path, beside a plain copy() of the same bytes.
func BenchmarkConvertImages(b *testing.B) {
	for _, rows := range []int{64, 256, 1024} {
		mem := feeder.NewCAllocator()
		rec := imageRecord(mem, rows)
		nbytes := int64(rows * 784 * 4)
		mapping := feeder.Mapping{{Column: "pixels", Tensor: "x"}}
		b.Run("zero_copy/rows="+strconv.Itoa(rows), func(b *testing.B) {
			plan, err := feeder.NewPlan(rec.Schema(), mapping, nil, feeder.RequireZeroCopy())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(nbytes)
			for b.Loop() {
				batch, err := plan.Convert(rec)
				if err != nil {
					b.Fatal(err)
				}
				batch.Close()
			}
		})
		b.Run("copy/rows="+strconv.Itoa(rows), func(b *testing.B) {
			plan, err := feeder.NewPlan(rec.Schema(), mapping, nil, feeder.NoZeroCopy())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(nbytes)
			for b.Loop() {
				batch, err := plan.Convert(rec)
				if err != nil {
					b.Fatal(err)
				}
				batch.Close()
			}
		})
		b.Run("copy_into_reused/rows="+strconv.Itoa(rows), func(b *testing.B) {
			plan, err := feeder.NewPlan(rec.Schema(), mapping, nil)
			if err != nil {
				b.Fatal(err)
			}
			dst, err := tf.AllocateTensor(tf.Float, []int64{int64(rows), 784})
			if err != nil {
				b.Fatal(err)
			}
			defer dst.Close()
			ts := []*tf.Tensor{dst}
			b.ReportAllocs()
			b.SetBytes(nbytes)
			for b.Loop() {
				if err := plan.ConvertInto(rec, ts); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("memcpy/rows="+strconv.Itoa(rows), func(b *testing.B) {
			src := rec.Column(0).Data().Children()[0].Buffers()[1].Bytes()
			dst := make([]byte, len(src))
			b.ReportAllocs()
			b.SetBytes(nbytes)
			for b.Loop() {
				copy(dst, src)
			}
		})
		rec.Release()
	}
}

// BenchmarkParquetToTensors reads a Parquet file of images into [256, 784]
// tensors end to end.
func BenchmarkParquetToTensors(b *testing.B) {
	mem := feeder.NewCAllocator()
	path := filepath.Join(b.TempDir(), "images.parquet")
	sink, err := arrowio.CreateParquet(path, imageRecord(memory.DefaultAllocator, 1).Schema(), arrowio.RowGroupRows(2048))
	if err != nil {
		b.Fatal(err)
	}
	const rows = 8192
	rec := imageRecord(mem, 1024)
	for range rows / 1024 {
		if err := sink.Write(rec); err != nil {
			b.Fatal(err)
		}
	}
	rec.Release()
	if err := sink.Close(); err != nil {
		b.Fatal(err)
	}
	for _, readers := range []int{1, 2} {
		b.Run("readers="+strconv.Itoa(readers), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(rows * 784 * 4)
			for b.Loop() {
				n, err := drainParquet(path, readers)
				if err != nil {
					b.Fatal(err)
				}
				if n != rows {
					b.Fatalf("read %d rows, want %d", n, rows)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func drainParquet(path string, readers int) (int, error) {
	src, err := arrowio.OpenParquet(path, arrowio.ReadRows(2048))
	if err != nil {
		return 0, err
	}
	plan, err := feeder.NewPlan(src.Schema(), feeder.Mapping{{Column: "pixels", Tensor: "x"}}, nil)
	if err != nil {
		src.Close()
		return 0, err
	}
	f, err := feeder.New(src, plan, feeder.BatchSize(256), feeder.Readers(readers))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for {
		b, err := f.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += b.NumRows()
		b.Close()
	}
}
