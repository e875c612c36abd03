package estimator

import (
	"fmt"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// This file converts Arrow columns to feed tensors and fetched tensors back
// to Arrow columns, behind two small interfaces so the conversion can move
// to package feeder without touching the pipeline.

// feedConverter turns one batch of records into the feed tensors, in the
// order of the resolved inputs. The caller closes the tensors.
type feedConverter interface {
	feeds(rec arrow.RecordBatch) ([]*tf.Tensor, error)
}

// fetchConverter turns fetched tensors into the appended columns.
type fetchConverter interface {
	fields() []arrow.Field
	columns(ts []*tf.Tensor, rows int64) ([]arrow.Array, error)
}

// arrowOf maps a TensorFlow dtype to the Arrow type of one element.
func arrowOf(dt tf.DataType) (arrow.DataType, bool) {
	switch dt {
	case tf.Float:
		return arrow.PrimitiveTypes.Float32, true
	case tf.Double:
		return arrow.PrimitiveTypes.Float64, true
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
		return arrow.BinaryTypes.Binary, true
	}
	return nil, false
}

// dtypeOf maps an Arrow leaf type to the natural TensorFlow dtype.
func dtypeOf(t arrow.DataType) (tf.DataType, bool) {
	switch t.ID() {
	case arrow.FLOAT32:
		return tf.Float, true
	case arrow.FLOAT64:
		return tf.Double, true
	case arrow.INT8:
		return tf.Int8, true
	case arrow.INT16:
		return tf.Int16, true
	case arrow.INT32:
		return tf.Int32, true
	case arrow.INT64:
		return tf.Int64, true
	case arrow.UINT8:
		return tf.Uint8, true
	case arrow.UINT16:
		return tf.Uint16, true
	case arrow.UINT32:
		return tf.Uint32, true
	case arrow.UINT64:
		return tf.Uint64, true
	case arrow.BOOL:
		return tf.Bool, true
	case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY:
		return tf.String, true
	}
	return 0, false
}

// widens reports whether every value of from is exactly representable in to.
func widens(from, to tf.DataType) bool {
	if from == to {
		return true
	}
	switch to {
	case tf.Double:
		switch from {
		case tf.Float, tf.Int8, tf.Int16, tf.Int32, tf.Uint8, tf.Uint16, tf.Uint32:
			return true
		}
	case tf.Float:
		switch from {
		case tf.Int8, tf.Int16, tf.Uint8, tf.Uint16:
			return true
		}
	case tf.Int64:
		switch from {
		case tf.Int8, tf.Int16, tf.Int32, tf.Uint8, tf.Uint16, tf.Uint32:
			return true
		}
	case tf.Int32:
		switch from {
		case tf.Int8, tf.Int16, tf.Uint8, tf.Uint16:
			return true
		}
	}
	return false
}

// columnPlan feeds one column to one input.
type columnPlan struct {
	column   string
	index    int // field index in the schema
	input    string
	ep       savedmodel.Endpoint
	src      tf.DataType // the column's leaf dtype
	dst      tf.DataType // the input's dtype
	listKind arrow.Type  // arrow.FIXED_SIZE_LIST, arrow.LIST, or arrow.NULL for flat columns
	width    int64       // elements per row (1 for flat columns)
	rowShape []int64     // tensor shape of one row
}

type arrowFeeds struct {
	cols []columnPlan
}

// planFeeds checks each mapped column against its input and returns the
// converter. inputs are in feed order.
func planFeeds(schema *arrow.Schema, columns []string, eps []savedmodel.Endpoint, names []string) (*arrowFeeds, error) {
	f := &arrowFeeds{}
	for i, col := range columns {
		idx := schema.FieldIndices(col)
		if len(idx) == 0 {
			return nil, fmt.Errorf("estimator: input %q is mapped from column %q, which the data does not have (columns: %s)", names[i], col, fieldNames(schema))
		}
		fld := schema.Field(idx[0])
		p := columnPlan{column: col, index: idx[0], input: names[i], ep: eps[i], dst: eps[i].DType, width: 1, listKind: arrow.NULL}
		leaf := fld.Type
		switch t := fld.Type.(type) {
		case *arrow.FixedSizeListType:
			p.listKind, p.width, leaf = arrow.FIXED_SIZE_LIST, int64(t.Len()), t.Elem()
		case *arrow.ListType:
			p.listKind, p.width, leaf = arrow.LIST, -1, t.Elem()
		}
		src, ok := dtypeOf(leaf)
		if !ok {
			return nil, fmt.Errorf("estimator: column %q has type %s; want numbers, bools, strings or fixed-size lists of them", col, fld.Type)
		}
		p.src = src
		if !widens(src, p.dst) {
			return nil, fmt.Errorf("estimator: column %q holds %s but input %q wants %s", col, src, names[i], p.dst)
		}
		if p.listKind != arrow.NULL && src == tf.String {
			return nil, fmt.Errorf("estimator: column %q is a list of strings; only flat string columns are supported", col)
		}
		if err := p.resolveShape(); err != nil {
			return nil, err
		}
		f.cols = append(f.cols, p)
	}
	return f, nil
}

func fieldNames(s *arrow.Schema) string {
	out := ""
	for i, f := range s.Fields() {
		if i > 0 {
			out += ", "
		}
		out += f.Name
	}
	return out
}

// resolveShape picks the row shape: the input's shape without the batch
// dimension when it is known and holds as many elements as the column's
// rows, else the column's own shape.
func (p *columnPlan) resolveShape() error {
	want := p.ep.Shape
	if p.width < 0 { // variable lists: the width is known per batch
		if want != nil && len(want) == 2 && want[1] > 0 {
			p.width, p.rowShape = want[1], []int64{want[1]}
			return nil
		}
		if want != nil && len(want) != 2 {
			return fmt.Errorf("estimator: column %q is a list but input %q has shape %s", p.column, p.input, savedmodel.ShapeString(want))
		}
		return nil
	}
	natural := []int64{}
	if p.listKind != arrow.NULL {
		natural = []int64{p.width}
	}
	if want == nil {
		p.rowShape = natural
		return nil
	}
	if len(want) == 0 {
		return fmt.Errorf("estimator: input %q is a scalar; it cannot take a batch from column %q", p.input, p.column)
	}
	row := want[1:]
	n, unknown := int64(1), -1
	for i, d := range row {
		if d < 0 {
			if unknown >= 0 {
				return fmt.Errorf("estimator: input %q has shape %s with more than one unknown dimension per row", p.input, savedmodel.ShapeString(want))
			}
			unknown = i
			continue
		}
		n *= d
	}
	shape := append([]int64(nil), row...)
	if unknown >= 0 {
		if n == 0 || p.width%n != 0 {
			return fmt.Errorf("estimator: column %q has %d values per row, which does not fit input %q of shape %s", p.column, p.width, p.input, savedmodel.ShapeString(want))
		}
		shape[unknown] = p.width / n
	} else if n != p.width {
		return fmt.Errorf("estimator: column %q has %d values per row but input %q of shape %s takes %d", p.column, p.width, p.input, savedmodel.ShapeString(want), n)
	}
	p.rowShape = shape
	return nil
}

func (f *arrowFeeds) feeds(rec arrow.RecordBatch) ([]*tf.Tensor, error) {
	out := make([]*tf.Tensor, 0, len(f.cols))
	for i := range f.cols {
		t, err := f.cols[i].tensor(rec.Column(f.cols[i].index), rec.NumRows())
		if err != nil {
			for _, x := range out {
				x.Close()
			}
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func (p *columnPlan) tensor(col arrow.Array, rows int64) (*tf.Tensor, error) {
	if col.NullN() > 0 {
		return nil, fmt.Errorf("estimator: column %q has %d null rows; nulls cannot be fed to input %q", p.column, col.NullN(), p.input)
	}
	if p.src == tf.String {
		return stringTensor(col, rows, p)
	}
	leaf := col
	width := p.width
	rowShape := p.rowShape
	switch p.listKind {
	case arrow.FIXED_SIZE_LIST:
		l := col.(*array.FixedSizeList)
		leaf = array.NewSlice(l.ListValues(), int64(l.Offset())*width, int64(l.Offset()+l.Len())*width)
		defer leaf.Release()
	case arrow.LIST:
		l := col.(*array.List)
		var start, end int64
		for r := 0; r < l.Len(); r++ {
			s, e := l.ValueOffsets(r)
			if r == 0 {
				start = s
				if width < 0 {
					width = e - s
				}
			}
			if e-s != width {
				return nil, fmt.Errorf("estimator: column %q row %d has %d values, want %d (every row must have the same length)", p.column, r, e-s, width)
			}
			end = e
		}
		if l.Len() == 0 && width < 0 {
			width = 0
		}
		if rowShape == nil {
			rowShape = []int64{width}
		}
		leaf = array.NewSlice(l.ListValues(), start, end)
		defer leaf.Release()
	}
	if leaf.NullN() > 0 {
		return nil, fmt.Errorf("estimator: column %q has null values inside its lists; nulls cannot be fed to input %q", p.column, p.input)
	}
	shape := append([]int64{rows}, rowShape...)
	n := int(rows * width)
	if p.src == tf.Bool {
		b := leaf.(*array.Boolean)
		vals := make([]bool, n)
		for i := range vals {
			vals[i] = b.Value(i)
		}
		return tf.NewTensor(shape, vals)
	}
	t, err := tf.AllocateTensor(p.dst, shape)
	if err != nil {
		return nil, fmt.Errorf("estimator: column %q: %w", p.column, err)
	}
	src := leafBytes(leaf, p.src.Size())
	if p.src == p.dst {
		copy(t.Bytes(), src)
		return t, nil
	}
	if err := widen(t.Bytes(), p.dst, src, p.src, n); err != nil {
		t.Close()
		return nil, fmt.Errorf("estimator: column %q: %w", p.column, err)
	}
	return t, nil
}

// leafBytes returns the values of a fixed-width array (honouring its offset).
func leafBytes(a arrow.Array, size int) []byte {
	d := a.Data()
	buf := d.Buffers()[1]
	if buf == nil {
		return nil
	}
	b := buf.Bytes()
	return b[d.Offset()*size : (d.Offset()+d.Len())*size]
}

func stringTensor(col arrow.Array, rows int64, p *columnPlan) (*tf.Tensor, error) {
	vals := make([][]byte, rows)
	switch c := col.(type) {
	case *array.String:
		for i := range vals {
			vals[i] = []byte(c.Value(i))
		}
	case *array.LargeString:
		for i := range vals {
			vals[i] = []byte(c.Value(i))
		}
	case *array.Binary:
		for i := range vals {
			vals[i] = c.Value(i)
		}
	case *array.LargeBinary:
		for i := range vals {
			vals[i] = c.Value(i)
		}
	default:
		return nil, fmt.Errorf("estimator: column %q of type %s cannot be fed as strings", p.column, col.DataType())
	}
	return tf.NewStringTensor(append([]int64{rows}, p.rowShape...), vals)
}

func view[T any](b []byte) []T {
	if len(b) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(z)))
}

func widen(dst []byte, dt tf.DataType, src []byte, st tf.DataType, n int) error {
	switch dt {
	case tf.Double:
		return widenInto(view[float64](dst), src, st)
	case tf.Float:
		return widenInto(view[float32](dst), src, st)
	case tf.Int64:
		return widenInto(view[int64](dst), src, st)
	case tf.Int32:
		return widenInto(view[int32](dst), src, st)
	}
	return fmt.Errorf("no conversion from %s to %s", st, dt)
}

type number interface {
	~float32 | ~float64 | ~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

func widenInto[D number](dst []D, src []byte, st tf.DataType) error {
	switch st {
	case tf.Float:
		conv(dst, view[float32](src))
	case tf.Double:
		conv(dst, view[float64](src))
	case tf.Int8:
		conv(dst, view[int8](src))
	case tf.Int16:
		conv(dst, view[int16](src))
	case tf.Int32:
		conv(dst, view[int32](src))
	case tf.Int64:
		conv(dst, view[int64](src))
	case tf.Uint8:
		conv(dst, view[uint8](src))
	case tf.Uint16:
		conv(dst, view[uint16](src))
	case tf.Uint32:
		conv(dst, view[uint32](src))
	default:
		return fmt.Errorf("no conversion from %s", st)
	}
	return nil
}

func conv[D, S number](dst []D, src []S) {
	for i, v := range src {
		dst[i] = D(v)
	}
}

// outputPlan turns one fetched tensor into one column.
type outputPlan struct {
	output string
	column string
	dtype  tf.DataType
	shape  []int64 // full static shape, nil for unknown rank
	field  arrow.Field
}

type arrowFetches struct {
	mem  memory.Allocator
	outs []outputPlan
}

// planFetches decides each appended column's type from the output's static
// dtype and shape: [batch] → a flat column, [batch, d1, …] → a fixed-size
// list of d1*… values (row-major); strings → binary.
func planFetches(mem memory.Allocator, eps []savedmodel.Endpoint, names, columns []string) (*arrowFetches, error) {
	f := &arrowFetches{mem: mem}
	for i, ep := range eps {
		elem, ok := arrowOf(ep.DType)
		if !ok {
			return nil, fmt.Errorf("estimator: output %q has dtype %s, which has no Arrow column type", names[i], ep.DType)
		}
		o := outputPlan{output: names[i], column: columns[i], dtype: ep.DType, shape: ep.Shape}
		typ := elem
		if ep.Shape != nil {
			if len(ep.Shape) == 0 {
				return nil, fmt.Errorf("estimator: output %q is a scalar; it needs a batch dimension to become column %q", names[i], columns[i])
			}
			if w, known := rowWidth(ep.Shape[1:]); len(ep.Shape) > 1 && known {
				typ = arrow.FixedSizeListOf(int32(w), elem)
			} else if len(ep.Shape) > 1 {
				typ = arrow.ListOf(elem)
			}
		} else {
			typ = arrow.ListOf(elem)
		}
		o.field = arrow.Field{Name: columns[i], Type: typ, Nullable: false}
		f.outs = append(f.outs, o)
	}
	return f, nil
}

func rowWidth(row []int64) (int64, bool) {
	n := int64(1)
	for _, d := range row {
		if d < 0 {
			return 0, false
		}
		n *= d
	}
	return n, true
}

func (f *arrowFetches) fields() []arrow.Field {
	out := make([]arrow.Field, len(f.outs))
	for i, o := range f.outs {
		out[i] = o.field
	}
	return out
}

func (f *arrowFetches) columns(ts []*tf.Tensor, rows int64) ([]arrow.Array, error) {
	out := make([]arrow.Array, 0, len(ts))
	release := func() {
		for _, a := range out {
			a.Release()
		}
	}
	for i, t := range ts {
		a, err := f.outs[i].toColumn(f.mem, t, rows)
		if err != nil {
			release()
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (o *outputPlan) toColumn(mem memory.Allocator, t *tf.Tensor, rows int64) (arrow.Array, error) {
	shape := t.Shape()
	if len(shape) == 0 || shape[0] != rows {
		return nil, fmt.Errorf("estimator: output %q has shape %v; want %d rows (one per input row) for column %q", o.output, shape, rows, o.column)
	}
	if t.DataType() != o.dtype {
		return nil, fmt.Errorf("estimator: output %q is %s, its signature says %s", o.output, t.DataType(), o.dtype)
	}
	width, _ := rowWidth(shape[1:])
	var leaf arrow.Array
	switch o.dtype {
	case tf.String:
		s, err := t.Strings()
		if err != nil {
			return nil, err
		}
		b := array.NewBinaryBuilder(mem, arrow.BinaryTypes.Binary)
		b.AppendValues(s, nil)
		leaf = b.NewArray()
		b.Release()
	case tf.Bool:
		vals, err := tf.Data[bool](t)
		if err != nil {
			return nil, err
		}
		b := array.NewBooleanBuilder(mem)
		b.AppendValues(vals, nil)
		leaf = b.NewArray()
		b.Release()
	default:
		elem, _ := arrowOf(o.dtype)
		src := t.Bytes()
		buf := memory.NewResizableBuffer(mem)
		buf.Resize(len(src))
		copy(buf.Bytes(), src)
		data := array.NewData(elem, int(rows*width), []*memory.Buffer{nil, buf}, nil, 0, 0)
		buf.Release()
		leaf = array.MakeFromData(data)
		data.Release()
	}
	switch typ := o.field.Type.(type) {
	case *arrow.FixedSizeListType:
		if int64(typ.Len()) != width {
			leaf.Release()
			return nil, fmt.Errorf("estimator: output %q has shape %v; column %q holds %d values per row", o.output, shape, o.column, typ.Len())
		}
		data := array.NewData(typ, int(rows), []*memory.Buffer{nil}, []arrow.ArrayData{leaf.Data()}, 0, 0)
		leaf.Release()
		a := array.MakeFromData(data)
		data.Release()
		return a, nil
	case *arrow.ListType:
		offs := make([]int32, rows+1)
		for r := range offs {
			offs[r] = int32(int64(r) * width)
		}
		ob := memory.NewBufferBytes(unsafe.Slice((*byte)(unsafe.Pointer(&offs[0])), len(offs)*4))
		data := array.NewData(typ, int(rows), []*memory.Buffer{nil, ob}, []arrow.ArrayData{leaf.Data()}, 0, 0)
		leaf.Release()
		a := array.MakeFromData(data)
		data.Release()
		return a, nil
	}
	if width != 1 {
		leaf.Release()
		return nil, fmt.Errorf("estimator: output %q has shape %v; column %q holds one value per row", o.output, shape, o.column)
	}
	return leaf, nil
}
