package arrowio

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/gotflow/gotflow/internal/cmem"
)

// ErrNoRows is wrapped when a dataset (after its filter) holds no row.
var ErrNoRows = errors.New("arrowio: no rows")

// Unit is the smallest piece of a StreamDataset that is read on its own: a
// Parquet row group, a record batch of an Arrow IPC file, a whole CSV file
// or IPC stream, or a record held in memory.
type Unit struct {
	File  string // empty for a record held in memory
	Index int    // row group or record batch; -1 for a whole file
	Rows  int64  // rows of the unit (after the dataset's filter)
	// Bytes estimates the unit's size once decoded to Arrow (from the
	// Parquet footer's uncompressed sizes, or the IPC body length).
	Bytes int64

	part []string          // Hive partition values, one per partition column
	rec  arrow.RecordBatch // a unit held in memory
	// A chunk of a CSV file: bytes [off, off+size), whole lines; schema
	// is the file's full schema, header whether the chunk starts with it.
	off, size int64
	csv       *arrow.Schema
	header    bool
}

// String names the unit in messages: a file, and the row group, record
// batch or byte range of it.
func (u Unit) String() string {
	switch {
	case u.File == "":
		return fmt.Sprintf("record %d", u.Index)
	case u.Index < 0:
		return u.File
	case format(u.File) == "parquet":
		return fmt.Sprintf("%s row group %d", u.File, u.Index)
	case u.csv != nil:
		return fmt.Sprintf("%s bytes %d to %d", u.File, u.off, u.off+u.size)
	}
	return fmt.Sprintf("%s record batch %d", u.File, u.Index)
}

// ScanConfig configures ScanDataset.
type ScanConfig struct {
	// WhereColumn and WhereValue, when WhereColumn is set, keep only the
	// rows whose column equals the value (compared as text, as Where
	// does). Parquet row groups whose statistics exclude the value are
	// skipped without being read; the other units are filtered while
	// streaming, and their row counts are taken by reading the filter
	// column alone.
	WhereColumn, WhereValue string
	// Options apply to every file (Columns, CSV options, WithAllocator).
	Options []SourceOption
	// CSVChunkBytes is the size of the units a CSV file is cut into, at
	// line ends (default 64 MiB). A quoted field holding a line break must
	// not span a cut.
	CSVChunkBytes int64
}

// StreamDataset is a dataset listed into units from file footers and
// metadata only, for streaming: EpochOrder and Deal permute and deal its
// units (as Pieces) to workers each epoch, and feeder.NewStream reads one
// worker's share in bounded memory (ReadUnit reads one unit). Directories (recursively), glob patterns and Hive-partitioned
// trees (`year=2024/part-0.parquet`, the layout Spark writes) are datasets;
// partition values become columns (int64 when every value is an integer,
// else string) after the files' columns.
//
// A StreamDataset is immutable once built and safe for concurrent use; it
// holds no open file. Close releases the records of a dataset held in
// memory (NewMemoryDataset).
type StreamDataset struct {
	units      []Unit
	rows       int64
	schema     *arrow.Schema // fileSchema (projected) plus partition columns
	fileSchema *arrow.Schema // what the files hold, projected
	partCols   []arrow.Field
	columns    []string // file columns read (nil: all)
	opts       []SourceOption
	whereCol   string
	rowFilter  bool // the filter is on a file column: rows are filtered while streaming
	whereVal   string
}

// ScanDataset lists the units of the files that pattern names: a file, a
// directory (every .parquet, .pq, .arrow, .arrows, .ipc, .feather and .csv
// file under it, recursively, skipping names that start with "." or "_"),
// or a glob. Every file must have the schema of the first; a file that
// differs is an error naming both schemas.
func ScanDataset(pattern string, cfg ScanConfig) (*StreamDataset, error) {
	files, root, err := datasetFiles(pattern)
	if err != nil {
		return nil, err
	}
	return scanFiles(pattern, files, root, cfg)
}

// ScanFiles is ScanDataset over a list of files (kept in the order given);
// Hive partition keys are read from the directories between root and each
// file (none when root is empty).
func ScanFiles(files []string, root string, cfg ScanConfig) (*StreamDataset, error) {
	if len(files) == 0 {
		return nil, errors.New("arrowio: ScanFiles: no files")
	}
	for _, f := range files {
		if format(f) == "" {
			return nil, fmt.Errorf("arrowio: %s has no known extension (want .parquet, .pq, .arrow, .arrows, .ipc, .feather, .csv)", f)
		}
	}
	if root == "" {
		root = filepath.Dir(files[0])
		for _, f := range files {
			if filepath.Dir(f) != root {
				root = "/nonexistent-root"
				break
			}
		}
	}
	return scanFiles(strings.Join(files, ","), files, root, cfg)
}

func scanFiles(pattern string, files []string, root string, cfg ScanConfig) (*StreamDataset, error) {
	o := newSourceOptions(cfg.Options)
	parts, partCols, err := hivePartitions(files, root)
	if err != nil {
		return nil, err
	}
	d := &StreamDataset{opts: cfg.Options, partCols: partCols, whereCol: cfg.WhereColumn, whereVal: cfg.WhereValue}
	for i, f := range files {
		schema, units, err := listUnits(f, o, cmp.Or(cfg.CSVChunkBytes, csvChunkBytes))
		if err != nil {
			return nil, err
		}
		if d.fileSchema == nil {
			d.fileSchema = schema
		} else if !schema.Equal(d.fileSchema) {
			return nil, fmt.Errorf("arrowio: dataset %s: %s has schema\n%s\nbut %s has\n%s\nevery file of a dataset needs the same columns and types: %w", pattern, f, schema, files[0], d.fileSchema, ErrSchemaChanged)
		}
		for k := range units {
			units[k].part = parts[i]
		}
		d.units = append(d.units, units...)
	}
	for _, pc := range partCols {
		if d.fileSchema.HasField(pc.Name) {
			return nil, fmt.Errorf("arrowio: dataset %s: partition directory key %q is also a column of the files", pattern, pc.Name)
		}
	}
	d.columns = o.columns
	d.schema = d.withPartitions(d.fileSchema)
	if d.whereCol != "" {
		if err := d.applyWhere(pattern); err != nil {
			return nil, err
		}
	}
	for _, u := range d.units {
		d.rows += u.Rows
	}
	return d, nil
}

// datasetFiles expands pattern into sorted data files and the root that
// Hive partition directories are relative to.
func datasetFiles(pattern string) (files []string, root string, err error) {
	if st, serr := os.Stat(pattern); serr == nil && st.IsDir() {
		root = pattern
		err = filepath.WalkDir(pattern, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			if p != pattern && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && format(p) != "" {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, "", fmt.Errorf("arrowio: dataset %s: %w", pattern, err)
		}
	} else {
		m, gerr := filepath.Glob(pattern)
		if gerr != nil {
			return nil, "", fmt.Errorf("arrowio: dataset %s: %w", pattern, gerr)
		}
		for _, p := range m {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				if format(p) == "" {
					return nil, "", fmt.Errorf("arrowio: dataset %s: %s has no known extension (want .parquet, .pq, .arrow, .arrows, .ipc, .feather, .csv)", pattern, p)
				}
				files = append(files, p)
			}
		}
		// Partition keys are read below the pattern's fixed prefix.
		root = pattern
		if i := strings.IndexAny(root, "*?["); i >= 0 {
			root = root[:i]
		}
		root = filepath.Dir(root + "x")
	}
	if len(files) == 0 {
		return nil, "", fmt.Errorf("arrowio: dataset %s: no data files (want .parquet, .pq, .arrow, .arrows, .ipc, .feather or .csv)", pattern)
	}
	slices.Sort(files)
	return files, root, nil
}

// hivePartitions reads key=value directories between root and each file.
// Every file must have the same keys in the same order.
func hivePartitions(files []string, root string) ([][]string, []arrow.Field, error) {
	var keys []string
	vals := make([][]string, len(files))
	for i, f := range files {
		rel, err := filepath.Rel(root, filepath.Dir(f))
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			rel = ""
		}
		var k []string
		for _, comp := range strings.Split(filepath.ToSlash(rel), "/") {
			key, val, ok := strings.Cut(comp, "=")
			if !ok || key == "" {
				continue
			}
			k = append(k, key)
			vals[i] = append(vals[i], val)
		}
		if i == 0 {
			keys = k
		} else if !slices.Equal(k, keys) {
			return nil, nil, fmt.Errorf("arrowio: dataset %s: %s is under partition keys %v, %s under %v; every file needs the same key=value directories", root, f, k, files[0], keys)
		}
	}
	fields := make([]arrow.Field, len(keys))
	for j, key := range keys {
		isInt := true
		for i := range files {
			if _, err := strconv.ParseInt(vals[i][j], 10, 64); err != nil {
				isInt = false
				break
			}
		}
		fields[j] = arrow.Field{Name: key, Type: arrow.BinaryTypes.String}
		if isInt {
			fields[j].Type = arrow.PrimitiveTypes.Int64
		}
	}
	return vals, fields, nil
}

func (d *StreamDataset) withPartitions(s *arrow.Schema) *arrow.Schema {
	if len(d.partCols) == 0 {
		return s
	}
	fields := append(slices.Clone(s.Fields()), d.partCols...)
	return arrow.NewSchema(fields, nil)
}

// listUnits reads a file's schema and units from its footer or metadata.
func listUnits(path string, o sourceOptions, csvChunk int64) (schema *arrow.Schema, units []Unit, err error) {
	defer recovered(path, &err)
	switch format(path) {
	case "parquet":
		r, err := file.OpenParquetFile(path, false)
		if err != nil {
			return nil, nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
		}
		defer r.Close()
		fr, err := pqarrow.NewFileReader(r, pqarrow.ArrowReadProperties{}, o.mem)
		if err != nil {
			return nil, nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
		}
		if schema, err = fr.Schema(); err != nil {
			return nil, nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
		}
		md := r.MetaData()
		for g := range r.NumRowGroups() {
			rg := md.RowGroup(g)
			var size int64
			for c := range rg.NumColumns() {
				cc, err := rg.ColumnChunk(c)
				if err != nil {
					return nil, nil, fmt.Errorf("arrowio: parquet %s row group %d: %w", path, g, err)
				}
				size += cc.TotalUncompressedSize()
			}
			units = append(units, Unit{File: path, Index: g, Rows: rg.NumRows(), Bytes: size})
		}
	case "ipc":
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("arrowio: ipc %s: %w", path, err)
		}
		defer f.Close()
		r, err := ipc.NewFileReader(f, ipc.WithAllocator(o.mem))
		if err != nil {
			// An IPC stream has no footer: it is one unit, counted by reading it.
			return listWhole(path, o)
		}
		defer r.Close()
		schema = r.Schema()
		for i := range r.NumRecords() {
			rec, err := r.RecordBatchAt(i)
			if err != nil {
				return nil, nil, fmt.Errorf("arrowio: ipc %s record batch %d: %w", path, i, err)
			}
			units = append(units, Unit{File: path, Index: i, Rows: rec.NumRows(), Bytes: recordBytes(rec)})
			rec.Release()
		}
	case "csv":
		if st, err := os.Stat(path); err == nil && st.Size() > csvChunk {
			return listCSVChunks(path, st.Size(), csvChunk, o)
		}
		return listWhole(path, o)
	default:
		return listWhole(path, o)
	}
	if o.columns != nil {
		if schema, err = projectSchema(schema, o.columns, path); err != nil {
			return nil, nil, err
		}
	}
	return schema, units, nil
}

// listWhole makes one unit of a whole file that has no footer to list
// (CSV, an IPC stream), counting its rows by reading it once.
func listWhole(path string, o sourceOptions) (*arrow.Schema, []Unit, error) {
	src, err := openFile(path, o, nil)
	if err != nil {
		return nil, nil, err
	}
	defer src.Close()
	u := Unit{File: path, Index: -1}
	for {
		rec, err := src.Next(context.Background())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		u.Rows += rec.NumRows()
		u.Bytes += recordBytes(rec)
		rec.Release()
	}
	return src.Schema(), []Unit{u}, nil
}

// csvChunkBytes is the default size of the units a CSV file is cut into.
const csvChunkBytes = 64 << 20

// listCSVChunks cuts a CSV file into units of about csvChunkBytes that end
// at line ends, and counts their rows by parsing each once with the
// schema of the first. A quoted field that holds a line break must not
// span a cut: parsing the chunk then fails with an error naming it.
func listCSVChunks(path string, size, chunk int64, o sourceOptions) (*arrow.Schema, []Unit, error) {
	first, err := openFile(path, o, nil)
	if err != nil {
		return nil, nil, err
	}
	schema := first.Schema()
	first.Close()
	full := schema
	if o.columns != nil && o.csvSchema != nil {
		full = o.csvSchema
	} else if o.columns != nil {
		// The projected inference; read every chunk with the full one.
		all := o
		all.columns = nil
		src, err := openFile(path, all, nil)
		if err != nil {
			return nil, nil, err
		}
		full = src.Schema()
		src.Close()
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("arrowio: csv %s: %w", path, err)
	}
	defer f.Close()
	cuts := []int64{0}
	buf := make([]byte, 1<<16)
	for at := chunk; at < size; {
		n, err := f.ReadAt(buf, at)
		i := bytes.IndexByte(buf[:n], '\n')
		if i >= 0 {
			at += int64(i) + 1
			if at < size {
				cuts = append(cuts, at)
			}
			at += chunk
			continue
		}
		if err != nil { // no line end before the end of the file
			break
		}
		at += int64(n)
	}
	cuts = append(cuts, size)
	var units []Unit
	for k := range len(cuts) - 1 {
		u := Unit{File: path, Index: k, off: cuts[k], size: cuts[k+1] - cuts[k], csv: full, header: k == 0 && o.header}
		src, err := openCSVChunk(u, o)
		if err != nil {
			return nil, nil, err
		}
		for {
			rec, err := src.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				src.Close()
				return nil, nil, fmt.Errorf("arrowio: csv %s bytes %d to %d (a unit of the file, cut at a line end; a quoted field may not hold a line break there): %w", path, u.off, u.off+u.size, err)
			}
			u.Rows += rec.NumRows()
			u.Bytes += recordBytes(rec)
			rec.Release()
		}
		src.Close()
		units = append(units, u)
	}
	return schema, units, nil
}

// openUnit opens the records of one unit of a file.
func openUnit(u Unit, o sourceOptions) (Source, error) {
	if u.csv != nil {
		return openCSVChunk(u, o)
	}
	return openFile(u.File, o, &u.Index)
}

// openCSVChunk reads one chunk of a CSV file with the file's schema.
func openCSVChunk(u Unit, o sourceOptions) (Source, error) {
	f, err := os.Open(u.File)
	if err != nil {
		return nil, fmt.Errorf("arrowio: csv %s: %w", u.File, err)
	}
	opts := []SourceOption{WithAllocator(o.mem), ReadRows(int(o.batchRows)), CSVHeader(u.header), CSVDelimiter(o.comma), CSVSchema(u.csv)}
	if o.nulls != nil {
		opts = append(opts, CSVNulls(o.nulls...))
	}
	if o.columns != nil {
		opts = append(opts, Columns(o.columns...))
	}
	s, err := NewCSV(bufio.NewReaderSize(io.NewSectionReader(f, u.off, u.size), 1<<16), opts...)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("arrowio: csv %s bytes %d to %d: %w", u.File, u.off, u.off+u.size, err)
	}
	cs := s.(*csvSource)
	cs.name, cs.f = fmt.Sprintf("csv %s bytes %d to %d", u.File, u.off, u.off+u.size), f
	return cs, nil
}

// openFastUnit reads one row group with the direct decoder (parquetfast.go)
// when its layout qualifies, with the columns and records the general
// reader would give; (nil, nil) when it does not qualify.
func openFastUnit(path string, rowGroup int, o sourceOptions) (Source, error) {
	return openFastRowGroup(path, rowGroup, fastLayout{columns: o.columns, mem: o.mem}, o.batchRows, 0)
}

// openFile opens one file with o, restricted to the unit index when it is
// not nil.
func openFile(path string, o sourceOptions, index *int) (Source, error) {
	if index != nil && *index >= 0 {
		o.rowGroups = []int{*index}
	}
	switch format(path) {
	case "parquet":
		if index != nil && *index >= 0 {
			if src, err := openFastUnit(path, *index, o); err != nil || src != nil {
				return src, err
			}
		}
		return openParquet(path, o)
	case "ipc":
		opts := []SourceOption{WithAllocator(o.mem)}
		if o.columns != nil {
			opts = append(opts, Columns(o.columns...))
		}
		if o.rowGroups != nil {
			opts = append(opts, RowGroups(o.rowGroups...))
		}
		return OpenIPC(path, opts...)
	case "csv":
		opts := []SourceOption{WithAllocator(o.mem), ReadRows(int(o.batchRows)), CSVHeader(o.header), CSVDelimiter(o.comma)}
		if o.csvSchema != nil {
			opts = append(opts, CSVSchema(o.csvSchema))
		}
		if o.nulls != nil {
			opts = append(opts, CSVNulls(o.nulls...))
		}
		if o.columns != nil {
			opts = append(opts, Columns(o.columns...))
		}
		return OpenCSV(path, opts...)
	}
	return nil, fmt.Errorf("arrowio: %s: unknown format", path)
}

// recordBytes sums the sizes of a record's buffers.
func recordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	var walk func(d arrow.ArrayData)
	walk = func(d arrow.ArrayData) {
		for _, b := range d.Buffers() {
			if b != nil {
				n += int64(b.Len())
			}
		}
		for _, c := range d.Children() {
			walk(c)
		}
		if d.DataType().ID() == arrow.DICTIONARY {
			if dict := d.Dictionary(); dict != nil {
				walk(dict)
			}
		}
	}
	for _, c := range rec.Columns() {
		walk(c.Data())
	}
	return n
}

// NewMemoryDataset reads src to the end and keeps its records as the units
// of a dataset (one unit a record), for data that is not in files. It
// takes ownership of src and closes it; Close releases the records.
func NewMemoryDataset(ctx context.Context, src Source) (*StreamDataset, error) {
	defer src.Close()
	d := &StreamDataset{schema: src.Schema(), fileSchema: src.Schema()}
	for {
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.Close()
			return nil, err
		}
		if rec.NumRows() == 0 {
			rec.Release()
			continue
		}
		if !rec.Schema().Equal(d.schema) {
			rec.Release()
			d.Close()
			return nil, fmt.Errorf("arrowio: record %d has schema %s, the source has %s: %w", len(d.units), rec.Schema(), d.schema, ErrSchemaChanged)
		}
		d.units = append(d.units, Unit{Index: len(d.units), Rows: rec.NumRows(), Bytes: recordBytes(rec), rec: rec})
		d.rows += rec.NumRows()
	}
	return d, nil
}

// Close releases the records of a dataset held in memory. It is
// idempotent, and a no-op for file datasets.
func (d *StreamDataset) Close() error {
	if d == nil {
		return nil
	}
	for i := range d.units {
		if d.units[i].rec != nil {
			d.units[i].rec.Release()
			d.units[i].rec = nil
		}
	}
	return nil
}

// Schema returns the schema of the records ReadUnit reads: the files'
// columns (projected) followed by the partition columns.
func (d *StreamDataset) Schema() *arrow.Schema { return d.schema }

// Units returns the units in file and row-group order.
func (d *StreamDataset) Units() []Unit { return slices.Clone(d.units) }

// NumRows returns the number of rows, after the filter.
func (d *StreamDataset) NumRows() int64 { return d.rows }

// Files returns the dataset's files in order (none for a memory dataset).
func (d *StreamDataset) Files() []string {
	var out []string
	for _, u := range d.units {
		if u.File != "" && (len(out) == 0 || out[len(out)-1] != u.File) {
			out = append(out, u.File)
		}
	}
	return out
}

// Where returns the dataset's filter, if any.
func (d *StreamDataset) Where() (column, value string, ok bool) {
	return d.whereCol, d.whereVal, d.whereCol != ""
}

// Project returns the dataset restricted to the named columns (file or
// partition columns), in schema order; only those column chunks are read.
func (d *StreamDataset) Project(columns []string) (*StreamDataset, error) {
	p := *d
	want := map[string]bool{}
	for _, c := range columns {
		if !d.schema.HasField(c) {
			return nil, columnError(c, ErrMissingColumn, "not in the dataset's schema %s", d.schema)
		}
		want[c] = true
	}
	var fileCols []string
	var fileFields []arrow.Field
	for _, f := range d.fileSchema.Fields() {
		if want[f.Name] {
			fileCols = append(fileCols, f.Name)
			fileFields = append(fileFields, f)
		}
	}
	p.columns = fileCols
	p.fileSchema = arrow.NewSchema(fileFields, nil)
	p.partCols = nil
	keep := []int{}
	for j, f := range d.partCols {
		if want[f.Name] {
			p.partCols = append(p.partCols, f)
			keep = append(keep, j)
		}
	}
	p.units = slices.Clone(d.units)
	for i := range p.units {
		if p.units[i].part != nil {
			vals := make([]string, len(keep))
			for k, j := range keep {
				vals[k] = d.units[i].part[j]
			}
			p.units[i].part = vals
		}
	}
	p.schema = p.withPartitions(p.fileSchema)
	return &p, nil
}

// applyWhere drops the units whose statistics exclude the filter value and
// counts the matching rows of the others by reading the filter column.
func (d *StreamDataset) applyWhere(pattern string) error {
	idx := d.schema.FieldIndices(d.whereCol)
	if len(idx) == 0 {
		return columnError(d.whereCol, ErrMissingColumn, "not in the schema of %s; the filter cannot apply", pattern)
	}
	f := d.schema.Field(idx[0])
	if _, err := textOf(f.Type); err != nil {
		return columnError(d.whereCol, ErrType, "%s", err)
	}
	if pc := slices.IndexFunc(d.partCols, func(p arrow.Field) bool { return p.Name == d.whereCol }); pc >= 0 {
		// A partition column: whole units match or not.
		kept := d.units[:0]
		for _, u := range d.units {
			if u.part[pc] == d.whereVal {
				kept = append(kept, u)
			}
		}
		d.units = kept
	} else {
		d.rowFilter = true
		kept := d.units[:0]
		for _, u := range d.units {
			if u.File != "" && format(u.File) == "parquet" && u.Index >= 0 {
				skip, err := parquetExcludes(u.File, u.Index, d.whereCol, d.whereVal)
				if err != nil {
					return err
				}
				if skip {
					continue
				}
			}
			n, err := d.countMatches(u)
			if err != nil {
				return err
			}
			if n > 0 {
				u.Rows = n
				kept = append(kept, u)
			}
		}
		d.units = kept
	}
	if len(d.units) == 0 {
		return fmt.Errorf("arrowio: dataset %s: no row has %s = %q: %w", pattern, d.whereCol, d.whereVal, ErrNoRows)
	}
	return nil
}

// countMatches reads only the filter column of a unit and counts its
// matching rows.
func (d *StreamDataset) countMatches(u Unit) (int64, error) {
	o := newSourceOptions(d.opts)
	o.columns = []string{d.whereCol}
	src, err := openUnit(u, o)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	text, _ := textOf(src.Schema().Field(0).Type)
	var n int64
	for {
		rec, err := src.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		col := rec.Column(0)
		for i := range int(rec.NumRows()) {
			if col.IsValid(i) && text(col, i) == d.whereVal {
				n++
			}
		}
		rec.Release()
	}
}

// parquetExcludes reports whether a row group's statistics prove that no
// row has column = value.
func parquetExcludes(path string, group int, column, value string) (skip bool, err error) {
	defer recovered(path, &err)
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		return false, fmt.Errorf("arrowio: parquet %s: %w", path, err)
	}
	defer r.Close()
	md := r.MetaData()
	c := md.Schema.ColumnIndexByName(column)
	if c < 0 {
		return false, nil
	}
	cc, err := md.RowGroup(group).ColumnChunk(c)
	if err != nil {
		return false, nil
	}
	if ok, err := cc.StatsSet(); !ok || err != nil {
		return false, nil
	}
	st, err := cc.Statistics()
	if err != nil || st == nil || !st.HasMinMax() {
		return false, nil
	}
	switch s := st.(type) {
	case *metadata.ByteArrayStatistics:
		v := parquet.ByteArray(value)
		return bytes.Compare(v, s.Min()) < 0 || bytes.Compare(v, s.Max()) > 0, nil
	case *metadata.Int64Statistics:
		v, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return true, nil // an integer column never equals a non-integer text
		}
		return v < s.Min() || v > s.Max(), nil
	case *metadata.Int32Statistics:
		v, err := strconv.ParseInt(value, 10, 32)
		if err != nil {
			return false, nil
		}
		return int32(v) < s.Min() || int32(v) > s.Max(), nil
	}
	return false, nil
}

// ReadUnit reads unit i (filtered, with the partition columns appended)
// and calls fn with each record; fn must Retain a record it keeps. opts
// apply after the dataset's own options (WithAllocator, ReadRows).
func (d *StreamDataset) ReadUnit(ctx context.Context, i int, fn func(rec arrow.RecordBatch) error, opts ...SourceOption) error {
	if i < 0 || i >= len(d.units) {
		return fmt.Errorf("arrowio: unit %d is outside the dataset's %d units", i, len(d.units))
	}
	o := newSourceOptions(append(slices.Clone(d.opts), opts...))
	return d.readUnit(ctx, d.units[i], o, fn)
}

// readUnit reads all records of a unit (filtered, with partition columns
// appended) and calls fn with each; fn must not keep rec without Retain.
func (d *StreamDataset) readUnit(ctx context.Context, u Unit, o sourceOptions, fn func(rec arrow.RecordBatch) error) error {
	if u.rec != nil {
		full, err := d.complete(u.rec, u)
		if err != nil {
			return err
		}
		defer full.Release()
		return fn(full)
	}
	o.columns = d.columns
	if d.rowFilter && d.columns != nil && !slices.Contains(d.columns, d.whereCol) {
		o.columns = append(slices.Clone(d.columns), d.whereCol) // read for the filter, dropped by complete
	}
	src, err := openUnit(u, o)
	if err != nil {
		return err
	}
	defer src.Close()
	for {
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		err = d.emit(rec, u, fn)
		rec.Release()
		if err != nil {
			return err
		}
	}
}

// emit filters rec, drops a column read only for the filter, appends the
// partition columns and passes the runs on to fn.
func (d *StreamDataset) emit(rec arrow.RecordBatch, u Unit, fn func(arrow.RecordBatch) error) error {
	out := []arrow.RecordBatch{rec}
	rec.Retain()
	if d.rowFilter {
		idx := rec.Schema().FieldIndices(d.whereCol)
		if len(idx) == 0 {
			rec.Release()
			return fmt.Errorf("arrowio: %s: filter column %q missing", u.File, d.whereCol)
		}
		f := &Filtered{Column: d.whereCol, Value: d.whereVal, col: idx[0]}
		runs, err := f.filter(rec)
		rec.Release()
		if err != nil {
			return err
		}
		out = runs
	}
	defer func() {
		for _, r := range out {
			r.Release()
		}
	}()
	for _, r := range out {
		full, err := d.complete(r, u)
		if err != nil {
			return err
		}
		err = fn(full)
		full.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// complete projects r to the file schema and appends the partition
// columns; the result is a new reference.
func (d *StreamDataset) complete(r arrow.RecordBatch, u Unit) (arrow.RecordBatch, error) {
	cols := make([]arrow.Array, 0, d.schema.NumFields())
	for _, f := range d.fileSchema.Fields() {
		idx := r.Schema().FieldIndices(f.Name)
		if len(idx) == 0 {
			return nil, fmt.Errorf("arrowio: %s: column %q missing from a record", u.File, f.Name)
		}
		cols = append(cols, r.Column(idx[0]))
	}
	var built []arrow.Array
	defer func() {
		for _, a := range built {
			a.Release()
		}
	}()
	n := int(r.NumRows())
	for j, f := range d.partCols {
		var a arrow.Array
		if f.Type.ID() == arrow.INT64 {
			v, _ := strconv.ParseInt(u.part[j], 10, 64)
			b := array.NewInt64Builder(cmem.Default())
			for range n {
				b.Append(v)
			}
			a = b.NewArray()
			b.Release()
		} else {
			b := array.NewStringBuilder(cmem.Default())
			for range n {
				b.Append(u.part[j])
			}
			a = b.NewArray()
			b.Release()
		}
		built = append(built, a)
		cols = append(cols, a)
	}
	return array.NewRecordBatch(d.schema, cols, int64(n)), nil
}
