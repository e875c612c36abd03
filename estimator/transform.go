package estimator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// plan is a Transform's resolved mappings.
type plan struct {
	inNames  []string // inputs, in feed order
	inCols   []string
	inEps    []savedmodel.Endpoint
	outNames []string // outputs, in fetch (and column) order
	outCols  []string
	outEps   []savedmodel.Endpoint
	schema   *arrow.Schema // input fields then output fields
	feeds    feedConverter
	fetches  fetchConverter
}

func defaultName(spec savedmodel.TensorSpec) string {
	if spec.Alias != "" {
		return spec.Alias
	}
	return strings.TrimSuffix(spec.Name, ":0")
}

// resolve matches the mappings against the model and the input schema.
func (m *TFModel) resolve(r Runnable, in *arrow.Schema) (*plan, error) {
	p := &plan{}
	sig := r.Signature()
	inMap := m.InputMapping
	if len(inMap) == 0 {
		if m.RawTensorNames && sig == nil && m.Kind == KindSavedModel {
			return nil, errors.New("estimator: RawTensorNames needs an InputMapping (column → tensor name)")
		}
		inMap = map[string]string{}
		for _, spec := range r.Inputs() {
			inMap[defaultName(spec)] = defaultName(spec)
		}
		if len(inMap) == 0 {
			return nil, errors.New("estimator: the model lists no inputs; set InputMapping (column → input)")
		}
	}
	byInput := map[string]string{}
	for col, input := range inMap {
		byInput[input] = col
	}
	for input := range byInput {
		p.inNames = append(p.inNames, input)
	}
	sort.Strings(p.inNames)
	if sig != nil {
		var missing []string
		for _, spec := range sig.Inputs {
			if _, ok := byInput[spec.Alias]; !ok {
				missing = append(missing, spec.Alias)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("estimator: signature %q input(s) %s not mapped to any column (InputMapping maps: %s; columns: %s)",
				sig.Key, strings.Join(missing, ", "), mappingString(inMap), fieldNames(in))
		}
	}
	for _, input := range p.inNames {
		ep, err := r.Input(input)
		if err != nil {
			return nil, err
		}
		p.inEps = append(p.inEps, ep)
		p.inCols = append(p.inCols, byInput[input])
	}

	outMap := m.OutputMapping
	if len(outMap) == 0 {
		if sig == nil {
			return nil, errors.New("estimator: the model has no signature; set OutputMapping (tensor name → column)")
		}
		outMap = map[string]string{}
		for _, spec := range sig.Outputs {
			outMap[spec.Alias] = spec.Alias
		}
	}
	for out := range outMap {
		p.outNames = append(p.outNames, out)
	}
	sort.Strings(p.outNames)
	for _, out := range p.outNames {
		ep, err := r.Output(out)
		if err != nil {
			return nil, err
		}
		col := outMap[out]
		if len(in.FieldIndices(col)) > 0 {
			return nil, fmt.Errorf("estimator: output %q would be appended as column %q, which the input already has; map it to another name", out, col)
		}
		p.outEps = append(p.outEps, ep)
		p.outCols = append(p.outCols, col)
	}

	feeds, err := planFeeds(in, p.inCols, p.inEps, p.inNames)
	if err != nil {
		return nil, err
	}
	fetches, err := planFetches(memory.DefaultAllocator, p.outEps, p.outNames, p.outCols)
	if err != nil {
		return nil, err
	}
	p.feeds, p.fetches = feeds, fetches
	md := in.Metadata()
	p.schema = arrow.NewSchema(append(append([]arrow.Field(nil), in.Fields()...), fetches.fields()...), &md)
	return p, nil
}

func mappingString(m map[string]string) string {
	if len(m) == 0 {
		return "nothing"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "→" + m[k]
	}
	return strings.Join(parts, ", ")
}

// OutputSchema returns the schema Transform produces for input records of
// schema in: in's fields followed by the mapped outputs. It loads the model
// if needed and checks the mappings, so it is also a dry run.
func (m *TFModel) OutputSchema(ctx context.Context, in *arrow.Schema) (*arrow.Schema, error) {
	r, err := m.Open(ctx)
	if err != nil {
		return nil, err
	}
	p, err := m.resolve(r, in)
	if err != nil {
		return nil, err
	}
	return p.schema, nil
}

// Transform runs the model over src and returns a stream of records: each
// input row with the mapped outputs appended as columns (Spark's
// transform). Rows keep their order; batches have BatchSize rows (the last
// may be shorter). Reading, converting, running and converting back happen
// in a pipeline with InFlight batches in flight on the one session.
//
// The caller keeps ownership of src but must not use it until the stream is
// released. The stream must be released (Release or Close) to stop its
// goroutines. Mapping errors (unmapped input, missing column, dtype
// mismatch) are returned here, before any row is read.
func (m *TFModel) Transform(ctx context.Context, src array.RecordReader) (*Stream, error) {
	r, err := m.Open(ctx)
	if err != nil {
		return nil, err
	}
	p, err := m.resolve(r, src.Schema())
	if err != nil {
		return nil, err
	}
	fetches := make([]tf.Output, len(p.outEps))
	for i, ep := range p.outEps {
		fetches[i] = ep.Output
	}
	inputs := make([]tf.Output, len(p.inEps))
	for i, ep := range p.inEps {
		inputs[i] = ep.Output
	}
	ctx, cancel := context.WithCancel(ctx)
	n := m.inFlight()
	s := &Stream{
		ctx:     ctx,
		cancel:  cancel,
		schema:  p.schema,
		plan:    p,
		sess:    r.Session(),
		inputs:  inputs,
		fetches: fetches,
		batch:   int64(m.batchSize()),
		jobs:    make(chan job, n),
		results: make(chan result, 2*n),
		tokens:  make(chan struct{}, 2*n),
		pending: map[int64]result{},
		hooks:   m.Hooks,
	}
	s.refs.Store(1)
	s.wg.Add(1)
	go s.read(src)
	var workers sync.WaitGroup
	for range n {
		workers.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer workers.Done()
			s.work()
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		workers.Wait()
		close(s.results)
	}()
	return s, nil
}

type job struct {
	seq int64
	rec arrow.RecordBatch // nil with err set: the reader failed here
	err error
}

type result struct {
	seq  int64
	rows int64
	rec  arrow.RecordBatch
	err  error
}

// Stream is the record stream Transform returns. It implements
// array.RecordReader. Next and RecordBatch must be called from one goroutine.
type Stream struct {
	ctx     context.Context
	cancel  context.CancelFunc
	schema  *arrow.Schema
	plan    *plan
	sess    *tf.Session
	inputs  []tf.Output
	fetches []tf.Output
	batch   int64
	hooks   Hooks

	jobs    chan job
	results chan result
	tokens  chan struct{} // bounds the batches between reader and consumer
	wg      sync.WaitGroup

	refs    atomic.Int64
	once    sync.Once
	pending map[int64]result
	next    int64
	cur     arrow.RecordBatch
	err     error
	done    bool
	rows    int64
}

// read cuts the source into batches of exactly s.batch rows (slicing large
// records, concatenating small ones) and hands them to the workers.
func (s *Stream) read(src array.RecordReader) {
	defer s.wg.Done()
	defer close(s.jobs)
	var seq int64
	var parts []arrow.RecordBatch
	var have int64
	send := func(rec arrow.RecordBatch, err error) bool {
		select {
		case s.tokens <- struct{}{}:
		case <-s.ctx.Done():
			if rec != nil {
				rec.Release()
			}
			return false
		}
		select {
		case s.jobs <- job{seq: seq, rec: rec, err: err}:
			seq++
			return err == nil
		case <-s.ctx.Done():
			if rec != nil {
				rec.Release()
			}
			return false
		}
	}
	flush := func() bool {
		if have == 0 {
			return true
		}
		rec, err := concatRecords(s.plan, parts)
		for _, p := range parts {
			p.Release()
		}
		parts, have = parts[:0], 0
		return send(rec, err)
	}
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	for src.Next() {
		rec := src.RecordBatch()
		n := rec.NumRows()
		for off := int64(0); off < n; {
			take := min(s.batch-have, n-off)
			parts = append(parts, rec.NewSlice(off, off+take))
			have += take
			off += take
			if have == s.batch && !flush() {
				return
			}
		}
		if s.ctx.Err() != nil {
			return
		}
	}
	if err := src.Err(); err != nil {
		send(nil, fmt.Errorf("estimator: reading input: %w", err))
		return
	}
	flush()
}

// concatRecords joins record slices into one batch; one part is used as is.
func concatRecords(p *plan, parts []arrow.RecordBatch) (arrow.RecordBatch, error) {
	if len(parts) == 1 {
		parts[0].Retain()
		return parts[0], nil
	}
	schema := parts[0].Schema()
	cols := make([]arrow.Array, schema.NumFields())
	var rows int64
	for _, r := range parts {
		rows += r.NumRows()
	}
	for c := range cols {
		arrs := make([]arrow.Array, len(parts))
		for i, r := range parts {
			arrs[i] = r.Column(c)
		}
		a, err := array.Concatenate(arrs, memory.DefaultAllocator)
		if err != nil {
			for _, x := range cols[:c] {
				x.Release()
			}
			return nil, fmt.Errorf("estimator: joining input batches, column %q: %w", schema.Field(c).Name, err)
		}
		cols[c] = a
	}
	rec := array.NewRecordBatch(schema, cols, rows)
	for _, a := range cols {
		a.Release()
	}
	return rec, nil
}

func (s *Stream) work() {
	for j := range s.jobs {
		if s.ctx.Err() != nil {
			if j.rec != nil {
				j.rec.Release()
			}
			continue
		}
		res := result{seq: j.seq, err: j.err}
		if j.err == nil {
			res.rows = j.rec.NumRows()
			res.rec, res.err = s.runBatch(j.rec)
			j.rec.Release()
		}
		select {
		case s.results <- res:
		case <-s.ctx.Done():
			if res.rec != nil {
				res.rec.Release()
			}
		}
	}
}

func (s *Stream) runBatch(rec arrow.RecordBatch) (arrow.RecordBatch, error) {
	feeds, err := s.plan.feeds.feeds(rec)
	if err != nil {
		return nil, err
	}
	fs := make([]tf.Feed, len(feeds))
	for i, t := range feeds {
		fs[i] = tf.Feed{Output: s.inputs[i], Tensor: t}
	}
	outs, err := s.sess.Run(s.ctx, fs, s.fetches, nil)
	for _, t := range feeds {
		t.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("estimator: run: %w", err)
	}
	cols, err := s.plan.fetches.columns(outs, rec.NumRows())
	for _, t := range outs {
		t.Close()
	}
	if err != nil {
		return nil, err
	}
	all := make([]arrow.Array, 0, int(rec.NumCols())+len(cols))
	all = append(all, rec.Columns()...)
	all = append(all, cols...)
	out := array.NewRecordBatch(s.schema, all, rec.NumRows())
	for _, c := range cols {
		c.Release()
	}
	return out, nil
}

// Schema is the output schema: the input's fields then the outputs.
func (s *Stream) Schema() *arrow.Schema { return s.schema }

// Next advances to the next output batch. It returns false at the end or on
// error (see Err).
func (s *Stream) Next() bool {
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
	if s.done {
		return false
	}
	for {
		if r, ok := s.pending[s.next]; ok {
			delete(s.pending, s.next)
			s.next++
			<-s.tokens
			if r.err != nil {
				s.fail(r.err)
				return false
			}
			s.cur = r.rec
			s.rows += r.rows
			if s.hooks.OnBatch != nil {
				s.hooks.OnBatch(BatchInfo{Rows: r.rows, TotalRows: s.rows, Batches: s.next})
			}
			return true
		}
		select {
		case r, ok := <-s.results:
			if !ok {
				s.done = true
				if err := s.ctx.Err(); err != nil && s.err == nil {
					s.err = err
				}
				return false
			}
			s.pending[r.seq] = r
		case <-s.ctx.Done():
			s.fail(s.ctx.Err())
			return false
		}
	}
}

func (s *Stream) fail(err error) {
	s.err = err
	s.done = true
	s.cancel()
}

// RecordBatch returns the current batch, valid until the next call to Next
// (Retain it to keep it).
func (s *Stream) RecordBatch() arrow.RecordBatch { return s.cur }

// Record is RecordBatch.
//
// Deprecated: use RecordBatch.
func (s *Stream) Record() arrow.RecordBatch { return s.cur }

// Err returns the error that stopped the stream, if any.
func (s *Stream) Err() error { return s.err }

// Rows returns the rows delivered so far.
func (s *Stream) Rows() int64 { return s.rows }

// Retain adds a reference.
func (s *Stream) Retain() { s.refs.Add(1) }

// Release drops a reference; the last one stops the pipeline and frees
// every batch not yet delivered.
func (s *Stream) Release() {
	if s.refs.Add(-1) == 0 {
		s.Close()
	}
}

// Close stops the pipeline, waits for its goroutines and frees what they
// produced. It is idempotent and returns the stream's error, if any.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		go func() {
			for r := range s.results {
				if r.rec != nil {
					r.rec.Release()
				}
			}
		}()
		// Drain jobs the workers will not take once they stop.
		s.wg.Wait()
		for j := range s.jobs {
			if j.rec != nil {
				j.rec.Release()
			}
		}
		for _, r := range s.pending {
			if r.rec != nil {
				r.rec.Release()
			}
		}
		s.pending = nil
		if s.cur != nil {
			s.cur.Release()
			s.cur = nil
		}
		s.done = true
	})
	if errors.Is(s.err, context.Canceled) {
		return nil
	}
	return s.err
}

var _ array.RecordReader = (*Stream)(nil)
