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
	rec.Retain()
	return p.convertOwned([]segment{{rec: rec, off: 0, n: int(rec.NumRows())}}, nil)
}

// ConvertRows turns rows [off, off+n) of rec into one batch of tensors.
func (p *Plan) ConvertRows(rec arrow.RecordBatch, off, n int) (*Batch, error) {
	if off < 0 || n < 0 || int64(off+n) > rec.NumRows() {
		return nil, fmt.Errorf("feeder: rows [%d, %d) outside a record of %d rows", off, off+n, rec.NumRows())
	}
	rec.Retain()
	return p.convertOwned([]segment{{rec: rec, off: off, n: n}}, nil)
}

// convertOwned makes a batch from segments that each hold one reference on
// their record; the batch takes those references over, or releases them on
// error.
func (p *Plan) convertOwned(segs []segment, mem memory.Allocator) (*Batch, error) {
	ts, err := p.tensors(segs)
	if err != nil {
		releaseSegs(segs)
		return nil, err
	}
	b := &Batch{Tensors: ts, segs: segs, mem: mem}
	for _, s := range segs {
		b.rows += s.n
	}
	if b.mem == nil {
		b.mem = memory.DefaultAllocator
	}
	return b, nil
}

func releaseSegs(segs []segment) {
	for _, s := range segs {
		s.rec.Release()
	}
}
