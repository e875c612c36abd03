package ps

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/pspb"
)

// The write-ahead log makes every acknowledged change durable before its
// reply is sent: a shard killed at any moment comes back, from its last
// snapshot plus the log, with every update a worker saw acknowledged.
//
// Each change (a registration, an assignment, an applied push, a completed
// Sync step) is appended as one record, numbered by a log sequence number
// (LSN), under the same lock that applies it, so the log's order is the
// order of application. A committer goroutine writes what accumulated and
// fsyncs it once for all the changes waiting (group commit); a push is
// answered when its record is durable. A snapshot records the last LSN it
// contains; restoring replays the records after it, through the same
// optimizer code, so the state is bit for bit what it was.
//
// Files: <base>.wal.<first LSN> segments beside the snapshot. After a
// snapshot the log moves to a new segment and the segments whose records
// the snapshot holds are deleted.

// Record kinds.
const (
	walRegister byte = 1 + iota
	walAssign
	walGradient
	walSyncStep
)

// walHasPositions, set in a record's kind byte, says that the workers'
// input positions (PushHeader.position) follow its keys.
const walHasPositions byte = 0x80

// walPosition is a worker's input position, recorded with its update.
type walPosition struct {
	worker   string
	position []byte
}

// maxWALRecord bounds a record read back (a corrupt length must not make
// the reader allocate it).
const maxWALRecord = 1 << 31

type wal struct {
	dir, base string

	mu       sync.Mutex // guards buf, appended, err
	buf      []byte
	appended uint64 // LSN of the last record appended
	err      error  // sticky write or fsync failure

	ioMu    sync.Mutex // guards f and first; held while writing and syncing
	f       *os.File
	first   uint64 // first LSN of the current segment
	durable atomic.Uint64

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced when durable advances

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func (w *wal) segmentPath(first uint64) string {
	return filepath.Join(w.dir, fmt.Sprintf("%s.wal.%020d", w.base, first))
}

// segments lists the log's segment files by first LSN.
func (w *wal) segments() ([]uint64, error) {
	matches, err := filepath.Glob(filepath.Join(w.dir, w.base+".wal.*"))
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, m := range matches {
		n, err := strconv.ParseUint(strings.TrimPrefix(filepath.Base(m), w.base+".wal."), 10, 64)
		if err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// walRecord is one decoded record.
type walRecord struct {
	kind      byte
	lsn       uint64
	lrScale   float32
	keys      []string
	positions []walPosition
	register  []byte // RegisterRequest, for walRegister
	parts     []walPart
}

type walPart struct {
	name   string
	index  uint32
	values []float32
}

// readSegment calls f with each record of a segment in order. A torn or
// corrupt tail ends the segment (it can only hold records never
// acknowledged) and is reported as the second result.
func readSegment(path string, f func(walRecord) error) (torn error, err error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	r := bufio.NewReaderSize(file, 1<<20)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil
			}
			return err, nil
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n > maxWALRecord {
			return fmt.Errorf("record of %d bytes", n), nil
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return err, nil
		}
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:]) {
			return errors.New("checksum mismatch"), nil
		}
		rec, derr := decodeWALRecord(body)
		if derr != nil {
			return derr, nil
		}
		if err := f(rec); err != nil {
			return nil, err
		}
	}
}

func decodeWALRecord(b []byte) (walRecord, error) {
	d := walDecoder{b: b}
	var r walRecord
	r.kind = d.byte()
	hasPos := r.kind&walHasPositions != 0
	r.kind &^= walHasPositions
	r.lsn = d.u64()
	r.lrScale = math.Float32frombits(d.u32())
	for range d.count() {
		r.keys = append(r.keys, string(d.bytes()))
	}
	if hasPos {
		for range d.count() {
			w := string(d.bytes())
			r.positions = append(r.positions, walPosition{worker: w, position: bytes.Clone(d.bytes())})
		}
	}
	if r.kind == walRegister {
		r.register = d.bytes()
	} else {
		for range d.count() {
			p := walPart{name: string(d.bytes()), index: d.u32()}
			n := d.count()
			if d.err == nil && n*4 > len(d.b) {
				d.err = errors.New("truncated values")
			}
			if d.err != nil {
				break
			}
			p.values = make([]float32, n)
			for i := range p.values {
				p.values[i] = math.Float32frombits(binary.LittleEndian.Uint32(d.b[4*i:]))
			}
			d.b = d.b[4*n:]
			r.parts = append(r.parts, p)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the record", len(d.b))
	}
	if d.err == nil && (r.kind < walRegister || r.kind > walSyncStep) {
		d.err = fmt.Errorf("record kind %d unknown", r.kind)
	}
	return r, d.err
}

type walDecoder struct {
	b   []byte
	err error
}

func (d *walDecoder) need(n int) bool {
	if d.err == nil && len(d.b) < n {
		d.err = errors.New("truncated record")
	}
	return d.err == nil
}

func (d *walDecoder) byte() byte {
	if !d.need(1) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *walDecoder) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *walDecoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// count reads a length that must fit in what is left.
func (d *walDecoder) count() int {
	n := int(d.u32())
	if d.err == nil && n > len(d.b) {
		d.err = fmt.Errorf("count %d larger than the %d bytes left", n, len(d.b))
	}
	if d.err != nil {
		return 0
	}
	return n
}

func (d *walDecoder) bytes() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// walEncoder appends a record to buf.
type walEncoder struct{ buf []byte }

func (e *walEncoder) u32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v) }
func (e *walEncoder) bytes(b []byte) {
	e.u32(uint32(len(b)))
	e.buf = append(e.buf, b...)
}

// append adds a record and returns its LSN. The caller holds the lock under
// which the change was applied. parts are (part, values) of the change;
// values may be given as runs (update.runs).
func (w *wal) append(kind byte, lrScale float32, keys []string, pos []walPosition, register []byte, ups []update, sums map[*part][]float32, order []*part) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.appended++
	lsn := w.appended
	start := len(w.buf)
	e := walEncoder{buf: append(w.buf, 0, 0, 0, 0, 0, 0, 0, 0)} // length and CRC, filled below
	flags := byte(0)
	if len(pos) > 0 {
		flags = walHasPositions
	}
	e.buf = append(e.buf, kind|flags)
	e.buf = binary.LittleEndian.AppendUint64(e.buf, lsn)
	e.u32(math.Float32bits(lrScale))
	e.u32(uint32(len(keys)))
	for _, k := range keys {
		e.bytes([]byte(k))
	}
	if len(pos) > 0 {
		e.u32(uint32(len(pos)))
		for _, p := range pos {
			e.bytes([]byte(p.worker))
			e.bytes(p.position)
		}
	}
	putPart := func(p *part, n int, each func(func(off int, g []float32))) {
		e.bytes([]byte(p.spec.GetName()))
		e.u32(p.spec.GetIndex())
		e.u32(uint32(n))
		each(func(_ int, g []float32) {
			for _, x := range g {
				e.buf = binary.LittleEndian.AppendUint32(e.buf, math.Float32bits(x))
			}
		})
	}
	switch {
	case kind == walRegister:
		e.bytes(register)
	case order != nil:
		e.u32(uint32(len(order)))
		for _, p := range order {
			g := sums[p]
			putPart(p, len(g), func(f func(int, []float32)) { f(0, g) })
		}
	default:
		e.u32(uint32(len(ups)))
		for _, u := range ups {
			putPart(u.p, len(u.p.values), u.runs)
		}
	}
	body := e.buf[start+8:]
	binary.LittleEndian.PutUint32(e.buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(e.buf[start+4:], crc32.Checksum(body, castagnoli))
	w.buf = e.buf
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return lsn
}

// last returns the LSN of the last record appended.
func (w *wal) last() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appended
}

// commit writes what was appended and fsyncs it, then wakes the waiters.
func (w *wal) commit() {
	w.ioMu.Lock()
	w.mu.Lock()
	data, last := w.buf, w.appended
	w.buf = nil
	w.mu.Unlock()
	var err error
	if len(data) > 0 {
		if _, err = w.f.Write(data); err == nil {
			err = w.f.Sync()
		}
	}
	w.ioMu.Unlock()
	if err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("ps: write-ahead log %s: %w", w.f.Name(), err)
		}
		w.mu.Unlock()
	} else {
		w.durable.Store(last)
	}
	w.notifyMu.Lock()
	close(w.notify)
	w.notify = make(chan struct{})
	w.notifyMu.Unlock()
}

func (w *wal) loop() {
	defer close(w.done)
	for {
		select {
		case <-w.kick:
			w.commit()
		case <-w.stop:
			w.commit()
			return
		}
	}
}

// wait returns once the record lsn is durable. A write failure fails every
// waiter: the change was applied but cannot be promised.
func (w *wal) wait(ctx context.Context, lsn uint64) error {
	for {
		w.notifyMu.Lock()
		ch := w.notify
		w.notifyMu.Unlock()
		if w.durable.Load() >= lsn {
			return nil
		}
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// openSegment starts a new segment at first, after every record so far.
func (w *wal) openSegment(first uint64) error {
	f, err := os.OpenFile(w.segmentPath(first), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("ps: write-ahead log: %w", err)
	}
	if err := syncDir(w.dir); err != nil {
		f.Close()
		return fmt.Errorf("ps: write-ahead log: %w", err)
	}
	w.f, w.first = f, first
	return nil
}

// rotate moves the log to a new segment and deletes the segments whose
// records are all at or below snapLSN (a durable snapshot holds them).
func (w *wal) rotate(snapLSN uint64) error {
	w.commit()
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	w.mu.Lock()
	next := w.appended + 1
	pending := len(w.buf) > 0
	w.mu.Unlock()
	if !pending && next > w.first {
		old := w.f
		if err := w.openSegment(next); err != nil {
			return err
		}
		old.Close()
	}
	segs, err := w.segments()
	if err != nil {
		return err
	}
	for i, first := range segs {
		if first == w.first {
			break
		}
		// A segment ends where the next begins.
		if i+1 < len(segs) && segs[i+1] <= snapLSN+1 {
			os.Remove(w.segmentPath(first))
		}
	}
	return nil
}

// close stops the committer after a last commit; safe to call once.
func (w *wal) close() error {
	close(w.stop)
	<-w.done
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// recover opens the write-ahead log after a snapshot that holds its
// records up to snapLSN, replaying the later ones. A shard that runs
// without a log (WithoutWAL) still replays one it finds, then folds it into
// a snapshot and removes it, so that no later owner replays it twice.
func (s *Server) recover(snapLSN uint64) error {
	if !s.o.noWAL {
		return s.openWAL(snapLSN)
	}
	base := strings.TrimSuffix(filepath.Base(s.snapshotPath()), ".snapshot")
	segs, err := (&wal{dir: s.o.snapshotDir, base: base}).segments()
	if err != nil || len(segs) == 0 {
		return err
	}
	if err := s.openWAL(snapLSN); err != nil {
		return err
	}
	w := s.wal
	_, err = s.writeSnapshot()
	s.wal = nil
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ps: fold the write-ahead log into a snapshot: %w", err)
	}
	left, err := w.segments()
	for _, first := range left {
		if rerr := os.Remove(w.segmentPath(first)); err == nil {
			err = rerr
		}
	}
	return err
}

// openWAL replays the log's records after snapLSN into s (through apply)
// and starts a new segment after them.
func (s *Server) openWAL(snapLSN uint64) error {
	w := &wal{dir: s.o.snapshotDir, base: strings.TrimSuffix(filepath.Base(s.snapshotPath()), ".snapshot"),
		notify: make(chan struct{}), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	segs, err := w.segments()
	if err != nil {
		return fmt.Errorf("ps: write-ahead log: %w", err)
	}
	last, replayed := snapLSN, 0
	for _, first := range segs {
		path := w.segmentPath(first)
		torn, err := readSegment(path, func(r walRecord) error {
			if r.lsn <= last {
				return nil
			}
			if r.lsn != last+1 {
				return fmt.Errorf("record %d follows record %d: records are missing", r.lsn, last)
			}
			if err := s.replay(r); err != nil {
				return fmt.Errorf("record %d: %w", r.lsn, err)
			}
			last = r.lsn
			replayed++
			return nil
		})
		if err != nil {
			return fmt.Errorf("ps: write-ahead log %s: %w", path, err)
		}
		if torn != nil {
			s.o.logger.Warn("ps: write-ahead log ends in a partial record (never acknowledged)", "path", path, "err", torn)
		}
	}
	w.appended = last
	w.durable.Store(last)
	if err := w.openSegment(last + 1); err != nil {
		return err
	}
	s.wal = w
	go w.loop()
	if replayed > 0 {
		s.o.logger.Info("ps: replayed the write-ahead log", "records", replayed, "version", s.version.Load())
	}
	return nil
}

// replay applies one logged change as it was applied the first time.
func (s *Server) replay(r walRecord) error {
	if r.kind == walRegister {
		req := &pspb.RegisterRequest{}
		if err := proto.Unmarshal(r.register, req); err != nil {
			return err
		}
		_, _, err := s.registerParts(req, false)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, wp := range r.parts {
		p, ok := s.parts[partKey{wp.name, wp.index}]
		if !ok || len(p.values) != len(wp.values) {
			return fmt.Errorf("variable %q chunk %d is not registered with %d elements", wp.name, wp.index, len(wp.values))
		}
		if r.kind == walAssign {
			copy(p.values, wp.values)
		} else {
			s.opt.Apply(p.iterations, r.lrScale, p.values, wp.values, p.slots)
			p.iterations++
		}
		p.cursor = s.clock.Add(1)
	}
	if r.kind != walAssign {
		s.version.Add(1)
	}
	if r.kind == walSyncStep {
		s.step.Add(1)
	}
	s.setPositions(r.positions)
	s.keys.replayed(r.keys, s.info(), r.lsn)
	return nil
}

// logChange appends a change to the log (a no-op without one) and returns
// its LSN; the caller holds the lock that applied it.
func (s *Server) logChange(kind byte, lrScale float32, keys []string, ups []update, pos []walPosition) uint64 {
	if s.wal == nil {
		return 0
	}
	return s.wal.append(kind, lrScale, keys, pos, nil, ups, nil, nil)
}

// durable waits until the change lsn is in the log on disk.
func (s *Server) durable(ctx context.Context, lsn uint64) error {
	if s.wal == nil || lsn == 0 {
		return nil
	}
	if err := s.wal.wait(ctx, lsn); err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return s.errorf(codes.Internal, "%v", err)
	}
	return nil
}

// resetTo discards every record after lsn (a Restore rolled the shard back
// to the snapshot that holds lsn) and starts a new segment after it.
func (w *wal) resetTo(lsn uint64) error {
	w.commit()
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	segs, err := w.segments()
	if err != nil {
		return err
	}
	w.f.Close()
	for _, first := range segs {
		os.Remove(w.segmentPath(first))
	}
	w.mu.Lock()
	w.appended, w.buf = lsn, nil
	w.mu.Unlock()
	w.durable.Store(lsn)
	return w.openSegment(lsn + 1)
}
