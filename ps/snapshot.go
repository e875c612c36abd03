package ps

import (
	"bufio"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/ps/pspb"
)

const snapshotFormat = "gotflow.ps.snapshot/v1"

var errNoSnapshot = errors.New("no snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (s *Server) snapshotPath() string {
	return filepath.Join(s.o.snapshotDir, fmt.Sprintf("ps-shard-%d-of-%d.snapshot", s.o.shard, s.o.numShards))
}

// afterUpdate asks the snapshot loop for a snapshot when WithSnapshotDir's
// update count has been reached.
func (s *Server) afterUpdate() {
	if s.o.snapshotDir == "" || s.o.snapshotEvery == 0 {
		return
	}
	if s.version.Load()-s.lastSnap.Load() >= s.o.snapshotEvery {
		select {
		case s.snapReq <- struct{}{}:
		default:
		}
	}
}

func (s *Server) snapshotLoop() {
	defer s.bg.Done()
	var tick <-chan time.Time
	if s.o.snapshotInterval > 0 {
		t := time.NewTicker(s.o.snapshotInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.bgStop:
			return
		case <-tick:
			if s.clock.Load() == s.lastSnapClock.Load() {
				continue
			}
		case <-s.snapReq:
		}
		if _, err := s.writeSnapshot(); err != nil {
			s.o.logger.Error("ps: snapshot failed", "shard", s.o.shard, "err", err)
		}
	}
}

// capturedState is a consistent copy of the shard taken under mu.
type capturedState struct {
	header *pspb.SnapshotHeader
	parts  []*pspb.SnapshotPart
}

func (s *Server) capture() capturedState {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := capturedState{header: &pspb.SnapshotHeader{
		Format: snapshotFormat, Shard: uint32(s.o.shard), NumShards: uint32(s.o.numShards),
		Version: s.version.Load(), Step: s.step.Load(), Cursor: s.clock.Load(),
		Mode: s.o.mode.String(), OptimizerJson: s.o.optimizer.JSON(), Parts: uint32(len(s.order)),
		AppliedKeys: s.keys.applied(), Incarnation: s.lock.number(), Positions: s.positionsCopy(),
	}}
	if s.wal != nil {
		c.header.WalLsn = s.wal.last()
	}
	for _, p := range s.order {
		sp := &pspb.SnapshotPart{Spec: p.spec, Iterations: p.iterations, Values: encodeFloat32(p.values), Cursor: p.cursor}
		for _, sl := range p.slots {
			sp.Slots = append(sp.Slots, encodeFloat32(sl))
		}
		c.parts = append(c.parts, sp)
	}
	return c
}

// writeSnapshot writes the shard's state atomically: to a temporary file in
// the snapshot directory, fsynced, renamed over the previous snapshot, and
// the directory fsynced. A crash at any point leaves either the old or the
// new snapshot, never a partial one.
func (s *Server) writeSnapshot() (*pspb.SnapshotResponse, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if !s.lock.held() {
		return nil, fmt.Errorf("ps: snapshot: the server has stopped and no longer owns %s", s.o.snapshotDir)
	}
	st := s.capture()
	path := s.snapshotPath()
	if err := s.checkNotNewer(path, st.header); err != nil {
		return nil, err
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, fmt.Errorf("ps: snapshot: %w", err)
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(f, 1<<20)
	w := io.MultiWriter(bw, crc)
	n, err := writeRecords(w, st)
	if err == nil {
		var m int
		m, err = protodelim.MarshalTo(bw, &pspb.SnapshotTrailer{Parts: uint32(len(st.parts)), Crc32C: crc.Sum32()})
		n += m
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		f.Abort()
	} else {
		err = f.Commit() // fsync, rename over the previous one, fsync the directory
	}
	if err != nil {
		return nil, fmt.Errorf("ps: snapshot %s: %w", path, err)
	}
	s.lastSnap.Store(st.header.GetVersion())
	s.lastSnapClock.Store(st.header.GetCursor())
	s.stats.snapshots.Add(1)
	if s.wal != nil {
		// The log's records up to the snapshot are no longer needed.
		if err := s.wal.rotate(st.header.GetWalLsn()); err != nil {
			s.o.logger.Warn("ps: write-ahead log rotation failed", "err", err)
		}
	}
	return &pspb.SnapshotResponse{Path: path, Version: st.header.GetVersion(), Bytes: uint64(n)}, nil
}

// checkNotNewer refuses to replace the snapshot at path when it was
// written by a later owner of the directory or holds a later version: the
// state it holds is newer than this shard's, and losing it would silently
// roll the model back.
func (s *Server) checkNotNewer(path string, mine *pspb.SnapshotHeader) error {
	old, err := readSnapshotHeader(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// An unreadable snapshot holds nothing to protect; the new one
		// replaces it.
		s.o.logger.Warn("ps: replacing an unreadable snapshot", "path", path, "err", err)
		return nil
	}
	if old.GetIncarnation() > mine.GetIncarnation() || old.GetVersion() > mine.GetVersion() {
		return fmt.Errorf("ps: snapshot %s holds version %d of incarnation %d, newer than this shard's version %d of incarnation %d; not replacing it",
			path, old.GetVersion(), old.GetIncarnation(), mine.GetVersion(), mine.GetIncarnation())
	}
	return nil
}

// readSnapshotHeader reads the header record of a snapshot file.
func readSnapshotHeader(path string) (*pspb.SnapshotHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h := &pspb.SnapshotHeader{}
	opts := protodelim.UnmarshalOptions{MaxSize: max(fi.Size(), 1)}
	if err := opts.UnmarshalFrom(bufio.NewReaderSize(f, 64<<10), h); err != nil {
		return nil, err
	}
	if h.GetFormat() != snapshotFormat {
		return nil, fmt.Errorf("format %q, want %q", h.GetFormat(), snapshotFormat)
	}
	return h, nil
}

func writeRecords(w io.Writer, st capturedState) (int, error) {
	n, err := protodelim.MarshalTo(w, st.header)
	if err != nil {
		return n, err
	}
	for _, p := range st.parts {
		m, err := protodelim.MarshalTo(w, p)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// crcReader hashes the bytes it hands out.
type crcReader struct {
	r *bufio.Reader
	h hash.Hash32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.h.Write([]byte{b})
	}
	return b, err
}

// readSnapshot parses and verifies a snapshot file.
func readSnapshot(path string) (capturedState, error) {
	f, err := os.Open(path)
	if err != nil {
		return capturedState{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return capturedState{}, err
	}
	cr := &crcReader{r: bufio.NewReaderSize(f, 1<<20), h: crc32.New(castagnoli)}
	// No record is larger than the file: a corrupt size prefix fails here
	// instead of allocating what it claims.
	opts := protodelim.UnmarshalOptions{MaxSize: max(fi.Size(), 1)}
	var st capturedState
	st.header = &pspb.SnapshotHeader{}
	if err := opts.UnmarshalFrom(cr, st.header); err != nil {
		return st, fmt.Errorf("header: %w", err)
	}
	if st.header.GetFormat() != snapshotFormat {
		return st, fmt.Errorf("format %q, want %q", st.header.GetFormat(), snapshotFormat)
	}
	for i := uint32(0); i < st.header.GetParts(); i++ {
		p := &pspb.SnapshotPart{}
		if err := opts.UnmarshalFrom(cr, p); err != nil {
			return st, fmt.Errorf("part %d of %d: %w", i, st.header.GetParts(), err)
		}
		st.parts = append(st.parts, p)
	}
	sum := cr.h.Sum32()
	tr := &pspb.SnapshotTrailer{}
	if err := opts.UnmarshalFrom(cr.r, tr); err != nil {
		return st, fmt.Errorf("trailer: %w", err)
	}
	if tr.GetParts() != st.header.GetParts() || tr.GetCrc32C() != sum {
		return st, fmt.Errorf("checksum mismatch (trailer: %d parts crc %08x; read: %d parts crc %08x)", tr.GetParts(), tr.GetCrc32C(), st.header.GetParts(), sum)
	}
	return st, nil
}

// rollBack replaces the shard's state with its snapshot (the Restore RPC)
// and drops the write-ahead log's records after it: they are undone.
func (s *Server) rollBack() (string, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	path, _, err := s.restoreLatest(true)
	return path, err
}

// restoreLatest replaces the shard's state with its snapshot and returns
// the last write-ahead log record the snapshot holds. Leftover temporary
// files of interrupted snapshots are removed.
//
// With rollback (the Restore RPC, not a start), the log's records after the
// snapshot are dropped under the same locks, before any push can follow.
func (s *Server) restoreLatest(rollback bool) (string, uint64, error) {
	path := s.snapshotPath()
	old, _ := filepath.Glob(path + ".*.tmp")
	hidden, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp"))
	for _, t := range append(old, hidden...) {
		if strings.HasSuffix(t, ".tmp") {
			os.Remove(t)
		}
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return path, 0, fmt.Errorf("%w in %s", errNoSnapshot, s.o.snapshotDir)
	}
	st, err := readSnapshot(path)
	if err != nil {
		return path, 0, fmt.Errorf("ps: snapshot %s: %w", path, err)
	}
	h := st.header
	if int(h.GetShard()) != s.o.shard || int(h.GetNumShards()) != s.o.numShards {
		return path, 0, fmt.Errorf("ps: snapshot %s is of shard %d of %d, this server is shard %d of %d", path, h.GetShard(), h.GetNumShards(), s.o.shard, s.o.numShards)
	}
	if h.GetOptimizerJson() != s.o.optimizer.JSON() {
		return path, 0, fmt.Errorf("ps: snapshot %s was taken with optimizer %s, this server runs %s", path, h.GetOptimizerJson(), s.o.optimizer.JSON())
	}
	slotNames := s.opt.Slots()
	parts := make(map[partKey]*part, len(st.parts))
	order := make([]*part, 0, len(st.parts))
	for _, sp := range st.parts {
		p, err := s.checkSpec(sp.GetSpec())
		if err != nil {
			return path, 0, fmt.Errorf("ps: snapshot %s: %w", path, err)
		}
		chunk := &pspb.Chunk{Name: sp.GetSpec().GetName(), Index: sp.GetSpec().GetIndex(), Dtype: pspb.DType_DTYPE_FLOAT32, Data: sp.GetValues()}
		if err := decodeInto(p.values, chunk); err != nil {
			return path, 0, fmt.Errorf("ps: snapshot %s: %w", path, err)
		}
		if len(sp.GetSlots()) != len(slotNames) {
			return path, 0, fmt.Errorf("ps: snapshot %s: %s has %d optimizer slots, want %d", path, chunkName(chunk), len(sp.GetSlots()), len(slotNames))
		}
		p.slots = make([][]float32, len(sp.GetSlots()))
		for i, b := range sp.GetSlots() {
			p.slots[i] = make([]float32, len(p.values))
			if err := decodeInto(p.slots[i], &pspb.Chunk{Name: chunk.Name, Index: chunk.Index, Dtype: pspb.DType_DTYPE_FLOAT32, Data: b}); err != nil {
				return path, 0, fmt.Errorf("ps: snapshot %s: slot %s: %w", path, slotNames[i], err)
			}
		}
		p.iterations = sp.GetIterations()
		p.cursor = sp.GetCursor()
		parts[partKey{p.spec.GetName(), p.spec.GetIndex()}] = p
		order = append(order, p)
	}
	s.syncMu.Lock()
	s.mu.Lock()
	s.parts, s.order = parts, order
	s.version.Store(h.GetVersion())
	s.clock.Store(h.GetCursor())
	s.step.Store(h.GetStep())
	s.newIncarnation()
	s.lastSnap.Store(h.GetVersion())
	s.lastSnapClock.Store(h.GetCursor())
	if s.pending != nil {
		s.pending.timer.Stop()
		s.pending.err = s.errorf(codes.Unavailable, "restored from snapshot before sync step %d completed", s.pending.step)
		close(s.pending.done)
		for i, e := range s.pending.entries {
			s.keys.finish(s.pending.keys[i], e, nil, s.pending.err)
		}
		s.pending = nil
	}
	s.keys.reset(h.GetAppliedKeys(), s.info())
	s.posMu.Lock()
	s.positions = maps.Clone(h.GetPositions())
	if s.positions == nil {
		s.positions = map[string][]byte{}
	}
	s.posMu.Unlock()
	var werr error
	if rollback && s.wal != nil {
		werr = s.wal.resetTo(h.GetWalLsn())
	}
	// Sync pushes waiting for a step see the restored step at once.
	close(s.advanced)
	s.advanced = make(chan struct{})
	s.mu.Unlock()
	s.syncMu.Unlock()
	if werr != nil {
		return path, 0, werr
	}
	s.o.logger.Info("ps: restored snapshot", "path", path, "version", h.GetVersion(), "parts", len(order))
	return path, h.GetWalLsn(), nil
}
