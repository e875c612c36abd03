package arrowio

import (
	"context"
	"fmt"
	"io"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/gotflow/gotflow/internal/cmem"
)

// This file is a fast path for the Parquet layout models are usually fed
// from: columns of float32/float64/int32/int64 values or fixed-size lists of
// them, without nulls. pqarrow rebuilds nested lists value by value (and grows
// its buffers by copying); here a row group's values are decoded straight
// into Arrow buffers in C memory, so feeder can then hand them to TensorFlow
// without a copy. Any other layout, or a column chunk whose statistics do not
// promise "no nulls", takes the general Parquet reader (OpenParquet).

var (
	cMemOnce sync.Once
	cMem     memory.Allocator
)

func cAllocator() memory.Allocator {
	cMemOnce.Do(func() { cMem = cmem.New() })
	return cMem
}

type fastCol struct {
	reader   file.ColumnChunkReader
	typ      arrow.DataType // the field's type
	elem     arrow.DataType // fixed-width element type
	size     int            // bytes per element
	width    int64          // elements per row
	def, rep []int16
}

type fastRowGroup struct {
	name     string
	r        *file.Reader
	schema   *arrow.Schema
	cols     []fastCol
	rows     int64
	pos      int64
	readRows int64
	closed   bool
}

// openFastRowGroup returns a source over one row group when its layout
// qualifies, or (nil, nil) when the general reader must be used.
func openFastRowGroup(path string, rowGroup int, schema *arrow.Schema, readRows int64) (Source, error) {
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
	}
	s := &fastRowGroup{name: path, r: r, schema: schema, readRows: max(1, readRows)}
	ok, err := s.plan(rowGroup)
	if err != nil || !ok {
		r.Close()
		return nil, err
	}
	return s, nil
}

func (s *fastRowGroup) plan(rowGroup int) (bool, error) {
	md := s.r.MetaData()
	if md.Schema.NumColumns() != s.schema.NumFields() || rowGroup >= s.r.NumRowGroups() {
		return false, nil
	}
	rg := s.r.RowGroup(rowGroup)
	s.rows = rg.NumRows()
	rgmd := rg.MetaData()
	for i, f := range s.schema.Fields() {
		col := md.Schema.Column(i)
		path := col.ColumnPath()
		if len(path) == 0 || path[0] != f.Name {
			return false, nil
		}
		fc := fastCol{typ: f.Type, elem: f.Type, width: 1}
		wantRep := int16(0)
		if l, ok := f.Type.(*arrow.FixedSizeListType); ok {
			fc.elem, fc.width, wantRep = l.Elem(), int64(l.Len()), 1
		}
		if col.MaxRepetitionLevel() != wantRep || fc.width <= 0 {
			return false, nil
		}
		cc, err := rgmd.ColumnChunk(i)
		if err != nil {
			return false, nil
		}
		stats, err := cc.Statistics()
		if err != nil || stats == nil || !stats.HasNullCount() || stats.NullCount() != 0 {
			return false, nil
		}
		rd, err := rg.Column(i)
		if err != nil {
			return false, fmt.Errorf("arrowio: parquet %s column %q: %w", s.name, f.Name, err)
		}
		switch {
		case fc.elem.ID() == arrow.FLOAT32 && isReader[*file.Float32ColumnChunkReader](rd),
			fc.elem.ID() == arrow.INT32 && isReader[*file.Int32ColumnChunkReader](rd):
			fc.size = 4
		case fc.elem.ID() == arrow.FLOAT64 && isReader[*file.Float64ColumnChunkReader](rd),
			fc.elem.ID() == arrow.INT64 && isReader[*file.Int64ColumnChunkReader](rd):
			fc.size = 8
		default:
			return false, nil
		}
		fc.reader = rd
		s.cols = append(s.cols, fc)
	}
	return true, nil
}

func isReader[T file.ColumnChunkReader](r file.ColumnChunkReader) bool {
	_, ok := r.(T)
	return ok
}

func (s *fastRowGroup) Schema() *arrow.Schema { return s.schema }

func (s *fastRowGroup) Next(ctx context.Context) (arrow.RecordBatch, error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.pos >= s.rows {
		return nil, io.EOF
	}
	n := min(s.readRows, s.rows-s.pos)
	cols := make([]arrow.Array, 0, len(s.cols))
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	for i := range s.cols {
		a, err := s.cols[i].read(n, s.name, s.schema.Field(i).Name)
		if err != nil {
			return nil, err
		}
		cols = append(cols, a)
	}
	s.pos += n
	return array.NewRecordBatch(s.schema, cols, n), nil
}

// read decodes the next rows of the column into a new array.
func (c *fastCol) read(rows int64, file, name string) (arrow.Array, error) {
	total := rows * c.width
	buf := memory.NewResizableBuffer(cAllocator())
	buf.Resize(int(total) * c.size)
	defer buf.Release()
	if int64(len(c.def)) < total {
		c.def, c.rep = make([]int16, total), make([]int16, total)
	}
	raw := buf.Bytes()
	var got int64
	for got < total {
		levels, values, err := c.readBatch(raw, got, total-got)
		if err != nil {
			return nil, fmt.Errorf("arrowio: parquet %s column %q: %w", file, name, err)
		}
		if levels == 0 {
			return nil, fmt.Errorf("arrowio: parquet %s column %q: %d values, want %d", file, name, got, total)
		}
		if int64(values) != levels {
			return nil, fmt.Errorf("arrowio: parquet %s column %q holds nulls although its statistics say none", file, name)
		}
		got += levels
	}
	data := array.NewData(c.elem, int(total), []*memory.Buffer{nil, buf}, nil, 0, 0)
	defer data.Release()
	if c.typ.ID() != arrow.FIXED_SIZE_LIST {
		return array.MakeFromData(data), nil
	}
	list := array.NewData(c.typ, int(rows), []*memory.Buffer{nil}, []arrow.ArrayData{data}, 0, 0)
	defer list.Release()
	return array.MakeFromData(list), nil
}

func (c *fastCol) readBatch(raw []byte, off, n int64) (int64, int, error) {
	def, rep := c.def[:n], c.rep[:n]
	switch r := c.reader.(type) {
	case *file.Float32ColumnChunkReader:
		return r.ReadBatch(n, view[float32](raw)[off:], def, rep)
	case *file.Float64ColumnChunkReader:
		return r.ReadBatch(n, view[float64](raw)[off:], def, rep)
	case *file.Int32ColumnChunkReader:
		return r.ReadBatch(n, view[int32](raw)[off:], def, rep)
	case *file.Int64ColumnChunkReader:
		return r.ReadBatch(n, view[int64](raw)[off:], def, rep)
	}
	return 0, 0, fmt.Errorf("unexpected column reader %T", c.reader)
}

func view[T any](b []byte) []T {
	if len(b) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(z)))
}

func (s *fastRowGroup) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.r.Close()
}
