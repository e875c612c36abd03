package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/internal/tftest"
	"github.com/stretchr/testify/require"
)

const (
	exampleModel = "../../examples/predict/model"
	exampleData  = "../../examples/predict/iris.parquet"
)

func examplePython(t *testing.T) []float64 {
	t.Helper()
	b, err := os.ReadFile("../../examples/predict/expected.json")
	require.NoError(t, err)
	var exp struct {
		Probs [][]float64 `json:"probs"`
	}
	require.NoError(t, json.Unmarshal(b, &exp))
	var flat []float64
	for _, r := range exp.Probs {
		flat = append(flat, r...)
	}
	return flat
}

// readColumn reads every value of a fixed-size-list float32 column from an
// output file.
func readColumn(t *testing.T, path, column string) ([]float64, int64) {
	t.Helper()
	src, err := arrowio.OpenDataset(path)
	require.NoError(t, err)
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var vals []float64
	var rows int64
	for {
		rec, err := src.Next(ctx)
		if err != nil {
			break
		}
		idx := rec.Schema().FieldIndices(column)
		require.NotEmpty(t, idx, "column %s in %s", column, rec.Schema())
		l := rec.Column(idx[0]).(*array.FixedSizeList)
		for _, v := range l.ListValues().(*array.Float32).Float32Values() {
			vals = append(vals, float64(v))
		}
		rows += rec.NumRows()
		rec.Release()
	}
	return vals, rows
}

func TestPredictExampleMatchesPython(t *testing.T) {
	for _, tc := range []struct{ out, batch string }{
		{"out.parquet", "1024"}, {"out.arrow", "7"}, {"out.arrows", "1"},
	} {
		t.Run(tc.out+"/batch"+tc.batch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), tc.out)
			var stdout, stderr bytes.Buffer
			code := run([]string{"predict", "--model", exampleModel, "--input", exampleData, "--output", out,
				"--out-map", "output_0=probs", "--batch-size", tc.batch, "--threads", "1"}, &stdout, &stderr)
			require.Equal(t, 0, code, stderr.String())
			require.Contains(t, stderr.String(), "predict: wrote 150 rows to "+out)
			got, rows := readColumn(t, out, "probs")
			require.Equal(t, int64(150), rows)
			require.NoError(t, tftest.CompareFloats(examplePython(t), got))
		})
	}
}

func TestPredictShowGolden(t *testing.T) {
	var stdout, stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "out.parquet")
	code := run([]string{"predict", "--model", exampleModel, "--input", exampleData, "--output", out,
		"--out-map", "output_0=probs", "--show", "5", "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Empty(t, stderr.String())
	golden(t, "predict/iris_show5.golden", stdout.String())
}

// TestPredictCSVInput feeds CSV (numbers read as float64) with --cast and an
// explicit --map.
func TestPredictCSVInput(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "iris.csv")
	src, err := arrowio.OpenDataset(exampleData)
	require.NoError(t, err)
	f, err := os.Create(csvPath)
	require.NoError(t, err)
	ctx := context.Background()
	var w *csv.Writer
	for {
		rec, err := src.Next(ctx)
		if err != nil {
			break
		}
		if w == nil {
			w = csv.NewWriter(f, rec.Schema(), csv.WithHeader(true))
		}
		require.NoError(t, w.Write(rec))
		rec.Release()
	}
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
	src.Close()
	// rename one column so the mapping is needed
	b, err := os.ReadFile(csvPath)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(csvPath, []byte(strings.Replace(string(b), "sepal_length", "sl", 1)), 0o644))

	out := filepath.Join(dir, "out.parquet")
	args := []string{"predict", "--model", exampleModel, "--input", csvPath, "--output", out, "--map", "sl=sepal_length", "--out-map", "output_0=probs"}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run(args, &stdout, &stderr), "float64 CSV columns need --cast")
	require.Contains(t, stderr.String(), "float64 values do not convert to float32 without loss")
	require.NoFileExists(t, out)

	stderr.Reset()
	require.Equal(t, 0, run(append(args, "--cast"), &stdout, &stderr), stderr.String())
	got, rows := readColumn(t, out, "probs")
	require.Equal(t, int64(150), rows)
	require.NoError(t, tftest.CompareFloats(examplePython(t), got))
}

func TestPredictErrorsLeaveNoOutput(t *testing.T) {
	corrupt := t.TempDir()
	require.NoError(t, os.CopyFS(corrupt, os.DirFS(exampleModel)))
	pb := filepath.Join(corrupt, "saved_model.pb")
	b, err := os.ReadFile(pb)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(pb, b[:len(b)/3], 0o644))

	for name, tc := range map[string]struct {
		args []string
		code int
		msg  string
	}{
		"missing flags":     {[]string{}, 2, "--data, --model, --output required"},
		"bad output ext":    {[]string{"--model", exampleModel, "--input", exampleData, "--output", "OUT.csv"}, 2, "unsupported extension"},
		"bad map":           {[]string{"--model", exampleModel, "--input", exampleData, "--output", "OUT.parquet", "--map", "x"}, 2, "want COLUMN=TENSOR"},
		"wrong signature":   {[]string{"--model", exampleModel, "--input", exampleData, "--output", "OUT.parquet", "--signature", "predict"}, 1, "(have: serve, serving_default)"},
		"wrong tags":        {[]string{"--model", exampleModel, "--input", exampleData, "--output", "OUT.parquet", "--tags", "train"}, 1, `tags "{train}" not found`},
		"unmapped input":    {[]string{"--model", "../../scripts/fixtures/tf2_savedmodel", "--input", exampleData, "--output", "OUT.parquet", "--map", "sepal_length=x"}, 1, `input(s) k not mapped to any column, and no column has that name (mapped: sepal_length→x`},
		"dtype mismatch":    {[]string{"--model", exampleModel, "--input", exampleData, "--output", "OUT.parquet", "--map", "species=sepal_length", "--map", "sepal_width=sepal_width", "--map", "petal_length=petal_length", "--map", "petal_width=petal_width"}, 1, `column "species"`},
		"not a saved model": {[]string{"--model", "testdata", "--input", exampleData, "--output", "OUT.parquet"}, 1, "is not a model"},
		"corrupt pb":        {[]string{"--model", corrupt, "--input", exampleData, "--output", "OUT.parquet"}, 1, "not a valid SavedModel protocol buffer"},
		"missing input":     {[]string{"--model", exampleModel, "--input", "no/such.parquet", "--output", "OUT.parquet"}, 1, "no/such.parquet"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "OUT.parquet")
			args := []string{"predict"}
			for _, a := range tc.args {
				args = append(args, strings.Replace(a, "OUT.parquet", out, 1))
			}
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			require.Equal(t, tc.code, code, stderr.String())
			require.Contains(t, stderr.String(), tc.msg)
			ents, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Empty(t, ents, "no output or temporary file is left behind")
		})
	}
}

// TestPredictKeepsListColumns checks that a fixed-size-list input column is
// written back unchanged, batch after batch, in both output formats.
func TestPredictKeepsListColumns(t *testing.T) {
	const rows, width = 100, 32
	dir := t.TempDir()
	in := filepath.Join(dir, "in.parquet")
	b := array.NewFixedSizeListBuilder(leakcheck.Allocator(), width, arrow.PrimitiveTypes.Float32)
	vb := b.ValueBuilder().(*array.Float32Builder)
	for r := range rows {
		b.Append(true)
		for k := range width {
			vb.Append(float32(r*width+k) / 1000)
		}
	}
	col := b.NewArray()
	b.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "features", Type: col.DataType()}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, rows)
	col.Release()
	sink, err := arrowio.CreateParquet(in, schema)
	require.NoError(t, err)
	require.NoError(t, sink.Write(rec))
	require.NoError(t, sink.Close())
	rec.Release()

	for _, name := range []string{"out.parquet", "out.arrow"} {
		out := filepath.Join(dir, name)
		var stdout, stderr bytes.Buffer
		code := run([]string{"predict", "--model", "../../scripts/fixtures/mlp_savedmodel", "--input", in, "--output", out,
			"--batch-size", "16", "--quiet"}, &stdout, &stderr)
		require.Equal(t, 0, code, stderr.String())
		got, n := readColumn(t, out, "features")
		require.Equal(t, int64(rows), n)
		for i, v := range got {
			require.Equal(t, float64(float32(i)/1000), v, "%s value %d", name, i)
		}
		probs, _ := readColumn(t, out, "output_0")
		require.Len(t, probs, rows*10)
	}
}

// TestPredictFullMapping feeds a ragged, nullable float64 list column
// through `--map 'f=features fill=0 len=32 pad=0 cast'`: the predictions
// equal those of the same rows padded, truncated and filled by hand into
// a float32 [32] column.
func TestPredictFullMapping(t *testing.T) {
	const width = 32
	dir := t.TempDir()
	lengths := []int{32, 20, -1, 40} // -1: a null row
	lb := array.NewListBuilder(leakcheck.Allocator(), arrow.PrimitiveTypes.Float64)
	vb := lb.ValueBuilder().(*array.Float64Builder)
	fb := array.NewFixedSizeListBuilder(leakcheck.Allocator(), width, arrow.PrimitiveTypes.Float32)
	fvb := fb.ValueBuilder().(*array.Float32Builder)
	for r, n := range lengths {
		fb.Append(true)
		if n < 0 {
			lb.AppendNull()
			fvb.AppendValues(make([]float32, width), nil)
			continue
		}
		lb.Append(true)
		row := make([]float32, width)
		for k := range n {
			v := float64(r*100+k) / 250
			vb.Append(v)
			if k < width {
				row[k] = float32(v)
			}
		}
		fvb.AppendValues(row, nil)
	}
	ragged, fixed := lb.NewArray(), fb.NewArray()
	lb.Release()
	fb.Release()
	write := func(name string, col arrow.Array, field string) string {
		schema := arrow.NewSchema([]arrow.Field{{Name: field, Type: col.DataType(), Nullable: true}}, nil)
		rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(len(lengths)))
		defer rec.Release()
		path := filepath.Join(dir, name)
		sink, err := arrowio.CreateParquet(path, schema)
		require.NoError(t, err)
		require.NoError(t, sink.Write(rec))
		require.NoError(t, sink.Close())
		return path
	}
	in := write("ragged.parquet", ragged, "f")
	ref := write("fixed.parquet", fixed, "features")
	ragged.Release()
	fixed.Release()

	model := "../../scripts/fixtures/mlp_savedmodel"
	var stdout, stderr bytes.Buffer
	code := run([]string{"predict", "--model", model, "--data", ref, "--output", filepath.Join(dir, "ref.arrow"), "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	want, _ := readColumn(t, filepath.Join(dir, "ref.arrow"), "output_0")

	// Without the mapping's options the ragged column is refused, and the
	// message says what to write.
	stderr.Reset()
	code = run([]string{"predict", "--model", model, "--data", in, "--output", filepath.Join(dir, "bad.arrow"), "--map", "f=features cast", "--quiet"}, &stdout, &stderr)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr.String(), "map it with len=N")

	stderr.Reset()
	code = run([]string{"predict", "--model", model, "--data", in, "--output", filepath.Join(dir, "out.arrow"),
		"--map", "f=features fill=0 len=32 pad=0 cast", "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	got, n := readColumn(t, filepath.Join(dir, "out.arrow"), "output_0")
	require.EqualValues(t, len(lengths), n)
	require.Equal(t, want, got)

	stderr.Reset()
	code = run([]string{"predict", "--model", model, "--data", in, "--output", filepath.Join(dir, "x.arrow"), "--map", "f=features len=zero"}, &stdout, &stderr)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr.String(), "len wants a positive integer")
}

// TestPredictKeepDrop: --keep and --drop choose the input columns written
// before the outputs; unknown names and conflicting flags are refused.
func TestPredictKeepDrop(t *testing.T) {
	dir := t.TempDir()
	fields := func(path string) []string {
		src, err := arrowio.OpenDataset(path)
		require.NoError(t, err)
		defer src.Close()
		var out []string
		for _, f := range src.Schema().Fields() {
			out = append(out, f.Name)
		}
		return out
	}
	all := fields(exampleData)
	require.Greater(t, len(all), 2)
	for _, tc := range []struct {
		flags []string
		want  []string
	}{
		{[]string{"--keep", all[1]}, []string{all[1]}},
		{[]string{"--drop", all[0]}, all[1:]},
		{[]string{"--outputs-only"}, []string{}},
	} {
		out := filepath.Join(dir, "out.arrow")
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"predict", "--model", exampleModel, "--data", exampleData, "--output", out, "--quiet"}, tc.flags...), &stdout, &stderr)
		require.Equal(t, 0, code, stderr.String())
		got := fields(out)
		require.Equal(t, tc.want, got[:len(got)-1], "%v", tc.flags)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"predict", "--model", exampleModel, "--data", exampleData, "--output", filepath.Join(dir, "x.arrow"), "--keep", "nope"}, &stdout, &stderr)
	require.Equal(t, 2, code)
	require.Contains(t, stderr.String(), `--keep "nope": no such input column`)
	stderr.Reset()
	code = run([]string{"predict", "--model", exampleModel, "--data", exampleData, "--output", filepath.Join(dir, "x.arrow"), "--keep", all[0], "--drop", all[1]}, &stdout, &stderr)
	require.Equal(t, 2, code)
	require.Contains(t, stderr.String(), "give one of --keep, --drop and --outputs-only")
}

// TestPredictFrozenGraphOneOutput: a frozen graph whose one output nothing
// reads (inspect lists it) needs no --out-map: the output is appended under
// its op's name and equals what Python TensorFlow computed.
func TestPredictFrozenGraphOneOutput(t *testing.T) {
	exp := testmodels.MustLoadExpected(t, "mlp_frozen")
	c, err := exp.Case("batch7")
	require.NoError(t, err)
	xs, err := c.Feeds["x:0"].AsFloat64()
	require.NoError(t, err)
	want, err := c.Fetches["probs:0"].AsFloat64()
	require.NoError(t, err)
	const width = 8
	rows := len(xs) / width
	b := array.NewFixedSizeListBuilder(leakcheck.Allocator(), width, arrow.PrimitiveTypes.Float32)
	vb := b.ValueBuilder().(*array.Float32Builder)
	for r := range rows {
		b.Append(true)
		for k := range width {
			vb.Append(float32(xs[r*width+k]))
		}
	}
	col := b.NewArray()
	b.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "x", Type: col.DataType()}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(rows))
	col.Release()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.parquet")
	sink, err := arrowio.CreateParquet(in, schema)
	require.NoError(t, err)
	require.NoError(t, sink.Write(rec))
	require.NoError(t, sink.Close())
	rec.Release()

	out := filepath.Join(dir, "out.arrow")
	var stdout, stderr bytes.Buffer
	code := run([]string{"predict", "--model", testmodels.Dir("mlp_frozen"), "--data", in, "--output", out, "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	got, n := readColumn(t, out, "probs")
	require.EqualValues(t, rows, n)
	require.InDeltaSlice(t, want, got, 1e-6)
}
