package feeder_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/tf"
)

// expectedColumn is what Python TF saw for a column
// (testdata/generate_pyarrow_types.py).
type expectedColumn struct {
	DType  string   `json:"dtype"`
	Shape  []int64  `json:"shape"`
	Values []any    `json:"values"`
	B64    []string `json:"b64"`
	Bits   []uint16 `json:"bits"`
}

// TestPyarrowFiles feeds files written by pyarrow (Parquet and IPC, with
// the fixed_shape_tensor extension type, dictionary strings, NULs and
// unicode, float16, lists and nulls) through a TF session and compares what
// TF returns with what Python TF computed from the same files.
func TestPyarrowFiles(t *testing.T) {
	raw, err := os.ReadFile("testdata/pyarrow_types_expected.json")
	require.NoError(t, err)
	var exp map[string]expectedColumn
	require.NoError(t, json.Unmarshal(raw, &exp))
	names := make([]string, 0, len(exp))
	for n := range exp {
		names = append(names, n)
	}
	slices.Sort(names)

	for _, file := range []string{"testdata/pyarrow_types.parquet", "testdata/pyarrow_types.arrow"} {
		t.Run(file, func(t *testing.T) {
			mem, _ := cMem(t)
			var phs []ph
			var mapping feeder.Mapping
			for _, n := range names {
				dt, err := tf.ParseDataType(exp[n].DType)
				require.NoError(t, err)
				phs = append(phs, ph{n, dt, nil})
				in := feeder.Input{Column: n, Tensor: n}
				if n == "nullable" {
					in.Fill = -1
				}
				mapping = append(mapping, in)
			}
			id := newIdentity(t, phs...)
			var src feeder.Source
			if file == "testdata/pyarrow_types.parquet" {
				src, err = arrowio.OpenParquet(file, arrowio.WithAllocator(mem))
			} else {
				src, err = arrowio.OpenIPC(file, arrowio.WithAllocator(mem))
			}
			require.NoError(t, err)
			plan, err := feeder.NewPlan(src.Schema(), mapping, id.targets(t, names...))
			require.NoError(t, err)
			// 6 rows in record batches of 4: the batch spans two records
			f, err := feeder.New(src, plan, feeder.BatchSize(6), feeder.WithAllocator(mem))
			require.NoError(t, err)
			defer f.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b, err := f.Next(ctx)
			require.NoError(t, err)
			defer b.Close()
			fetch := make([]string, len(names))
			for i, n := range names {
				fetch[i] = n + "_out"
			}
			out := id.run(t, b, names, fetch...)
			for i, n := range names {
				t.Run(n, func(t *testing.T) { compareExpected(t, exp[n], out[i]) })
			}
			_, err = f.Next(ctx)
			require.True(t, errors.Is(err, io.EOF), "%v", err)
		})
	}
}

func compareExpected(t *testing.T, e expectedColumn, got *tf.Tensor) {
	t.Helper()
	require.Equal(t, e.DType, got.DataType().String())
	require.Equal(t, e.Shape, got.Shape())
	switch got.DataType() {
	case tf.String:
		s, err := got.Strings()
		require.NoError(t, err)
		require.Len(t, s, len(e.B64))
		for i, b := range e.B64 {
			want, err := base64.StdEncoding.DecodeString(b)
			require.NoError(t, err)
			require.Equal(t, want, s[i], "row %d", i)
		}
	case tf.Half:
		b := got.Bytes()
		for i, w := range e.Bits {
			require.Equal(t, w, uint16(b[2*i])|uint16(b[2*i+1])<<8, "element %d", i)
		}
	case tf.Float:
		d, _ := tf.Data[float32](got)
		for i, v := range e.Values {
			require.Equal(t, float32(v.(float64)), d[i], "element %d", i)
		}
	case tf.Double:
		d, _ := tf.Data[float64](got)
		for i, v := range e.Values {
			require.Equal(t, v.(float64), d[i], "element %d", i)
		}
	case tf.Int64:
		d, _ := tf.Data[int64](got)
		for i, v := range e.Values {
			w, err := strconv.ParseInt(v.(string), 10, 64)
			require.NoError(t, err)
			require.Equal(t, w, d[i], "element %d", i)
		}
	case tf.Int32:
		d, _ := tf.Data[int32](got)
		for i, v := range e.Values {
			require.Equal(t, int32(v.(float64)), d[i], "element %d", i)
		}
	case tf.Int16:
		d, _ := tf.Data[int16](got)
		for i, v := range e.Values {
			require.Equal(t, int16(v.(float64)), d[i], "element %d", i)
		}
	case tf.Uint8:
		d, _ := tf.Data[uint8](got)
		for i, v := range e.Values {
			require.Equal(t, uint8(v.(float64)), d[i], "element %d", i)
		}
	case tf.Bool:
		d, _ := tf.Data[bool](got)
		for i, v := range e.Values {
			require.Equal(t, v.(bool), d[i], "element %d", i)
		}
	default:
		t.Fatalf("dtype %s not compared", got.DataType())
	}
}
