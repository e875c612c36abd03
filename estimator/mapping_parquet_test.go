package estimator_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
)

// raggedFitFiles writes the training rows of testdata/fit twice: ref.parquet
// as the bundle takes them (x: fixed-size lists of 6 float32, y: int32),
// and ragged.parquet as a user's data might hold them (feat: a nullable
// list<double> of varying length, label: a nullable int64), where rows are
// null, longer or shorter. In ref, a null row is what fill=0 gives, a long
// row is cut to 6 and a short one padded with 0.5, a null label is 1.
func raggedFitFiles(t *testing.T) (ref, ragged string) {
	t.Helper()
	src := fitData(t)
	defer src.Close()
	var xs [][]float32
	var ys []int32
	for {
		rec, err := src.Next(testCtx(t))
		if err != nil {
			break
		}
		fl := rec.Column(0).(*array.FixedSizeList)
		vals := fl.ListValues().(*array.Float32).Float32Values()
		for r := 0; r < int(rec.NumRows()); r++ {
			xs = append(xs, append([]float32(nil), vals[(fl.Offset()+r)*6:(fl.Offset()+r+1)*6]...))
			ys = append(ys, rec.Column(1).(*array.Int32).Value(r))
		}
		rec.Release()
	}
	require.Len(t, xs, 96)

	mem := leakcheck.Allocator()
	refX := array.NewFixedSizeListBuilder(mem, 6, arrow.PrimitiveTypes.Float32)
	refXV := refX.ValueBuilder().(*array.Float32Builder)
	refY := array.NewInt32Builder(mem)
	feat := array.NewListBuilder(mem, arrow.PrimitiveTypes.Float64)
	featV := feat.ValueBuilder().(*array.Float64Builder)
	label := array.NewInt64Builder(mem)
	for i, x := range xs {
		row := x
		switch {
		case i%7 == 3:
			feat.AppendNull()
			row = make([]float32, 6)
		case i%3 == 1:
			feat.Append(true)
			for _, v := range append(append([]float32(nil), x...), 9, 9) {
				featV.Append(float64(v))
			}
		case i%4 == 2:
			feat.Append(true)
			for _, v := range x[:4] {
				featV.Append(float64(v))
			}
			row = append(append([]float32(nil), x[:4]...), 0.5, 0.5)
		default:
			feat.Append(true)
			for _, v := range x {
				featV.Append(float64(v))
			}
		}
		refX.Append(true)
		refXV.AppendValues(row, nil)
		if i%11 == 5 {
			label.AppendNull()
			refY.Append(1)
		} else {
			label.Append(int64(ys[i]))
			refY.Append(ys[i])
		}
	}
	write := func(path string, names []string, builders ...array.Builder) {
		fields := make([]arrow.Field, len(names))
		cols := make([]arrow.Array, len(names))
		for i, b := range builders {
			cols[i] = b.NewArray()
			b.Release()
			defer cols[i].Release()
			fields[i] = arrow.Field{Name: names[i], Type: cols[i].DataType(), Nullable: true}
		}
		schema := arrow.NewSchema(fields, nil)
		rec := array.NewRecordBatch(schema, cols, int64(len(xs)))
		defer rec.Release()
		sink, err := arrowio.CreateParquet(path, schema, arrowio.WithAllocator(mem), arrowio.RowGroupRows(40))
		require.NoError(t, err)
		require.NoError(t, sink.Write(rec))
		require.NoError(t, sink.Close())
	}
	dir := t.TempDir()
	ref, ragged = filepath.Join(dir, "ref.parquet"), filepath.Join(dir, "ragged.parquet")
	write(ref, []string{"x", "y"}, refX, refY)
	write(ragged, []string{"feat", "label"}, feat, label)
	return ref, ragged
}

// TestFullMappingsFromParquet: null fill, ragged pad/truncate and casts
// work from Fit, Transform and the CLI. Training and predicting on the
// ragged file through the mapping's options gives exactly what the plain
// file gives through plain mappings.
func TestFullMappingsFromParquet(t *testing.T) {
	ref, ragged := raggedFitFiles(t)
	open := func(path string) arrowio.Source {
		src, err := arrowio.OpenParquet(path, arrowio.WithAllocator(leakcheck.Allocator()))
		require.NoError(t, err)
		return src
	}
	feat := feeder.Input{Column: "feat", Tensor: "x", Fill: 0, Length: 6, Pad: 0.5, Cast: true}
	lbl := feeder.Input{Column: "label", Tensor: "y", Fill: 1, Cast: true}

	fit := func(src arrowio.Source, inputs feeder.Mapping) []float64 {
		est := estimator.TFEstimator{Bundle: mlpBundle, Optimizer: "sgd", LearningRate: 0.1, Epochs: 2,
			Mode: "async-lock", Workers: 1, BatchSize: 16, ExportDir: t.TempDir(), Inputs: inputs}
		m, err := est.Fit(testCtx(t), src)
		require.NoError(t, err)
		defer m.Close()
		path := ref
		if inputs != nil {
			m.Inputs, path = feeder.Mapping{feat}, ragged
		}
		s, err := m.Transform(testCtx(t), open(path))
		require.NoError(t, err)
		defer s.Release()
		nums, _, rows := collect(t, s)
		require.EqualValues(t, 96, rows)
		return nums["output"]
	}
	want := fit(open(ref), nil)
	got := fit(open(ragged), feeder.Mapping{feat, lbl})
	require.Equal(t, want, got, "Fit and Transform through the mapping")

	// Without the options, the ragged file is refused with what to write.
	est := estimator.TFEstimator{Bundle: mlpBundle, Workers: 1, ExportDir: t.TempDir(),
		InputMapping: map[string]string{"feat": "x"}, LabelMapping: map[string]string{"label": "y"}, Cast: true}
	_, err := est.Fit(testCtx(t), open(ragged))
	require.Error(t, err)
	require.Regexp(t, `fill=|len=`, err.Error())

	if testing.Short() {
		return
	}
	// The same through the command line, with the --map syntax.
	bin := gotflowBinary(t)
	cli := func(data string, maps ...string) []float64 {
		dir := t.TempDir()
		args := append([]string{"train", "--bundle", mlpBundle, "--data", data, "--optimizer", "sgd", "--lr", "0.1",
			"--epochs", "2", "--mode", "async-lock", "--batch-size", "16", "--no-shuffle", "--export", filepath.Join(dir, "model")}, maps...)
		out, err := exec.CommandContext(testCtx(t), bin, args...).CombinedOutput()
		require.NoError(t, err, "gotflow %v: %s", args, out)
		pargs := []string{"predict", "--model", filepath.Join(dir, "model"), "--data", data, "--output", filepath.Join(dir, "out.arrow"), "--quiet"}
		if len(maps) > 0 {
			pargs = append(pargs, maps[:2]...)
		}
		out, err = exec.CommandContext(testCtx(t), bin, pargs...).CombinedOutput()
		require.NoError(t, err, "gotflow %v: %s", pargs, out)
		src, err := arrowio.OpenIPC(filepath.Join(dir, "out.arrow"), arrowio.WithAllocator(leakcheck.Allocator()))
		require.NoError(t, err)
		defer src.Close()
		var vals []float64
		for {
			rec, err := src.Next(context.Background())
			if err != nil {
				break
			}
			col := rec.Column(int(rec.NumCols()) - 1).(*array.FixedSizeList)
			for _, v := range col.ListValues().(*array.Float32).Float32Values() {
				vals = append(vals, float64(v))
			}
			rec.Release()
		}
		return vals
	}
	wantCLI := cli(ref)
	require.Len(t, wantCLI, len(want))
	gotCLI := cli(ragged, "--map", "feat=x fill=0 len=6 pad=0.5 cast", "--label", "label=y fill=1 cast")
	require.Equal(t, wantCLI, gotCLI, "gotflow train and predict through --map")
}
