package feeder_test

import (
	"context"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/float16"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/tf"
)

// rtCase is one column type fed through a real TF Identity graph.
type rtCase struct {
	name  string
	col   func(mem memory.Allocator) arrow.Array // 5 rows
	in    feeder.Input                           // options; Column and Tensor are set by the test
	dt    tf.DataType                            // placeholder dtype
	shape []int64                                // placeholder shape (nil: unknown rank)
	row   []int64                                // fed row shape
	want  any                                    // row-major values of all 5 rows
}

func prim[T any](mem memory.Allocator, dt arrow.DataType, vals []T, valid []bool) arrow.Array {
	b := array.NewBuilder(mem, dt)
	defer b.Release()
	for i, v := range vals {
		if valid != nil && !valid[i] {
			b.AppendNull()
			continue
		}
		switch bb := b.(type) {
		case *array.Int8Builder:
			bb.Append(any(v).(int8))
		case *array.Int16Builder:
			bb.Append(any(v).(int16))
		case *array.Int32Builder:
			bb.Append(any(v).(int32))
		case *array.Int64Builder:
			bb.Append(any(v).(int64))
		case *array.Uint8Builder:
			bb.Append(any(v).(uint8))
		case *array.Uint16Builder:
			bb.Append(any(v).(uint16))
		case *array.Uint32Builder:
			bb.Append(any(v).(uint32))
		case *array.Uint64Builder:
			bb.Append(any(v).(uint64))
		case *array.Float16Builder:
			bb.Append(any(v).(float16.Num))
		case *array.Float32Builder:
			bb.Append(any(v).(float32))
		case *array.Float64Builder:
			bb.Append(any(v).(float64))
		case *array.BooleanBuilder:
			bb.Append(any(v).(bool))
		case *array.StringBuilder:
			bb.Append(any(v).(string))
		case *array.LargeStringBuilder:
			bb.Append(any(v).(string))
		case *array.BinaryBuilder:
			bb.Append(any(v).([]byte))
		default:
			panic("prim: builder " + dt.String())
		}
	}
	return b.NewArray()
}

// fsl builds a fixed-size list column of n-element rows from flat values.
func fsl(mem memory.Allocator, n int32, child arrow.Array, valid []bool) arrow.Array {
	typ := arrow.FixedSizeListOf(n, child.DataType())
	rows := child.Len() / int(n)
	var bufs []*memory.Buffer
	nulls := 0
	if valid != nil {
		bm := memory.NewResizableBuffer(mem)
		bm.Resize((rows + 7) / 8)
		clear(bm.Bytes())
		for i, v := range valid {
			if v {
				bm.Bytes()[i/8] |= 1 << (i % 8)
			} else {
				nulls++
			}
		}
		bufs = []*memory.Buffer{bm}
		defer bm.Release()
	} else {
		bufs = []*memory.Buffer{nil}
	}
	d := array.NewData(typ, rows, bufs, []arrow.ArrayData{child.Data()}, nulls, 0)
	defer d.Release()
	child.Release()
	return array.MakeFromData(d)
}

func listOf(mem memory.Allocator, elem arrow.DataType, rows [][]any) arrow.Array {
	b := array.NewListBuilder(mem, elem)
	defer b.Release()
	for _, r := range rows {
		b.Append(true)
		for _, v := range r {
			switch vb := b.ValueBuilder().(type) {
			case *array.Int64Builder:
				vb.Append(v.(int64))
			case *array.Float32Builder:
				vb.Append(v.(float32))
			}
		}
	}
	return b.NewArray()
}

func f16s(v ...float32) ([]float16.Num, []uint16) {
	n := make([]float16.Num, len(v))
	u := make([]uint16, len(v))
	for i, x := range v {
		n[i] = float16.New(x)
		u[i] = n[i].Uint16()
	}
	return n, u
}

var strVals = []string{"a\x00b", "", "héllo wörld", "日本語\x00テキスト", "\x00"}

func rtCases() []rtCase {
	h, hbits := f16s(1.5, -2, 0.25, 65504, -0.5)
	return []rtCase{
		{name: "int8", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Int8, []int8{1, -2, 3, -128, 127}, nil)
		}, dt: tf.Int8, shape: []int64{-1}, row: []int64{}, want: []int8{1, -2, 3, -128, 127}},
		{name: "int16", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Int16, []int16{1, -2, 3, -32768, 32767}, nil)
		}, dt: tf.Int16, shape: []int64{-1}, row: []int64{}, want: []int16{1, -2, 3, -32768, 32767}},
		{name: "int32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Int32, []int32{1, -2, 3, -1 << 31, 1<<31 - 1}, nil)
		}, dt: tf.Int32, shape: []int64{-1}, row: []int64{}, want: []int32{1, -2, 3, -1 << 31, 1<<31 - 1}},
		{name: "int64", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Int64, []int64{1, -2, 3, -1 << 63, 1<<63 - 1}, nil)
		}, dt: tf.Int64, shape: []int64{-1}, row: []int64{}, want: []int64{1, -2, 3, -1 << 63, 1<<63 - 1}},
		{name: "uint8", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Uint8, []uint8{0, 1, 2, 254, 255}, nil)
		}, dt: tf.Uint8, shape: []int64{-1}, row: []int64{}, want: []uint8{0, 1, 2, 254, 255}},
		{name: "uint16", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Uint16, []uint16{0, 1, 2, 65534, 65535}, nil)
		}, dt: tf.Uint16, shape: []int64{-1}, row: []int64{}, want: []uint16{0, 1, 2, 65534, 65535}},
		{name: "uint32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Uint32, []uint32{0, 1, 2, 1<<32 - 2, 1<<32 - 1}, nil)
		}, dt: tf.Uint32, shape: []int64{-1}, row: []int64{}, want: []uint32{0, 1, 2, 1<<32 - 2, 1<<32 - 1}},
		{name: "uint64", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Uint64, []uint64{0, 1, 2, 1<<64 - 2, 1<<64 - 1}, nil)
		}, dt: tf.Uint64, shape: []int64{-1}, row: []int64{}, want: []uint64{0, 1, 2, 1<<64 - 2, 1<<64 - 1}},
		{name: "float16", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.FixedWidthTypes.Float16, h, nil)
		}, dt: tf.Half, shape: []int64{-1}, row: []int64{}, want: hbits},
		{name: "float32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Float32, []float32{1.5, -2.25, 3e-38, 3e38, 0}, nil)
		}, dt: tf.Float, shape: []int64{-1}, row: []int64{}, want: []float32{1.5, -2.25, 3e-38, 3e38, 0}},
		{name: "float64", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Float64, []float64{1.5, -2.25, 1e-300, 1e300, 0}, nil)
		}, dt: tf.Double, shape: []int64{-1}, row: []int64{}, want: []float64{1.5, -2.25, 1e-300, 1e300, 0}},
		{name: "bool", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.FixedWidthTypes.Boolean, []bool{true, false, true, true, false}, nil)
		}, dt: tf.Bool, shape: []int64{-1}, row: []int64{}, want: []bool{true, false, true, true, false}},
		{name: "string", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.BinaryTypes.String, strVals, nil)
		}, dt: tf.String, shape: []int64{-1}, row: []int64{}, want: strVals},
		{name: "large_string", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.BinaryTypes.LargeString, strVals, nil)
		}, dt: tf.String, shape: []int64{-1}, row: []int64{}, want: strVals},
		{name: "binary", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.BinaryTypes.Binary, [][]byte{{0xff, 0}, {}, []byte("x"), {0, 0, 0}, []byte("héllo")}, nil)
		}, dt: tf.String, shape: []int64{-1}, row: []int64{}, want: []string{"\xff\x00", "", "x", "\x00\x00\x00", "héllo"}},
		{name: "dictionary_string", col: func(m memory.Allocator) arrow.Array {
			b := array.NewDictionaryBuilder(m, &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}).(*array.BinaryDictionaryBuilder)
			defer b.Release()
			for _, s := range []string{"cat", "dog", "cat", "日本\x00", "dog"} {
				b.AppendString(s)
			}
			return b.NewArray()
		}, dt: tf.String, shape: []int64{-1}, row: []int64{}, want: []string{"cat", "dog", "cat", "日本\x00", "dog"}},
		{name: "fixed_size_list_float32", col: func(m memory.Allocator) arrow.Array {
			return fsl(m, 3, prim(m, arrow.PrimitiveTypes.Float32, seqF32(15), nil), nil)
		}, dt: tf.Float, shape: []int64{-1, 3}, row: []int64{3}, want: seqF32(15)},
		{name: "nested_fixed_size_list_int32", col: func(m memory.Allocator) arrow.Array {
			inner := fsl(m, 2, prim(m, arrow.PrimitiveTypes.Int32, seqI32(30), nil), nil)
			return fsl(m, 3, inner, nil)
		}, dt: tf.Int32, shape: []int64{-1, 3, 2}, row: []int64{3, 2}, want: seqI32(30)},
		{name: "fixed_size_list_reshaped", col: func(m memory.Allocator) arrow.Array {
			return fsl(m, 4, prim(m, arrow.PrimitiveTypes.Float32, seqF32(20), nil), nil)
		}, dt: tf.Float, shape: []int64{-1, 2, 2}, row: []int64{2, 2}, want: seqF32(20)},
		{name: "fixed_shape_tensor", col: func(m memory.Allocator) arrow.Array {
			typ, err := feeder.NewFixedShapeTensorType(arrow.PrimitiveTypes.Float64, []int64{2, 2})
			if err != nil {
				panic(err)
			}
			st := fsl(m, 4, prim(m, arrow.PrimitiveTypes.Float64, seqF64(20), nil), nil)
			defer st.Release()
			return array.NewExtensionArrayWithStorage(typ, st)
		}, dt: tf.Double, shape: nil, row: []int64{2, 2}, want: seqF64(20)},
		{name: "list_equal_lengths", col: func(m memory.Allocator) arrow.Array {
			return listOf(m, arrow.PrimitiveTypes.Int64, [][]any{{int64(1), int64(2)}, {int64(3), int64(4)}, {int64(5), int64(6)}, {int64(7), int64(8)}, {int64(9), int64(10)}})
		}, dt: tf.Int64, shape: []int64{-1, -1}, row: []int64{2}, want: []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{name: "list_ragged_padded", col: func(m memory.Allocator) arrow.Array {
			return listOf(m, arrow.PrimitiveTypes.Float32, [][]any{{float32(1)}, {float32(2), float32(3), float32(4), float32(5)}, {}, {float32(6), float32(7)}, {float32(8), float32(9), float32(10)}})
		}, in: feeder.Input{Length: 3, Pad: -1}, dt: tf.Float, shape: []int64{-1, 3}, row: []int64{3},
			want: []float32{1, -1, -1, 2, 3, 4, -1, -1, -1, 6, 7, -1, 8, 9, 10}},
		{name: "nulls_filled_float32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Float32, []float32{1, 0, 3, 0, 5}, []bool{true, false, true, false, true})
		}, in: feeder.Input{Fill: -1.0}, dt: tf.Float, shape: []int64{-1}, row: []int64{}, want: []float32{1, -1, 3, -1, 5}},
		{name: "nulls_filled_string", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.BinaryTypes.String, []string{"a", "", "c", "", "e"}, []bool{true, false, true, false, true})
		}, in: feeder.Input{Fill: "?"}, dt: tf.String, shape: []int64{-1}, row: []int64{}, want: []string{"a", "?", "c", "?", "e"}},
		{name: "nulls_filled_fixed_size_list_rows", col: func(m memory.Allocator) arrow.Array {
			return fsl(m, 2, prim(m, arrow.PrimitiveTypes.Int32, seqI32(10), nil), []bool{true, false, true, true, false})
		}, in: feeder.Input{Fill: 7}, dt: tf.Int32, shape: []int64{-1, 2}, row: []int64{2}, want: []int32{0, 1, 7, 7, 4, 5, 6, 7, 7, 7}},
		{name: "cast_int64_to_int32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Int64, []int64{1, -2, 3, 1 << 20, -(1 << 20)}, nil)
		}, in: feeder.Input{Cast: true}, dt: tf.Int32, shape: []int64{-1}, row: []int64{}, want: []int32{1, -2, 3, 1 << 20, -(1 << 20)}},
		{name: "widen_uint8_to_float32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Uint8, []uint8{0, 1, 128, 200, 255}, nil)
		}, dt: tf.Float, shape: []int64{-1}, row: []int64{}, want: []float32{0, 1, 128, 200, 255}},
		{name: "widen_bool_to_float32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.FixedWidthTypes.Boolean, []bool{true, false, false, true, true}, nil)
		}, dt: tf.Float, shape: []int64{-1}, row: []int64{}, want: []float32{1, 0, 0, 1, 1}},
		{name: "widen_float16_to_float32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.FixedWidthTypes.Float16, h, nil)
		}, dt: tf.Float, shape: []int64{-1}, row: []int64{}, want: []float32{1.5, -2, 0.25, 65504, -0.5}},
		{name: "cast_float64_to_float32", col: func(m memory.Allocator) arrow.Array {
			return prim(m, arrow.PrimitiveTypes.Float64, []float64{0.5, 1.25, -3, 1e10, 0}, nil)
		}, in: feeder.Input{Cast: true}, dt: tf.Float, shape: []int64{-1}, row: []int64{}, want: []float32{0.5, 1.25, -3, 1e10, 0}},
	}
}

func seqF32(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(i) + 0.5
	}
	return s
}

func seqF64(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = float64(i) * -1.25
	}
	return s
}

func seqI32(n int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(i)
	}
	return s
}

// rows slices a row-major want to rows [from, to).
func rows(want any, per int, from, to int) any {
	v := reflect.ValueOf(want)
	return v.Slice(from*per, to*per).Interface()
}

// checkTensor compares what TF returned with want.
func checkTensor(t *testing.T, id *identity, b *feeder.Batch, c rtCase, want any, n int) {
	t.Helper()
	shape := append([]int64{int64(n)}, c.row...)
	if c.name == "list_equal_lengths" && n == 0 {
		shape = []int64{0, 0} // the width of an empty batch of lists is 0
	}
	if c.dt == tf.String {
		got := id.run(t, b, []string{"x"}, "x_out", "x_len", "x_chars")
		s, err := got[0].Strings()
		require.NoError(t, err)
		require.Equal(t, shape, got[0].Shape())
		ws := want.([]string)
		require.Len(t, s, len(ws))
		lens, err := tf.Data[int32](got[1])
		require.NoError(t, err)
		chars, err := tf.Data[int32](got[2])
		require.NoError(t, err)
		for i := range ws {
			require.Equal(t, ws[i], string(s[i]), "row %d", i)
			require.Equal(t, int32(len(ws[i])), lens[i], "TF byte length of row %d", i)
			if c.name != "binary" {
				require.Equal(t, int32(len([]rune(ws[i]))), chars[i], "TF UTF-8 length of row %d", i)
			}
		}
		return
	}
	got := id.run(t, b, []string{"x"}, "x_out")[0]
	switch w := want.(type) {
	case []int8:
		requireData(t, got, shape, w)
	case []int16:
		requireData(t, got, shape, w)
	case []int32:
		requireData(t, got, shape, w)
	case []int64:
		requireData(t, got, shape, w)
	case []uint8:
		requireData(t, got, shape, w)
	case []uint16:
		if c.dt == tf.Half {
			require.Equal(t, shape, got.Shape())
			b := got.Bytes()
			require.Len(t, b, 2*len(w))
			for i, x := range w {
				require.Equal(t, x, uint16(b[2*i])|uint16(b[2*i+1])<<8, "half %d", i)
			}
			return
		}
		requireData(t, got, shape, w)
	case []uint32:
		requireData(t, got, shape, w)
	case []uint64:
		requireData(t, got, shape, w)
	case []float32:
		requireData(t, got, shape, w)
	case []float64:
		requireData(t, got, shape, w)
	case []bool:
		requireData(t, got, shape, w)
	default:
		t.Fatalf("want of type %T", want)
	}
}

func TestRoundTripThroughTF(t *testing.T) {
	for _, c := range rtCases() {
		t.Run(c.name, func(t *testing.T) {
			mem, _ := cMem(t)
			id := newIdentity(t, ph{"x", c.dt, c.shape})
			col := c.col(mem)
			defer col.Release()
			schema := arrow.NewSchema([]arrow.Field{{Name: "c", Type: col.DataType(), Nullable: true}}, nil)
			rec := array.NewRecordBatch(schema, []arrow.Array{col}, int64(col.Len()))
			defer rec.Release()
			in := c.in
			in.Column, in.Tensor = "c", "x"
			plan, err := feeder.NewPlan(schema, feeder.Mapping{in}, id.targets(t, "x"))
			require.NoError(t, err)
			per := 1
			for _, d := range c.row {
				per *= int(d)
			}

			t.Run("whole", func(t *testing.T) {
				b, err := plan.Convert(rec)
				require.NoError(t, err)
				defer b.Close()
				checkTensor(t, id, b, c, c.want, 5)
			})
			t.Run("sliced", func(t *testing.T) {
				s := rec.NewSlice(1, 4)
				defer s.Release()
				b, err := plan.Convert(s)
				require.NoError(t, err)
				defer b.Close()
				checkTensor(t, id, b, c, rows(c.want, per, 1, 4), 3)
			})
			t.Run("empty", func(t *testing.T) {
				s := rec.NewSlice(2, 2)
				defer s.Release()
				b, err := plan.Convert(s)
				require.NoError(t, err)
				defer b.Close()
				checkTensor(t, id, b, c, rows(c.want, per, 0, 0), 0)
			})
			t.Run("multi_chunk", func(t *testing.T) {
				a, bb, cc := rec.NewSlice(0, 1), rec.NewSlice(1, 3), rec.NewSlice(3, 5)
				src, err := arrowio.FromRecords(schema, a, bb, cc)
				a.Release()
				bb.Release()
				cc.Release()
				require.NoError(t, err)
				f, err := feeder.New(src, plan, feeder.BatchSize(4), feeder.WithAllocator(mem))
				require.NoError(t, err)
				defer f.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				b1, err := f.Next(ctx)
				require.NoError(t, err)
				defer b1.Close()
				require.Equal(t, 4, b1.NumRows())
				checkTensor(t, id, b1, c, rows(c.want, per, 0, 4), 4)
				b2, err := f.Next(ctx)
				require.NoError(t, err)
				defer b2.Close()
				checkTensor(t, id, b2, c, rows(c.want, per, 4, 5), 1)
				_, err = f.Next(ctx)
				require.True(t, errors.Is(err, io.EOF), "want EOF, got %v", err)
			})
		})
	}
}
