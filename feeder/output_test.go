package feeder_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/tf"
)

// TestAppendOutputs runs a batch through TF, appends the fetched tensors as
// columns, writes the result with the IPC sink and reads it back.
func TestAppendOutputs(t *testing.T) {
	mem, _ := cMem(t)
	id := newIdentity(t, ph{"img", tf.Float, []int64{-1, 2, 2}}, ph{"word", tf.String, []int64{-1}}, ph{"flag", tf.Bool, []int64{-1}})
	img := fsl(mem, 4, prim(mem, arrow.PrimitiveTypes.Float32, seqF32(12), nil), nil)
	words := prim(mem, arrow.BinaryTypes.String, []string{"a\x00b", "日本", ""}, nil)
	flags := prim(mem, arrow.FixedWidthTypes.Boolean, []bool{true, false, true}, nil)
	schema := arrow.NewSchema([]arrow.Field{{Name: "img", Type: img.DataType()}, {Name: "word", Type: words.DataType()}, {Name: "flag", Type: flags.DataType()}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{img, words, flags}, 3)
	img.Release()
	words.Release()
	flags.Release()
	defer rec.Release()

	mapping := feeder.Mapping{{Column: "img", Tensor: "img"}, {Column: "word", Tensor: "word"}, {Column: "flag", Tensor: "flag"}}
	targets, err := feeder.Targets(id.g, mapping)
	require.NoError(t, err)
	require.Equal(t, []feeder.Target{{TensorSpec: tf.TensorSpec{Name: "img:0", DType: tf.Float, Shape: []int64{-1, 2, 2}}}, {TensorSpec: tf.TensorSpec{Name: "word:0", DType: tf.String, Shape: []int64{-1}}}, {TensorSpec: tf.TensorSpec{Name: "flag:0", DType: tf.Bool, Shape: []int64{-1}}}}, targets)
	_, err = feeder.Targets(id.g, feeder.Mapping{{Column: "img", Tensor: "nope"}})
	require.ErrorContains(t, err, `column "img" maps to tensor "nope"`)
	plan, err := feeder.NewPlan(schema, mapping, targets)
	require.NoError(t, err)
	b, err := plan.Convert(rec)
	require.NoError(t, err)
	defer b.Close()
	out := id.run(t, b, []string{"img", "word", "flag"}, "img_out", "img_out", "word_out", "word_len", "flag_out")
	src, err := b.Record()
	require.NoError(t, err)
	res, err := feeder.AppendOutputs(src, out, []feeder.Output{
		{Tensor: "img_out:0", Column: "img_lists"},
		{Tensor: "img_out:0", Column: "img_tensor", TensorType: true},
		{Tensor: "word_out:0", Column: "word_out", Binary: true},
		{Tensor: "word_len:0", Column: "word_len"},
		{Tensor: "flag_out:0", Column: "flag_out"},
	}, mem)
	require.NoError(t, err)
	defer res.Release()

	require.Equal(t, int64(8), res.NumCols())
	require.Equal(t, "fixed_size_list<item: fixed_size_list<item: float32, nullable>[2], nullable>[2]", res.Column(3).DataType().String())
	tt, ok := res.Column(4).DataType().(*feeder.FixedShapeTensorType)
	require.True(t, ok, "type %s", res.Column(4).DataType())
	require.Equal(t, []int64{2, 2}, tt.TensorShape)
	leaf := res.Column(3).(*array.FixedSizeList).ListValues().(*array.FixedSizeList).ListValues().(*array.Float32)
	require.Equal(t, seqF32(12), leaf.Float32Values())
	require.Equal(t, "a\x00b", string(res.Column(5).(*array.Binary).Value(0)))
	require.Equal(t, []int32{3, 6, 0}, res.Column(6).(*array.Int32).Int32Values())
	fl := res.Column(7).(*array.Boolean)
	require.Equal(t, []bool{true, false, true}, []bool{fl.Value(0), fl.Value(1), fl.Value(2)})

	// errors
	_, err = feeder.AppendOutputs(src, out[:1], []feeder.Output{{Column: "img"}}, mem)
	require.ErrorContains(t, err, `output column "img" already exists`)
	_, err = feeder.AppendOutputs(src, out[:1], nil, mem)
	require.ErrorContains(t, err, "1 tensors for 0 outputs")
	short := rec.NewSlice(0, 2)
	defer short.Release()
	_, err = feeder.AppendOutputs(short, out[:1], []feeder.Output{{Tensor: "img_out:0", Column: "y"}}, mem)
	require.ErrorContains(t, err, "want a first dimension of 2 rows")

	// Write to Arrow IPC and to Parquet and read back: gotflow's readers
	// and pyarrow read the tensor column as its extension type again.
	py := filepath.Join("..", ".venv", "bin", "python")
	for _, kind := range []string{"arrow", "parquet"} {
		t.Run(kind, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "out."+kind)
			create, open := arrowio.CreateIPC, func(p string, o ...arrowio.SourceOption) (arrowio.Splitter, error) { return arrowio.OpenIPC(p, o...) }
			if kind == "parquet" {
				create, open = arrowio.CreateParquet, arrowio.OpenParquet
			}
			sink, err := create(p, res.Schema())
			require.NoError(t, err)
			require.NoError(t, sink.Write(res))
			require.NoError(t, sink.Close())
			back, err := open(p, arrowio.WithAllocator(mem))
			require.NoError(t, err)
			defer back.Close()
			_, ok := back.Schema().Field(4).Type.(*feeder.FixedShapeTensorType)
			require.True(t, ok, "read back as %s", back.Schema().Field(4).Type)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := back.Next(ctx)
			require.NoError(t, err)
			require.True(t, array.RecordEqual(res, r), "read back %v", r)
			r.Release()
			_, err = back.Next(ctx)
			require.True(t, errors.Is(err, io.EOF))

			if _, err := os.Stat(py); err != nil {
				t.Skip("no .venv python: skipping the pyarrow check")
			}
			script := `
import sys, pyarrow as pa, pyarrow.parquet as pq, numpy as np
p = sys.argv[1]
t = pq.read_table(p) if p.endswith(".parquet") else pa.ipc.open_file(p).read_all()
col = t.column("img_tensor").combine_chunks()
assert isinstance(col.type, pa.FixedShapeTensorType), col.type
assert col.type.shape == [2, 2], col.type.shape
arr = col.to_numpy_ndarray()
assert arr.shape == (3, 2, 2), arr.shape
assert np.array_equal(arr.reshape(-1), np.arange(12, dtype=np.float32) + 0.5), arr
assert t.column("word_out").to_pylist() == [b"a\x00b", "日本".encode(), b""]
assert t.column("word_len").to_pylist() == [3, 6, 0]
print("ok")
`
			cmd := exec.Command(py, "-c", script, p)
			outb, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", outb)
			require.Contains(t, string(outb), "ok")
		})
	}
}
