package feeder

import (
	"fmt"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"

	"github.com/gotflow/gotflow/internal/cmem"
	"github.com/gotflow/gotflow/tf"
)

// segment is a run of rows of one record that belongs to a batch.
type segment struct {
	rec  arrow.RecordBatch
	off  int   // first row in rec
	n    int   // number of rows
	base int64 // stream index of rec's row 0 (for messages)
}

// covers reports whether bitmap bm has at least bits bits.
func covers(bm []byte, bits int) bool { return len(bm) >= (bits+7)/8 }

func errMalformed(col string, format string, args ...any) error {
	return fmt.Errorf("feeder: column %q: malformed array: %s", col, fmt.Sprintf(format, args...))
}

type level struct {
	d            arrow.ArrayData
	start, count int
}

// walk descends the fixed-size list levels of col for rows [off, off+n) and
// returns the data of each level (level 0 is the column itself).
func (c *colPlan) walk(col arrow.Array, off, n int, levels []level) ([]level, error) {
	d := col.Data()
	if off < 0 || off+n > d.Len() {
		return nil, errMalformed(c.in.Column, "rows [%d, %d) outside an array of %d", off, off+n, d.Len())
	}
	start, count := d.Offset()+off, n
	levels = append(levels, level{d, start, count})
	for _, s := range c.levels {
		ch := d.Children()
		if len(ch) != 1 {
			return nil, errMalformed(c.in.Column, "fixed-size list without a child")
		}
		d = ch[0]
		start = start*int(s) + d.Offset()
		count *= int(s)
		if start+count > d.Offset()+d.Len() {
			return nil, errMalformed(c.in.Column, "fixed-size list child has %d values, need %d", d.Offset()+d.Len(), start+count)
		}
		levels = append(levels, level{d, start, count})
	}
	return levels, nil
}

// leafBytes returns the value buffer of leaf data after checking that it
// holds elements [start, start+count).
func (c *colPlan) leafBytes(d arrow.ArrayData, start, count int) ([]byte, error) {
	if count == 0 {
		return nil, nil
	}
	bufs := d.Buffers()
	if len(bufs) < 2 || bufs[1] == nil {
		return nil, errMalformed(c.in.Column, "no value buffer")
	}
	vals := bufs[1].Bytes()
	var need int
	if c.leaf == arrow.BOOL {
		need = (start + count + 7) / 8
	} else {
		need = (start + count) * leafWidth(c.leaf)
	}
	if len(vals) < need {
		return nil, errMalformed(c.in.Column, "value buffer has %d bytes, need %d", len(vals), need)
	}
	return vals, nil
}

func leafWidth(t arrow.Type) int {
	switch t {
	case arrow.INT8, arrow.UINT8:
		return 1
	case arrow.INT16, arrow.UINT16, arrow.FLOAT16:
		return 2
	case arrow.INT32, arrow.UINT32, arrow.FLOAT32:
		return 4
	case arrow.INT64, arrow.UINT64, arrow.FLOAT64:
		return 8
	}
	return 0
}

func nullsIn(d arrow.ArrayData) bool {
	if d.NullN() == 0 {
		return false
	}
	bufs := d.Buffers()
	return len(bufs) > 0 && bufs[0] != nil
}

// fillFixed writes rows [off, off+n) of col into dst (n*rowElems elements).
func (c *colPlan) fillFixed(col arrow.Array, off, n int, dst []byte, rowBase int64) error {
	var buf [4]level
	levels, err := c.walk(col, off, n, buf[:0])
	if err != nil {
		return err
	}
	leaf := levels[len(levels)-1]
	vals, err := c.leafBytes(leaf.d, leaf.start, leaf.count)
	if err != nil {
		return err
	}
	castLeaf(dst, c.dtype, c.leaf, vals, leaf.start, leaf.count, c.same)
	return c.applyNulls(levels, dst, rowBase, int64(leaf.count)/int64(max(n, 1)))
}

// applyNulls replaces the elements under each null slot by the fill value,
// or reports the first row holding a null.
func (c *colPlan) applyNulls(levels []level, dst []byte, rowBase, rowElems int64) error {
	w := c.dtype.Size()
	leafCount := levels[len(levels)-1].count
	first := int64(-1)
	for _, l := range levels {
		if l.count == 0 || !nullsIn(l.d) {
			continue
		}
		bm := l.d.Buffers()[0].Bytes()
		if len(bm) < (l.start+l.count+7)/8 {
			return errMalformed(c.in.Column, "validity bitmap too short")
		}
		block := leafCount / l.count
		for i := 0; i < l.count; i++ {
			if bitutil.BitIsSet(bm, l.start+i) {
				continue
			}
			elem := i * block
			if c.fill == nil {
				row := int64(elem) / max(rowElems, 1)
				if first < 0 || row < first {
					first = row
				}
				break
			}
			fillElems(dst[elem*w:], c.fill, block)
		}
	}
	if first >= 0 {
		return colErr(c.in.Column, rowBase+first, ErrNull, "map it with fill=VALUE (feeder.Input.Fill) to replace nulls")
	}
	return nil
}

// hasNulls reports whether rows [off, off+n) hold a null at any level.
func (c *colPlan) hasNulls(col arrow.Array, off, n int) bool {
	var buf [4]level
	levels, err := c.walk(col, off, n, buf[:0])
	if err != nil {
		return true
	}
	for _, l := range levels {
		if l.count == 0 || !nullsIn(l.d) {
			continue
		}
		bm := l.d.Buffers()[0].Bytes()
		if len(bm) < (l.start+l.count+7)/8 {
			return true
		}
		if bitutil.CountSetBits(bm, l.start, l.count) != l.count {
			return true
		}
	}
	return false
}

// listOffsets returns the [begin, end) child positions of row j (an index
// including the array offset) of a list array.
func listBounds(d arrow.ArrayData, j int) (int, int) {
	b := d.Buffers()[1].Bytes()
	if d.DataType().ID() == arrow.LARGE_LIST {
		o := as[int64](b)
		return int(o[j]), int(o[j+1])
	}
	o := as[int32](b)
	return int(o[j]), int(o[j+1])
}

func (c *colPlan) checkList(d arrow.ArrayData, off, n int) error {
	bufs := d.Buffers()
	if len(bufs) < 2 || bufs[1] == nil || len(d.Children()) != 1 {
		if n == 0 {
			return nil
		}
		return errMalformed(c.in.Column, "list without offsets or child")
	}
	w := 4
	if d.DataType().ID() == arrow.LARGE_LIST {
		w = 8
	}
	if len(bufs[1].Bytes()) < (d.Offset()+off+n+1)*w {
		return errMalformed(c.in.Column, "offsets buffer too short")
	}
	return nil
}

// listWidth is the row width a batch of a variable-length list column is fed
// with: Length, a fixed width from the shape, or the first non-null row's.
func (c *colPlan) listWidth(segs []segment) (int, error) {
	if c.in.Length > 0 {
		return c.in.Length, nil
	}
	if c.rowShape[0] >= 0 {
		return int(c.rowShape[0]), nil
	}
	for _, s := range segs {
		d := s.rec.Column(c.index).Data()
		if err := c.checkList(d, s.off, s.n); err != nil {
			return 0, err
		}
		var valid []byte
		if nullsIn(d) {
			if valid = d.Buffers()[0].Bytes(); !covers(valid, d.Offset()+s.off+s.n) {
				return 0, errMalformed(c.in.Column, "validity bitmap too short")
			}
		}
		for r := 0; r < s.n; r++ {
			j := d.Offset() + s.off + r
			if valid != nil && !bitutil.BitIsSet(valid, j) {
				continue
			}
			b, e := listBounds(d, j)
			return e - b, nil
		}
	}
	return 0, nil
}

// fillList writes rows [off, off+n) of a list column into dst with width
// elements per row.
func (c *colPlan) fillList(col arrow.Array, off, n, width int, dst []byte, rowBase int64) error {
	d := col.Data()
	if off < 0 || off+n > d.Len() {
		return errMalformed(c.in.Column, "rows [%d, %d) outside an array of %d", off, off+n, d.Len())
	}
	if err := c.checkList(d, off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	child := d.Children()[0]
	w := c.dtype.Size()
	var valid []byte
	if nullsIn(d) {
		if valid = d.Buffers()[0].Bytes(); !covers(valid, d.Offset()+off+n) {
			return errMalformed(c.in.Column, "validity bitmap too short")
		}
	}
	var childValid []byte
	if nullsIn(child) {
		if childValid = child.Buffers()[0].Bytes(); !covers(childValid, child.Offset()+child.Len()) {
			return errMalformed(c.in.Column, "list values' validity bitmap too short")
		}
	}
	for r := 0; r < n; r++ {
		j := d.Offset() + off + r
		row := dst[r*width*w : (r+1)*width*w]
		if valid != nil && !bitutil.BitIsSet(valid, j) {
			if c.fill == nil {
				return colErr(c.in.Column, rowBase+int64(r), ErrNull, "map it with fill=VALUE (feeder.Input.Fill) to replace nulls")
			}
			fillElems(row, c.fill, width)
			continue
		}
		b, e := listBounds(d, j)
		if b < 0 || e < b || e > child.Len() {
			return errMalformed(c.in.Column, "row %d has offsets [%d, %d) outside a child of %d", rowBase+int64(r), b, e, child.Len())
		}
		l := e - b
		if l != width && c.in.Length == 0 {
			return colErr(c.in.Column, rowBase+int64(r), ErrRagged, "%d elements, want %d like the batch's first row or the target shape (map it with len=N, feeder.Input.Length, to pad or truncate)", l, width)
		}
		k := min(l, width)
		start := child.Offset() + b
		vals, err := c.leafBytes(child, start, k)
		if err != nil {
			return err
		}
		castLeaf(row, c.dtype, c.leaf, vals, start, k, c.same)
		fillElems(row[k*w:], c.pad, width-k)
		if childValid != nil {
			for i := 0; i < k; i++ {
				if bitutil.BitIsSet(childValid, start+i) {
					continue
				}
				if c.fill == nil {
					return colErr(c.in.Column, rowBase+int64(r), ErrNull, "null list element %d; map it with fill=VALUE (feeder.Input.Fill) to replace nulls", i)
				}
				copy(row[i*w:(i+1)*w], c.fill)
			}
		}
	}
	return nil
}

// stringAt returns value i of a string-like array without copying.
func stringAt(a arrow.Array, i int) []byte {
	switch s := a.(type) {
	case *array.String:
		v := s.Value(i)
		return unsafe.Slice(unsafe.StringData(v), len(v))
	case *array.LargeString:
		v := s.Value(i)
		return unsafe.Slice(unsafe.StringData(v), len(v))
	case *array.StringView:
		v := s.Value(i)
		return unsafe.Slice(unsafe.StringData(v), len(v))
	case *array.Binary:
		return s.Value(i)
	case *array.LargeBinary:
		return s.Value(i)
	case *array.BinaryView:
		return s.Value(i)
	case *array.FixedSizeBinary:
		return s.Value(i)
	}
	return nil
}

// fillStrings stores rows [off, off+n) of a string-like column in vals.
func (c *colPlan) fillStrings(col arrow.Array, off, n int, vals [][]byte, rowBase int64) error {
	if off < 0 || off+n > col.Len() {
		return errMalformed(c.in.Column, "rows [%d, %d) outside an array of %d", off, off+n, col.Len())
	}
	if ext, ok := col.(array.ExtensionArray); ok {
		col = ext.Storage()
	}
	dict, isDict := col.(*array.Dictionary)
	var values arrow.Array
	if isDict {
		values = dict.Dictionary()
	}
	for r := 0; r < n; r++ {
		i := off + r
		if col.IsNull(i) {
			if !c.hasFill {
				return colErr(c.in.Column, rowBase+int64(r), ErrNull, "map it with fill=VALUE (feeder.Input.Fill) to replace nulls")
			}
			vals[r] = c.fillStr
			continue
		}
		if isDict {
			k := dict.GetValueIndex(i)
			if k < 0 || k >= values.Len() {
				return errMalformed(c.in.Column, "dictionary index %d outside a dictionary of %d", k, values.Len())
			}
			if values.IsNull(k) {
				if !c.hasFill {
					return colErr(c.in.Column, rowBase+int64(r), ErrNull, "map it with fill=VALUE (feeder.Input.Fill) to replace nulls")
				}
				vals[r] = c.fillStr
				continue
			}
			vals[r] = stringAt(values, k)
			continue
		}
		vals[r] = stringAt(col, i)
	}
	return nil
}

// checkSchema verifies that rec can be converted with this plan.
func (p *Plan) checkSchema(rec arrow.RecordBatch) error {
	s := rec.Schema()
	if s == p.schema {
		return nil
	}
	for i := range p.cols {
		c := &p.cols[i]
		if c.index >= s.NumFields() || s.Field(c.index).Name != c.field.Name {
			idx := s.FieldIndices(c.field.Name)
			if len(idx) == 0 {
				return colErr(c.in.Column, -1, ErrSchemaChanged, "the column is missing from a later record (schema %s)", s)
			}
			return colErr(c.in.Column, -1, ErrSchemaChanged, "the column moved from field %d to %d", c.index, idx[0])
		}
		if !arrow.TypeEqual(s.Field(c.index).Type, c.field.Type) {
			return colErr(c.in.Column, -1, ErrSchemaChanged, "type changed from %s to %s", c.field.Type, s.Field(c.index).Type)
		}
	}
	return nil
}

// tensors converts the rows of segs into one tensor per mapped column.
// The tensors are appended to out[:0].
func (p *Plan) tensors(segs []segment, out []*tf.Tensor) ([]*tf.Tensor, error) {
	rows := 0
	for _, s := range segs {
		if err := p.checkSchema(s.rec); err != nil {
			return nil, err
		}
		rows += s.n
	}
	out = out[:0]
	fail := func(err error) ([]*tf.Tensor, error) {
		for _, t := range out {
			t.Close()
		}
		return nil, err
	}
	for i := range p.cols {
		c := &p.cols[i]
		if c.batch >= 0 && int64(rows) != c.batch {
			return fail(colErr(c.in.Column, -1, ErrShape, "target %q takes batches of exactly %d rows, got %d (use a matching BatchSize, or DropLast)", c.target, c.batch, rows))
		}
		t, err := p.tensor(c, segs, rows)
		if err != nil {
			return fail(err)
		}
		out = append(out, t)
	}
	p.rows.Add(int64(rows))
	p.batches.Add(1)
	return out, nil
}

func (p *Plan) tensor(c *colPlan, segs []segment, rows int) (*tf.Tensor, error) {
	switch c.kind {
	case kindString:
		vals := make([][]byte, rows)
		pos := 0
		for _, s := range segs {
			if err := c.fillStrings(s.rec.Column(c.index), s.off, s.n, vals[pos:pos+s.n], s.base+int64(s.off)); err != nil {
				return nil, err
			}
			pos += s.n
		}
		shape := append([]int64{int64(rows)}, c.rowShape...)
		t, err := tf.NewStringTensor(shape, vals)
		if err != nil {
			return nil, fmt.Errorf("feeder: column %q: %w", c.in.Column, err)
		}
		p.copiedTensors.Add(1)
		return t, nil
	case kindList:
		width, err := c.listWidth(segs)
		if err != nil {
			return nil, err
		}
		shape := []int64{int64(rows), int64(width)}
		if p.zeroOnly {
			return nil, colErr(c.in.Column, -1, ErrNotZeroCopy, "variable-length lists are always copied")
		}
		t, err := tf.NewTensorFill(c.dtype, shape, func(dst []byte) error {
			rowBytes := width * c.dtype.Size()
			pos := 0
			for _, s := range segs {
				if err := c.fillList(s.rec.Column(c.index), s.off, s.n, width, dst[pos*rowBytes:(pos+s.n)*rowBytes], s.base+int64(s.off)); err != nil {
					return err
				}
				pos += s.n
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		p.copiedTensors.Add(1)
		p.copiedBytes.Add(int64(len(t.Bytes())))
		return t, nil
	}
	shape := make([]int64, 1+len(c.rowShape))
	shape[0] = int64(rows)
	copy(shape[1:], c.rowShape)
	if t, why := p.alias(c, segs, shape); t != nil {
		return t, nil
	} else if p.zeroOnly {
		return nil, colErr(c.in.Column, -1, ErrNotZeroCopy, "%s", why)
	}
	rowBytes := int(c.rowElems) * c.dtype.Size()
	t, err := tf.NewTensorFill(c.dtype, shape, func(dst []byte) error {
		pos := 0
		for _, s := range segs {
			if err := c.fillFixed(s.rec.Column(c.index), s.off, s.n, dst[pos*rowBytes:(pos+s.n)*rowBytes], s.base+int64(s.off)); err != nil {
				return err
			}
			pos += s.n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.copiedTensors.Add(1)
	p.copiedBytes.Add(int64(rows * rowBytes))
	return t, nil
}

// alias returns a tensor sharing the column's Arrow buffer, or nil and the
// reason it cannot.
func (p *Plan) alias(c *colPlan, segs []segment, shape []int64) (*tf.Tensor, string) {
	switch {
	case p.noAlias:
		return nil, "zero-copy is disabled by NoZeroCopy"
	case !c.same:
		nat, _ := naturalDType(c.leaf)
		return nil, fmt.Sprintf("%s values are converted to %s", nat, c.dtype)
	case len(segs) != 1:
		return nil, fmt.Sprintf("the batch spans %d record slices", len(segs))
	}
	s := segs[0]
	if s.n == 0 {
		return nil, "the batch is empty"
	}
	col := s.rec.Column(c.index)
	if c.hasNulls(col, s.off, s.n) {
		return nil, "the rows hold nulls"
	}
	var buf [4]level
	levels, err := c.walk(col, s.off, s.n, buf[:0])
	if err != nil {
		return nil, err.Error()
	}
	leaf := levels[len(levels)-1]
	vals, err := c.leafBytes(leaf.d, leaf.start, leaf.count)
	if err != nil {
		return nil, err.Error()
	}
	w := c.dtype.Size()
	data := vals[leaf.start*w : (leaf.start+leaf.count)*w]
	ptr := unsafe.Pointer(unsafe.SliceData(data))
	if uintptr(ptr)%tf.Alignment != 0 {
		return nil, fmt.Sprintf("the data at offset %d is not %d-byte aligned", leaf.start, tf.Alignment)
	}
	if !cmem.Contains(ptr, len(data)) {
		return nil, "the buffer is not from a C allocator (use NewCAllocator)"
	}
	col.Retain()
	t, err := tf.NewTensorFromBuffer(c.dtype, shape, ptr, len(data), col.Release)
	if err != nil {
		col.Release()
		return nil, err.Error()
	}
	p.aliasedTensors.Add(1)
	p.aliasedBytes.Add(int64(len(data)))
	return t, ""
}
