package arrowio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet/file"
)

// orderedUnit is one independently readable piece of input: a Parquet row group or
// a whole file of another format.
type orderedUnit struct {
	path     string
	rowGroup int // -1: the whole file
}

type item struct {
	rec arrow.RecordBatch
	err error
}

// orderedSource decodes units with several goroutines and hands their
// records out in file and row-group order, so estimator's Transform keeps
// row order while Parquet decoding runs in parallel.
//
// Readers claim units in order. Before decoding a record a reader takes a
// slot of the decode-ahead window (ahead records not yet handed out by
// Next); the reader of the unit Next is waiting for never waits for one, so
// the window cannot fill with later units while Next starves. Readers
// blocked on the window leave the CPU (and Go's Ps) to the consumer.
type orderedSource struct {
	schema   *arrow.Schema
	units    []orderedUnit
	readRows int64
	outs     []chan item
	cur      int
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	closed   bool

	gate    sync.Mutex
	wake    *sync.Cond // signaled when ahead drops, head moves or the source stops
	ahead   int        // records decoded (or being decoded) and not yet handed out
	window  int        // the bound on ahead
	head    int        // the unit Next reads
	claimed int        // units claimed by readers
	stopped bool
}

// OpenOrdered reads files (Parquet, Arrow IPC, CSV — see OpenDataset
// for the extensions) as one stream of records of at most readRows rows, in
// order, decoding up to readers Parquet row groups (or files) at a time
// (readers ≤ 0: DefaultReaders for files the direct decoder below reads,
// else one per core). Unlike feeder.Readers, which interleaves
// parts in arrival order, records come out in the order of the files and
// their row groups, as estimator's Transform needs. At most DecodeAhead
// records (default: 2 per reader) are decoded ahead of the consumer.
// opts apply to every file.
//
// Parquet row groups whose columns are float32, float64, int32 or int64
// values, or fixed-size lists of them, and whose statistics promise no
// nulls, are decoded straight into C-allocated Arrow buffers (which
// feeder hands to TensorFlow without a copy; Go memory when built without
// cgo); other files go through OpenDataset's readers.
func OpenOrdered(files []string, readers, readRows int, opts ...SourceOption) (Source, error) {
	if len(files) == 0 {
		return nil, errors.New("arrowio: OpenOrdered: no files")
	}
	var units []orderedUnit
	for _, p := range files {
		switch strings.ToLower(filepath.Ext(p)) {
		case ".parquet", ".pq":
			r, err := file.OpenParquetFile(p, false)
			if err != nil {
				return nil, fmt.Errorf("arrowio: parquet %s: %w", p, err)
			}
			n := r.NumRowGroups()
			r.Close()
			for g := range n {
				units = append(units, orderedUnit{path: p, rowGroup: g})
			}
		default:
			units = append(units, orderedUnit{path: p, rowGroup: -1})
		}
	}
	if readRows <= 0 {
		readRows = 65536
	}
	opts = append(append([]SourceOption(nil), opts...), ReadRows(readRows))
	first, err := OpenDataset(files[0], opts...)
	if err != nil {
		return nil, err
	}
	schema := first.Schema()
	first.Close()
	if readers <= 0 {
		readers = runtime.GOMAXPROCS(0)
		if len(units) > 0 && units[0].rowGroup >= 0 {
			u := units[0]
			if fast, err := openFastRowGroup(u.path, u.rowGroup, fastLayout{schema: schema}, int64(readRows), 0); err == nil && fast != nil {
				fast.Close()
				readers = DefaultReaders()
			}
		}
	}
	o := newSourceOptions(opts)
	window := o.ahead
	if window <= 0 {
		window = 2 * readers
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &orderedSource{schema: schema, units: units, cancel: cancel, outs: make([]chan item, len(units)),
		readRows: int64(readRows), window: window}
	s.wake = sync.NewCond(&s.gate)
	for i := range s.outs {
		s.outs[i] = make(chan item, window+1)
	}
	for range min(readers, len(units)) {
		s.wg.Add(1)
		go s.read(ctx, opts)
	}
	return s, nil
}

// DefaultReaders is OpenOrdered's number of readers when given none and its
// direct Parquet decoder reads the files: one per four cores (GOMAXPROCS),
// at least one. Such a reader decodes several times faster than a
// TensorFlow session consumes rows on the same core, so more readers only
// take cores from the session. Files the direct decoder does not read
// (other layouts, other formats) cost about as much to decode as the
// models they feed: OpenOrdered gives them one reader per core.
func DefaultReaders() int { return max(1, runtime.GOMAXPROCS(0)/4) }

// open opens unit i. The stream's first record is an eighth of the others
// (when the direct decoder reads it), so that the consumer starts sooner.
func (s *orderedSource) open(i int, opts []SourceOption) (Source, error) {
	u := s.units[i]
	if u.rowGroup < 0 {
		return OpenDataset(u.path, opts...)
	}
	var first int64
	if i == 0 {
		first = max(1, s.readRows/8)
	}
	if fast, err := openFastRowGroup(u.path, u.rowGroup, fastLayout{schema: s.schema}, s.readRows, first); err != nil || fast != nil {
		return fast, err
	}
	return OpenParquet(u.path, append(append([]SourceOption(nil), opts...), RowGroups(u.rowGroup))...)
}

func (s *orderedSource) read(ctx context.Context, opts []SourceOption) {
	defer s.wg.Done()
	for {
		s.gate.Lock()
		u := s.claimed
		s.claimed++
		s.gate.Unlock()
		if u >= len(s.units) || !s.readUnit(ctx, u, opts) {
			return
		}
	}
}

// acquire waits for a slot of the decode-ahead window for a record of unit
// u; false when the source stops.
func (s *orderedSource) acquire(u int) bool {
	s.gate.Lock()
	defer s.gate.Unlock()
	for s.ahead >= s.window && u != s.head && !s.stopped {
		s.wake.Wait()
	}
	s.ahead++
	return !s.stopped
}

// release gives back n slots of the window.
func (s *orderedSource) release(n int) {
	s.gate.Lock()
	s.ahead -= n
	s.gate.Unlock()
	s.wake.Broadcast()
}

// readUnit sends unit u's records to its channel; false stops the reader.
func (s *orderedSource) readUnit(ctx context.Context, u int, opts []SourceOption) bool {
	out := s.outs[u]
	defer close(out)
	send := func(it item) bool {
		select {
		case out <- it:
			return true
		case <-ctx.Done():
			if it.rec != nil {
				it.rec.Release()
			}
			return false
		}
	}
	if !s.acquire(u) {
		return false
	}
	src, err := s.open(u, opts)
	if err != nil {
		send(item{err: err})
		return false
	}
	defer src.Close()
	same := src.Schema().Equal(s.schema)
	if !same && !sameFields(src.Schema(), s.schema) {
		send(item{err: fmt.Errorf("arrowio: %s has schema %s, the first file %s: %w", s.units[u].path, src.Schema(), s.schema, ErrSchemaChanged)})
		return false
	}
	for first := true; ; first = false {
		if !first && !s.acquire(u) {
			return false
		}
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			s.release(1)
			return true
		}
		if err != nil {
			send(item{err: err})
			return false
		}
		if !same { // e.g. Parquet field metadata: present the first file's schema
			r := array.NewRecordBatch(s.schema, rec.Columns(), rec.NumRows())
			rec.Release()
			rec = r
		}
		if !send(item{rec: rec}) {
			return false
		}
		// Let the consumer's goroutines run now rather than when Go's
		// scheduler preempts this one.
		runtime.Gosched()
	}
}

// sameFields reports whether a and b have the same field names and types
// (metadata aside).
func sameFields(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i := range a.NumFields() {
		fa, fb := a.Field(i), b.Field(i)
		if fa.Name != fb.Name || !arrow.TypeEqual(fa.Type, fb.Type) {
			return false
		}
	}
	return true
}

func (s *orderedSource) Schema() *arrow.Schema { return s.schema }

func (s *orderedSource) Next(ctx context.Context) (arrow.RecordBatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	for s.cur < len(s.outs) {
		select {
		case it, ok := <-s.outs[s.cur]:
			if !ok {
				s.cur++
				s.gate.Lock()
				s.head = s.cur
				s.gate.Unlock()
				s.wake.Broadcast()
				continue
			}
			if it.err != nil {
				s.cur = len(s.outs)
				return nil, it.err
			}
			s.release(1)
			return it.rec, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, io.EOF
}

// Close stops the readers, frees what they decoded and waits for them. It is
// idempotent.
func (s *orderedSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.cancel()
	s.gate.Lock()
	s.stopped = true
	s.gate.Unlock()
	s.wake.Broadcast()
	s.wg.Wait() // readers stop: every send and acquire also waits on the stop
	for _, ch := range s.outs {
	drain:
		for {
			select {
			case it, ok := <-ch:
				if !ok {
					break drain
				}
				if it.rec != nil {
					it.rec.Release()
				}
			default:
				break drain
			}
		}
	}
	return nil
}

// RowsPerRecord suggests how many rows a source should read per record
// for batches of batchSize rows (estimator's Transform): records of about
// 8 MiB (at most 65536 rows), rounded up to a whole number of batches. Wide
// rows (images) read in huge records make Parquet readers grow and copy
// their buffers repeatedly; narrow rows gain nothing from records smaller
// than that. Pass it as ReadRows, or as OpenOrdered's readRows.
func RowsPerRecord(schema *arrow.Schema, batchSize int) int {
	rowBytes := 0
	for _, f := range schema.Fields() {
		rowBytes += fieldBytes(f.Type)
	}
	n := 65536
	if rowBytes > 0 {
		n = min(n, max(1024, (8<<20)/rowBytes))
	}
	if batchSize <= 0 {
		return n
	}
	// A whole number of batches per record: no batch straddles two records,
	// so each is a slice of one record that TensorFlow can use in place.
	return max(1, (n+batchSize-1)/batchSize) * batchSize
}

// fieldBytes estimates the bytes one row of t takes (16 for variable-width
// values).
func fieldBytes(t arrow.DataType) int {
	switch t := t.(type) {
	case *arrow.FixedSizeListType:
		return int(t.Len()) * fieldBytes(t.Elem())
	case arrow.FixedWidthDataType:
		return max(1, t.BitWidth()/8)
	}
	return 16
}
