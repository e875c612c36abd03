package arrowio

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/csv"
)

type csvSource struct {
	name   string
	f      io.Closer
	r      *csv.Reader
	schema *arrow.Schema
	first  arrow.RecordBatch // read at open to learn an inferred schema
	done   bool
	closed bool
}

// OpenCSV opens a CSV file. Without CSVSchema the column types are inferred
// from the first ReadRows rows (the schema is known when OpenCSV returns);
// CSVHeader, CSVDelimiter, CSVNulls and Columns configure parsing.
func OpenCSV(path string, opts ...SourceOption) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	s, err := NewCSV(bufio.NewReaderSize(f, 1<<16), opts...)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("arrowio: csv %s: %w", path, err)
	}
	cs := s.(*csvSource)
	cs.name, cs.f = "csv "+path, f
	return cs, nil
}

// NewCSV reads CSV from r; see OpenCSV.
func NewCSV(r io.Reader, opts ...SourceOption) (src Source, err error) {
	o := newSourceOptions(opts)
	defer recovered("csv", &err)
	copts := []csv.Option{
		csv.WithAllocator(o.mem),
		csv.WithChunk(int(o.batchRows)),
		csv.WithHeader(o.header),
		csv.WithComma(o.comma),
	}
	nulls := o.nulls
	if nulls == nil {
		nulls = []string{"", "NULL", "null", "NA"}
	}
	copts = append(copts, csv.WithNullReader(true, nulls...))
	var cr *csv.Reader
	if o.csvSchema != nil {
		cr = csv.NewReader(r, o.csvSchema, copts...)
	} else {
		if o.columns != nil {
			copts = append(copts, csv.WithIncludeColumns(o.columns))
		}
		cr = csv.NewInferringReader(r, copts...)
	}
	s := &csvSource{name: "csv", r: cr}
	if cr.Next() {
		s.first = cr.RecordBatch()
		s.first.Retain()
	} else if err := cr.Err(); err != nil && err != io.EOF {
		cr.Release()
		return nil, err
	} else {
		s.done = true
	}
	s.schema = cr.Schema()
	if s.schema == nil {
		cr.Release()
		return nil, fmt.Errorf("no header and no rows to infer a schema from (give CSVSchema)")
	}
	if o.csvSchema != nil && o.columns != nil {
		if s.schema, err = projectSchema(s.schema, o.columns, "csv"); err != nil {
			s.Close()
			return nil, err
		}
		if s.first != nil { // an empty file has no first record
			s.first = project(s.first, s.schema, o.columns)
		}
	}
	return s, nil
}

func (s *csvSource) Schema() *arrow.Schema { return s.schema }

func (s *csvSource) Next(ctx context.Context) (rec arrow.RecordBatch, err error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.first != nil {
		rec, s.first = s.first, nil
		return rec, nil
	}
	if s.done {
		return nil, io.EOF
	}
	defer recovered(s.name, &err)
	if !s.r.Next() {
		s.done = true
		if err := s.r.Err(); err != nil && err != io.EOF {
			return nil, fmt.Errorf("arrowio: %s: %w", s.name, err)
		}
		return nil, io.EOF
	}
	rec = s.r.RecordBatch()
	rec.Retain()
	if s.schema != s.r.Schema() && !rec.Schema().Equal(s.schema) {
		cols := make([]string, s.schema.NumFields())
		for i, f := range s.schema.Fields() {
			cols[i] = f.Name
		}
		rec = project(rec, s.schema, cols)
	}
	return rec, nil
}

func (s *csvSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.first != nil {
		s.first.Release()
		s.first = nil
	}
	s.r.Release()
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
