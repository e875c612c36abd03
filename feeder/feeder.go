package feeder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

// Source is a stream of record batches of one schema (arrowio.Source):
// arrowio opens files and in-memory records as sources.
type Source = arrowio.Source

// Option configures a Feeder.
type Option interface{ apply(*options) }

type options struct {
	batch    int
	dropLast bool
	shuffle  int
	seed     uint64
	readers  int
	prefetch int
	mem      memory.Allocator
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// BatchSize re-chunks the stream into batches of exactly n rows (the last
// one may be smaller, see DropLast). Rows of several records are copied once,
// straight into the tensors; a batch inside one record is a slice (and can
// be aliased). Zero, the default, makes one batch per source record.
func BatchSize(n int) Option { return optionFunc(func(o *options) { o.batch = n }) }

// DropLast drops a final batch smaller than BatchSize.
func DropLast() Option { return optionFunc(func(o *options) { o.dropLast = true }) }

// Shuffle shuffles rows through a buffer of bufferRows rows (as tf.data's
// shuffle does), with a seeded generator: with one reader the order is a
// function of the seed. It requires BatchSize.
func Shuffle(bufferRows int, seed uint64) Option {
	return optionFunc(func(o *options) { o.shuffle, o.seed = bufferRows, seed })
}

// Readers reads n parts of an arrowio.Splitter source in parallel and
// converts up to n batches at a time. Records of different parts interleave
// in arrival order. Default 1.
func Readers(n int) Option { return optionFunc(func(o *options) { o.readers = n }) }

// Prefetch bounds the work in flight: n records read ahead per reader and n
// batches converted ahead of Next. Default 2.
func Prefetch(n int) Option { return optionFunc(func(o *options) { o.prefetch = n }) }

type allocatorOption struct{ mem memory.Allocator }

func (a allocatorOption) apply(o *options) { o.mem = a.mem }

// WithAllocator sets the Arrow allocator of a Feeder (the records it
// concatenates into batches); the default is a shared NewCAllocator. Give
// sources their allocator with arrowio.WithAllocator.
func WithAllocator(mem memory.Allocator) Option { return allocatorOption{mem} }

// Feeder turns a Source into batches of tensors in a pipeline: readers,
// re-chunking and shuffling, and conversion run in goroutines that overlap
// with the caller's Session.Run. Close stops and waits for them.
type Feeder struct {
	plan   *Plan
	opts   options
	parts  []Source
	src    Source
	cancel context.CancelFunc // stops everything (Close, errors seen by Next)
	done   <-chan struct{}    // closed by cancel
	stop   context.CancelFunc // stops reading only (the batcher failed)
	wg     sync.WaitGroup

	recs  chan recItem
	work  chan *job
	order chan *job

	mu      sync.Mutex // serializes Next and Close
	pending *job
	err     error // sticky result after the stream ended or failed
	closed  bool

	recordsRead atomic.Int64
	batches     atomic.Int64
	rowsOut     atomic.Int64
}

type recItem struct {
	rec  arrow.RecordBatch
	err  error
	done bool // the reader finished its part
}

type job struct {
	segs  []segment
	done  chan struct{}
	batch *Batch
	err   error
}

// New starts a feeder over src with the given plan, which must have been
// made for src's schema. The feeder owns src and closes it in Close.
func New(src Source, plan *Plan, opts ...Option) (*Feeder, error) {
	o := options{readers: 1, prefetch: 2}
	for _, op := range opts {
		op.apply(&o)
	}
	switch {
	case src == nil || plan == nil:
		return nil, fmt.Errorf("feeder: New needs a source and a plan")
	case o.batch < 0:
		return nil, fmt.Errorf("feeder: BatchSize %d is negative", o.batch)
	case o.shuffle < 0:
		return nil, fmt.Errorf("feeder: Shuffle buffer %d is negative", o.shuffle)
	case o.shuffle > 0 && o.batch == 0:
		return nil, fmt.Errorf("feeder: Shuffle needs a BatchSize")
	case o.readers < 1:
		return nil, fmt.Errorf("feeder: Readers %d, want ≥ 1", o.readers)
	case o.prefetch < 1:
		return nil, fmt.Errorf("feeder: Prefetch %d, want ≥ 1", o.prefetch)
	}
	if o.mem == nil {
		o.mem = defaultAllocator()
	}
	if err := plan.checkSchemaOf(src.Schema()); err != nil {
		return nil, err
	}
	parts := []Source{src}
	if sp, ok := src.(arrowio.Splitter); ok && o.readers > 1 {
		ps, err := sp.Split(o.readers)
		if err != nil {
			return nil, fmt.Errorf("feeder: split source: %w", err)
		}
		parts = ps
	}
	ctx, cancel := context.WithCancel(context.Background())
	readCtx, stop := context.WithCancel(ctx)
	f := &Feeder{
		plan: plan, opts: o, parts: parts, src: src, cancel: cancel, done: ctx.Done(), stop: stop,
		recs:  make(chan recItem, o.prefetch*len(parts)),
		work:  make(chan *job, o.prefetch),
		order: make(chan *job, o.prefetch),
	}
	for _, p := range parts {
		f.wg.Add(1)
		go f.read(readCtx, p)
	}
	for range o.readers {
		f.wg.Add(1)
		go f.convert(ctx)
	}
	f.wg.Add(1)
	go f.batcher(readCtx, len(parts))
	return f, nil
}

// checkSchemaOf verifies a source schema before anything is read.
func (p *Plan) checkSchemaOf(s *arrow.Schema) error {
	if s == nil {
		return fmt.Errorf("feeder: source has no schema")
	}
	for i := range p.cols {
		c := &p.cols[i]
		if c.index >= s.NumFields() || s.Field(c.index).Name != c.field.Name || !arrow.TypeEqual(s.Field(c.index).Type, c.field.Type) {
			return colErr(c.in.Column, -1, ErrSchemaChanged, "the plan was made for %s, the source has schema %s", c.field.Type, s)
		}
	}
	return nil
}

// read pushes one part's records into f.recs.
func (f *Feeder) read(ctx context.Context, src Source) {
	defer f.wg.Done()
	for {
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			select {
			case f.recs <- recItem{done: true}:
			case <-ctx.Done():
			}
			return
		}
		if err == nil {
			f.recordsRead.Add(1)
		}
		select {
		case f.recs <- recItem{rec: rec, err: err}:
		case <-ctx.Done():
			if rec != nil {
				rec.Release()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// convert turns jobs into batches; it drains f.work even after cancellation
// so that every job queued in f.order completes.
func (f *Feeder) convert(ctx context.Context) {
	defer f.wg.Done()
	for j := range f.work {
		if err := ctx.Err(); err != nil {
			releaseSegs(j.segs)
			j.err = ErrClosed
		} else {
			j.batch, j.err = f.plan.convertOwned(j.segs, f.opts.mem)
		}
		j.segs = nil
		close(j.done)
	}
}

// emit queues a batch of segments (each holding a record reference). It
// returns false when the feeder is shutting down.
func (f *Feeder) emit(ctx context.Context, segs []segment) bool {
	j := &job{segs: segs, done: make(chan struct{})}
	select {
	case f.order <- j:
	case <-ctx.Done():
		releaseSegs(segs)
		return false
	}
	select {
	case f.work <- j:
		return true
	case <-ctx.Done():
		releaseSegs(segs)
		j.segs = nil
		j.err = ErrClosed
		close(j.done)
		return false
	}
}

// fail queues a final error.
func (f *Feeder) fail(ctx context.Context, err error) {
	j := &job{err: err, done: make(chan struct{})}
	close(j.done)
	select {
	case f.order <- j:
	case <-ctx.Done():
	}
}

// batcher re-chunks (and shuffles) records into batches.
func (f *Feeder) batcher(ctx context.Context, nparts int) {
	defer f.wg.Done()
	defer close(f.order)
	defer close(f.work)
	r := rechunker{batch: f.opts.batch, dropLast: f.opts.dropLast}
	var sh *shuffler
	if f.opts.shuffle > 0 {
		sh = &shuffler{size: f.opts.shuffle, batch: f.opts.batch, dropLast: f.opts.dropLast, rng: rand.New(rand.NewPCG(f.opts.seed, f.opts.seed^0x9e3779b97f4a7c15))}
	}
	defer r.release()
	defer func() {
		if sh != nil {
			sh.release()
		}
	}()
	var base int64
	for done := 0; done < nparts; {
		var it recItem
		select {
		case it = <-f.recs:
		case <-ctx.Done():
			return
		}
		if it.done {
			done++
			continue
		}
		if it.err != nil {
			f.fail(ctx, it.err)
			f.stop()
			return
		}
		if err := f.plan.checkSchema(it.rec); err != nil {
			it.rec.Release()
			f.fail(ctx, err)
			f.stop()
			return
		}
		n := it.rec.NumRows()
		var out [][]segment
		if sh != nil {
			out = sh.add(it.rec, base)
		} else {
			out = r.add(it.rec, base)
		}
		base += n
		if !f.emitAll(ctx, out) {
			return
		}
	}
	var out [][]segment
	if sh != nil {
		out = sh.flush()
	} else {
		out = r.flush()
	}
	f.emitAll(ctx, out)
}

// emitAll queues batches in order; on shutdown it releases the rest.
func (f *Feeder) emitAll(ctx context.Context, out [][]segment) bool {
	for i, segs := range out {
		if !f.emit(ctx, segs) {
			for _, rest := range out[i+1:] {
				releaseSegs(rest)
			}
			return false
		}
	}
	return true
}

// Next returns the next batch, which the caller must Close, or io.EOF after
// the last one. Errors from reading or converting are returned once they
// reach the head of the stream, and then again on every call.
func (f *Feeder) Next(ctx context.Context) (*Batch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if f.err != nil {
		return nil, f.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	j := f.pending
	if j == nil {
		select {
		case jj, ok := <-f.order:
			if !ok {
				f.err = io.EOF
				return nil, io.EOF
			}
			j = jj
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.done: // Close or an error canceled the pipeline
			if f.err != nil {
				return nil, f.err
			}
			return nil, ErrClosed
		}
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		f.pending = j
		return nil, ctx.Err()
	case <-f.done:
		f.pending = j
		return nil, ErrClosed
	}
	f.pending = nil
	if j.err != nil {
		f.err = j.err
		f.cancel()
		return nil, j.err
	}
	f.batches.Add(1)
	f.rowsOut.Add(int64(j.batch.rows))
	return j.batch, nil
}

// Stats returns the feeder's counters: rows and batches handed out by Next,
// records read, and the conversion totals of its plan (shared with other
// users of the same plan).
func (f *Feeder) Stats() Stats {
	s := f.plan.Stats()
	s.Rows = f.rowsOut.Load()
	s.Batches = f.batches.Load()
	s.RecordsRead = f.recordsRead.Load()
	return s
}

// Close stops the pipeline, waits for its goroutines, frees every batch not
// handed out and closes the source. It is idempotent and may be called while
// another goroutine waits in Next, which then returns ErrClosed. A reader
// blocked in a read that ignores cancellation (a stream over a pipe) is
// waited for until that read returns.
func (f *Feeder) Close() error {
	f.cancel() // first, so that a Next waiting under the lock returns
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	f.cancel()
	f.wg.Wait()
	if f.pending != nil {
		<-f.pending.done
		f.pending.batch.Close()
		f.pending = nil
	}
	for j := range f.order {
		<-j.done
		j.batch.Close()
	}
	for {
		select {
		case it := <-f.recs:
			if it.rec != nil {
				it.rec.Release()
			}
			continue
		default:
		}
		break
	}
	var errs []error
	for _, p := range f.parts {
		if err := p.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if f.src != nil {
		if err := f.src.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
