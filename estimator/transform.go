package estimator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/feeder/arrowio"
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
	feed     *feeder.Plan
	outputs  []feeder.Output
	schema   *arrow.Schema // nil when an output's static shape is not fully known
}

func defaultName(spec savedmodel.SignatureTensor) string {
	if spec.Alias != "" {
		return spec.Alias
	}
	return strings.TrimSuffix(spec.Name, ":0")
}

// resolve matches the mappings against the model and the input schema.
func (m *TFModel) resolve(r Runnable, in *arrow.Schema) (*plan, error) {
	p := &plan{}
	sig := r.Signature()
	byInput, err := byTensor(m.Inputs, m.InputMapping)
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	// Inputs not mapped explicitly are fed from the column of the same name.
	var specs []savedmodel.SignatureTensor
	if sig != nil {
		specs = sig.Inputs
	} else if len(byInput) == 0 {
		if m.RawTensorNames && m.Kind == KindSavedModel {
			return nil, errors.New("estimator: RawTensorNames needs an InputMapping (column → tensor name)")
		}
		specs = r.Inputs()
	}
	for _, spec := range specs {
		name := defaultName(spec)
		if _, ok := byInput[name]; !ok && (len(in.FieldIndices(name)) > 0 || sig == nil) {
			byInput[name] = feeder.Input{Column: name, Tensor: name}
		}
	}
	if len(byInput) == 0 && (sig == nil || len(sig.Inputs) == 0) {
		return nil, errors.New("estimator: the model lists no inputs: name the tensors to feed and their columns (gotflow --map COLUMN=TENSOR, TFModel.InputMapping or Inputs in Go)")
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
			mapped := ""
			if len(byInput) > 0 {
				mapped = "mapped: " + mappingString(byInput) + "; "
			}
			return nil, fmt.Errorf("estimator: signature %q input(s) %s not mapped to any column, and no column has that name (%scolumns: %s); map one with --map COLUMN=%s (TFModel.InputMapping or Inputs in Go)",
				sig.Key, strings.Join(missing, ", "), mapped, fieldNames(in), missing[0])
		}
	}
	for _, input := range p.inNames {
		ep, err := r.Input(input)
		if err != nil {
			return nil, err
		}
		p.inEps = append(p.inEps, ep)
		p.inCols = append(p.inCols, byInput[input].Column)
	}

	outMap := m.OutputMapping
	if len(outMap) == 0 {
		outMap = map[string]string{}
		switch outs := r.Outputs(); {
		case sig != nil:
			for _, spec := range sig.Outputs {
				outMap[spec.Alias] = spec.Alias
			}
		case len(outs) == 1:
			// A graph with one obvious output (inspect lists it): no
			// mapping needed; the column is named after its op.
			outMap[outs[0].Name] = defaultName(outs[0])
		default:
			var names []string
			for _, o := range outs {
				names = append(names, o.Name)
			}
			return nil, fmt.Errorf("estimator: the model has no signature and %d candidate outputs (%s); set OutputMapping (tensor name → column; gotflow predict --out-map)", len(outs), strings.Join(names, ", "))
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

	mapping := make(feeder.Mapping, len(p.inNames))
	targets := make([]feeder.Target, len(p.inNames))
	for i, name := range p.inNames {
		mapping[i] = byInput[name]
		mapping[i].Cast = mapping[i].Cast || m.Cast
		targets[i] = feeder.Target{Alias: name, TensorSpec: p.inEps[i].TensorSpec}
	}
	fp, err := feeder.NewPlan(in, mapping, targets)
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	p.feed = fp
	fields := append([]arrow.Field(nil), in.Fields()...)
	static := true
	for i, name := range p.outNames {
		binary := m.BinaryStrings
		p.outputs = append(p.outputs, feeder.Output{Tensor: name, Column: p.outCols[i], Binary: binary})
		if _, ok := arrowOf(p.outEps[i].DType, binary); !ok {
			return nil, fmt.Errorf("estimator: output %q has dtype %s, which has no Arrow column type", name, p.outEps[i].DType)
		}
		if p.outEps[i].Shape != nil && len(p.outEps[i].Shape) == 0 {
			return nil, fmt.Errorf("estimator: output %q is a scalar; it needs a batch dimension to become column %q", name, p.outCols[i])
		}
		f, ok := staticField(p.outEps[i], p.outCols[i], binary)
		static = static && ok
		fields = append(fields, f)
	}
	if static {
		md := in.Metadata()
		p.schema = arrow.NewSchema(fields, &md)
	}
	return p, nil
}

// mappingString formats the inputs' columns as "column→input, …".
func mappingString(m map[string]feeder.Input) string {
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
		parts[i] = m[k].Column + "→" + k
	}
	return strings.Join(parts, ", ")
}

// Transform runs the model over src and returns a stream of records: each
// input row with the mapped outputs appended as columns (Spark's
// transform). Rows keep their order; batches have BatchSize rows (the last
// may be shorter). A feeder.Feeder reads, re-chunks and converts the input
// while InFlight batches run at once on the model's session and their
// outputs are converted back, so every stage overlaps.
//
// Transform takes ownership of src: the stream closes it. The stream must be
// released (Close or Release) to stop its goroutines. Mapping errors
// (unmapped input, missing column, dtype mismatch) are returned here, before
// any row is read; src is closed then too.
func (m *TFModel) Transform(ctx context.Context, src arrowio.Source) (*Stream, error) {
	r, err := m.Open(ctx)
	if err != nil {
		src.Close()
		return nil, err
	}
	p, err := m.resolve(r, src.Schema())
	if err != nil {
		src.Close()
		return nil, err
	}
	n := m.inFlight()
	f, err := feeder.New(src, p.feed, feeder.BatchSize(m.batchSize()), feeder.Prefetch(n))
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("estimator: %w", err)
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
	s := &Stream{
		ctx:     ctx,
		cancel:  cancel,
		schema:  p.schema,
		plan:    p,
		feeder:  f,
		sess:    r.Session(),
		inputs:  inputs,
		fetches: fetches,
		jobs:    make(chan job, n),
		results: make(chan result, 2*n),
		tokens:  make(chan struct{}, 2*n),
		pending: map[int64]result{},
		hooks:   m.Hooks,
	}
	s.refs.Store(1)
	s.wg.Add(1)
	go s.dispatch()
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
	seq   int64
	batch *feeder.Batch // nil with err set: reading or converting failed here
	err   error
}

type result struct {
	seq  int64
	rows int64
	rec  arrow.RecordBatch
	err  error
}

// Stream is the record stream Transform returns. It implements
// array.RecordReader. Next, RecordBatch and Schema must be called from one
// goroutine.
type Stream struct {
	ctx     context.Context
	cancel  context.CancelFunc
	schema  *arrow.Schema
	plan    *plan
	feeder  *feeder.Feeder
	sess    *tf.Session
	inputs  []tf.Output
	fetches []tf.Output
	hooks   Hooks

	jobs    chan job
	results chan result
	tokens  chan struct{} // bounds the batches between the feeder and the consumer
	wg      sync.WaitGroup

	refs    atomic.Int64
	once    sync.Once
	pending map[int64]result
	next    int64
	peeked  *result
	cur     arrow.RecordBatch
	err     error
	done    bool
	rows    int64
	batches int64
}

// dispatch takes converted batches from the feeder, in order, and hands
// them to the workers with their sequence numbers.
func (s *Stream) dispatch() {
	defer s.wg.Done()
	defer close(s.jobs)
	for seq := int64(0); ; seq++ {
		select {
		case s.tokens <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		b, err := s.feeder.Next(s.ctx)
		if errors.Is(err, io.EOF) {
			<-s.tokens
			return
		}
		if err != nil && s.ctx.Err() != nil {
			return
		}
		if err != nil {
			err = fmt.Errorf("estimator: %w", err)
		}
		select {
		case s.jobs <- job{seq: seq, batch: b, err: err}:
		case <-s.ctx.Done():
			if b != nil {
				b.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *Stream) work() {
	for j := range s.jobs {
		if s.ctx.Err() != nil {
			if j.batch != nil {
				j.batch.Close()
			}
			continue
		}
		res := result{seq: j.seq, err: j.err}
		if j.err == nil {
			res.rows = int64(j.batch.NumRows())
			res.rec, res.err = s.runBatch(j.batch)
			j.batch.Close()
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

func (s *Stream) runBatch(b *feeder.Batch) (arrow.RecordBatch, error) {
	feeds, err := b.Feeds(s.inputs)
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	outs, err := s.sess.Run(s.ctx, feeds, s.fetches, nil)
	if err != nil {
		return nil, fmt.Errorf("estimator: run: %w", err)
	}
	defer func() {
		for _, t := range outs {
			t.Close()
		}
	}()
	rec, err := b.Record()
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	out, err := feeder.AppendOutputs(rec, outs, s.plan.outputs, nil)
	if err != nil {
		return nil, fmt.Errorf("estimator: %w", err)
	}
	return out, nil
}

// Schema is the output schema: the input's fields then the outputs. When an
// output's static shape is not fully known it is taken from the first batch,
// so Schema may wait for it.
func (s *Stream) Schema() *arrow.Schema {
	if s.schema == nil {
		if r, ok := s.advance(); ok {
			s.peeked = &r
			if r.rec != nil {
				s.schema = r.rec.Schema()
			}
		}
		if s.schema == nil { // no batch: predict what we can
			fields := append([]arrow.Field(nil), s.plan.feed.Schema().Fields()...)
			for i, ep := range s.plan.outEps {
				f, ok := staticField(ep, s.plan.outCols[i], s.plan.outputs[i].Binary)
				if !ok {
					t, _ := arrowOf(ep.DType, s.plan.outputs[i].Binary)
					f = arrow.Field{Name: s.plan.outCols[i], Type: arrow.ListOf(t)}
				}
				fields = append(fields, f)
			}
			md := s.plan.feed.Schema().Metadata()
			s.schema = arrow.NewSchema(fields, &md)
		}
	}
	return s.schema
}

// advance returns the next in-order result; ok is false at the end of the
// stream (with s.err set on failure).
func (s *Stream) advance() (result, bool) {
	if s.peeked != nil {
		r := *s.peeked
		s.peeked = nil
		return r, true
	}
	if s.done {
		return result{}, false
	}
	for {
		if r, ok := s.pending[s.next]; ok {
			delete(s.pending, s.next)
			s.next++
			<-s.tokens
			return r, true
		}
		select {
		case r, ok := <-s.results:
			if !ok {
				s.done = true
				if err := s.ctx.Err(); err != nil && s.err == nil {
					s.err = err
				}
				return result{}, false
			}
			s.pending[r.seq] = r
		case <-s.ctx.Done():
			s.fail(s.ctx.Err())
			return result{}, false
		}
	}
}

// Next advances to the next output batch. It returns false at the end or on
// error (see Err).
func (s *Stream) Next() bool {
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
	if s.err != nil {
		return false
	}
	r, ok := s.advance()
	if !ok {
		return false
	}
	if r.err != nil {
		s.fail(r.err)
		return false
	}
	if s.schema != nil && !r.rec.Schema().Equal(s.schema) {
		r.rec.Release()
		s.fail(fmt.Errorf("estimator: batch %d has schema %s; the stream's schema is %s (an output changed shape between batches)", s.batches, r.rec.Schema(), s.schema))
		return false
	}
	s.cur = r.rec
	s.rows += r.rows
	s.batches++
	if s.hooks.OnBatch != nil {
		s.hooks.OnBatch(BatchInfo{Rows: r.rows, TotalRows: s.rows, Batches: s.batches})
	}
	return true
}

func (s *Stream) fail(err error) {
	if s.err == nil {
		s.err = err
	}
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

// OutputColumns names the appended columns, in order; they are the last
// fields of Schema.
func (s *Stream) OutputColumns() []string { return append([]string(nil), s.plan.outCols...) }

// Rows returns the rows delivered so far.
func (s *Stream) Rows() int64 { return s.rows }

// Stats returns the feeder's counters (rows, batches, bytes aliased and
// copied into tensors).
func (s *Stream) Stats() feeder.Stats { return s.feeder.Stats() }

// Retain adds a reference.
func (s *Stream) Retain() { s.refs.Add(1) }

// Release drops a reference; the last one closes the stream.
func (s *Stream) Release() {
	if s.refs.Add(-1) == 0 {
		s.Close()
	}
}

// Close stops the pipeline, waits for its goroutines, frees every batch not
// delivered and closes the source. It is idempotent and returns the error
// that stopped the stream, if any.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for r := range s.results {
				if r.rec != nil {
					r.rec.Release()
				}
			}
		}()
		s.wg.Wait()
		<-drained
		for j := range s.jobs {
			if j.batch != nil {
				j.batch.Close()
			}
		}
		for _, r := range s.pending {
			if r.rec != nil {
				r.rec.Release()
			}
		}
		s.pending = nil
		if s.peeked != nil && s.peeked.rec != nil {
			s.peeked.rec.Release()
		}
		s.peeked = nil
		if s.cur != nil {
			s.cur.Release()
			s.cur = nil
		}
		s.done = true
		if err := s.feeder.Close(); err != nil && s.err == nil {
			s.err = err
		}
	})
	if errors.Is(s.err, context.Canceled) {
		return nil
	}
	return s.err
}

var _ array.RecordReader = (*Stream)(nil)

func fieldNames(s *arrow.Schema) string {
	names := make([]string, s.NumFields())
	for i, f := range s.Fields() {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}
