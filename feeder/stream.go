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
	"github.com/gotflow/gotflow/tf"
)

// StreamConfig configures NewStream.
type StreamConfig struct {
	// Plan converts the dataset's records (its schema is the dataset's).
	Plan *Plan
	// BatchRows is the rows per batch (default 32); Batches, when set,
	// gives the size of every batch instead (see arrowio.BatchLayout) and
	// bounds the stream to their sum.
	BatchRows int
	Batches   []int
	// Readers is how many pieces are decoded at once (default 1); batches
	// come out in the same order whatever it is.
	Readers int
	// ShuffleBytes is the size of the shuffle buffer. It holds two windows
	// of half its size — one gathered into batches while the next is read
	// — and the rows of whole consecutive batches in a window are permuted
	// together. 0 keeps the pieces' row order.
	ShuffleBytes int64
	// ShuffleRows permutes the rows inside each piece.
	ShuffleRows bool
	// Seed seeds the window and row permutations (derive it from the
	// job's seed, the epoch and the worker for a new order every epoch).
	Seed uint64
	// Prefetch is how many ready batches wait for the consumer (default 2).
	Prefetch int
	// Skip starts the stream at batch Skip, as a stream that delivered
	// Skip batches would continue: windows before it are not read.
	Skip int
	// Cache, when set, keeps converted units in memory across streams:
	// the first stream reads each unit from its file, later ones from the
	// cache (the data is then held whole, like tf.data's cache()).
	Cache *UnitCache
	// Mem is the allocator for decoded records and converted rows
	// (default: a C allocator). Limit, when positive, is enforced on it:
	// an allocation beyond it fails the stream with ErrMemoryBudget.
	Mem   memory.Allocator
	Limit int64
}

// ErrMemoryBudget is wrapped when a stream would hold more memory than
// its limit.
var ErrMemoryBudget = arrowio.ErrMemoryBudget

// StreamBatch is one batch of a Stream: a tensor per plan input, in
// mapping order. Close frees the tensors.
type StreamBatch struct {
	Tensors []*tf.Tensor
	Rows    int
	Index   int // position in the stream, counting skipped batches
}

// Close frees the batch's tensors. It is idempotent.
func (b *StreamBatch) Close() error {
	for _, t := range b.Tensors {
		t.Close()
	}
	b.Tensors = nil
	return nil
}

// StreamStats counts what a stream did.
type StreamStats struct {
	Pieces   int64 // pieces decoded (or taken from the cache)
	Rows     int64 // rows delivered in batches
	Batches  int64
	Windows  int64
	Peak     int64 // the allocator's peak bytes (with a Limit or a BudgetAllocator)
	Resident int64 // converted bytes held by the cache
}

// Stream reads the rows of pieces, in order, as batches of tensors: Readers
// goroutines decode and convert pieces ahead of the consumer (in order),
// rows are permuted inside each piece (ShuffleRows) and inside each window
// of ShuffleBytes (an index permutation; batches are gathered by index, the
// rows are never concatenated), and Prefetch batches wait ready. Memory is
// bounded by Bound(d, cfg); with Limit set, the allocator enforces it.
//
// The same pieces, configuration and data give byte-identical batches.
type Stream struct {
	d       *arrowio.StreamDataset
	units   []arrowio.Unit
	cfg     StreamConfig
	out     chan streamItem
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	budget  *BudgetAllocator
	slots   chan struct{}
	err     error
	stats   struct{ pieces, rows, batches, windows atomic.Int64 }
	closeMu sync.Mutex
	closed  bool
}

type streamItem struct {
	b   *StreamBatch
	err error
}

// window is a run of whole batches permuted together.
type window struct {
	firstBatch int
	sizes      []int
	lo, hi     int64 // rows of the stream
}

// rowBytes estimates the converted bytes of one row of d under plan.
func rowBytes(d *arrowio.StreamDataset, p *Plan) int64 {
	var n int64
	var avg int64 = 64
	if rows := d.NumRows(); rows > 0 {
		var total int64
		for _, u := range d.Units() {
			total += u.Bytes
		}
		avg = max(total/rows, 1)
	}
	for i := range p.cols {
		c := &p.cols[i]
		switch {
		case c.kind == kindString:
			n += avg + 24
		case c.rowElems > 0:
			n += c.rowElems * int64(c.dtype.Size())
		default:
			n += avg
		}
	}
	return max(n, 1)
}

// decoderOverhead is what a Parquet column reader allocates besides the
// values: its buffered input stream and a decompressed page.
const decoderOverhead = 1 << 20

// Bound computes the memory a Stream over d with cfg holds at most, from
// the dataset's metadata.
func Bound(d *arrowio.StreamDataset, cfg StreamConfig) MemoryBound {
	cfg = cfg.withDefaults()
	m := MemoryBound{Readers: cfg.Readers, Shuffle: cfg.ShuffleBytes, Prefetch: cfg.Prefetch, RowBytes: rowBytes(d, cfg.Plan)}
	for _, u := range d.Units() {
		if u.Bytes > m.LargestUnit {
			m.LargestUnit = u.Bytes
		}
		m.UnitRows = max(m.UnitRows, u.Rows)
	}
	m.Decoder = decoderOverhead * int64(len(cfg.Plan.cols)+1)
	batch := int64(cfg.BatchRows)
	for _, s := range cfg.Batches {
		batch = max(batch, int64(s))
	}
	m.BatchBytes = batch * m.RowBytes
	// Each reader holds one decoded record (a share of its unit) and the
	// converted piece; the two half-buffer windows hold their rows plus
	// the pieces cut at their ends; the queue holds Prefetch batches and
	// one in the making.
	if m.Shuffle <= 0 {
		m.Shuffle = 2 * orderedWindow
	}
	// A window never holds more rows than the dataset.
	m.Shuffle = min(m.Shuffle, d.NumRows()*m.RowBytes)
	m.Total = int64(m.Readers)*m.perReader() + m.Shuffle + 3*m.UnitRows*m.RowBytes + int64(m.Prefetch+1)*m.BatchBytes
	return m
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.BatchRows <= 0 {
		c.BatchRows = 32
	}
	if c.Readers <= 0 {
		c.Readers = 1
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 2
	}
	return c
}

// CheckBudget returns an error when a unit of d alone needs more memory
// than shuffle bytes allow (a window must hold at least one batch, and the
// pieces it is cut from), naming the unit, the bound and how to raise it.
func CheckBudget(d *arrowio.StreamDataset, cfg StreamConfig) error {
	cfg = cfg.withDefaults()
	if cfg.ShuffleBytes <= 0 {
		return nil
	}
	rb := rowBytes(d, cfg.Plan)
	for _, u := range d.Units() {
		if need := u.Rows * rb; need > cfg.ShuffleBytes {
			where := u.String()
			return fmt.Errorf("feeder: %s holds %d rows, %s once converted, more than the %s shuffle buffer: %w; raise the shuffle buffer to at least %s, or write the data with smaller row groups",
				where, u.Rows, FormatBytes(need), FormatBytes(cfg.ShuffleBytes), ErrMemoryBudget, FormatBytes(need))
		}
	}
	return nil
}

// NewStream starts reading pieces (rows of d, in order); see Stream. The
// stream owns its goroutines until Close.
func NewStream(ctx context.Context, d *arrowio.StreamDataset, pieces []arrowio.Piece, cfg StreamConfig) (*Stream, error) {
	cfg = cfg.withDefaults()
	if cfg.Plan == nil {
		return nil, errors.New("feeder: Stream needs a Plan")
	}
	if !cfg.Plan.schema.Equal(d.Schema()) {
		return nil, fmt.Errorf("feeder: the plan was made for schema %s, the dataset has %s", cfg.Plan.schema, d.Schema())
	}
	units := d.Units()
	for _, p := range pieces {
		if p.Unit < 0 || p.Unit >= len(units) || p.Start < 0 || p.End > units[p.Unit].Rows || p.Start > p.End {
			return nil, fmt.Errorf("feeder: piece %+v is outside the dataset's %d units", p, len(units))
		}
	}
	total := arrowio.RowsOf(pieces)
	sizes := cfg.Batches
	if sizes == nil {
		sizes = arrowio.BatchLayout(total, 0, cfg.BatchRows)
	} else {
		var sum int64
		for _, s := range sizes {
			if s < 1 {
				return nil, fmt.Errorf("feeder: batch sizes must be >= 1, got %v", sizes)
			}
			sum += int64(s)
		}
		if sum > total {
			return nil, fmt.Errorf("feeder: %d batches of %d rows in all, but the pieces hold %d rows", len(sizes), sum, total)
		}
	}
	if cfg.Skip < 0 || cfg.Skip > len(sizes) {
		return nil, fmt.Errorf("feeder: skip %d batches of %d", cfg.Skip, len(sizes))
	}
	mem := cfg.Mem
	if mem == nil {
		mem = defaultAllocator()
	}
	budget, ok := mem.(*BudgetAllocator)
	if !ok || cfg.Limit > 0 {
		budget = NewBudgetAllocator(mem, cfg.Limit)
	}
	// Two windows of half the buffer: one is gathered into batches while
	// the next is read. Without a shuffle a window only groups batches, to
	// hand work over in pieces of a few MiB rather than batch by batch.
	winBytes := cfg.ShuffleBytes / 2
	if cfg.ShuffleBytes <= 0 {
		winBytes = orderedWindow
	}
	wins := planWindows(sizes, winBytes, rowBytes(d, cfg.Plan))
	// The first window with a batch to deliver, and the first piece it needs.
	w0 := 0
	for w0 < len(wins) && wins[w0].firstBatch+len(wins[w0].sizes) <= cfg.Skip {
		w0++
	}
	wins = wins[w0:]
	var startRow int64
	if len(wins) > 0 {
		startRow = wins[0].lo
	}
	var seq []seqPiece
	var at int64
	for i, p := range pieces {
		if len(wins) > 0 && at+p.Rows() > startRow && at < wins[len(wins)-1].hi {
			seq = append(seq, seqPiece{Piece: p, index: i, at: at})
		}
		at += p.Rows()
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{d: d, units: units, cfg: cfg, out: make(chan streamItem, cfg.Prefetch), cancel: cancel, budget: budget}
	chunks := s.startReaders(ctx, seq)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.assemble(ctx, wins, chunks) // its gatherer closes s.out
	}()
	return s, nil
}

// seqPiece is a piece with its place in the stream.
type seqPiece struct {
	arrowio.Piece
	index int   // position in the stream's pieces (seeds its row permutation)
	at    int64 // the stream row of its first row
}

// orderedWindow is the window of a stream without a shuffle buffer.
const orderedWindow = 4 << 20

// planWindows groups the batches into windows of at most windowBytes
// converted bytes (at least one batch each).
func planWindows(sizes []int, windowBytes, rowBytes int64) []window {
	var out []window
	var at int64
	for i := 0; i < len(sizes); {
		w := window{firstBatch: i, lo: at}
		for i < len(sizes) {
			n := int64(sizes[i])
			if len(w.sizes) > 0 && (w.hi-w.lo+n)*rowBytes > windowBytes {
				break
			}
			if len(w.sizes) == 0 {
				w.hi = w.lo
			}
			w.sizes = append(w.sizes, sizes[i])
			w.hi += n
			i++
		}
		at = w.hi
		out = append(out, w)
	}
	return out
}

// chunkData is the converted rows of one unit or piece: a byte slice per
// fixed-width column, values per string column.
type chunkData struct {
	rows   int
	cols   [][]byte
	strs   [][][]byte
	widths []int // list width per column (0: not a list)
	// aliased marks the columns read in place from rec, the decoded record
	// the chunk keeps instead of a copy.
	aliased []bool
	rec     arrow.RecordBatch
	mem     *BudgetAllocator
	refs    atomic.Int32
}

func (c *chunkData) release() {
	if c.refs.Add(-1) == 0 {
		for i, b := range c.cols {
			if b != nil && (c.aliased == nil || !c.aliased[i]) {
				c.mem.Free(b)
			}
			c.cols[i] = nil
		}
		if c.rec != nil {
			c.rec.Release()
			c.rec = nil
		}
	}
}

// aliasInto points cd's columns at rows [off, off+cd.rows) of rec where
// the values can be read in place (fixed width, the tensor's dtype, no
// nulls), keeping a reference on rec; convertRowsTo converts the others.
func (p *Plan) aliasInto(rec arrow.RecordBatch, off int, cd *chunkData) {
	for i := range p.cols {
		c := &p.cols[i]
		if c.kind != kindFixed || !c.same || cd.rows == 0 {
			continue
		}
		col := rec.Column(c.index)
		if c.hasNulls(col, off, cd.rows) {
			continue
		}
		var buf [4]level
		levels, err := c.walk(col, off, cd.rows, buf[:0])
		if err != nil {
			continue // convertRowsTo reports it
		}
		leaf := levels[len(levels)-1]
		vals, err := c.leafBytes(leaf.d, leaf.start, leaf.count)
		if err != nil {
			continue
		}
		w := c.dtype.Size()
		if cd.aliased == nil {
			cd.aliased = make([]bool, len(p.cols))
		}
		cd.cols[i], cd.aliased[i] = vals[leaf.start*w:(leaf.start+leaf.count)*w], true
		if cd.rec == nil {
			rec.Retain()
			cd.rec = rec
		}
	}
}

// chunk is a view of rows [off, off+rows) of a chunkData, holding one
// reference, with an optional permutation of its rows.
type chunk struct {
	data *chunkData
	off  int
	rows int
	perm []int32
	at   int64 // stream row of its first row
}

// startReaders decodes and converts the pieces of seq on Readers
// goroutines and delivers the chunks in order.
func (s *Stream) startReaders(ctx context.Context, seq []seqPiece) <-chan streamChunk {
	k := s.cfg.Readers
	// At most k converted pieces are on their way to the assembler: a
	// reader takes a slot before it converts one, the assembler frees it
	// when it takes the piece over.
	s.slots = make(chan struct{}, k)
	outs := make([]chan streamChunk, k)
	for i := range outs {
		outs[i] = make(chan streamChunk)
	}
	for g := range k {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(outs[g])
			for i := g; i < len(seq); i += k {
				select {
				case s.slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				c, err := s.readPiece(ctx, seq[i])
				select {
				case outs[g] <- streamChunk{c, err}:
				case <-ctx.Done():
					if c != nil {
						c.data.release()
					}
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	merged := make(chan streamChunk)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(merged)
		for i := range seq {
			sc, ok := <-outs[i%k]
			if !ok {
				return
			}
			select {
			case merged <- sc:
			case <-ctx.Done():
				if sc.c != nil {
					sc.c.data.release()
				}
				// Drain so that the readers end.
				for _, o := range outs {
					for sc := range o {
						if sc.c != nil {
							sc.c.data.release()
						}
					}
				}
				return
			}
			if sc.err != nil {
				return
			}
		}
	}()
	return merged
}

type streamChunk struct {
	c   *chunk
	err error
}

// readPiece converts one piece (from the cache when there is one).
func (s *Stream) readPiece(ctx context.Context, sp seqPiece) (*chunk, error) {
	s.stats.pieces.Add(1)
	var data *chunkData
	off := int(sp.Start)
	var err error
	if s.cfg.Cache != nil {
		data, err = s.cfg.Cache.get(ctx, s, sp.Unit)
	} else {
		data, err = s.convertUnit(ctx, sp.Unit, sp.Start, sp.End)
		off = 0
	}
	if err != nil {
		return nil, err
	}
	c := &chunk{data: data, off: off, rows: int(sp.Rows()), at: sp.at}
	if s.cfg.ShuffleRows && c.rows > 1 {
		r := rand.New(rand.NewPCG(s.cfg.Seed^0xbb67ae8584caa73b, uint64(sp.index)+1))
		c.perm = make([]int32, c.rows)
		for i := range c.perm {
			c.perm[i] = int32(i)
		}
		r.Shuffle(len(c.perm), func(i, j int) { c.perm[i], c.perm[j] = c.perm[j], c.perm[i] })
	}
	return c, nil
}

// convertUnit reads rows [start, end) of a unit and converts them.
func (s *Stream) convertUnit(ctx context.Context, ui int, start, end int64) (cd *chunkData, err error) {
	u := s.units[ui]
	p := s.cfg.Plan
	opts := []arrowio.SourceOption{arrowio.WithAllocator(s.budget)}
	if rb := u.Bytes / max(u.Rows, 1); rb > 0 {
		opts = append(opts, arrowio.ReadRows(int(max(1, min(64*1024, (8<<20)/rb))))) // decoded records of about 8 MiB
	}
	cd = &chunkData{rows: int(end - start), cols: make([][]byte, len(p.cols)), strs: make([][][]byte, len(p.cols)), widths: make([]int, len(p.cols)), mem: s.budget}
	cd.refs.Store(1)
	defer func() {
		if err != nil {
			cd.release()
			cd = nil
		}
	}()
	defer recovered(u.File, &err)
	var at int64 // unit row of the next record's first row
	pos := 0     // rows converted so far
	err = s.d.ReadUnit(ctx, ui, func(rec arrow.RecordBatch) error {
		n := rec.NumRows()
		lo, hi := max(start-at, 0), min(end-at, n)
		at += n
		if hi <= lo {
			return nil
		}
		if err := p.checkSchema(rec); err != nil {
			return err
		}
		if pos == 0 && int(hi-lo) == cd.rows {
			p.aliasInto(rec, int(lo), cd) // the record holds the whole piece
		}
		if err := p.convertRowsTo(rec, int(lo), int(hi-lo), cd, pos, at-n+lo); err != nil {
			return fmt.Errorf("feeder: %s: %w", u.String(), err)
		}
		pos += int(hi - lo)
		return nil
	}, opts...)
	if err == nil && pos != cd.rows {
		err = fmt.Errorf("feeder: %s holds %d rows now, its metadata said %d: the data changed while training", u.String(), at, u.Rows)
	}
	return cd, err
}

// recovered turns a panic while reading or converting a unit (malformed
// input, or a BudgetAllocator refusing memory) into an error.
func recovered(what string, err *error) {
	if r := recover(); r != nil {
		if e, ok := r.(error); ok && errors.Is(e, ErrMemoryBudget) {
			*err = fmt.Errorf("feeder: %s: %w", what, e)
			return
		}
		*err = fmt.Errorf("feeder: %s: %w: %v", what, ErrMalformed, r)
	}
}

// convertRowsTo converts rows [off, off+n) of rec into cd at row pos.
func (p *Plan) convertRowsTo(rec arrow.RecordBatch, off, n int, cd *chunkData, pos int, rowBase int64) error {
	for i := range p.cols {
		c := &p.cols[i]
		col := rec.Column(c.index)
		switch c.kind {
		case kindString:
			if cd.strs[i] == nil {
				cd.strs[i] = make([][]byte, cd.rows*int(max(c.rowElems, 1)))
			}
			per := int(max(c.rowElems, 1))
			vals := make([][]byte, n*per)
			if err := c.fillStrings(col, off, n, vals, rowBase); err != nil {
				return err
			}
			for j, v := range vals {
				cd.strs[i][pos*per+j] = append([]byte(nil), v...)
			}
		case kindList:
			width, err := c.listWidth([]segment{{rec: rec, off: off, n: n}})
			if err != nil {
				return err
			}
			if cd.cols[i] == nil {
				cd.widths[i] = width
				if cd.cols[i], err = cd.mem.alloc(cd.rows * width * c.dtype.Size()); err != nil {
					return err
				}
			} else if width != cd.widths[i] {
				return colErr(c.in.Column, rowBase, ErrShape, "lists of %d and %d values in one unit; give the input a Length to pad or truncate them", cd.widths[i], width)
			}
			rb := width * c.dtype.Size()
			if err := c.fillList(col, off, n, width, cd.cols[i][pos*rb:(pos+n)*rb], rowBase); err != nil {
				return err
			}
		default:
			if cd.aliased != nil && cd.aliased[i] {
				continue
			}
			rb := int(c.rowElems) * c.dtype.Size()
			if cd.cols[i] == nil {
				var err error
				if cd.cols[i], err = cd.mem.alloc(max(cd.rows*rb, 1)); err != nil {
					return err
				}
			}
			if err := c.fillFixed(col, off, n, cd.cols[i][pos*rb:(pos+n)*rb], rowBase); err != nil {
				return err
			}
		}
	}
	return nil
}

// windowJob is a permuted window handed to the gatherer; it holds a
// reference on each of its chunks.
type windowJob struct {
	w      window
	refs   []streamRow
	chunks []*chunk
	err    error
}

// assemble collects the windows' chunks and permutes their rows; a
// gatherer goroutine turns each permuted window into batches while the
// next window's chunks are collected (so the consumer never waits for a
// whole window to be read, and at most two windows are held).
func (s *Stream) assemble(ctx context.Context, wins []window, chunks <-chan streamChunk) {
	jobs := make(chan windowJob)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.out)
		s.gatherWindows(ctx, jobs)
	}()
	var held []*chunk // chunks overlapping the current and later windows, in order
	defer func() {
		close(jobs)
		for _, c := range held {
			c.data.release()
		}
		for sc := range chunks { // the gatherer cancels when it stops early
			if sc.c != nil {
				sc.c.data.release()
			}
		}
	}()
	hand := func(j windowJob) bool {
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			for _, c := range j.chunks {
				c.data.release()
			}
			return false
		}
	}
	for wi, w := range wins {
		for len(held) == 0 || held[len(held)-1].at+int64(held[len(held)-1].rows) < w.hi {
			sc, ok := <-chunks
			if !ok {
				err := ctx.Err()
				if err == nil {
					err = fmt.Errorf("feeder: stream ended at row %d of window %d (rows %d to %d)", s.rowsHeld(held), wi, w.lo, w.hi)
				}
				hand(windowJob{err: err})
				return
			}
			<-s.slots
			if sc.err != nil {
				hand(windowJob{err: sc.err})
				return
			}
			held = append(held, sc.c)
		}
		s.stats.windows.Add(1)
		// Stream rows [lo, hi) → (chunk, row) in order, then permuted.
		job := windowJob{w: w, refs: make([]streamRow, 0, int(w.hi-w.lo))}
		for _, c := range held {
			lo, hi := max(w.lo-c.at, 0), min(w.hi-c.at, int64(c.rows))
			if hi <= lo {
				continue
			}
			c.data.refs.Add(1)
			job.chunks = append(job.chunks, c)
			for r := lo; r < hi; r++ {
				job.refs = append(job.refs, streamRow{c, int32(r)})
			}
		}
		if s.cfg.ShuffleBytes > 0 {
			r := rand.New(rand.NewPCG(s.cfg.Seed^0x3c6ef372fe94f82b, uint64(w.firstBatch)+1))
			r.Shuffle(len(job.refs), func(i, j int) { job.refs[i], job.refs[j] = job.refs[j], job.refs[i] })
		}
		if !hand(job) {
			return
		}
		// Chunks that end inside this window are the job's now.
		keep := held[:0]
		for _, c := range held {
			if c.at+int64(c.rows) <= w.hi {
				c.data.release()
				continue
			}
			keep = append(keep, c)
		}
		clear(held[len(keep):])
		held = keep
	}
}

// gatherWindows sends the batches of each window job in order, then frees
// the job's chunks. It stops the stream at the first error.
func (s *Stream) gatherWindows(ctx context.Context, jobs <-chan windowJob) {
	failed := false
	send := func(it streamItem) bool {
		select {
		case s.out <- it:
			return true
		case <-ctx.Done():
			if it.b != nil {
				it.b.Close()
			}
			return false
		}
	}
	for j := range jobs {
		if !failed {
			failed = !s.gatherJob(j, send)
			if failed {
				s.cancel() // stop the readers and the assembler
			}
		}
		for _, c := range j.chunks {
			c.data.release()
		}
	}
}

func (s *Stream) gatherJob(j windowJob, send func(streamItem) bool) bool {
	if j.err != nil {
		send(streamItem{err: j.err})
		return false
	}
	pos := 0
	for k, size := range j.w.sizes {
		idx := j.w.firstBatch + k
		rows := j.refs[pos : pos+size]
		pos += size
		if idx < s.cfg.Skip {
			continue
		}
		b, err := s.gather(rows)
		if err != nil {
			send(streamItem{err: err})
			return false
		}
		b.Index = idx
		s.stats.batches.Add(1)
		s.stats.rows.Add(int64(size))
		if !send(streamItem{b: b}) {
			return false
		}
	}
	return true
}

func (s *Stream) rowsHeld(held []*chunk) int64 {
	if len(held) == 0 {
		return 0
	}
	return held[len(held)-1].at + int64(held[len(held)-1].rows)
}

type streamRow struct {
	c   *chunk
	row int32
}

func (r streamRow) physical() int {
	if r.c.perm != nil {
		return r.c.off + int(r.c.perm[r.row])
	}
	return r.c.off + int(r.row)
}

// gather builds a batch's tensors from rows (index take: one copy per row
// run, no concatenation).
func (s *Stream) gather(rows []streamRow) (*StreamBatch, error) {
	p := s.cfg.Plan
	b := &StreamBatch{Rows: len(rows), Tensors: make([]*tf.Tensor, 0, len(p.cols))}
	for i := range p.cols {
		c := &p.cols[i]
		var t *tf.Tensor
		var err error
		switch c.kind {
		case kindString:
			per := int(max(c.rowElems, 1))
			vals := make([][]byte, 0, len(rows)*per)
			for _, r := range rows {
				ph := r.physical()
				vals = append(vals, r.c.data.strs[i][ph*per:(ph+1)*per]...)
			}
			shape := append([]int64{int64(len(rows))}, c.rowShape...)
			t, err = tf.NewStringTensor(shape, vals)
		default:
			width := int(c.rowElems)
			var shape []int64
			if c.kind == kindList {
				width = rows[0].c.data.widths[i]
				for _, r := range rows {
					if r.c.data.widths[i] != width {
						b.Close()
						return nil, colErr(c.in.Column, -1, ErrShape, "lists of %d and %d values in one batch; give the input a Length to pad or truncate them", width, r.c.data.widths[i])
					}
				}
				shape = []int64{int64(len(rows)), int64(width)}
			} else {
				shape = append([]int64{int64(len(rows))}, c.rowShape...)
			}
			rb := width * c.dtype.Size()
			t, err = tf.NewTensorFill(c.dtype, shape, func(dst []byte) error {
				for j := 0; j < len(rows); {
					// One copy for a run of consecutive rows of one chunk.
					r0 := rows[j]
					ph := r0.physical()
					k := j + 1
					for k < len(rows) && rows[k].c == r0.c && rows[k].physical() == ph+(k-j) {
						k++
					}
					src := r0.c.data.cols[i]
					copy(dst[j*rb:k*rb], src[ph*rb:(ph+k-j)*rb])
					j = k
				}
				return nil
			})
		}
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("feeder: batch of %s: %w", c.in.Column, err)
		}
		b.Tensors = append(b.Tensors, t)
	}
	return b, nil
}

// Next returns the next batch, or io.EOF after the last. The caller closes
// the batch.
func (s *Stream) Next(ctx context.Context) (*StreamBatch, error) {
	if s.err != nil {
		return nil, s.err
	}
	select {
	case it, ok := <-s.out:
		if !ok {
			s.err = io.EOF
			return nil, io.EOF
		}
		if it.err != nil {
			s.err = it.err
			return nil, it.err
		}
		return it.b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stats returns the stream's counters.
func (s *Stream) Stats() StreamStats {
	st := StreamStats{Pieces: s.stats.pieces.Load(), Rows: s.stats.rows.Load(), Batches: s.stats.batches.Load(), Windows: s.stats.windows.Load(), Peak: s.budget.Peak()}
	if s.cfg.Cache != nil {
		st.Resident = s.cfg.Cache.Bytes()
	}
	return st
}

// Close stops the stream's goroutines and frees what it holds. It is
// idempotent.
func (s *Stream) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.cancel()
	for it := range s.out {
		if it.b != nil {
			it.b.Close()
		}
	}
	s.wg.Wait()
	return nil
}

// UnitCache keeps converted units in memory for streams over the same
// dataset and plan (StreamConfig.Cache): the InMemory mode of training.
// It is safe for concurrent use; Close frees what it holds.
type UnitCache struct {
	mu    sync.Mutex
	units map[int]*cacheEntry
	bytes atomic.Int64
}

type cacheEntry struct {
	once sync.Once
	data *chunkData
	err  error
}

// NewUnitCache returns an empty cache.
func NewUnitCache() *UnitCache { return &UnitCache{units: map[int]*cacheEntry{}} }

func (uc *UnitCache) get(ctx context.Context, s *Stream, unit int) (*chunkData, error) {
	uc.mu.Lock()
	e := uc.units[unit]
	if e == nil {
		e = &cacheEntry{}
		uc.units[unit] = e
	}
	uc.mu.Unlock()
	e.once.Do(func() {
		var d *chunkData
		d, e.err = s.convertUnit(ctx, unit, 0, s.units[unit].Rows)
		if e.err == nil {
			e.data = d
			for _, c := range d.cols {
				uc.bytes.Add(int64(len(c)))
			}
		}
	})
	if e.err != nil {
		uc.mu.Lock()
		if uc.units[unit] == e { // let a later stream try again
			delete(uc.units, unit)
		}
		uc.mu.Unlock()
		return nil, e.err
	}
	e.data.refs.Add(1)
	return e.data, nil
}

// Bytes returns the converted bytes the cache holds.
func (uc *UnitCache) Bytes() int64 { return uc.bytes.Load() }

// Close frees the cached units once no stream uses them.
func (uc *UnitCache) Close() error {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	for k, e := range uc.units {
		if e.data != nil {
			e.data.release()
		}
		delete(uc.units, k)
	}
	uc.bytes.Store(0)
	return nil
}

// BudgetAllocator wraps an allocator, counts the bytes it holds and their
// peak, and refuses allocations beyond its limit (when positive) with a
// panic wrapping ErrMemoryBudget, which arrowio's sources return as an
// error.
type BudgetAllocator struct {
	mem   memory.Allocator
	limit int64
	cur   atomic.Int64
	peak  atomic.Int64
}

// NewBudgetAllocator wraps mem with a limit (0: none).
func NewBudgetAllocator(mem memory.Allocator, limit int64) *BudgetAllocator {
	if b, ok := mem.(*BudgetAllocator); ok && limit <= 0 {
		return b
	}
	return &BudgetAllocator{mem: mem, limit: limit}
}

func (b *BudgetAllocator) reserve(n int64) error {
	c := b.cur.Add(n)
	if b.limit > 0 && c > b.limit {
		b.cur.Add(-n)
		return fmt.Errorf("%w: %s more would make %s, over the limit of %s", ErrMemoryBudget, FormatBytes(n), FormatBytes(c), FormatBytes(b.limit))
	}
	for {
		p := b.peak.Load()
		if c <= p || b.peak.CompareAndSwap(p, c) {
			return nil
		}
	}
}

// alloc allocates n bytes or returns an error beyond the limit.
func (b *BudgetAllocator) alloc(n int) ([]byte, error) {
	if err := b.reserve(int64(n)); err != nil {
		return nil, err
	}
	return b.mem.Allocate(n), nil
}

// Allocate implements memory.Allocator.
func (b *BudgetAllocator) Allocate(n int) []byte {
	if err := b.reserve(int64(n)); err != nil {
		panic(err)
	}
	return b.mem.Allocate(n)
}

// Reallocate implements memory.Allocator.
func (b *BudgetAllocator) Reallocate(n int, old []byte) []byte {
	if err := b.reserve(int64(n - len(old))); err != nil {
		panic(err)
	}
	return b.mem.Reallocate(n, old)
}

// Free implements memory.Allocator.
func (b *BudgetAllocator) Free(buf []byte) {
	b.cur.Add(-int64(len(buf)))
	b.mem.Free(buf)
}

// InUse returns the bytes allocated and not freed.
func (b *BudgetAllocator) InUse() int64 { return b.cur.Load() }

// Peak returns the most bytes held at once.
func (b *BudgetAllocator) Peak() int64 { return b.peak.Load() }
