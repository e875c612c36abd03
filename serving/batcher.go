package serving

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gotflow/gotflow/savedmodel"
)

// The batcher merges concurrent requests for the same signature (and the
// same inputs' inner shapes and outputs) into one session run, as TF
// Serving's BasicBatchScheduler does: requests join the open batch until
// it holds MaxBatchSize rows or its BatchTimeout has passed and a batch
// thread is free; at most MaxEnqueuedBatches batches wait, and a request
// that would need one more fails at once with UNAVAILABLE. A batch is
// padded up to the next of AllowedBatchSizes. A request larger than the
// room left is split across batches with EnableLargeBatchSplitting (and
// always when it exceeds MaxBatchSize); its results are put back together
// in order.
type batcher struct {
	s    *Server
	v    *version
	sig  *savedmodel.Signature
	outs []string
	p    BatchingParameters

	mu      sync.Mutex
	queue   []*batch      // oldest first; the last may still be open
	changed chan struct{} // closed and replaced when queue or stopped change
	stopped bool
	wg      sync.WaitGroup
}

// task is one request waiting for its rows' results.
type task struct {
	ctx     context.Context
	in      map[string]*Tensor
	rows    int
	mu      sync.Mutex
	pending int // pieces not yet run
	out     map[string]*Tensor
	err     error
	done    chan struct{}
	// reading counts the task's pieces a worker has taken and is still
	// copying from in; the caller's tensors are not read once it is zero
	// and no piece is queued.
	reading sync.WaitGroup
}

// piece is rows [lo, hi) of a task, in one batch.
type piece struct {
	t      *task
	lo, hi int
}

type batch struct {
	pieces  []piece
	rows    int
	created time.Time
	closed  bool // takes no more pieces
}

func batchKey(sig *savedmodel.Signature, in map[string]*Tensor, outs []string) string {
	var b strings.Builder
	b.WriteString(sig.Key)
	for _, alias := range sortedKeys(in) {
		t := in[alias]
		fmt.Fprintf(&b, "|%s:%d", alias, t.DType)
		if len(t.Shape) > 0 {
			fmt.Fprintf(&b, "%v", t.Shape[1:])
		}
	}
	b.WriteString("|>")
	b.WriteString(strings.Join(outs, ","))
	return b.String()
}

// maxBatchers bounds the batchers of one version (one per signature,
// inner shapes and output filter): a request of a kind beyond it runs
// alone, so that clients cannot make the server start goroutines without
// end.
const maxBatchers = 32

// batcherFor returns the version's batcher for this kind of request, or
// nil when the version has as many batchers as it may.
func (s *Server) batcherFor(v *version, sig *savedmodel.Signature, in map[string]*Tensor, outs []string) *batcher {
	key := batchKey(sig, in, outs)
	v.bmu.Lock()
	defer v.bmu.Unlock()
	if b := v.batchers[key]; b != nil {
		return b
	}
	if len(v.batchers) >= maxBatchers || v.batchers == nil {
		return nil
	}
	b := &batcher{s: s, v: v, sig: sig, outs: outs, p: *s.cfg.Batching, changed: make(chan struct{})}
	b.wg.Add(b.p.NumBatchThreads)
	for range b.p.NumBatchThreads {
		go b.worker()
	}
	v.batchers[key] = b
	return b
}

// notify wakes the workers. b.mu is held.
func (b *batcher) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// rowsOf checks that every input has the same first dimension.
func rowsOf(in map[string]*Tensor) (int, error) {
	rows := -1
	for _, alias := range sortedKeys(in) {
		t := in[alias]
		if len(t.Shape) == 0 {
			return 0, InvalidArgument("Batching session Run() input tensors must have at least one dimension (input %q is a scalar)", alias)
		}
		if rows >= 0 && int(t.Shape[0]) != rows {
			return 0, InvalidArgument("Batching session Run() input tensors must have equal 0th-dimension size (input %q has %d, another %d)", alias, t.Shape[0], rows)
		}
		rows = int(t.Shape[0])
	}
	return rows, nil
}

// batched runs a request through the version's batcher for its kind, or
// alone when it cannot be batched (no rows, more rows than the whole
// queue holds, or too many kinds of request already).
func (s *Server) batched(ctx context.Context, v *version, sig *savedmodel.Signature, in map[string]*Tensor, outs []string) (map[string]*Tensor, error) {
	rows, err := rowsOf(in)
	if err != nil {
		return nil, err
	}
	p := s.cfg.Batching
	if rows == 0 || (rows+p.MaxBatchSize-1)/p.MaxBatchSize > p.MaxEnqueuedBatches {
		return s.run(ctx, v, sig, in, outs)
	}
	b := s.batcherFor(v, sig, in, outs)
	if b == nil {
		return s.run(ctx, v, sig, in, outs)
	}
	return b.submit(ctx, in, rows)
}

// submit queues the request's rows and waits for their results. If ctx
// ends first, the rows still queued are withdrawn and submit returns once
// no worker reads the request's tensors any more.
func (b *batcher) submit(ctx context.Context, in map[string]*Tensor, rows int) (map[string]*Tensor, error) {
	t := &task{ctx: ctx, in: in, rows: rows, done: make(chan struct{})}
	if err := b.enqueue(t); err != nil {
		return nil, err
	}
	select {
	case <-t.done:
		return t.out, t.err
	case <-ctx.Done():
		b.withdraw(t)
		t.reading.Wait()
		return nil, AsStatus(ctx.Err())
	}
}

// withdraw removes the task's pieces from the batches still queued.
func (b *batcher) withdraw(t *task) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := b.queue[:0]
	for _, bt := range b.queue {
		live := bt.pieces[:0]
		for _, p := range bt.pieces {
			if p.t == t {
				bt.rows -= p.hi - p.lo
			} else {
				live = append(live, p)
			}
		}
		clear(bt.pieces[len(live):])
		bt.pieces = live
		if len(live) > 0 {
			kept = append(kept, bt)
		}
	}
	clear(b.queue[len(kept):])
	b.queue = kept
	b.v.setQueued(b, len(b.queue))
	b.notify()
}

// enqueue places the task's rows, all or nothing.
func (b *batcher) enqueue(t *task) error {
	max := b.p.MaxBatchSize
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return Errorf(codes.Unavailable, "the model version is being unloaded; retry")
	}
	var open *batch
	if n := len(b.queue); n > 0 && !b.queue[n-1].closed {
		open = b.queue[n-1]
	}
	room := 0
	if open != nil {
		room = max - open.rows
	}
	split := b.p.EnableLargeBatchSplitting || t.rows > max
	// Plan the pieces: into the open batch first, then new batches.
	var sizes []int
	left := t.rows
	switch {
	case left <= room:
		sizes = []int{left}
	case split:
		if room > 0 {
			sizes = append(sizes, room)
			left -= room
		} else {
			sizes = append(sizes, 0)
		}
		for left > 0 {
			n := min(left, max)
			sizes = append(sizes, n)
			left -= n
		}
	default:
		sizes = []int{0, left}
	}
	newBatches := len(sizes) - 1
	if open == nil {
		// The first piece also needs a new batch.
		newBatches = len(sizes)
		if sizes[0] == 0 {
			sizes = sizes[1:]
			newBatches--
		}
	}
	if len(b.queue)+newBatches > b.p.MaxEnqueuedBatches {
		return Errorf(codes.Unavailable, "The batch scheduling queue to which this task was submitted is full (max_enqueued_batches %d)", b.p.MaxEnqueuedBatches)
	}
	lo := 0
	for i, n := range sizes {
		if n == 0 {
			if open != nil {
				open.closed = true
			}
			continue
		}
		var target *batch
		if i == 0 && open != nil && n <= room {
			target = open
		} else {
			if open != nil {
				open.closed = true
			}
			target = &batch{created: time.Now()}
			b.queue = append(b.queue, target)
			open = target
		}
		target.pieces = append(target.pieces, piece{t: t, lo: lo, hi: lo + n})
		target.rows += n
		if target.rows >= max {
			target.closed = true
		}
		t.pending++
		lo += n
	}
	b.v.setQueued(b, len(b.queue))
	b.notify()
	return nil
}

// worker runs batches as they become ready.
func (b *batcher) worker() {
	defer b.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		var next *batch
		for next == nil {
			if len(b.queue) == 0 {
				if b.stopped {
					b.mu.Unlock()
					return
				}
				ch := b.changed
				b.mu.Unlock()
				<-ch
				b.mu.Lock()
				continue
			}
			head := b.queue[0]
			if len(head.pieces) == 0 {
				// Withdrawn whole: drop it.
				b.queue[0] = nil
				b.queue = b.queue[1:]
				continue
			}
			wait := b.p.BatchTimeout - time.Since(head.created)
			if head.closed || wait <= 0 || b.stopped {
				next = head
				b.queue[0] = nil
				b.queue = b.queue[1:]
				for _, p := range next.pieces {
					p.t.reading.Add(1)
				}
				break
			}
			ch := b.changed
			b.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-ch:
			case <-timer.C:
			}
			timer.Stop()
			b.mu.Lock()
		}
		b.v.setQueued(b, len(b.queue))
		b.mu.Unlock()
		b.run(next)
	}
}

// run runs one batch and hands each piece its rows of the results.
func (b *batcher) run(bt *batch) {
	var live []piece
	for _, p := range bt.pieces {
		if p.t.ctx.Err() != nil {
			p.t.reading.Done()
			p.t.finish(p, nil, 0, AsStatus(p.t.ctx.Err()))
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	rows := 0
	for _, p := range live {
		rows += p.hi - p.lo
	}
	padded := rows
	for _, a := range b.p.AllowedBatchSizes {
		if a >= rows {
			padded = a
			break
		}
	}
	in := make(map[string]*Tensor, len(live[0].t.in))
	for alias, first := range live[0].t.in {
		parts := make([]*Tensor, 0, len(live)+1)
		for _, p := range live {
			parts = append(parts, sliceRows(p.t.in[alias], p.lo, p.hi))
		}
		if padded > rows {
			pad := sliceRows(first, live[0].lo, live[0].lo+1)
			parts = append(parts, repeatRows(pad, padded-rows))
		}
		in[alias] = concatRows(parts, true)
	}
	// The batch has its own copy: the requests' tensors are free.
	for _, p := range live {
		p.t.reading.Done()
	}
	b.s.metrics.batch.WithLabelValues(b.v.model, strconv.FormatInt(b.v.n, 10)).Observe(float64(padded))
	ctx, cancel := context.WithTimeout(b.s.ctx, b.s.cfg.RequestTimeout)
	out, err := b.s.run(ctx, b.v, b.sig, in, b.outs)
	cancel()
	if err == nil {
		for alias, t := range out {
			if len(t.Shape) == 0 || int(t.Shape[0]) != padded {
				err = Errorf(codes.Internal, "Batched output tensor %q has %v rows for a batch of %d; this signature cannot be batched", alias, t.Shape, padded)
				break
			}
		}
	}
	off := 0
	for _, p := range live {
		p.t.finish(p, out, off, err)
		off += p.hi - p.lo
	}
}

// finish stores a piece's rows [off, off+n) of the batch's outputs.
func (t *task) finish(p piece, out map[string]*Tensor, off int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == 0 {
		return
	}
	if err != nil && t.err == nil {
		t.err = err
	}
	if t.err == nil {
		n := p.hi - p.lo
		if t.out == nil {
			t.out = make(map[string]*Tensor, len(out))
			for alias, o := range out {
				shape := slices.Clone(o.Shape)
				shape[0] = int64(t.rows)
				x := &Tensor{DType: o.DType, Shape: shape}
				if o.DType.Size() > 0 {
					x.Data = make([]byte, rowWidth(o)*t.rows)
				} else {
					x.Strings = make([][]byte, int(x.NumElements()))
				}
				t.out[alias] = x
			}
		}
		for alias, o := range out {
			if !slices.Equal(o.Shape[1:], t.out[alias].Shape[1:]) {
				t.err = Errorf(codes.FailedPrecondition, "output %q has rows of shape %v in one batch and %v in another: the request's rows cannot be split across batches (send smaller requests, or turn enable_large_batch_splitting off)", alias, o.Shape[1:], t.out[alias].Shape[1:])
				break
			}
		}
		if t.err == nil {
			for alias, o := range out {
				copyRows(t.out[alias], p.lo, o, off, n)
			}
		}
	}
	t.pending--
	if t.pending == 0 {
		if t.err != nil {
			t.out = nil
		}
		close(t.done)
	}
}

// rowWidth is the bytes (or strings) of one row of t.
func rowWidth(t *Tensor) int {
	n := 1
	for _, d := range t.Shape[1:] {
		n *= int(d)
	}
	if sz := t.DType.Size(); sz > 0 {
		return n * sz
	}
	return n
}

func sliceRows(t *Tensor, lo, hi int) *Tensor {
	shape := slices.Clone(t.Shape)
	shape[0] = int64(hi - lo)
	w := rowWidth(t)
	x := &Tensor{DType: t.DType, Shape: shape}
	if t.DType.Size() > 0 {
		x.Data = t.Data[lo*w : hi*w]
	} else {
		x.Strings = t.Strings[lo*w : hi*w]
	}
	return x
}

func repeatRows(row *Tensor, n int) *Tensor {
	parts := make([]*Tensor, n)
	for i := range parts {
		parts[i] = row
	}
	return concatRows(parts, false)
}

// concatRows joins tensors along the first dimension; with always, a
// single part is copied too.
func concatRows(parts []*Tensor, always bool) *Tensor {
	if len(parts) == 1 && !always {
		return parts[0]
	}
	shape := slices.Clone(parts[0].Shape)
	shape[0] = 0
	size := 0
	for _, p := range parts {
		shape[0] += p.Shape[0]
		size += len(p.Data) + len(p.Strings)
	}
	x := &Tensor{DType: parts[0].DType, Shape: shape}
	if x.DType.Size() > 0 {
		x.Data = make([]byte, 0, size)
		for _, p := range parts {
			x.Data = append(x.Data, p.Data...)
		}
	} else {
		x.Strings = make([][]byte, 0, size)
		for _, p := range parts {
			x.Strings = append(x.Strings, p.Strings...)
		}
	}
	return x
}

// copyRows copies n rows of src from row so into dst at row do.
func copyRows(dst *Tensor, do int, src *Tensor, so, n int) {
	w := rowWidth(src)
	if src.DType.Size() > 0 {
		copy(dst.Data[do*w:(do+n)*w], src.Data[so*w:(so+n)*w])
	} else {
		copy(dst.Strings[do*w:(do+n)*w], src.Strings[so*w:(so+n)*w])
	}
}

// stop ends the workers once the queue is empty (its batches still run).
func (b *batcher) stop() {
	b.mu.Lock()
	b.stopped = true
	b.notify()
	b.mu.Unlock()
	b.wg.Wait()
}
