package arrowio

import (
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/gotflow/gotflow/internal/atomicfile"
)

// Sink writes records to a file that appears under its final name only when
// Close succeeds. Until then the data goes to a temporary file in the same
// directory, which Abort (or a failed Close) removes.
type Sink interface {
	Write(rec arrow.RecordBatch) error
	// Close finishes the file, syncs it and renames it into place.
	Close() error
	// Abort discards the output. It is a no-op after Close.
	Abort() error
}

// SinkOption configures a sink.
type SinkOption interface{ applySink(*sinkOptions) }

type sinkOptions struct {
	mem         memory.Allocator
	rowGroup    int64
	compression compress.Compression
	stream      bool
}

type sinkOptionFunc func(*sinkOptions)

func (f sinkOptionFunc) applySink(o *sinkOptions) { f(o) }

// RowGroupRows caps Parquet row groups at n rows (default 1<<20).
func RowGroupRows(n int64) SinkOption {
	return sinkOptionFunc(func(o *sinkOptions) { o.rowGroup = n })
}

// Compression sets the Parquet codec (default snappy).
func Compression(c compress.Compression) SinkOption {
	return sinkOptionFunc(func(o *sinkOptions) { o.compression = c })
}

// IPCStreamFormat makes CreateIPC write the IPC stream format instead of the
// file format.
func IPCStreamFormat() SinkOption { return sinkOptionFunc(func(o *sinkOptions) { o.stream = true }) }

// writeOnly hides os.File's Close from writers that close their sink.
type writeOnly struct{ w io.Writer }

func (w writeOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

type fileSink struct {
	path   string
	tmp    *atomicfile.File
	schema *arrow.Schema
	write  func(arrow.RecordBatch) error
	finish func() error
	done   bool
}

func newFileSink(path string) (*fileSink, error) {
	tmp, err := atomicfile.Create(path)
	if err != nil {
		return nil, fmt.Errorf("arrowio: create %s: %w", path, err)
	}
	return &fileSink{path: path, tmp: tmp}, nil
}

func (s *fileSink) Write(rec arrow.RecordBatch) error {
	if s.done {
		return ErrClosed
	}
	if !rec.Schema().Equal(s.schema) {
		return fmt.Errorf("arrowio: write %s: record schema %s, want %s: %w", s.path, rec.Schema(), s.schema, ErrSchemaChanged)
	}
	if err := s.write(rec); err != nil {
		return fmt.Errorf("arrowio: write %s: %w", s.path, err)
	}
	return nil
}

func (s *fileSink) Close() error {
	if s.done {
		return nil
	}
	s.done = true
	if err := s.finish(); err != nil {
		s.tmp.Abort()
		return fmt.Errorf("arrowio: finish %s: %w", s.path, err)
	}
	if err := s.tmp.Commit(); err != nil {
		return fmt.Errorf("arrowio: finish %s: %w", s.path, err)
	}
	return nil
}

func (s *fileSink) Abort() error {
	if s.done {
		return nil
	}
	s.done = true
	s.finish()
	return s.tmp.Abort()
}

func sinkOpts(opts []SinkOption) sinkOptions {
	o := sinkOptions{rowGroup: 1 << 20, compression: compress.Codecs.Snappy}
	for _, op := range opts {
		op.applySink(&o)
	}
	if o.mem == nil {
		o.mem = memory.DefaultAllocator
	}
	return o
}

// CreateParquet writes records of schema to a Parquet file at path.
// Extension columns (arrow.fixed_shape_tensor) are written as their
// storage, a fixed-size list, with the extension named in the stored Arrow
// schema as pyarrow writes it, so that they read back as tensors.
func CreateParquet(path string, schema *arrow.Schema, opts ...SinkOption) (Sink, error) {
	o := sinkOpts(opts)
	if o.rowGroup <= 0 {
		return nil, fmt.Errorf("arrowio: parquet %s: RowGroupRows is %d, want at least 1", path, o.rowGroup)
	}
	s, err := newFileSink(path)
	if err != nil {
		return nil, err
	}
	props := parquet.NewWriterProperties(
		parquet.WithAllocator(o.mem),
		parquet.WithCompression(o.compression),
		parquet.WithMaxRowGroupLength(o.rowGroup),
	)
	wschema, unwrap := parquetStorageSchema(schema)
	w, err := pqarrow.NewFileWriter(wschema, writeOnly{s.tmp}, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema(), pqarrow.WithAllocator(o.mem)))
	if err != nil {
		s.tmp.Abort()
		return nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
	}
	s.schema = schema
	// pqarrow slices a record longer than a row group itself, and its
	// writer ignores the offset of sliced fixed-size-list columns: cut
	// records into row groups here and compact each piece.
	s.write = func(rec arrow.RecordBatch) error {
		if unwrap {
			rec = storageRecord(rec, wschema)
			defer rec.Release()
		}
		n := rec.NumRows()
		for off := int64(0); off == 0 || off < n; off += o.rowGroup {
			end := min(off+o.rowGroup, n)
			piece := rec
			if off != 0 || end != n {
				piece = rec.NewSlice(off, end)
				defer piece.Release()
			}
			c, err := compactLists(piece, o.mem)
			if err != nil {
				return err
			}
			err = w.Write(c)
			c.Release()
			if err != nil {
				return err
			}
		}
		return nil
	}
	s.finish = w.Close
	return s, nil
}

// compactLists returns rec with every fixed-size-list column that starts at
// a non-zero offset (a batch sliced out of a larger record) copied to offset
// zero: arrow-go v18.8.0's Parquet writer ignores that offset and would
// write the list values from the start of the buffer. Other columns are
// shared.
func compactLists(rec arrow.RecordBatch, mem memory.Allocator) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, 0, rec.NumCols())
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	changed := false
	for i, c := range rec.Columns() {
		if c.DataType().ID() == arrow.FIXED_SIZE_LIST && c.Data().Offset() != 0 {
			cp, err := array.Concatenate([]arrow.Array{c}, mem)
			if err != nil {
				return nil, fmt.Errorf("copy column %q: %w", rec.Schema().Field(i).Name, err)
			}
			cols, changed = append(cols, cp), true
			continue
		}
		c.Retain()
		cols = append(cols, c)
	}
	if !changed {
		rec.Retain()
		return rec, nil
	}
	return array.NewRecordBatch(rec.Schema(), cols, rec.NumRows()), nil
}

// CreateIPC writes records of schema to an Arrow IPC file (or stream, with
// IPCStreamFormat) at path.
func CreateIPC(path string, schema *arrow.Schema, opts ...SinkOption) (Sink, error) {
	o := sinkOpts(opts)
	s, err := newFileSink(path)
	if err != nil {
		return nil, err
	}
	s.schema = schema
	if o.stream {
		w := ipc.NewWriter(writeOnly{s.tmp}, ipc.WithSchema(schema), ipc.WithAllocator(o.mem))
		s.write = w.Write
		s.finish = w.Close
		return s, nil
	}
	w, err := ipc.NewFileWriter(writeOnly{s.tmp}, ipc.WithSchema(schema), ipc.WithAllocator(o.mem))
	if err != nil {
		s.tmp.Abort()
		return nil, fmt.Errorf("arrowio: ipc %s: %w", path, err)
	}
	s.write = w.Write
	s.finish = w.Close
	return s, nil
}
