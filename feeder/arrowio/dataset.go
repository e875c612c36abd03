package arrowio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
)

// unit is a file, or some row groups (record batches) of one.
type unit struct {
	path   string
	groups []int // nil: the whole file
}

// Dataset is many files read as one stream: Parquet (.parquet, .pq), Arrow
// IPC (.arrow, .arrows, .ipc, .feather) and CSV (.csv), by extension. It is
// a Source; Partition and Split divide it into disjoint parts for workers or
// parallel readers, by file first and by row group when there are fewer
// files than parts.
type Dataset struct {
	units  []unit
	opts   []SourceOption
	schema *arrow.Schema
	root   string // where Hive partition directories start

	cur    Source
	next   int
	closed bool
}

func format(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".parquet", ".pq":
		return "parquet"
	case ".arrow", ".arrows", ".ipc", ".feather":
		return "ipc"
	case ".csv":
		return "csv"
	}
	return ""
}

// OpenDataset finds the files of a directory (every file of a known
// extension, recursively, skipping names that start with "." or "_") or
// of a glob pattern, sorted by path, and reads the schema of the first.
// All files must share that schema.
func OpenDataset(pattern string, opts ...SourceOption) (*Dataset, error) {
	files, root, err := datasetFiles(pattern)
	if err != nil {
		return nil, err
	}
	units := make([]unit, len(files))
	for i, f := range files {
		units[i] = unit{path: f}
	}
	d := &Dataset{units: units, opts: opts, root: root}
	first, err := d.open(units[0])
	if err != nil {
		return nil, err
	}
	d.schema = first.Schema()
	first.Close()
	return d, nil
}

func (d *Dataset) open(u unit) (Source, error) {
	opts := d.opts
	if u.groups != nil {
		opts = append(slices.Clone(opts), RowGroups(u.groups...))
	}
	switch format(u.path) {
	case "parquet":
		return OpenParquet(u.path, opts...)
	case "ipc":
		return OpenIPC(u.path, opts...)
	case "csv":
		return OpenCSV(u.path, opts...)
	}
	return nil, fmt.Errorf("arrowio: %s: unknown format", u.path)
}

// Files returns the files the dataset (or partition) reads.
func (d *Dataset) Files() []string {
	var out []string
	for _, u := range d.units {
		if len(out) == 0 || out[len(out)-1] != u.path {
			out = append(out, u.path)
		}
	}
	return out
}

// Root returns the directory Hive partition keys (key=value directories)
// are read below: the directory the dataset was opened on, the fixed
// prefix of a glob, or a file's own directory.
func (d *Dataset) Root() string { return d.root }

// Scan lists the dataset's units for streaming (see ScanDataset), with its
// options and, when cfg sets one, a filter.
func (d *Dataset) Scan(cfg ScanConfig) (*StreamDataset, error) {
	cfg.Options = append(slices.Clone(d.opts), cfg.Options...)
	return ScanFiles(d.Files(), d.root, cfg)
}

// Partition returns part i of n disjoint parts: whole files round-robin when
// there are at least n files, otherwise row groups (Parquet) or record
// batches (IPC files) round-robin; CSV files are never divided. A part may be
// empty when there is less data than parts.
func (d *Dataset) Partition(i, n int) (*Dataset, error) {
	if n < 1 || i < 0 || i >= n {
		return nil, fmt.Errorf("arrowio: partition %d of %d is out of range", i, n)
	}
	units := d.units
	if len(units) < n {
		var err error
		if units, err = d.fineUnits(); err != nil {
			return nil, err
		}
	}
	p := &Dataset{opts: d.opts, schema: d.schema}
	for k := i; k < len(units); k += n {
		p.units = append(p.units, units[k])
	}
	return p, nil
}

// fineUnits splits every file into its row groups or record batches.
func (d *Dataset) fineUnits() ([]unit, error) {
	var out []unit
	for _, u := range d.units {
		groups := u.groups
		if groups == nil {
			var n int
			var err error
			switch format(u.path) {
			case "parquet":
				n, err = parquetRowGroups(u.path)
			case "ipc":
				n, err = ipcRecordBatches(u.path)
				if err != nil { // an IPC stream cannot be divided
					out, err = append(out, u), nil
					continue
				}
			default:
				out = append(out, u)
				continue
			}
			if err != nil {
				return nil, err
			}
			groups = make([]int, n)
			for i := range groups {
				groups[i] = i
			}
		}
		for _, g := range groups {
			out = append(out, unit{path: u.path, groups: []int{g}})
		}
	}
	return out, nil
}

// Split implements Splitter with Partition(i, n) for i < n, dropping empty
// parts.
func (d *Dataset) Split(n int) ([]Source, error) {
	if d.closed {
		return nil, ErrClosed
	}
	var parts []Source
	for i := range max(n, 1) {
		p, err := d.Partition(i, max(n, 1))
		if err != nil {
			return nil, err
		}
		if len(p.units) > 0 {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		parts = append(parts, &Dataset{schema: d.schema})
	}
	return parts, nil
}

// Schema returns the schema of the first file.
func (d *Dataset) Schema() *arrow.Schema { return d.schema }

// Next reads the files one after the other.
func (d *Dataset) Next(ctx context.Context) (arrow.RecordBatch, error) {
	if d.closed {
		return nil, ErrClosed
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if d.cur == nil {
			if d.next >= len(d.units) {
				return nil, io.EOF
			}
			s, err := d.open(d.units[d.next])
			if err != nil {
				return nil, err
			}
			d.next++
			if !s.Schema().Equal(d.schema) {
				s.Close()
				return nil, fmt.Errorf("arrowio: dataset file %s has schema %s, the first file has %s: %w", d.units[d.next-1].path, s.Schema(), d.schema, ErrSchemaChanged)
			}
			d.cur = s
		}
		rec, err := d.cur.Next(ctx)
		if errors.Is(err, io.EOF) {
			err = d.cur.Close()
			d.cur = nil
			if err != nil {
				return nil, err
			}
			continue
		}
		return rec, err
	}
}

// Close closes the file being read.
func (d *Dataset) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	if d.cur != nil {
		return d.cur.Close()
	}
	return nil
}
