package feeder

import (
	"fmt"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gotflow/gotflow/tf"
)

// ElementType is the Arrow type of one element of a TensorFlow dtype, as
// AppendOutputs writes it: string tensors become utf8, or binary when
// binaryStrings is set. ok is false for types without an Arrow column.
func ElementType(dt tf.DataType, binaryStrings bool) (t arrow.DataType, ok bool) {
	switch dt {
	case tf.Float:
		return arrow.PrimitiveTypes.Float32, true
	case tf.Double:
		return arrow.PrimitiveTypes.Float64, true
	case tf.Half:
		return arrow.FixedWidthTypes.Float16, true
	case tf.Int8:
		return arrow.PrimitiveTypes.Int8, true
	case tf.Int16:
		return arrow.PrimitiveTypes.Int16, true
	case tf.Int32:
		return arrow.PrimitiveTypes.Int32, true
	case tf.Int64:
		return arrow.PrimitiveTypes.Int64, true
	case tf.Uint8:
		return arrow.PrimitiveTypes.Uint8, true
	case tf.Uint16:
		return arrow.PrimitiveTypes.Uint16, true
	case tf.Uint32:
		return arrow.PrimitiveTypes.Uint32, true
	case tf.Uint64:
		return arrow.PrimitiveTypes.Uint64, true
	case tf.Bool:
		return arrow.FixedWidthTypes.Boolean, true
	case tf.String:
		if binaryStrings {
			return arrow.BinaryTypes.Binary, true
		}
		return arrow.BinaryTypes.String, true
	}
	return nil, false
}

// arrowType is the Arrow element type of a fixed-width TensorFlow dtype.
func arrowType(dt tf.DataType) (arrow.DataType, bool) {
	if dt == tf.String {
		return nil, false
	}
	return ElementType(dt, false)
}

// AppendOutputs returns a new record holding rec's columns followed by one
// column per output tensor (Spark's transform). Tensors of shape [rows]
// become primitive columns, [rows, d1, …] fixed-size lists (nested for rank
// > 2) or, with Output.TensorType, arrow.fixed_shape_tensor columns; string
// tensors become utf8 (or, with Output.Binary, binary) columns. Tensor
// values are copied into memory from mem (nil: the default C allocator);
// the caller keeps ownership of rec and the tensors and releases the result.
func AppendOutputs(rec arrow.RecordBatch, tensors []*tf.Tensor, outputs []Output, mem memory.Allocator) (arrow.RecordBatch, error) {
	if len(tensors) != len(outputs) {
		return nil, fmt.Errorf("feeder: %d tensors for %d outputs", len(tensors), len(outputs))
	}
	if mem == nil {
		mem = defaultAllocator()
	}
	rows := rec.NumRows()
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	names := map[string]bool{}
	for _, f := range fields {
		names[f.Name] = true
	}
	cols := make([]arrow.Array, 0, len(fields)+len(outputs))
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for i := 0; i < int(rec.NumCols()); i++ {
		c := rec.Column(i)
		c.Retain()
		cols = append(cols, c)
	}
	for i, out := range outputs {
		if out.Column == "" {
			return nil, fmt.Errorf("feeder: output %d (%s) has no column name", i, out.Tensor)
		}
		if names[out.Column] {
			return nil, fmt.Errorf("feeder: output column %q already exists in the record", out.Column)
		}
		names[out.Column] = true
		t := tensors[i]
		if t == nil {
			return nil, fmt.Errorf("feeder: output %q: nil tensor", out.Column)
		}
		shape := t.Shape()
		if len(shape) == 0 || shape[0] != rows {
			return nil, fmt.Errorf("feeder: output %q (tensor %s): shape %v, want a first dimension of %d rows", out.Column, out.Tensor, shape, rows)
		}
		arr, err := tensorColumn(t, shape, out, mem)
		if err != nil {
			return nil, err
		}
		cols = append(cols, arr)
		fields = append(fields, arrow.Field{Name: out.Column, Type: arr.DataType(), Nullable: false})
	}
	md := rec.Schema().Metadata()
	schema := arrow.NewSchema(fields, &md)
	return array.NewRecordBatch(schema, cols, rows), nil
}

func tensorColumn(t *tf.Tensor, shape []int64, out Output, mem memory.Allocator) (arrow.Array, error) {
	rows := int(shape[0])
	if t.DataType() == tf.String {
		if len(shape) != 1 {
			return nil, fmt.Errorf("feeder: output %q: string tensors of shape %v are not supported (want [rows])", out.Column, shape)
		}
		vals, err := t.Strings()
		if err != nil {
			return nil, fmt.Errorf("feeder: output %q: %w", out.Column, err)
		}
		if out.Binary {
			b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
			defer b.Release()
			b.AppendValues(vals, nil)
			return b.NewArray(), nil
		}
		b := array.NewStringBuilder(mem)
		defer b.Release()
		for i, v := range vals {
			if !utf8.Valid(v) {
				return nil, fmt.Errorf("feeder: output %q row %d: invalid UTF-8 in a string tensor (set Output.Binary)", out.Column, i)
			}
			b.BinaryBuilder.Append(v)
		}
		return b.NewArray(), nil
	}
	et, ok := arrowType(t.DataType())
	if !ok {
		return nil, fmt.Errorf("feeder: output %q: tensor dtype %s has no Arrow column type", out.Column, t.DataType())
	}
	inner := shape[1:]
	per, err := shapeElems(inner)
	if err != nil {
		return nil, fmt.Errorf("feeder: output %q: %w", out.Column, err)
	}
	n := rows * int(per)
	src := t.Bytes()
	var buf *memory.Buffer
	if et.ID() == arrow.BOOL {
		buf = memory.NewResizableBuffer(mem)
		buf.Resize(int(bitutil.BytesForBits(int64(n))))
		bits := buf.Bytes()
		clear(bits)
		for i := 0; i < n; i++ {
			if src[i] != 0 {
				bitutil.SetBit(bits, i)
			}
		}
	} else {
		w := t.DataType().Size()
		if len(src) != n*w {
			return nil, fmt.Errorf("feeder: output %q: tensor has %d bytes, want %d", out.Column, len(src), n*w)
		}
		buf = memory.NewResizableBuffer(mem)
		buf.Resize(n * w)
		copy(buf.Bytes(), src)
	}
	leaf := array.NewData(et, n, []*memory.Buffer{nil, buf}, nil, 0, 0)
	buf.Release()
	if len(inner) == 0 {
		defer leaf.Release()
		return array.MakeFromData(leaf), nil
	}
	if out.TensorType && len(inner) >= 1 {
		typ, err := NewFixedShapeTensorType(et, inner)
		if err != nil {
			leaf.Release()
			return nil, fmt.Errorf("feeder: output %q: %w", out.Column, err)
		}
		storage := array.NewData(typ.StorageType(), rows, []*memory.Buffer{nil}, []arrow.ArrayData{leaf}, 0, 0)
		leaf.Release()
		st := array.MakeFromData(storage)
		storage.Release()
		defer st.Release()
		return array.NewExtensionArrayWithStorage(typ, st), nil
	}
	// nest fixed-size lists from the innermost dimension out
	data := leaf
	count := n
	for k := len(inner) - 1; k >= 0; k-- {
		d := int(inner[k])
		if d == 0 {
			count = rows
			for _, dd := range inner[:k] {
				count *= int(dd)
			}
		} else {
			count /= d
		}
		typ := arrow.FixedSizeListOf(int32(d), data.DataType())
		parent := array.NewData(typ, count, []*memory.Buffer{nil}, []arrow.ArrayData{data}, 0, 0)
		data.Release()
		data = parent
	}
	defer data.Release()
	return array.MakeFromData(data), nil
}
