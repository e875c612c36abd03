package arrowio

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// ipcMagic starts (and ends) an Arrow IPC file; streams start otherwise.
var ipcMagic = []byte("ARROW1")

// recovered turns a panic inside arrow-go's readers (malformed input) into
// an error.
func recovered(what string, err *error) {
	if r := recover(); r != nil {
		if e, ok := r.(error); ok && errors.Is(e, ErrMemoryBudget) {
			*err = fmt.Errorf("arrowio: %s: %w", what, e)
			return
		}
		*err = fmt.Errorf("arrowio: %s: %w: %v", what, ErrMalformed, r)
	}
}

// ipcError wraps an arrow-go IPC error; the reader's own recovered panics
// become ErrMalformed.
func ipcError(name string, err error) error {
	if strings.Contains(err.Error(), "unknown error while reading") || strings.Contains(err.Error(), "error reading record batch") {
		return fmt.Errorf("arrowio: %s: %w: %w", name, ErrMalformed, err)
	}
	return fmt.Errorf("arrowio: %s: %w", name, err)
}

// OpenIPC opens an Arrow IPC file (random access, splittable by record
// batch) or stream (sequential), whichever path holds. Records are validated
// before they are handed out.
func OpenIPC(path string, opts ...SourceOption) (src Splitter, err error) {
	o := newSourceOptions(opts)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	head := make([]byte, len(ipcMagic))
	n, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("arrowio: %s: %w", path, err)
	}
	if n == len(ipcMagic) && bytes.Equal(head, ipcMagic) {
		defer recovered("ipc file "+path, &err)
		if err := checkFileSchema(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("arrowio: ipc file %s: %w", path, err)
		}
		r, err := ipc.NewFileReader(f, ipc.WithAllocator(o.mem), ipc.WithEnsureNativeEndian(true))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("arrowio: ipc file %s: %w", path, err)
		}
		sh := &sharedIPCFile{path: path, f: f, r: r}
		sh.refs.Store(1)
		batches := o.rowGroups
		if batches == nil {
			batches = make([]int, r.NumRecords())
			for i := range batches {
				batches[i] = i
			}
		}
		for _, b := range batches {
			if b < 0 || b >= r.NumRecords() {
				sh.release()
				return nil, fmt.Errorf("arrowio: ipc file %s: record batch %d out of range (file has %d)", path, b, r.NumRecords())
			}
		}
		s, err := projectSchema(r.Schema(), o.columns, path)
		if err != nil {
			sh.release()
			return nil, err
		}
		return &ipcFileSource{sh: sh, batches: batches, schema: s, cols: o.columns}, nil
	}
	s, err := newIPCStream(bufio.NewReaderSize(f, 1<<16), "ipc stream "+path, f, o)
	if err != nil {
		f.Close()
		return nil, err
	}
	return unsplittable{s}, nil
}

// NewIPCStream reads the Arrow IPC stream format from r.
func NewIPCStream(r io.Reader, opts ...SourceOption) (Source, error) {
	return newIPCStream(r, "ipc stream", nil, newSourceOptions(opts))
}

func newIPCStream(r io.Reader, name string, closer io.Closer, o sourceOptions) (s *ipcStreamSource, err error) {
	defer recovered(name, &err)
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 1<<16)
	}
	in, err := checkStreamSchema(br)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %s: %w", name, err)
	}
	rd, err := ipc.NewReader(in, ipc.WithAllocator(o.mem), ipc.WithEnsureNativeEndian(true))
	if err != nil {
		return nil, fmt.Errorf("arrowio: %s: %w", name, err)
	}
	schema, err := projectSchema(rd.Schema(), o.columns, name)
	if err != nil {
		rd.Release()
		return nil, err
	}
	return &ipcStreamSource{name: name, r: rd, closer: closer, schema: schema, cols: o.columns}, nil
}

// projectSchema keeps the named columns, in the given order.
func projectSchema(s *arrow.Schema, cols []string, name string) (*arrow.Schema, error) {
	if cols == nil {
		return s, nil
	}
	fields := make([]arrow.Field, 0, len(cols))
	for _, c := range cols {
		idx := s.FieldIndices(c)
		if len(idx) != 1 {
			return nil, fmt.Errorf("arrowio: %s: projected column %q: %w (schema %s)", name, c, ErrMissingColumn, s)
		}
		fields = append(fields, s.Field(idx[0]))
	}
	md := s.Metadata()
	return arrow.NewSchema(fields, &md), nil
}

// project returns a record with the schema's columns taken from rec; it
// takes over the caller's reference.
func project(rec arrow.RecordBatch, schema *arrow.Schema, cols []string) arrow.RecordBatch {
	if cols == nil {
		return rec
	}
	arrs := make([]arrow.Array, len(cols))
	for i, c := range cols {
		arrs[i] = rec.Column(rec.Schema().FieldIndices(c)[0])
	}
	out := array.NewRecordBatch(schema, arrs, rec.NumRows())
	rec.Release()
	return out
}

// validated checks a record read from an untrusted file.
func validated(rec arrow.RecordBatch, name string) (arrow.RecordBatch, error) {
	if err := array.ValidateRecordFull(rec); err != nil {
		rec.Release()
		return nil, fmt.Errorf("arrowio: %s: invalid record: %w", name, err)
	}
	return rec, nil
}

type ipcStreamSource struct {
	name   string
	r      *ipc.Reader
	closer io.Closer
	schema *arrow.Schema
	cols   []string
	closed bool
}

func (s *ipcStreamSource) Schema() *arrow.Schema { return s.schema }

func (s *ipcStreamSource) Next(ctx context.Context) (rec arrow.RecordBatch, err error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer recovered(s.name, &err)
	if !s.r.Next() {
		if err := s.r.Err(); err != nil {
			return nil, ipcError(s.name, err)
		}
		return nil, io.EOF
	}
	rec = s.r.RecordBatch()
	rec.Retain()
	if rec, err = validated(rec, s.name); err != nil {
		return nil, err
	}
	return project(rec, s.schema, s.cols), nil
}

func (s *ipcStreamSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.r.Release()
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// unsplittable gives a sequential source the Splitter method set; Split
// returns the source itself.
type unsplittable struct{ Source }

func (u unsplittable) Split(int) ([]Source, error) { return []Source{u.Source}, nil }

// sharedIPCFile is one open IPC file read by several parts.
type sharedIPCFile struct {
	path string
	f    *os.File
	r    *ipc.FileReader
	refs atomic.Int32
}

func (sh *sharedIPCFile) release() {
	if sh.refs.Add(-1) == 0 {
		sh.r.Close()
		sh.f.Close()
	}
}

type ipcFileSource struct {
	sh      *sharedIPCFile
	batches []int
	next    int
	schema  *arrow.Schema
	cols    []string
	closed  bool
}

func (s *ipcFileSource) Schema() *arrow.Schema { return s.schema }

func (s *ipcFileSource) Next(ctx context.Context) (rec arrow.RecordBatch, err error) {
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.next >= len(s.batches) {
		return nil, io.EOF
	}
	i := s.batches[s.next]
	s.next++
	name := fmt.Sprintf("ipc file %s record batch %d", s.sh.path, i)
	defer recovered(name, &err)
	rec, err = s.sh.r.RecordBatchAt(i)
	if err != nil {
		return nil, ipcError(name, err)
	}
	if rec, err = validated(rec, name); err != nil {
		return nil, err
	}
	return project(rec, s.schema, s.cols), nil
}

// Split divides the remaining record batches round-robin.
func (s *ipcFileSource) Split(n int) ([]Source, error) {
	if s.closed {
		return nil, ErrClosed
	}
	rest := s.batches[s.next:]
	n = max(1, min(n, len(rest)))
	parts := make([]Source, n)
	for i := range parts {
		var mine []int
		for j := i; j < len(rest); j += n {
			mine = append(mine, rest[j])
		}
		s.sh.refs.Add(1)
		parts[i] = &ipcFileSource{sh: s.sh, batches: mine, schema: s.schema, cols: s.cols}
	}
	s.next = len(s.batches)
	return parts, nil
}

func (s *ipcFileSource) Close() error {
	if !s.closed {
		s.closed = true
		s.sh.release()
	}
	return nil
}

// IPCRecordBatches returns the number of record batches in an IPC file.
func ipcRecordBatches(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("arrowio: %w", err)
	}
	defer f.Close()
	r, err := ipc.NewFileReader(f)
	if err != nil {
		return 0, fmt.Errorf("arrowio: ipc file %s: %w", path, err)
	}
	defer r.Close()
	return r.NumRecords(), nil
}
