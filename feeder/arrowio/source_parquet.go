package arrowio

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

type parquetSource struct {
	path      string
	o         sourceOptions
	rdr       *file.Reader
	rr        pqarrow.RecordReader
	schema    *arrow.Schema
	rowGroups []int
	closed    bool
}

// OpenParquet opens a Parquet file. Columns projects it (only those column
// chunks are read), RowGroups restricts it, ReadRows sets the record size;
// Split divides the row groups among parallel readers.
func OpenParquet(path string, opts ...SourceOption) (Splitter, error) {
	return openParquet(path, newSourceOptions(opts))
}

func openParquet(path string, o sourceOptions) (src *parquetSource, err error) {
	defer recovered("parquet "+path, &err)
	props := parquet.NewReaderProperties(o.mem)
	props.BufferedStreamEnabled = true
	rdr, err := file.OpenParquetFile(path, false, file.WithReadProps(props))
	if err != nil {
		return nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
	}
	s := &parquetSource{path: path, o: o, rdr: rdr}
	if err := s.init(); err != nil {
		rdr.Close()
		return nil, err
	}
	return s, nil
}

func (s *parquetSource) init() error {
	fr, err := pqarrow.NewFileReader(s.rdr, pqarrow.ArrowReadProperties{BatchSize: s.o.batchRows}, s.o.mem)
	if err != nil {
		return fmt.Errorf("arrowio: parquet %s: %w", s.path, err)
	}
	ngroups := s.rdr.NumRowGroups()
	s.rowGroups = s.o.rowGroups
	if s.rowGroups == nil {
		s.rowGroups = make([]int, ngroups)
		for i := range s.rowGroups {
			s.rowGroups[i] = i
		}
	}
	for _, g := range s.rowGroups {
		if g < 0 || g >= ngroups {
			return fmt.Errorf("arrowio: parquet %s: row group %d out of range (file has %d)", s.path, g, ngroups)
		}
	}
	var leaves []int
	if s.o.columns != nil {
		for _, name := range s.o.columns {
			k := slices.IndexFunc(fr.Manifest.Fields, func(f pqarrow.SchemaField) bool { return f.Field.Name == name })
			if k < 0 {
				full, _ := fr.Schema()
				return fmt.Errorf("arrowio: parquet %s: projected column %q: %w (schema %s)", s.path, name, ErrMissingColumn, full)
			}
			leaves = collectLeaves(&fr.Manifest.Fields[k], leaves)
		}
		slices.Sort(leaves)
		leaves = slices.Compact(leaves)
		if len(leaves) == 0 {
			return fmt.Errorf("arrowio: parquet %s: projection %v has no leaf columns", s.path, s.o.columns)
		}
	}
	rr, err := fr.GetRecordReader(context.Background(), leaves, s.rowGroups)
	if err != nil {
		return fmt.Errorf("arrowio: parquet %s: %w", s.path, err)
	}
	s.rr = rr
	s.schema = rr.Schema()
	return nil
}

func collectLeaves(f *pqarrow.SchemaField, out []int) []int {
	if f.IsLeaf() {
		return append(out, f.ColIndex)
	}
	for i := range f.Children {
		out = collectLeaves(&f.Children[i], out)
	}
	return out
}

func (s *parquetSource) Schema() *arrow.Schema { return s.schema }

func (s *parquetSource) Next(ctx context.Context) (rec arrow.RecordBatch, err error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer recovered("parquet "+s.path, &err)
	if !s.rr.Next() {
		if err := s.rr.Err(); err != nil && err != io.EOF {
			return nil, fmt.Errorf("arrowio: parquet %s: %w", s.path, err)
		}
		return nil, io.EOF
	}
	rec = s.rr.RecordBatch()
	rec.Retain()
	return rec, nil
}

// Split divides the row groups round-robin; each part opens the file again.
func (s *parquetSource) Split(n int) ([]Source, error) {
	if s.closed {
		return nil, ErrClosed
	}
	n = max(1, min(n, len(s.rowGroups)))
	if n == 1 {
		return []Source{s}, nil
	}
	parts := make([]Source, 0, n)
	for i := range n {
		var mine []int
		for j := i; j < len(s.rowGroups); j += n {
			mine = append(mine, s.rowGroups[j])
		}
		o := s.o
		o.rowGroups = mine
		p, err := openParquet(s.path, o)
		if err != nil {
			for _, q := range parts {
				q.Close()
			}
			return nil, err
		}
		parts = append(parts, p)
	}
	s.Close()
	return parts, nil
}

func (s *parquetSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.rr != nil {
		s.rr.Release()
	}
	return s.rdr.Close()
}

// parquetRowGroups returns the number of row groups of a Parquet file.
func parquetRowGroups(path string) (n int, err error) {
	defer recovered("parquet "+path, &err)
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		return 0, fmt.Errorf("arrowio: parquet %s: %w", path, err)
	}
	defer rdr.Close()
	return rdr.NumRowGroups(), nil
}
