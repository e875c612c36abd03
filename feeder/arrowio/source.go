package arrowio

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gotflow/gotflow/internal/cmem"
)

// Source is a stream of record batches of one schema.
type Source interface {
	// Schema is the schema of every record.
	Schema() *arrow.Schema
	// Next returns the next record, which the caller must Release, or io.EOF
	// at the end of the stream.
	Next(ctx context.Context) (arrow.RecordBatch, error)
	// Close releases the source's resources. It is idempotent.
	Close() error
}

// Splitter is a Source that can be divided into independent parts read in
// parallel (by file, row group or IPC record batch). Split returns at most n
// parts that together hold every record once; the parts are new sources and
// the original is no longer read.
type Splitter interface {
	Source
	Split(n int) ([]Source, error)
}

// SourceOption configures a source.
type SourceOption interface{ applySource(*sourceOptions) }

type sourceOptions struct {
	mem       memory.Allocator
	columns   []string
	batchRows int64
	rowGroups []int
	ahead     int
	// CSV
	csvSchema *arrow.Schema
	header    bool
	comma     rune
	nulls     []string
}

func newSourceOptions(opts []SourceOption) sourceOptions {
	o := sourceOptions{batchRows: 64 * 1024, header: true, comma: ','}
	for _, op := range opts {
		op.applySource(&o)
	}
	if o.mem == nil {
		o.mem = cmem.Default()
	}
	return o
}

type sourceOptionFunc func(*sourceOptions)

func (f sourceOptionFunc) applySource(o *sourceOptions) { f(o) }

// Columns projects a source to the named top-level columns (Parquet reads
// only their column chunks).
func Columns(names ...string) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.columns = append([]string(nil), names...) })
}

// ReadRows sets how many rows a source reads per record (Parquet, CSV).
// Default 65536.
func ReadRows(n int) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) {
		if n > 0 {
			o.batchRows = int64(n)
		}
	})
}

// DecodeAhead bounds how many records OpenOrdered decodes ahead of the
// consumer (default: 2 per reader). Other sources ignore it.
func DecodeAhead(records int) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.ahead = records })
}

// RowGroups restricts a Parquet source to the given row groups (or an IPC
// file to the given record batches).
func RowGroups(idx ...int) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.rowGroups = append([]int{}, idx...) })
}

// CSVSchema gives CSV sources an explicit schema instead of inferring one.
func CSVSchema(s *arrow.Schema) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.csvSchema = s })
}

// CSVHeader says whether the first CSV line is a header (default true).
func CSVHeader(has bool) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.header = has })
}

// CSVDelimiter sets the CSV field delimiter (default ',').
func CSVDelimiter(r rune) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.comma = r })
}

// CSVNulls sets the strings read as null in CSV (default: empty string,
// "NULL", "null", "NA", "NaN" is a number).
func CSVNulls(values ...string) SourceOption {
	return sourceOptionFunc(func(o *sourceOptions) { o.nulls = append([]string{}, values...) })
}

// allocatorOption works for sources and sinks alike.
type allocatorOption struct{ mem memory.Allocator }

func (a allocatorOption) applySource(o *sourceOptions) { o.mem = a.mem }
func (a allocatorOption) applySink(o *sinkOptions)     { o.mem = a.mem }

// WithAllocator sets the Arrow allocator of a source (the buffers it reads
// into) or of a sink. Buffers from a C allocator the feeder package tracks
// (feeder.NewCAllocator, feeder.TrackCMemory) can be aliased by tensors;
// the default is one such allocator, shared by the process (Go memory when
// built without cgo).
func WithAllocator(mem memory.Allocator) interface {
	SourceOption
	SinkOption
} {
	return allocatorOption{mem}
}

// recordsSource serves records held in memory.
type recordsSource struct {
	schema *arrow.Schema
	mu     sync.Mutex
	recs   []arrow.RecordBatch
	next   int
	closed bool
}

// FromRecords serves the given records in order. It retains them; Close
// releases what was not yet handed out. Every record must have schema.
func FromRecords(schema *arrow.Schema, recs ...arrow.RecordBatch) (Splitter, error) {
	for i, r := range recs {
		if !r.Schema().Equal(schema) {
			return nil, fmt.Errorf("arrowio: record %d has schema %s, want %s: %w", i, r.Schema(), schema, ErrSchemaChanged)
		}
	}
	for _, r := range recs {
		r.Retain()
	}
	return &recordsSource{schema: schema, recs: append([]arrow.RecordBatch(nil), recs...)}, nil
}

// FromTable serves the table's rows as records of at most chunk rows (0: the
// table's own chunking).
func FromTable(tbl arrow.Table, chunk int64) (Splitter, error) {
	tr := array.NewTableReader(tbl, chunk)
	defer tr.Release()
	var recs []arrow.RecordBatch
	for tr.Next() {
		r := tr.RecordBatch()
		recs = append(recs, r)
		r.Retain()
	}
	defer func() {
		for _, r := range recs {
			r.Release()
		}
	}()
	if err := tr.Err(); err != nil {
		return nil, fmt.Errorf("arrowio: read table: %w", err)
	}
	return FromRecords(tbl.Schema(), recs...)
}

func (s *recordsSource) Schema() *arrow.Schema { return s.schema }

func (s *recordsSource) Next(ctx context.Context) (arrow.RecordBatch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.next >= len(s.recs) {
		return nil, io.EOF
	}
	r := s.recs[s.next]
	s.recs[s.next] = nil
	s.next++
	return r, nil
}

func (s *recordsSource) Split(n int) ([]Source, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	rest := s.recs[s.next:]
	n = max(1, min(n, len(rest)))
	parts := make([]Source, n)
	for i := range parts {
		var mine []arrow.RecordBatch
		for j := i; j < len(rest); j += n {
			mine = append(mine, rest[j])
		}
		parts[i] = &recordsSource{schema: s.schema, recs: mine}
	}
	s.recs, s.next = nil, 0
	s.closed = true
	return parts, nil
}

func (s *recordsSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, r := range s.recs[s.next:] {
		if r != nil {
			r.Release()
		}
	}
	s.recs = nil
	return nil
}
