package feeder

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gotflow/gotflow/tf"
)

// Batch is one batch of tensors together with the source rows they were made
// from. It owns its tensors and holds a reference on its records; Close
// releases both.
type Batch struct {
	// Tensors holds one tensor per mapping input, in mapping order.
	Tensors []*tf.Tensor

	rows   int
	segs   []segment
	mem    memory.Allocator
	rec    arrow.RecordBatch // cached Record(), owned
	closed bool

	// inline storage for the common case: one segment, a few tensors
	segBuf    [1]segment
	tensorBuf [4]*tf.Tensor
}

// NumRows returns the number of rows in the batch.
func (b *Batch) NumRows() int { return b.rows }

// Feeds pairs the tensors with the graph inputs they feed (in mapping order),
// ready for Session.Run. The batch keeps ownership of the tensors.
func (b *Batch) Feeds(inputs []tf.Output) ([]tf.Feed, error) {
	if b.closed {
		return nil, ErrClosed
	}
	if len(inputs) != len(b.Tensors) {
		return nil, fmt.Errorf("feeder: batch has %d tensors, got %d graph inputs", len(b.Tensors), len(inputs))
	}
	feeds := make([]tf.Feed, len(inputs))
	for i, in := range inputs {
		feeds[i] = tf.Feed{Output: in, Tensor: b.Tensors[i]}
	}
	return feeds, nil
}

// Record returns the batch's source rows as one record, for appending
// outputs (AppendOutputs). The record is owned by the batch and valid until
// Close; Retain it to keep it longer. Rows that came from several records
// (re-chunking, shuffling) are concatenated on the first call.
func (b *Batch) Record() (arrow.RecordBatch, error) {
	if b.closed {
		return nil, ErrClosed
	}
	if b.rec != nil {
		return b.rec, nil
	}
	if len(b.segs) == 0 {
		return nil, fmt.Errorf("feeder: batch has no source records")
	}
	if len(b.segs) == 1 {
		s := b.segs[0]
		if s.off == 0 && int64(s.n) == s.rec.NumRows() {
			s.rec.Retain()
			b.rec = s.rec
		} else {
			b.rec = s.rec.NewSlice(int64(s.off), int64(s.off+s.n))
		}
		return b.rec, nil
	}
	rec, err := concatSegments(b.segs, b.mem)
	if err != nil {
		return nil, err
	}
	b.rec = rec
	return rec, nil
}

func concatSegments(segs []segment, mem memory.Allocator) (arrow.RecordBatch, error) {
	schema := segs[0].rec.Schema()
	ncols := int(segs[0].rec.NumCols())
	cols := make([]arrow.Array, 0, ncols)
	release := func() {
		for _, c := range cols {
			c.Release()
		}
	}
	rows := 0
	for _, s := range segs {
		rows += s.n
	}
	parts := make([]arrow.Array, len(segs))
	for j := 0; j < ncols; j++ {
		for i, s := range segs {
			parts[i] = array.NewSlice(s.rec.Column(j), int64(s.off), int64(s.off+s.n))
		}
		c, err := array.Concatenate(parts, mem)
		for _, p := range parts {
			p.Release()
		}
		if err != nil {
			release()
			return nil, fmt.Errorf("feeder: concatenate column %q: %w", schema.Field(j).Name, err)
		}
		cols = append(cols, c)
	}
	rec := array.NewRecordBatch(schema, cols, int64(rows))
	release()
	return rec, nil
}

// Close closes the tensors and releases the source records. It is idempotent.
func (b *Batch) Close() error {
	if b == nil || b.closed {
		return nil
	}
	b.closed = true
	for _, t := range b.Tensors {
		t.Close()
	}
	b.Tensors = nil
	if b.rec != nil {
		b.rec.Release()
		b.rec = nil
	}
	for _, s := range b.segs {
		s.rec.Release()
	}
	b.segs = nil
	return nil
}

// Convert turns all rows of rec into one batch of tensors. The batch holds a
// reference on rec; the caller keeps its own.
func (p *Plan) Convert(rec arrow.RecordBatch) (*Batch, error) {
	return p.convertOne(rec, 0, int(rec.NumRows()))
}

// ConvertRows turns rows [off, off+n) of rec into one batch of tensors.
func (p *Plan) ConvertRows(rec arrow.RecordBatch, off, n int) (*Batch, error) {
	if off < 0 || n < 0 || int64(off+n) > rec.NumRows() {
		return nil, fmt.Errorf("feeder: rows [%d, %d) outside a record of %d rows", off, off+n, rec.NumRows())
	}
	return p.convertOne(rec, off, n)
}

func (p *Plan) convertOne(rec arrow.RecordBatch, off, n int) (*Batch, error) {
	b := &Batch{mem: defaultAllocator()}
	b.segBuf[0] = segment{rec: rec, off: off, n: n}
	segs := b.segBuf[:1]
	ts, err := p.tensors(segs, b.tensorBuf[:0])
	if err != nil {
		return nil, err
	}
	rec.Retain()
	b.Tensors, b.segs, b.rows = ts, segs, n
	return b, nil
}

// convertOwned makes a batch from segments that each hold one reference on
// their record; the batch takes those references over, or releases them on
// error.
func (p *Plan) convertOwned(segs []segment, mem memory.Allocator) (*Batch, error) {
	b := &Batch{segs: segs, mem: mem}
	ts, err := p.tensors(segs, b.tensorBuf[:0])
	if err != nil {
		releaseSegs(segs)
		return nil, err
	}
	b.Tensors = ts
	for _, s := range segs {
		b.rows += s.n
	}
	if b.mem == nil {
		b.mem = defaultAllocator()
	}
	return b, nil
}

func releaseSegs(segs []segment) {
	for _, s := range segs {
		s.rec.Release()
	}
}

// ConvertInto writes all rows of rec into existing tensors, one per mapping
// input, without allocating: the steady-state path of a training loop that
// reuses its input tensors between steps. Every input must be a fixed-width
// column (or list) and dst[i] must have the planned dtype and exactly as
// many elements as the record's rows need. The caller must not reuse a
// tensor while TensorFlow may still hold it (e.g. an output of the previous
// Run that aliases an input).
func (p *Plan) ConvertInto(rec arrow.RecordBatch, dst []*tf.Tensor) error {
	if len(dst) != len(p.cols) {
		return fmt.Errorf("feeder: ConvertInto got %d tensors for %d inputs", len(dst), len(p.cols))
	}
	if err := p.checkSchema(rec); err != nil {
		return err
	}
	rows := int(rec.NumRows())
	for i := range p.cols {
		c := &p.cols[i]
		t := dst[i]
		if c.kind == kindString {
			return colErr(c.in.Column, -1, ErrType, "ConvertInto takes fixed-width columns only")
		}
		if c.batch >= 0 && int64(rows) != c.batch {
			return colErr(c.in.Column, -1, ErrShape, "target %q takes batches of exactly %d rows, got %d", c.target, c.batch, rows)
		}
		if t == nil || t.DataType() != c.dtype {
			return colErr(c.in.Column, -1, ErrType, "ConvertInto tensor %d is not %s", i, c.dtype)
		}
		buf := t.Bytes()
		col := rec.Column(c.index)
		var err error
		if c.kind == kindList {
			width, werr := c.listWidth([]segment{{rec: rec, n: rows}})
			if werr != nil {
				return werr
			}
			if len(buf) != rows*width*c.dtype.Size() {
				return colErr(c.in.Column, -1, ErrShape, "ConvertInto tensor %d has %d bytes, %d rows of %d need %d", i, len(buf), rows, width, rows*width*c.dtype.Size())
			}
			err = c.fillList(col, 0, rows, width, buf, 0)
		} else {
			if need := rows * int(c.rowElems) * c.dtype.Size(); len(buf) != need {
				return colErr(c.in.Column, -1, ErrShape, "ConvertInto tensor %d has %d bytes, %d rows need %d", i, len(buf), rows, need)
			}
			err = c.fillFixed(col, 0, rows, buf, 0)
		}
		if err != nil {
			return err
		}
		p.copiedTensors.Add(1)
		p.copiedBytes.Add(int64(len(buf)))
	}
	p.rows.Add(int64(rows))
	p.batches.Add(1)
	return nil
}
