package main

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/tftest"
	"github.com/stretchr/testify/require"
)

// irisRecords reads the example's rows as records of at most n rows.
func irisRecords(t *testing.T, n int) (*arrow.Schema, []arrow.RecordBatch) {
	t.Helper()
	src, err := arrowio.OpenParquet(exampleData, arrowio.ReadRows(n))
	require.NoError(t, err)
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var recs []arrow.RecordBatch
	for {
		rec, err := src.Next(ctx)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	t.Cleanup(func() {
		for _, r := range recs {
			r.Release()
		}
	})
	return src.Schema(), recs
}

// probsOf collects the float32 values of a fixed-size-list column of an
// IPC stream.
func probsOf(t *testing.T, stream []byte, column string) ([]float64, int64, *arrow.Schema) {
	t.Helper()
	r, err := ipc.NewReader(bytes.NewReader(stream))
	require.NoError(t, err)
	defer r.Release()
	var vals []float64
	var rows int64
	for r.Next() {
		rec := r.RecordBatch()
		idx := rec.Schema().FieldIndices(column)
		require.NotEmpty(t, idx, "column %s in %s", column, rec.Schema())
		l := rec.Column(idx[0]).(*array.FixedSizeList)
		for _, v := range l.ListValues().(*array.Float32).Float32Values() {
			vals = append(vals, float64(v))
		}
		rows += rec.NumRows()
	}
	require.NoError(t, r.Err())
	return vals, rows, r.Schema()
}

func ipcStream(t *testing.T, schema *arrow.Schema, recs []arrow.RecordBatch) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	for _, r := range recs {
		require.NoError(t, w.Write(r))
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// TestPredictIPC: the IPC stream mode gives the rows predict writes to a
// file, equal to Python TF's, with the inputs or the outputs alone.
func TestPredictIPC(t *testing.T) {
	schema, recs := irisRecords(t, 40)
	in := ipcStream(t, schema, recs)
	for _, tc := range []struct {
		name   string
		args   []string
		fields []string
	}{
		{"appended", nil, []string{"sepal_length", "sepal_width", "petal_length", "petal_width", "species", "probs"}},
		{"outputs-only", []string{"--outputs-only"}, []string{"probs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			f := predictFlags{model: exampleModel, batch: 16, ipc: true}
			f.outMap.name = "OUTPUT=COLUMN"
			require.NoError(t, f.outMap.Set("output_0=probs"))
			f.outputsOnly = len(tc.args) > 0
			var out bytes.Buffer
			require.NoError(t, predictIPC(ctx, &f, bytes.NewReader(in), &out))
			got, rows, s := probsOf(t, out.Bytes(), "probs")
			require.Equal(t, int64(150), rows)
			var names []string
			for _, fl := range s.Fields() {
				names = append(names, fl.Name)
			}
			require.Equal(t, tc.fields, names)
			require.NoError(t, tftest.CompareFloats(examplePython(t), got))
		})
	}
}

// TestPredictIPCStreams: the first results come out while the input is
// still open, so a caller can write and read at once without holding the
// data.
func TestPredictIPCStreams(t *testing.T) {
	schema, recs := irisRecords(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	f := predictFlags{model: exampleModel, batch: 8, ipc: true, outputsOnly: true}
	done := make(chan error, 1)
	go func() {
		err := predictIPC(ctx, &f, inR, outW)
		outW.CloseWithError(err)
		inR.CloseWithError(io.ErrClosedPipe)
		done <- err
	}()
	w := ipc.NewWriter(inW, ipc.WithSchema(schema))
	require.NoError(t, w.Write(recs[0]))
	require.NoError(t, w.Write(recs[1]))

	got := make(chan int64, 1)
	go func() {
		r, err := ipc.NewReader(outR)
		if err != nil || !r.Next() {
			got <- -1
			return
		}
		got <- r.RecordBatch().NumRows()
		for r.Next() {
		}
		r.Release()
		io.Copy(io.Discard, outR)
	}()
	select {
	case n := <-got:
		require.Equal(t, int64(8), n, "the first batch of results, before the input ended")
	case <-ctx.Done():
		t.Fatal("no result while the input stream was open")
	}
	for _, r := range recs[2:] {
		require.NoError(t, w.Write(r))
	}
	require.NoError(t, w.Close())
	require.NoError(t, inW.Close())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("predict --ipc did not finish")
	}
}

func TestPredictIPCErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		code int
		msg  string
	}{
		"with data": {[]string{"predict", "--ipc", "--model", exampleModel, "--data", exampleData}, 2, "--ipc reads stdin and writes stdout"},
		"no model":  {[]string{"predict", "--ipc"}, 2, "--model required"},
		"bad batch": {[]string{"predict", "--ipc", "--model", exampleModel, "--batch-size", "0"}, 2, "--batch-size 0"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			require.Equal(t, tc.code, code, errb.String())
			require.Contains(t, errb.String(), tc.msg)
		})
	}
	t.Run("not a stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f := predictFlags{model: exampleModel, batch: 8, ipc: true}
		err := predictIPC(ctx, &f, bytes.NewReader([]byte("this is not arrow")), io.Discard)
		require.ErrorContains(t, err, "predict --ipc: read stdin")
	})
	t.Run("missing column", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		schema, recs := irisRecords(t, 150)
		f := predictFlags{model: exampleModel, batch: 8, ipc: true}
		require.NoError(t, f.inMap.Set("nope=sepal_length"))
		err := predictIPC(ctx, &f, bytes.NewReader(ipcStream(t, schema, recs)), io.Discard)
		require.ErrorContains(t, err, `"nope"`)
	})
}
