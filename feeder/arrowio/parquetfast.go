package arrowio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/gotflow/gotflow/internal/cmem"
)

// This file is a fast path for the Parquet layout models are usually fed
// from: columns of float32/float64/int32/int64 values or fixed-size lists of
// them, without nulls. pqarrow rebuilds nested lists value by value (and
// grows its buffers by copying), and arrow-go's column readers expand every
// definition and repetition level to an int16. Here arrow-go's page reader
// only reads and decompresses pages; the levels are checked run by run
// (all present, lists all of the fixed width) without being expanded, and
// the values are copied (PLAIN) or looked up (dictionary) straight into
// Arrow buffers in C memory, so feeder can then hand them to TensorFlow
// without a copy. Any other layout, or a column chunk whose statistics do
// not promise "no nulls", takes the general Parquet reader (OpenParquet).

var (
	cMemOnce sync.Once
	cMem     memory.Allocator
)

// cAllocator is the direct decoder's allocator: tracked C memory (see
// internal/cmem), whose freed column buffers are kept for the next
// records (up to 64 MiB).
func cAllocator() memory.Allocator {
	cMemOnce.Do(func() { cMem = &reuseAllocator{mem: cmem.New(), maxHeld: 64 << 20} })
	return cMem
}

// fastReadProps stream column chunks page by page through a small buffer
// instead of reading each whole chunk into a new Go slice first, and keep
// the page buffers for the next column chunks (up to 16 MiB).
var fastReadProps = func() *parquet.ReaderProperties {
	p := parquet.NewReaderProperties(&reuseAllocator{pow2: true, maxHeld: 16 << 20})
	p.BufferedStreamEnabled = true
	p.BufferSize = 64 << 10
	return p
}()

type fastCol struct {
	pages  file.PageReader
	mem    memory.Allocator
	typ    arrow.DataType // the field's type
	elem   arrow.DataType // fixed-width element type
	size   int            // bytes per element
	width  int64          // elements per row
	maxDef int16
	maxRep int16
	levels int64 // levels (= values) of the chunk taken so far

	dict []byte // the chunk's dictionary, PLAIN values (8-byte aligned)
	// the current data page
	left  int64  // values not yet taken
	plain []byte // PLAIN: the values not yet taken
	idx   hybrid // dictionary encoded: the indices
	isIdx bool
}

type fastRowGroup struct {
	name     string
	r        *file.Reader
	schema   *arrow.Schema
	cols     []fastCol
	rows     int64
	pos      int64
	readRows int64
	first    int64 // rows of the first record (0: readRows)
	mem      memory.Allocator
	exact    bool // the file must have exactly schema's columns (a file with more takes the general reader)
	closed   bool
}

// fastLayout is the records a direct decoder gives: schema's fields, or
// when schema is nil the file's Arrow schema restricted to columns (in
// file order, as the general reader projects them; nil: all).
type fastLayout struct {
	schema  *arrow.Schema
	columns []string
	mem     memory.Allocator // of the column buffers; nil: cAllocator
}

// openFastRowGroup returns a source over one row group when its layout
// qualifies, or (nil, nil) when the general reader must be used. Its
// records are laid out as l says (fields are read by name); the first has
// firstRows rows (0: readRows), the others readRows.
func openFastRowGroup(path string, rowGroup int, l fastLayout, readRows, firstRows int64) (src Source, err error) {
	defer recovered("parquet "+path, &err)
	r, err := file.OpenParquetFile(path, false, file.WithReadProps(fastReadProps))
	if err != nil {
		return nil, fmt.Errorf("arrowio: parquet %s: %w", path, err)
	}
	schema := l.schema
	if schema == nil {
		if schema = projectedSchema(r, l.columns); schema == nil {
			r.Close()
			return nil, nil // the general reader reports what is wrong
		}
	}
	mem := l.mem
	if mem == nil {
		mem = cAllocator()
	}
	s := &fastRowGroup{name: path, r: r, schema: schema, readRows: max(1, readRows), first: firstRows, mem: mem, exact: l.schema != nil}
	ok, err := s.plan(rowGroup)
	if err != nil || !ok {
		s.closePages()
		r.Close()
		return nil, err
	}
	return s, nil
}

// projectedSchema is the Arrow schema of r's columns named in columns (all
// when nil), in file order; nil if there is none or it cannot be derived.
func projectedSchema(r *file.Reader, columns []string) *arrow.Schema {
	md := r.MetaData()
	full, err := pqarrow.FromParquet(md.Schema, &pqarrow.ArrowReadProperties{}, md.KeyValueMetadata())
	if err != nil {
		return nil
	}
	if columns == nil {
		return full
	}
	var fields []arrow.Field
	for _, f := range full.Fields() {
		if slices.Contains(columns, f.Name) {
			fields = append(fields, f)
		}
	}
	for _, c := range columns {
		if !slices.ContainsFunc(fields, func(f arrow.Field) bool { return f.Name == c }) {
			return nil // missing: the general reader names it
		}
	}
	if len(fields) == 0 {
		return nil
	}
	meta := full.Metadata()
	return arrow.NewSchema(fields, &meta)
}

// fastEncodings are the encodings the direct decoder reads: PLAIN and
// dictionary values, RLE levels.
var fastEncodings = []parquet.Encoding{parquet.Encodings.Plain, parquet.Encodings.PlainDict, parquet.Encodings.RLEDict, parquet.Encodings.RLE}

func (s *fastRowGroup) plan(rowGroup int) (bool, error) {
	md := s.r.MetaData()
	if rowGroup >= s.r.NumRowGroups() || (s.exact && md.Schema.NumColumns() != s.schema.NumFields()) {
		return false, nil
	}
	// The leaf column of each field: a field the decoder reads has one.
	leaf := map[string]int{}
	for c := range md.Schema.NumColumns() {
		path := md.Schema.Column(c).ColumnPath()
		if len(path) == 0 {
			return false, nil
		}
		if _, dup := leaf[path[0]]; dup {
			leaf[path[0]] = -1
			continue
		}
		leaf[path[0]] = c
	}
	rg := s.r.RowGroup(rowGroup)
	s.rows = rg.NumRows()
	rgmd := rg.MetaData()
	for _, f := range s.schema.Fields() {
		i, ok := leaf[f.Name]
		if !ok || i < 0 {
			return false, nil
		}
		col := md.Schema.Column(i)
		fc := fastCol{mem: s.mem, typ: f.Type, elem: f.Type, width: 1, maxDef: col.MaxDefinitionLevel(), maxRep: col.MaxRepetitionLevel()}
		wantRep := int16(0)
		if l, ok := f.Type.(*arrow.FixedSizeListType); ok {
			fc.elem, fc.width, wantRep = l.Elem(), int64(l.Len()), 1
		}
		if fc.maxRep != wantRep || fc.width <= 0 {
			return false, nil
		}
		cc, err := rgmd.ColumnChunk(i)
		if err != nil {
			return false, nil
		}
		if cc.NumValues() != s.rows*fc.width {
			return false, nil
		}
		for _, e := range cc.Encodings() {
			if !slices.Contains(fastEncodings, e) {
				return false, nil
			}
		}
		stats, err := cc.Statistics()
		if err != nil || stats == nil || !stats.HasNullCount() || stats.NullCount() != 0 {
			return false, nil
		}
		switch phys := col.PhysicalType(); {
		case fc.elem.ID() == arrow.FLOAT32 && phys == parquet.Types.Float,
			fc.elem.ID() == arrow.INT32 && phys == parquet.Types.Int32:
			fc.size = 4
		case fc.elem.ID() == arrow.FLOAT64 && phys == parquet.Types.Double,
			fc.elem.ID() == arrow.INT64 && phys == parquet.Types.Int64:
			fc.size = 8
		default:
			return false, nil
		}
		pages, err := rg.GetColumnPageReader(i)
		if err != nil {
			return false, fmt.Errorf("arrowio: parquet %s column %q: %w", s.name, f.Name, err)
		}
		fc.pages = pages
		s.cols = append(s.cols, fc)
	}
	return true, nil
}

func (s *fastRowGroup) Schema() *arrow.Schema { return s.schema }

func (s *fastRowGroup) Next(ctx context.Context) (rec arrow.RecordBatch, err error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.pos >= s.rows {
		return nil, io.EOF
	}
	defer recovered("parquet "+s.name, &err)
	n := min(s.readRows, s.rows-s.pos)
	if s.pos == 0 && s.first > 0 {
		n = min(s.first, n)
	}
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
	buf := memory.NewResizableBuffer(c.mem)
	buf.Resize(int(total) * c.size)
	defer buf.Release()
	out := buf.Bytes()
	clear(buf.Buf()[len(out):]) // the padding of a reused buffer
	for got := int64(0); got < total; {
		if c.left == 0 {
			// A page takes tens of microseconds: between pages, let the
			// goroutines that consume the records run (the decoder may be
			// holding the only free Go P).
			runtime.Gosched()
			if err := c.nextPage(); err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%d values, want %d", c.levels-c.left, c.levels-c.left+total-got)
				}
				return nil, fmt.Errorf("arrowio: parquet %s column %q: %w", file, name, err)
			}
			continue
		}
		k := min(c.left, total-got)
		dst := out[got*int64(c.size) : (got+k)*int64(c.size)]
		if c.isIdx {
			var err error
			if c.size == 4 {
				err = gather(view[uint32](dst), &c.idx, view[uint32](c.dict))
			} else {
				err = gather(view[uint64](dst), &c.idx, view[uint64](c.dict))
			}
			if err != nil {
				return nil, fmt.Errorf("arrowio: parquet %s column %q: dictionary indices: %w", file, name, err)
			}
		} else {
			c.plain = c.plain[copy(dst, c.plain):]
		}
		c.left -= k
		got += k
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

// nextPage loads the next data page (and the dictionary before it), checks
// its levels and sets up its values; io.EOF at the end of the chunk.
func (c *fastCol) nextPage() error {
	for {
		if !c.pages.Next() {
			if err := c.pages.Err(); err != nil {
				return err
			}
			return io.EOF
		}
		var (
			n          int64
			enc        parquet.Encoding
			rep, def   []byte
			vals, data []byte
		)
		switch pg := c.pages.Page().(type) {
		case *file.DictionaryPage:
			n, data = int64(pg.NumValues()), pg.Data()
			if e := parquet.Encoding(pg.Encoding()); e != parquet.Encodings.Plain && e != parquet.Encodings.PlainDict {
				return fmt.Errorf("dictionary page encoded %s", e)
			}
			if n < 0 || int64(len(data)) < n*int64(c.size) {
				return fmt.Errorf("dictionary page of %d bytes holds fewer than %d values", len(data), n)
			}
			nb := n * int64(c.size)
			words := make([]uint64, (nb+7)/8) // aligned for view[uint32] and view[uint64]
			c.dict = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), len(words)*8)[:nb]
			copy(c.dict, data)
			continue
		case *file.DataPageV1:
			n, enc, data = int64(pg.NumValues()), parquet.Encoding(pg.Encoding()), pg.Data()
			var err error
			if c.maxRep > 0 {
				if rep, data, err = v1Levels(data, pg.RepetitionLevelEncoding()); err != nil {
					return err
				}
			}
			if c.maxDef > 0 {
				if def, data, err = v1Levels(data, pg.DefinitionLevelEncoding()); err != nil {
					return err
				}
			}
			vals = data
		case *file.DataPageV2:
			n, enc, data = int64(pg.NumValues()), parquet.Encoding(pg.Encoding()), pg.Data()
			rl, dl := int64(pg.RepetitionLevelByteLen()), int64(pg.DefinitionLevelByteLen())
			if rl < 0 || dl < 0 || rl+dl > int64(len(data)) {
				return fmt.Errorf("%w: level lengths %d and %d in a page of %d bytes", errHybrid, rl, dl, len(data))
			}
			if pg.NumNulls() != 0 {
				return errNulls
			}
			rep, def, vals = data[:rl], data[rl:rl+dl], data[rl+dl:]
		default:
			continue
		}
		if n < 0 {
			return fmt.Errorf("page of %d values", n)
		}
		if c.maxRep > 0 {
			if err := checkRepLevels(rep, n, c.levels, c.width); err != nil {
				return err
			}
		}
		if c.maxDef > 0 {
			if err := checkDefLevels(def, n, c.maxDef); err != nil {
				return err
			}
		}
		switch enc {
		case parquet.Encodings.Plain:
			if int64(len(vals)) < n*int64(c.size) {
				return fmt.Errorf("page of %d bytes holds fewer than %d values", len(vals), n)
			}
			c.plain, c.isIdx = vals[:n*int64(c.size)], false
		case parquet.Encodings.PlainDict, parquet.Encodings.RLEDict:
			if len(vals) == 0 || vals[0] > 32 {
				return fmt.Errorf("%w: dictionary index width", errHybrid)
			}
			if c.dict == nil {
				return errors.New("dictionary-encoded page without a dictionary")
			}
			c.idx, c.isIdx = newHybrid(vals[1:], uint(vals[0])), true
		default:
			return fmt.Errorf("data page encoded %s", enc)
		}
		c.left = n
		c.levels += n
		if n > 0 {
			return nil
		}
	}
}

// v1Levels splits a V1 page's RLE levels (a 4-byte length, then the runs)
// from the rest of the page.
func v1Levels(data []byte, enc parquet.Encoding) (levels, rest []byte, err error) {
	if enc != parquet.Encodings.RLE {
		return nil, nil, fmt.Errorf("levels encoded %s", enc)
	}
	if len(data) < 4 {
		return nil, nil, fmt.Errorf("%w: page too short for its levels", errHybrid)
	}
	l := int64(uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16 | uint32(data[3])<<24)
	if l > int64(len(data)-4) {
		return nil, nil, fmt.Errorf("%w: levels of %d bytes in a page of %d", errHybrid, l, len(data))
	}
	return data[4 : 4+l], data[4+l:], nil
}

// gather fills dst with dictionary values, taking len(dst) indices from h.
func gather[T uint32 | uint64](dst []T, h *hybrid, dict []T) error {
	for len(dst) > 0 {
		if h.i == h.n {
			ok, err := h.next()
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%w: %d indices missing", errHybrid, len(dst))
			}
			continue
		}
		k := min(h.n-h.i, len(dst))
		if h.rle {
			if h.val >= uint64(len(dict)) {
				return fmt.Errorf("index %d outside a dictionary of %d", h.val, len(dict))
			}
			v := dict[h.val]
			for j := range dst[:k] {
				dst[j] = v
			}
		} else if err := unpackGather(dst[:k], h.packed, h.bw, h.i, dict); err != nil {
			return err
		}
		h.i += k
		dst = dst[k:]
	}
	return nil
}

// unpackGather looks up len(dst) bit-packed indices of bw bits, from the
// start-th on, in dict.
func unpackGather[T uint32 | uint64](dst []T, packed []byte, bw uint, start int, dict []T) error {
	if bw == 0 {
		if len(dict) == 0 {
			return fmt.Errorf("index 0 outside an empty dictionary")
		}
		for j := range dst {
			dst[j] = dict[0]
		}
		return nil
	}
	mask := uint64(1)<<bw - 1
	bit := uint(start) * bw
	n := uint64(len(dict))
	for j := range dst {
		b := int(bit >> 3)
		var w uint64
		if b+8 <= len(packed) {
			w = binary.LittleEndian.Uint64(packed[b:])
		} else {
			for k := len(packed) - 1; k >= b; k-- {
				w = w<<8 | uint64(packed[k])
			}
		}
		ix := (w >> (bit & 7)) & mask
		if ix >= n {
			return fmt.Errorf("index %d outside a dictionary of %d", ix, n)
		}
		dst[j] = dict[ix]
		bit += bw
	}
	return nil
}

func view[T any](b []byte) []T {
	if len(b) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(z)))
}

func (s *fastRowGroup) closePages() {
	for _, c := range s.cols {
		if c.pages != nil {
			c.pages.Close()
		}
	}
	s.cols = nil
}

func (s *fastRowGroup) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.closePages()
	return s.r.Close()
}
