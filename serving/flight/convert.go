package flight

import (
	"encoding/binary"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc/codes"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// flattened is a column's values: the leaf array, the range of its
// logical elements that the batch's rows cover, and the row shape the
// nesting gave.
type flattened struct {
	leaf     arrow.Array
	start, n int
	dims     []int64
}

// flatten walks a column's nesting (extension storage, fixed-size lists,
// lists, large lists) down to its values, honouring every level's slice
// offset, and rejects nulls at any level and list rows of different
// lengths.
func flatten(name string, a arrow.Array, rows int) (flattened, error) {
	start, n, per := 0, rows, 1
	var dims []int64
	for {
		if ext, ok := a.(array.ExtensionArray); ok {
			a = ext.Storage()
			continue
		}
		if i := firstNull(a, start, n); i >= 0 {
			if per == 1 {
				return flattened{}, serving.InvalidArgument("column %q: row %d is null: Flight inputs cannot hold nulls", name, i)
			}
			return flattened{}, serving.InvalidArgument("column %q: row %d: value %d of the row is null: Flight inputs cannot hold nulls", name, i/per, i%per)
		}
		switch l := a.(type) {
		case *array.FixedSizeList:
			w := int(l.DataType().(*arrow.FixedSizeListType).Len())
			child := l.ListValues()
			s := (l.Data().Offset() + start) * w
			if s+n*w > child.Len() {
				return flattened{}, serving.InvalidArgument("column %q: malformed fixed_size_list: rows %d..%d need values %d..%d of %d", name, start, start+n, s, s+n*w, child.Len())
			}
			a, start, n, per = child, s, n*w, per*w
			dims = append(dims, int64(w))
		case *array.List:
			s, w, err := listLevel(name, l.Offsets(), l.Data().Offset()+start, n, per, l.ListValues().Len())
			if err != nil {
				return flattened{}, err
			}
			a, start, n, per = l.ListValues(), s, n*w, per*w
			dims = append(dims, int64(w))
		case *array.LargeList:
			s, w, err := listLevel(name, l.Offsets(), l.Data().Offset()+start, n, per, l.ListValues().Len())
			if err != nil {
				return flattened{}, err
			}
			a, start, n, per = l.ListValues(), s, n*w, per*w
			dims = append(dims, int64(w))
		default:
			return flattened{leaf: a, start: start, n: n, dims: dims}, nil
		}
	}
}

// listLevel checks that list elements j..j+n (physical) hold the same
// number of values and returns where their values start and how many each
// holds.
func listLevel[O int32 | int64](name string, offs []O, j, n, per, childLen int) (start, width int, err error) {
	if n == 0 {
		if j < len(offs) {
			return int(offs[j]), 0, nil
		}
		return 0, 0, nil
	}
	if j+n >= len(offs) {
		return 0, 0, serving.InvalidArgument("column %q: malformed list: %d offsets for elements %d..%d", name, len(offs), j, j+n)
	}
	w := offs[j+1] - offs[j]
	for k := 1; k < n; k++ {
		if got := offs[j+k+1] - offs[j+k]; got != w {
			return 0, 0, serving.InvalidArgument("column %q: row %d holds %d values and row %d holds %d: every row of a tensor has the same shape", name, 0, w, k/per, got)
		}
	}
	if offs[j] < 0 || w < 0 || int(offs[j+n]) > childLen {
		return 0, 0, serving.InvalidArgument("column %q: malformed list offsets %d..%d for %d values", name, offs[j], offs[j+n], childLen)
	}
	return int(offs[j]), int(w), nil
}

// firstNull returns the position of the first null among a's logical
// elements start..start+n, or -1.
func firstNull(a arrow.Array, start, n int) int {
	if a.NullN() == 0 {
		return -1
	}
	for i := range n {
		if a.IsNull(start + i) {
			return i
		}
	}
	return -1
}

// toTensor copies rows rows of an input column into a Tensor: one copy
// from the Arrow buffers (with float64 to float32 cast, and bool bits
// unpacked to bytes).
func (c *column) toTensor(f arrow.Field, a arrow.Array, rows int) (t *serving.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, serving.InvalidArgument("column %q: malformed %s array: %v", f.Name, typeString(f.Type), r)
		}
	}()
	fl, err := flatten(f.Name, a, rows)
	if err != nil {
		return nil, err
	}
	ok, cast := accepts(c.info.DType, fl.leaf.DataType().ID())
	if !ok {
		return nil, serving.InvalidArgument("column %q: type %s, input %q wants %s", f.Name, typeString(f.Type), c.info.Name, c.want())
	}
	shape, err := c.shape(f, rows, fl.dims)
	if err != nil {
		return nil, err
	}
	t = &serving.Tensor{DType: c.info.DType, Shape: shape}
	switch {
	case c.info.DType == tf.String:
		t.Strings = copyStrings(fl)
	case cast:
		vals := fl.leaf.(*array.Float64).Float64Values()[fl.start : fl.start+fl.n]
		t.Data = make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(float32(v)))
		}
	case c.info.DType == tf.Bool:
		b := fl.leaf.(*array.Boolean)
		t.Data = make([]byte, fl.n)
		for i := range t.Data {
			if b.Value(fl.start + i) {
				t.Data[i] = 1
			}
		}
	default:
		size := c.info.DType.Size()
		t.Data = make([]byte, fl.n*size)
		if fl.n > 0 {
			d := fl.leaf.Data()
			bufs := d.Buffers()
			lo := (d.Offset() + fl.start) * size
			hi := lo + fl.n*size
			if len(bufs) < 2 || bufs[1] == nil || hi > bufs[1].Len() {
				return nil, serving.InvalidArgument("column %q: malformed %s array: its buffer is shorter than its %d values", f.Name, typeString(f.Type), d.Offset()+fl.start+fl.n)
			}
			copy(t.Data, bufs[1].Bytes()[lo:hi])
		}
	}
	if int64(len(t.Data)) != product(t.Shape)*int64(t.DType.Size()) && t.DType != tf.String {
		return nil, serving.InvalidArgument("column %q: %d values do not make shape %v", f.Name, fl.n, t.Shape)
	}
	return t, nil
}

// copyStrings copies binary or string values into one buffer and returns
// a slice of it per value.
func copyStrings(fl flattened) [][]byte {
	out := make([][]byte, fl.n)
	total := 0
	type lens interface{ ValueLen(int) int }
	ln := fl.leaf.(lens)
	for i := range fl.n {
		total += ln.ValueLen(fl.start + i)
	}
	buf := make([]byte, 0, total)
	for i := range fl.n {
		p := len(buf)
		switch a := fl.leaf.(type) {
		case *array.Binary:
			buf = append(buf, a.Value(fl.start+i)...)
		case *array.LargeBinary:
			buf = append(buf, a.Value(fl.start+i)...)
		case *array.String:
			buf = append(buf, a.Value(fl.start+i)...)
		case *array.LargeString:
			buf = append(buf, a.Value(fl.start+i)...)
		}
		out[i] = buf[p:len(buf):len(buf)]
	}
	return out
}

// toArray encodes rows rows of an output tensor as the column's type,
// sharing the tensor's memory for fixed-width values.
func (c *column) toArray(t *serving.Tensor, rows int) (arrow.Array, error) {
	if t.DType != c.info.DType {
		return nil, serving.Internal("output %q is %s, the signature says %s", c.info.Name, t.DType, c.info.DType)
	}
	if len(t.Shape) == 0 || t.Shape[0] != int64(rows) {
		return nil, serving.Errorf(codes.FailedPrecondition, "output %q has shape %v: not one row per input row (%d rows); leave it out with the \"outputs\" filter", c.info.Name, t.Shape, rows)
	}
	if err := t.Check(c.info.Name); err != nil {
		return nil, serving.Internal("output %s", serving.Message(err))
	}
	per := product(t.Shape[1:])
	switch c.kind {
	case flatLayout:
		if len(t.Shape) != 1 {
			return nil, serving.Internal("output %q has shape %v, the signature says %s", c.info.Name, t.Shape, shapeString(c.info.Shape))
		}
	case fixedLayout:
		if per != int64(c.width) {
			return nil, serving.Internal("output %q has shape %v, the signature says %s", c.info.Name, t.Shape, shapeString(c.info.Shape))
		}
	case listLayout:
		if int64(rows)*per > math.MaxInt32 {
			return nil, serving.Errorf(codes.ResourceExhausted, "output %q: %d values are too many for one list column; send smaller batches", c.info.Name, int64(rows)*per)
		}
	}
	n := rows * int(per)
	leaf, err := c.leafData(t, n)
	if err != nil {
		return nil, err
	}
	defer leaf.Release()
	var d arrow.ArrayData
	switch c.kind {
	case flatLayout:
		leaf.Retain()
		d = leaf
	case fixedLayout:
		d = array.NewData(c.field.Type, rows, []*memory.Buffer{nil}, []arrow.ArrayData{leaf}, 0, 0)
	default:
		offs := make([]int32, rows+1)
		for i := range offs {
			offs[i] = int32(i) * int32(per)
		}
		d = array.NewData(c.field.Type, rows, []*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs))}, []arrow.ArrayData{leaf}, 0, 0)
	}
	defer d.Release()
	return array.MakeFromData(d), nil
}

// leafData holds a tensor's n values as an array of the element type.
func (c *column) leafData(t *serving.Tensor, n int) (arrow.ArrayData, error) {
	switch t.DType {
	case tf.String:
		total := 0
		for _, s := range t.Strings {
			total += len(s)
		}
		if total > math.MaxInt32 {
			return nil, serving.Errorf(codes.ResourceExhausted, "output %q: %d bytes of strings are too many for one binary column; send smaller batches", c.info.Name, total)
		}
		offs := make([]int32, n+1)
		data := make([]byte, 0, total)
		for i, s := range t.Strings {
			data = append(data, s...)
			offs[i+1] = int32(len(data))
		}
		return array.NewData(c.elem, n, []*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs)), memory.NewBufferBytes(data)}, nil, 0, 0), nil
	case tf.Bool:
		bits := make([]byte, bitutil.BytesForBits(int64(n)))
		for i, v := range t.Data {
			if v != 0 {
				bitutil.SetBit(bits, i)
			}
		}
		return array.NewData(c.elem, n, []*memory.Buffer{nil, memory.NewBufferBytes(bits)}, nil, 0, 0), nil
	}
	return array.NewData(c.elem, n, []*memory.Buffer{nil, memory.NewBufferBytes(t.Data)}, nil, 0, 0), nil
}

// emptyTensor is an output with no rows.
func (c *column) emptyTensor() *serving.Tensor {
	t := &serving.Tensor{DType: c.info.DType, Shape: []int64{0}, Data: []byte{}}
	for _, d := range c.inner {
		t.Shape = append(t.Shape, max(d, 0))
	}
	if c.kind == listLayout && c.inner == nil {
		t.Shape = append(t.Shape, 0)
	}
	return t
}
