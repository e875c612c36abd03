package ps

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/ps/pspb"
)

// part is one chunk of a variable held by a shard.
type part struct {
	spec      *pspb.PartSpec
	trainable bool
	// mu guards values, slots, iterations and cursor in Hogwild mode; in
	// the other modes writers hold Server.mu exclusively instead.
	mu         sync.RWMutex
	values     []float32
	slots      [][]float32
	iterations uint64 // optimizer updates applied (Keras' iterations)
	cursor     uint64 // Server.clock value of the last write
}

type partKey struct {
	name  string
	index uint32
}

// Server is one parameter-server shard. Create it with NewServer, serve it
// with Serve and stop it with GracefulStop or Stop.
type Server struct {
	o   serverOptions
	opt *optim.Optimizer
	gs  *grpc.Server

	// mu: pushes in AsyncLock, BoundedStaleness and Sync, assignments,
	// registration, snapshot capture and restore hold it exclusively;
	// Hogwild pushes and pulls hold it shared.
	mu          sync.RWMutex
	parts       map[partKey]*part
	order       []*part
	incarnation atomic.Pointer[string]
	version     atomic.Uint64 // gradient updates applied
	clock       atomic.Uint64 // change counter for incremental pulls

	keys *keyCache

	// posMu guards positions: the last applied input position of each
	// worker (PushHeader.position). It is written while the update it came
	// with is applied, under mu (shared in Hogwild), so a snapshot, which
	// holds mu exclusively, sees both or neither.
	posMu     sync.Mutex
	positions map[string][]byte

	syncMu   sync.Mutex
	workers  atomic.Int64  // pushes per Sync step; written under syncMu
	step     atomic.Uint64 // written under syncMu
	pending  *syncStep
	advanced chan struct{} // closed and replaced when step advances

	barrierMu sync.Mutex
	barriers  map[string]*barrier

	closed        chan struct{}
	closeOnce     sync.Once
	bgStop        chan struct{}
	bg            sync.WaitGroup
	snapMu        sync.Mutex
	lock          *dirLock // ownership of the snapshot files; nil without a directory
	wal           *wal     // nil without a snapshot directory or WithoutWAL
	snapReq       chan struct{}
	lastSnap      atomic.Uint64
	lastSnapClock atomic.Uint64

	stats serverStats

	// inflight and lastRequest (unix nanoseconds) feed the idle lease
	// (WithIdleTimeout); idle is closed when it runs out.
	inflight    atomic.Int64
	lastRequest atomic.Int64
	idle        chan struct{}

	// localMu and localCalls admit and count the calls of in-process
	// clients (direct.go), which stop waits for like gRPC's in-flight calls.
	localMu    sync.Mutex
	localCalls sync.WaitGroup
	bulkConns  map[net.Conn]bool // open bulk connections (bulk.go), under localMu

	// testAfterPush, when set by tests, runs after a push was applied and
	// before its response is sent; an error replaces the response (a lost
	// reply).
	testAfterPush func(key string) error
}

// NewServer creates a shard. If the options name a snapshot directory that
// holds a snapshot of this shard, the shard resumes from it (version,
// values, optimizer state, applied idempotency keys).
func NewServer(opts ...ServerOption) (*Server, error) {
	o := defaultServerOptions()
	for _, op := range opts {
		op.applyServer(&o)
	}
	if o.numShards < 1 || o.shard < 0 || o.shard >= o.numShards {
		return nil, fmt.Errorf("ps: shard %d of %d, want 0 <= shard < shards", o.shard, o.numShards)
	}
	if o.mode < Hogwild || o.mode > BoundedStaleness {
		return nil, fmt.Errorf("ps: mode %v unknown", o.mode)
	}
	if o.workers < 1 {
		return nil, fmt.Errorf("ps: %d workers, want at least 1", o.workers)
	}
	if o.mode == Sync && o.syncTimeout <= 0 {
		return nil, fmt.Errorf("ps: sync timeout %v, want > 0", o.syncTimeout)
	}
	if o.maxMessageBytes < 1<<16 {
		return nil, fmt.Errorf("ps: max message size %d bytes, want at least 64 KiB", o.maxMessageBytes)
	}
	opt, err := optim.New(o.optimizer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		o: o, opt: opt,
		parts:     map[partKey]*part{},
		keys:      newKeyCache(o.keyCacheSize),
		positions: map[string][]byte{},
		advanced:  make(chan struct{}),
		barriers:  map[string]*barrier{},
		closed:    make(chan struct{}),
		bgStop:    make(chan struct{}),
		snapReq:   make(chan struct{}, 1),
		idle:      make(chan struct{}),
	}
	s.lastRequest.Store(time.Now().UnixNano())
	s.stats.staleness = make([]atomic.Uint64, stalenessBuckets)
	s.workers.Store(int64(o.workers))
	s.newIncarnation()
	if o.snapshotDir != "" {
		if err := os.MkdirAll(o.snapshotDir, 0o755); err != nil {
			return nil, fmt.Errorf("ps: snapshot directory: %w", err)
		}
		if s.lock, err = lockSnapshots(s.snapshotPath()); err != nil {
			return nil, err
		}
		_, snapLSN, err := s.restoreLatest(false)
		if err != nil && !errors.Is(err, errNoSnapshot) {
			s.lock.release()
			return nil, err
		}
		if err := s.recover(snapLSN); err != nil {
			s.lock.release()
			return nil, err
		}
	}
	sopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(o.maxMessageBytes),
		grpc.MaxSendMsgSize(o.maxMessageBytes),
		grpc.InitialWindowSize(32 << 20),
		grpc.InitialConnWindowSize(64 << 20),
		grpc.ReadBufferSize(1 << 20),
		grpc.WriteBufferSize(1 << 20),
		experimental.BufferPool(wirePool),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: keepaliveTimeout}),
		grpc.ForceServerCodecV2(wireCodec{}),
		grpc.ChainUnaryInterceptor(s.authUnary),
		grpc.ChainStreamInterceptor(s.authStream),
	}
	if o.tls != nil {
		sopts = append(sopts, grpc.Creds(serverTLS{})) // Serve's listener does the handshake (bulk.go)
	}
	s.gs = grpc.NewServer(sopts...)
	pspb.RegisterParameterServerServer(s.gs, &service{s: s})
	if o.snapshotDir != "" && (o.snapshotEvery > 0 || o.snapshotInterval > 0) {
		s.bg.Add(1)
		go s.snapshotLoop()
	}
	if o.idleTimeout > 0 {
		s.bg.Add(1)
		go s.leaseLoop()
	}
	return s, nil
}

// Idle is closed once no request has been in flight or arrived for the
// WithIdleTimeout duration; without that option it is never closed.
func (s *Server) Idle() <-chan struct{} { return s.idle }

func (s *Server) leaseLoop() {
	defer s.bg.Done()
	t := time.NewTicker(max(s.o.idleTimeout/8, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.bgStop:
			return
		case <-t.C:
			quiet := time.Duration(time.Now().UnixNano() - s.lastRequest.Load())
			if s.inflight.Load() == 0 && quiet >= s.o.idleTimeout {
				s.o.logger.Warn("ps: no request within the idle timeout", "shard", s.o.shard, "timeout", s.o.idleTimeout)
				close(s.idle)
				return
			}
		}
	}
}

// track counts a request for the idle lease until the returned func runs.
func (s *Server) track() func() {
	s.inflight.Add(1)
	s.lastRequest.Store(time.Now().UnixNano())
	return func() {
		s.lastRequest.Store(time.Now().UnixNano())
		s.inflight.Add(-1)
	}
}

// Serve accepts connections on lis until GracefulStop or Stop; it blocks.
// It answers bulk connections on lis too (see the package documentation).
func (s *Server) Serve(lis net.Listener) error {
	lis = s.newMuxListener(lis) // bulk.go: pushes and pulls without gRPC
	if err := s.gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("ps: serve: %w", err)
	}
	return nil
}

// GracefulStop stops accepting connections, fails Sync steps and barriers
// that are still waiting (codes.Unavailable), waits for in-flight pushes and
// pulls to finish, and writes a final snapshot if a snapshot directory is
// set. It is safe to call more than once.
func (s *Server) GracefulStop() error { return s.stop(true) }

// Stop is GracefulStop without waiting for in-flight RPCs: they are
// cancelled. The final snapshot is still written.
func (s *Server) Stop() error { return s.stop(false) }

func (s *Server) stop(graceful bool) error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		s.syncMu.Lock()
		if s.pending != nil {
			s.pending.timer.Stop() // its pushes return Unavailable via closed
		}
		s.syncMu.Unlock()
		if graceful {
			s.gs.GracefulStop()
		} else {
			s.gs.Stop()
		}
		if !graceful {
			s.closeBulk() // in-flight bulk requests end at their next read or write
		}
		s.waitLocal()
		s.closeBulk()
		close(s.bgStop)
		s.bg.Wait()
		if s.o.snapshotDir != "" {
			if !s.o.noFinalSnapshot {
				_, err = s.writeSnapshot()
			}
			s.snapMu.Lock()
			if s.wal != nil {
				err = errors.Join(err, s.wal.close())
			}
			s.lock.release()
			s.snapMu.Unlock()
		}
	})
	return err
}

func (s *Server) newIncarnation() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	inc := hex.EncodeToString(b[:])
	s.incarnation.Store(&inc)
}

func (s *Server) info() *pspb.ServerInfo {
	return &pspb.ServerInfo{
		Incarnation:   *s.incarnation.Load(),
		Version:       s.version.Load(),
		Step:          s.step.Load(),
		Cursor:        s.clock.Load(),
		Shard:         uint32(s.o.shard),
		NumShards:     uint32(s.o.numShards),
		Mode:          s.o.mode.String(),
		Workers:       uint32(s.workers.Load()),
		OptimizerJson: s.o.optimizer.JSON(),
	}
}

func (s *Server) errorf(c codes.Code, format string, args ...any) error {
	return status.Errorf(c, "ps: shard %d: "+format, append([]any{s.o.shard}, args...)...)
}

// reject counts a refused request under reason and returns err.
func (s *Server) reject(reason string, err error) error {
	s.stats.reject(reason)
	return err
}

// ---- authentication ----

func (s *Server) authorize(ctx context.Context) error {
	if s.o.token == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := strings.CutPrefix(v, "Bearer "); ok &&
			subtle.ConstantTimeCompare([]byte(tok), []byte(s.o.token)) == 1 {
			return nil
		}
	}
	return s.reject("unauthenticated", status.Error(codes.Unauthenticated, "ps: missing or wrong bearer token"))
}

func (s *Server) authUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx); err != nil {
		return nil, err
	}
	defer s.track()()
	return h(ctx, req)
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.authorize(ss.Context()); err != nil {
		return err
	}
	defer s.track()()
	return h(srv, ss)
}

// ---- registration ----

func (s *Server) register(ctx context.Context, req *pspb.RegisterRequest) (*pspb.RegisterResponse, error) {
	resp, lsn, err := s.registerParts(req, true)
	if err != nil {
		return nil, err
	}
	if err := s.durable(ctx, lsn); err != nil {
		return nil, err
	}
	return resp, nil
}

// registerParts declares the request's parts; with log, new ones are
// written to the write-ahead log (whose LSN it returns).
func (s *Server) registerParts(req *pspb.RegisterRequest, log bool) (*pspb.RegisterResponse, uint64, error) {
	if int(req.GetShard()) != s.o.shard || int(req.GetNumShards()) != s.o.numShards {
		return nil, 0, s.reject("wrong_shard", s.errorf(codes.FailedPrecondition,
			"client routes this request to shard %d of %d, but this server is shard %d of %d",
			req.GetShard(), req.GetNumShards(), s.o.shard, s.o.numShards))
	}
	if len(req.GetValues()) != len(req.GetParts()) {
		return nil, 0, s.reject("malformed", s.errorf(codes.InvalidArgument, "register: %d parts but %d values", len(req.GetParts()), len(req.GetValues())))
	}
	fresh := make([]*part, len(req.GetParts()))
	seen := map[partKey]bool{}
	for i, sp := range req.GetParts() {
		p, err := s.checkSpec(sp)
		if err != nil {
			return nil, 0, s.reject("malformed", err)
		}
		k := partKey{sp.GetName(), sp.GetIndex()}
		if seen[k] {
			return nil, 0, s.reject("malformed", s.errorf(codes.InvalidArgument, "register: variable %q chunk %d given twice", k.name, k.index))
		}
		seen[k] = true
		c := req.GetValues()[i]
		if c.GetName() != sp.GetName() || c.GetIndex() != sp.GetIndex() {
			return nil, 0, s.reject("malformed", s.errorf(codes.InvalidArgument, "register: value %d is %s, want variable %q chunk %d", i, chunkName(c), sp.GetName(), sp.GetIndex()))
		}
		if err := decodeInto(p.values, c); err != nil {
			return nil, 0, s.reject("malformed", status.Error(codes.InvalidArgument, err.Error()))
		}
		if !s.o.allowNonFinite {
			if j, ok := allFinite(p.values); !ok {
				return nil, 0, s.reject("non_finite", s.errorf(codes.InvalidArgument, "register: variable %q chunk %d element %d is %v", sp.GetName(), sp.GetIndex(), j, p.values[j]))
			}
		}
		fresh[i] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range fresh {
		if old, ok := s.parts[partKey{p.spec.GetName(), p.spec.GetIndex()}]; ok {
			if err := sameSpec(old.spec, p.spec); err != nil {
				return nil, 0, s.reject("spec_mismatch", s.errorf(codes.FailedPrecondition, "register: %v", err))
			}
		}
	}
	resp := &pspb.RegisterResponse{Initialized: make([]bool, len(fresh))}
	for i, p := range fresh {
		k := partKey{p.spec.GetName(), p.spec.GetIndex()}
		if _, ok := s.parts[k]; ok {
			continue
		}
		p.slots = s.opt.NewSlots(len(p.values))
		p.cursor = s.clock.Add(1)
		s.parts[k] = p
		s.order = append(s.order, p)
		resp.Initialized[i] = true
	}
	var lsn uint64
	if log && s.wal != nil && slices.Contains(resp.Initialized, true) {
		b, err := proto.Marshal(req)
		if err != nil {
			return nil, 0, s.errorf(codes.Internal, "register: %v", err)
		}
		lsn = s.wal.append(walRegister, 1, nil, nil, b, nil, nil, nil)
	}
	resp.Info = s.info()
	resp.Info.Parts = uint32(len(s.order))
	return resp, lsn, nil
}

// checkSpec validates a part declaration and returns a part with room for
// its values.
func (s *Server) checkSpec(sp *pspb.PartSpec) (*part, error) {
	if sp.GetName() == "" {
		return nil, s.errorf(codes.InvalidArgument, "register: part with an empty variable name")
	}
	n, err := numElements(sp.GetName(), sp.GetShape())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if sp.GetLength() == 0 || sp.GetLength() > uint64(s.o.maxMessageBytes)/4 || sp.GetOffset()+sp.GetLength() > uint64(n) {
		return nil, s.errorf(codes.InvalidArgument, "register: variable %q chunk %d covers elements [%d, %d) of %d, want a non-empty range inside the shape %v",
			sp.GetName(), sp.GetIndex(), sp.GetOffset(), sp.GetOffset()+sp.GetLength(), n, sp.GetShape())
	}
	spec := &pspb.PartSpec{Name: sp.GetName(), Index: sp.GetIndex(), Shape: slices.Clone(sp.GetShape()),
		Offset: sp.GetOffset(), Length: sp.GetLength(), Trainable: sp.GetTrainable()}
	return &part{spec: spec, trainable: sp.GetTrainable(), values: make([]float32, sp.GetLength())}, nil
}

func sameSpec(a, b *pspb.PartSpec) error {
	if !slices.Equal(a.GetShape(), b.GetShape()) || a.GetOffset() != b.GetOffset() || a.GetLength() != b.GetLength() || a.GetTrainable() != b.GetTrainable() {
		return fmt.Errorf("variable %q chunk %d is registered as shape %v elements [%d, %d) trainable=%v; this request declares shape %v elements [%d, %d) trainable=%v",
			a.GetName(), a.GetIndex(), a.GetShape(), a.GetOffset(), a.GetOffset()+a.GetLength(), a.GetTrainable(),
			b.GetShape(), b.GetOffset(), b.GetOffset()+b.GetLength(), b.GetTrainable())
	}
	return nil
}

// ---- push ----

// update is one decoded chunk of a push: its values either as one
// float32 slice or still in the received buffers (seg).
type update struct {
	p    *part
	vals []float32
	seg  *segChunk
}

// runs calls f with the update's values as float32 runs starting at
// element off.
func (u update) runs(f func(off int, g []float32)) {
	if u.vals == nil && u.seg != nil {
		u.seg.runs(f)
		return
	}
	f(0, u.vals)
}

func (u update) release() {
	if u.seg != nil {
		u.seg.release()
	}
}

func releaseUpdates(ups []update) {
	for _, u := range ups {
		u.release()
	}
}

// receivePush reads a push stream to its end and validates and decodes
// every chunk. Nothing is applied. The caller releases the updates.
func (s *Server) receivePush(recv func(*pushMsg) error) (*pspb.PushHeader, []update, error) {
	var hdr *pspb.PushHeader
	var ups []update
	fail := func(err error, rest []*segChunk) (*pspb.PushHeader, []update, error) {
		releaseUpdates(ups)
		for _, c := range rest {
			c.release()
		}
		return nil, nil, err
	}
	seen := map[*part]bool{}
	for {
		req := &pushMsg{}
		err := recv(req)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err, nil)
		}
		if hdr == nil {
			if req.header == nil {
				return fail(s.reject("malformed", s.errorf(codes.InvalidArgument, "push: the first message has no header")), req.chunks)
			}
			hdr = req.header
		} else if req.header != nil {
			return fail(s.reject("malformed", s.errorf(codes.InvalidArgument, "push: header repeated in a later message")), req.chunks)
		}
		var err2 error
		if ups, err2 = s.acceptChunks(hdr, req.chunks, ups, seen); err2 != nil {
			return fail(err2, nil)
		}
	}
	if hdr == nil {
		return fail(s.reject("malformed", s.errorf(codes.InvalidArgument, "push: empty stream, want a header")), nil)
	}
	if err := s.checkChunkCount(hdr, ups); err != nil {
		return fail(err, nil)
	}
	return hdr, ups, nil
}

// acceptChunks validates and decodes the chunks of one push message,
// appending them to ups; seen holds the parts the push already carried.
// The updates own the chunks; on error every chunk of chunks that is not
// in the returned updates is released (ups keeps what it held before).
func (s *Server) acceptChunks(hdr *pspb.PushHeader, chunks []*segChunk, ups []update, seen map[*part]bool) ([]update, error) {
	for i, c := range chunks {
		s.stats.bytesIn.Add(uint64(c.n))
		u, err := s.decodeChunk(c, hdr.GetKind())
		if err == nil && seen[u.p] {
			u.release()
			err = s.reject("malformed", s.errorf(codes.InvalidArgument, "push: variable %q chunk %d sent twice", c.name, c.index))
			i++ // u released c
		}
		if err != nil {
			for _, rest := range chunks[i:] {
				rest.release()
			}
			return ups, err
		}
		seen[u.p] = true
		ups = append(ups, u)
	}
	return ups, nil
}

// checkChunkCount compares a push's chunks with its header's count.
func (s *Server) checkChunkCount(hdr *pspb.PushHeader, ups []update) error {
	if hdr.GetChunks() != 0 && int(hdr.GetChunks()) != len(ups) {
		return s.reject("malformed", s.errorf(codes.InvalidArgument, "push: header announces %d chunks, stream carried %d", hdr.GetChunks(), len(ups)))
	}
	return nil
}

// decodeChunk validates one pushed chunk against the registered part. On
// success the update owns c; on error c is left to the caller.
func (s *Server) decodeChunk(c *segChunk, kind pspb.PushKind) (update, error) {
	name := fmt.Sprintf("variable %q chunk %d", c.name, c.index)
	s.mu.RLock()
	p, ok := s.parts[partKey{c.name, c.index}]
	s.mu.RUnlock()
	if !ok {
		return update{}, s.reject("unknown_variable", s.errorf(codes.NotFound, "%s is not registered on this shard", name))
	}
	if kind == pspb.PushKind_PUSH_KIND_GRADIENT && !p.trainable {
		return update{}, s.reject("not_trainable", s.errorf(codes.InvalidArgument, "%s is not trainable; set it by assignment", name))
	}
	if kind != pspb.PushKind_PUSH_KIND_GRADIENT && kind != pspb.PushKind_PUSH_KIND_ASSIGN {
		return update{}, s.reject("malformed", s.errorf(codes.InvalidArgument, "push kind %v unknown", kind))
	}
	n := len(p.values)
	size := 4
	switch c.dtype {
	case pspb.DType_DTYPE_FLOAT32:
	case pspb.DType_DTYPE_FLOAT16:
		size = 2
	default:
		return update{}, s.reject("wrong_dtype", s.errorf(codes.InvalidArgument, "%s: dtype %v not supported (want DTYPE_FLOAT32, or DTYPE_FLOAT16 as transport)", name, c.dtype))
	}
	if c.n != size*n {
		return update{}, s.reject("wrong_shape", s.errorf(codes.InvalidArgument, "%s: %d bytes of %s, want %d (%d elements; variable shape %v, chunk elements [%d, %d))",
			name, c.n, strings.ToLower(strings.TrimPrefix(c.dtype.String(), "DTYPE_")), size*n, n, p.spec.GetShape(), p.spec.GetOffset(), p.spec.GetOffset()+p.spec.GetLength()))
	}
	u := update{p: p, seg: c} // seg keeps the received buffers referenced
	switch {
	case n == 0:
	case size == 4 && littleEndian && len(c.pieces) == 1 && uintptr(unsafe.Pointer(&c.pieces[0][0]))%4 == 0:
		u.vals = unsafe.Slice((*float32)(unsafe.Pointer(&c.pieces[0][0])), n)
	case size != 4 || !littleEndian:
		u.vals = make([]float32, n)
		if err := c.decode(u.vals); err != nil {
			return update{}, s.reject("wrong_shape", s.errorf(codes.InvalidArgument, "%s: %v", name, err))
		}
		c.release()
		u.seg = nil
	}
	if !s.o.allowNonFinite {
		bad, badAt := float32(0), -1
		u.runs(func(off int, g []float32) {
			if badAt < 0 {
				if j, ok := allFinite(g); !ok {
					bad, badAt = g[j], off+j
				}
			}
		})
		if badAt >= 0 {
			return update{}, s.reject("non_finite", s.errorf(codes.InvalidArgument, "%s element %d is %v; non-finite values are rejected", name, badAt, bad))
		}
	}
	return u, nil
}

// push validates, deduplicates and applies one push.
func (s *Server) push(ctx context.Context, hdr *pspb.PushHeader, ups []update) (*pspb.PushResponse, error) {
	s.stats.pushes.Add(1)
	pos, err := s.pushPosition(hdr)
	if err != nil {
		return nil, err
	}
	key := hdr.GetIdempotencyKey()
	var entry *keyEntry
	if key != "" {
		e, existing := s.keys.begin(key)
		if existing {
			select {
			case <-e.done:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			case <-s.closed:
				return nil, s.errorf(codes.Unavailable, "shutting down")
			}
			if e.err != nil {
				return nil, e.err
			}
			// The first attempt may still wait for its log record: so does
			// this answer.
			if err := s.durable(ctx, e.lsn); err != nil {
				return nil, err
			}
			s.stats.duplicates.Add(1)
			r := &pspb.PushResponse{Info: s.info(), Duplicate: true, Staleness: e.resp.GetStaleness(), LrScale: e.resp.GetLrScale(), AppliedStep: e.resp.GetAppliedStep()}
			return r, nil
		}
		entry = e
	}
	var resp *pspb.PushResponse
	var lsn uint64
	// applied runs under the lock that applies the push: it logs the
	// change and records its key (see markApplied) and the pusher's
	// position, so that a snapshot holds all of them or none.
	applied := func(kind byte, scale float32) {
		var keys []string
		if key != "" {
			keys = []string{key}
		}
		s.setPositions(pos)
		lsn = s.logChange(kind, scale, keys, ups, pos)
		if entry != nil {
			s.keys.markApplied(key, entry, lsn)
		}
	}
	switch {
	case hdr.GetKind() == pspb.PushKind_PUSH_KIND_ASSIGN:
		resp = s.assign(ups, applied)
	case s.o.mode == Sync:
		resp, err = s.pushSync(ctx, hdr, ups, key, entry, pos)
		entry = nil // the step finishes it: a caller that gives up must not free its key
	case s.o.mode == Hogwild:
		resp = s.pushHogwild(hdr, ups, applied)
	default:
		resp, err = s.pushLocked(hdr, ups, applied)
	}
	if entry != nil {
		s.keys.finish(key, entry, resp, err)
	}
	if err != nil {
		return nil, err
	}
	if err := s.durable(ctx, lsn); err != nil {
		return nil, err
	}
	s.afterUpdate()
	return resp, nil
}

// maxPosition bounds PushHeader.position.
const maxPosition = 4 << 10

// pushPosition checks a push's input position and returns it as the
// record the shard keeps (nil without one).
func (s *Server) pushPosition(hdr *pspb.PushHeader) ([]walPosition, error) {
	p := hdr.GetPosition()
	if len(p) == 0 {
		return nil, nil
	}
	if len(p) > maxPosition {
		return nil, s.reject("bad_position", s.errorf(codes.InvalidArgument, "push position of %d bytes, at most %d allowed", len(p), maxPosition))
	}
	if hdr.GetWorkerId() == "" {
		return nil, s.reject("bad_position", s.errorf(codes.InvalidArgument, "push carries a position but no worker_id to keep it under"))
	}
	return []walPosition{{worker: hdr.GetWorkerId(), position: bytes.Clone(p)}}, nil
}

// setPositions records the positions of an update being applied; the
// caller holds mu (shared in Hogwild).
func (s *Server) setPositions(ps []walPosition) {
	if len(ps) == 0 {
		return
	}
	s.posMu.Lock()
	for _, p := range ps {
		s.positions[p.worker] = p.position
	}
	s.posMu.Unlock()
}

// positionsCopy returns the workers' positions.
func (s *Server) positionsCopy() map[string][]byte {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	return maps.Clone(s.positions)
}

func (s *Server) staleness(base uint64) uint64 {
	v := s.version.Load()
	if base >= v {
		return 0
	}
	return v - base
}

func (s *Server) assign(ups []update, applied func(byte, float32)) *pspb.PushResponse {
	s.mu.Lock()
	for _, u := range ups {
		u.runs(func(off int, g []float32) { copy(u.p.values[off:], g) })
		u.p.cursor = s.clock.Add(1)
	}
	applied(walAssign, 1)
	s.mu.Unlock()
	s.stats.assigns.Add(1)
	return &pspb.PushResponse{Info: s.info(), LrScale: 1}
}

func (s *Server) pushHogwild(hdr *pspb.PushHeader, ups []update, applied func(byte, float32)) *pspb.PushResponse {
	s.mu.RLock()
	st := s.staleness(hdr.GetBaseVersion())
	for _, u := range ups {
		u.p.mu.Lock()
		s.applySplit(u, 1)
		u.p.iterations++
		u.p.cursor = s.clock.Add(1)
		u.p.mu.Unlock()
	}
	s.version.Add(1)
	applied(walGradient, 1)
	s.mu.RUnlock()
	s.stats.updates.Add(1)
	s.stats.observeStaleness(st)
	return &pspb.PushResponse{Info: s.info(), Staleness: st, LrScale: 1}
}

func (s *Server) pushLocked(hdr *pspb.PushHeader, ups []update, applied func(byte, float32)) (*pspb.PushResponse, error) {
	s.mu.Lock()
	st := s.staleness(hdr.GetBaseVersion())
	scale := float32(1)
	if s.o.mode == BoundedStaleness && st > s.o.maxStaleness {
		if !s.o.scaleStale {
			v := s.version.Load()
			s.mu.Unlock()
			return nil, s.reject("stale", s.errorf(codes.Aborted, "push from worker %q based on version %d is %d updates behind version %d (bound %d); pull and recompute",
				hdr.GetWorkerId(), hdr.GetBaseVersion(), st, v, s.o.maxStaleness))
		}
		scale = 1 / float32(st)
	}
	if elements := updateElements(ups); len(ups) == 1 || elements < parallelElements {
		for _, u := range ups { // one at a time, each spread over the cores
			s.applySplit(u, scale)
			u.p.iterations++
		}
	} else {
		eachPart(len(ups), elements, func(i int) {
			u := ups[i]
			s.applyUpdate(u, scale)
			u.p.iterations++
		})
	}
	for _, u := range ups {
		u.p.cursor = s.clock.Add(1)
	}
	s.version.Add(1)
	applied(walGradient, scale)
	s.mu.Unlock()
	s.stats.updates.Add(1)
	s.stats.observeStaleness(st)
	return &pspb.PushResponse{Info: s.info(), Staleness: st, LrScale: scale}, nil
}

// eachPart runs f(0..n-1), spreading the calls over up to GOMAXPROCS
// goroutines when there are several parts and enough elements to be worth
// it (each part is independent), and returns when all are done.
func updateElements(ups []update) int {
	n := 0
	for _, u := range ups {
		n += len(u.p.values)
	}
	return n
}

// applyUpdate runs the optimizer on u's part with u's gradient, run by
// run (the formulas are elementwise), as one update: the caller counts
// the iteration.
func (s *Server) applyUpdate(u update, lrScale float32) {
	p := u.p
	if u.vals != nil || u.seg == nil {
		s.opt.Apply(p.iterations, lrScale, p.values, u.vals, p.slots)
		return
	}
	sub := make([][]float32, len(p.slots))
	u.seg.runs(func(off int, g []float32) {
		for k, sl := range p.slots {
			sub[k] = sl[off : off+len(g)]
		}
		s.opt.Apply(p.iterations, lrScale, p.values[off:off+len(g)], g, sub)
	})
}

// applySplit is applyUpdate with a large contiguous update cut into
// ranges applied on several cores (the optimizers are elementwise, so the
// result is the same bit for bit).
func (s *Server) applySplit(u update, lrScale float32) {
	const grain = 16 << 10 // elements: tens of microseconds of Adam
	n := len(u.p.values)
	ranges := min(runtime.GOMAXPROCS(0), n/grain)
	if u.vals == nil || ranges < 2 {
		s.applyUpdate(u, lrScale)
		return
	}
	p := u.p
	var wg sync.WaitGroup
	for r := range ranges {
		lo, hi := r*n/ranges, (r+1)*n/ranges
		apply := func() {
			sub := make([][]float32, len(p.slots))
			for k, sl := range p.slots {
				sub[k] = sl[lo:hi]
			}
			s.opt.Apply(p.iterations, lrScale, p.values[lo:hi], u.vals[lo:hi], sub)
		}
		if r == ranges-1 {
			apply()
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			apply()
		}()
	}
	wg.Wait()
}

// parallelElements is the update size from which eachPart spreads parts
// over the cores.
const parallelElements = 1 << 18

func eachPart(n, elements int, f func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 || elements < parallelElements {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// ---- sync mode ----

type syncStep struct {
	step     uint64
	sums     map[*part][]float32
	order    []*part
	workers  map[string]bool
	keys     []string
	entries  []*keyEntry
	pos      []walPosition // the contributors' positions, set when the step applies
	elements int
	n        int
	done     chan struct{}
	err      error
	resp     *pspb.PushResponse
	timer    *time.Timer
	lsn      uint64 // the step's write-ahead log record
}

func (s *Server) pushSync(ctx context.Context, hdr *pspb.PushHeader, ups []update, key string, entry *keyEntry, pos []walPosition) (*pspb.PushResponse, error) {
	fail := func(err error) (*pspb.PushResponse, error) {
		if entry != nil {
			s.keys.finish(key, entry, nil, err)
		}
		return nil, err
	}
	want := hdr.GetStep()
	s.syncMu.Lock()
	for {
		cur := s.step.Load()
		if want < cur {
			s.syncMu.Unlock()
			return fail(s.reject("stale", s.errorf(codes.Aborted, "sync push from worker %q for step %d, but the shard is at step %d; pull and continue from there", hdr.GetWorkerId(), want, cur)))
		}
		if want == cur {
			break
		}
		adv := s.advanced
		s.syncMu.Unlock()
		select {
		case <-adv:
		case <-ctx.Done():
			return fail(status.FromContextError(ctx.Err()).Err())
		case <-s.closed:
			return fail(s.errorf(codes.Unavailable, "shutting down"))
		}
		s.syncMu.Lock()
	}
	st := s.pending
	if st == nil {
		st = &syncStep{step: want, sums: map[*part][]float32{}, workers: map[string]bool{}, done: make(chan struct{})}
		s.pending = st
		st.timer = time.AfterFunc(s.o.syncTimeout, func() { s.syncTimeout(st) })
	}
	wid := hdr.GetWorkerId()
	if wid != "" && st.workers[wid] {
		s.syncMu.Unlock()
		return fail(s.reject("duplicate_worker", s.errorf(codes.InvalidArgument, "worker %q pushed step %d twice with different idempotency keys", wid, want)))
	}
	st.workers[wid] = true
	if entry != nil {
		st.keys = append(st.keys, key)
		st.entries = append(st.entries, entry)
	}
	st.pos = append(st.pos, pos...)
	for _, u := range ups {
		sum, ok := st.sums[u.p]
		if !ok {
			sum = make([]float32, len(u.p.values))
			st.sums[u.p] = sum
			st.order = append(st.order, u.p)
			st.elements += len(u.p.values)
		}
		u.runs(func(off int, g []float32) {
			s := sum[off : off+len(g)]
			for i, x := range g {
				s[i] += x
			}
		})
	}
	st.n++
	if int64(st.n) >= s.workers.Load() {
		s.completeStep(st, st.n)
	}
	s.syncMu.Unlock()
	select {
	case <-st.done:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.closed:
		return nil, s.errorf(codes.Unavailable, "shutting down before sync step %d completed", want)
	}
	if st.err != nil {
		return nil, st.err
	}
	if err := s.durable(ctx, st.lsn); err != nil {
		return nil, err
	}
	return &pspb.PushResponse{Info: st.resp.GetInfo(), LrScale: 1, AppliedStep: st.step}, nil
}

// completeStep averages the sums of st over n pushes, applies them once and
// advances the step. Called with syncMu held.
func (s *Server) completeStep(st *syncStep, n int) {
	st.timer.Stop()
	s.mu.Lock()
	div := float32(n)
	eachPart(len(st.order), updateElements(nil)+st.elements, func(i int) {
		p := st.order[i]
		g := st.sums[p]
		for i := range g {
			g[i] /= div
		}
		s.opt.Apply(p.iterations, 1, p.values, g, p.slots)
		p.iterations++
	})
	for _, p := range st.order {
		p.cursor = s.clock.Add(1)
	}
	s.version.Add(1)
	// The step counter and the step's keys change with its values, under
	// the same lock, so that a snapshot never holds one without the others.
	s.step.Add(1)
	s.setPositions(st.pos)
	if s.wal != nil {
		st.lsn = s.wal.append(walSyncStep, 1, st.keys, st.pos, nil, nil, st.sums, st.order)
	}
	for i, e := range st.entries {
		s.keys.markApplied(st.keys[i], e, st.lsn)
	}
	s.mu.Unlock()
	s.stats.updates.Add(1)
	s.stats.observeStaleness(0)
	st.resp = &pspb.PushResponse{Info: s.info(), LrScale: 1, AppliedStep: st.step}
	s.pending = nil
	close(st.done)
	for i, e := range st.entries {
		s.keys.finish(st.keys[i], e, st.resp, nil)
	}
	close(s.advanced)
	s.advanced = make(chan struct{})
}

func (s *Server) syncTimeout(st *syncStep) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.pending != st {
		return
	}
	workers := int(s.workers.Load())
	missing := workers - st.n
	if s.o.straggler == StragglerDrop {
		s.stats.droppedStragglers.Add(uint64(missing))
		s.completeStep(st, st.n)
		s.o.logger.Warn("ps: sync step applied without stragglers", "shard", s.o.shard, "step", st.step, "arrived", st.n, "workers", workers)
		return
	}
	st.err = s.reject("sync_timeout", s.errorf(codes.Aborted, "sync step %d: %d of %d workers pushed within %v; step discarded, push it again",
		st.step, st.n, workers, s.o.syncTimeout))
	s.pending = nil
	close(st.done)
	for i, e := range st.entries {
		s.keys.finish(st.keys[i], e, nil, st.err)
	}
}

// setWorkers changes the pushes per Sync step; a pending step that
// already holds that many is applied at once.
func (s *Server) setWorkers(req *pspb.SetWorkersRequest) (*pspb.SetWorkersResponse, error) {
	n := req.GetWorkers()
	if n < 1 {
		return nil, s.reject("malformed", s.errorf(codes.InvalidArgument, "set workers: %d, want at least 1", n))
	}
	s.syncMu.Lock()
	old := s.workers.Swap(int64(n))
	if st := s.pending; st != nil && int64(st.n) >= int64(n) {
		s.completeStep(st, st.n)
	}
	s.syncMu.Unlock()
	s.o.logger.Warn("ps: workers per sync step changed", "shard", s.o.shard, "from", old, "to", n, "reason", req.GetReason())
	return &pspb.SetWorkersResponse{Info: s.info()}, nil
}

// ---- pull ----

// targetMessageBytes is the size tensor-carrying messages are cut at: one
// default chunk per message, so that sender and receiver overlap encoding,
// transfer and decoding.
const targetMessageBytes = 4 << 20

// collect encodes the parts changed since cursor since (all of them if
// incarnation is not the server's) as PullResponse bodies in wire format,
// the first one carrying the server info.
func (s *Server) collect(req *pspb.PullRequest) ([][]byte, uint64, error) {
	var msgs [][]byte
	var n uint64
	err := s.changed(req, func(parts []pullPart, dtype pspb.DType, limit int, info *pspb.ServerInfo) error {
		var err error
		msgs, n, err = encodePull(parts, dtype, limit, info)
		return err
	})
	return msgs, n, err
}

// changed calls f with the parts changed since req's cursor (all of them
// if req's incarnation is not the server's), the dtype and message size
// limit the request asks for, and the server info to answer with. The
// parts' values are read-locked while f runs: f copies them out.
func (s *Server) changed(req *pspb.PullRequest, f func(parts []pullPart, dtype pspb.DType, limit int, info *pspb.ServerInfo) error) error {
	dtype := req.GetDtype()
	switch dtype {
	case pspb.DType_DTYPE_UNSPECIFIED, pspb.DType_DTYPE_FLOAT32:
		dtype = pspb.DType_DTYPE_FLOAT32
	case pspb.DType_DTYPE_FLOAT16:
	default:
		return s.reject("wrong_dtype", s.errorf(codes.InvalidArgument, "pull: dtype %v not supported (want DTYPE_FLOAT32 or DTYPE_FLOAT16)", dtype))
	}
	limit := int(req.GetMaxMessageBytes())
	if limit <= 0 || limit > targetMessageBytes {
		limit = targetMessageBytes
	}
	limit = min(limit, s.o.maxMessageBytes-(64<<10))
	var parts []pullPart
	var locked []*part
	s.mu.RLock()
	info := s.info()
	info.Parts = uint32(len(s.order))
	since := req.GetSince()
	if req.GetIncarnation() != info.GetIncarnation() || since > info.GetCursor() {
		since = 0
	}
	// Hold every selected part's read lock while copying so that a Hogwild
	// push cannot tear a chunk; parts are locked in shard order, and
	// writers take one part lock at a time, so this cannot deadlock.
	for _, p := range s.order {
		p.mu.RLock()
		if p.cursor > since {
			parts = append(parts, pullPart{name: p.spec.GetName(), index: p.spec.GetIndex(), values: p.values})
			locked = append(locked, p)
		} else {
			p.mu.RUnlock()
		}
	}
	err := f(parts, dtype, limit, info)
	for _, p := range locked {
		p.mu.RUnlock()
	}
	s.mu.RUnlock()
	if err != nil {
		return s.errorf(codes.Internal, "pull: %v", err)
	}
	s.stats.pulls.Add(1)
	return nil
}

// ---- barrier ----

type barrier struct {
	count   int
	gen     uint64
	arrived map[string]bool
	release chan struct{}
}

func (s *Server) barrier(ctx context.Context, req *pspb.BarrierRequest) (*pspb.BarrierResponse, error) {
	if req.GetCount() == 0 || req.GetName() == "" || req.GetWorkerId() == "" {
		return nil, s.reject("malformed", s.errorf(codes.InvalidArgument, "barrier: name %q, worker %q, count %d; want a name, a worker id and count > 0", req.GetName(), req.GetWorkerId(), req.GetCount()))
	}
	s.barrierMu.Lock()
	b := s.barriers[req.GetName()]
	if b == nil {
		b = &barrier{count: int(req.GetCount()), arrived: map[string]bool{}, release: make(chan struct{})}
		s.barriers[req.GetName()] = b
	}
	if b.count != int(req.GetCount()) {
		s.barrierMu.Unlock()
		return nil, s.reject("malformed", s.errorf(codes.InvalidArgument, "barrier %q waits for %d workers, request says %d", req.GetName(), b.count, req.GetCount()))
	}
	gen, release := b.gen, b.release
	b.arrived[req.GetWorkerId()] = true
	if len(b.arrived) == b.count {
		b.gen++
		close(b.release)
		b.release = make(chan struct{})
		b.arrived = map[string]bool{}
	}
	s.barrierMu.Unlock()
	// leave withdraws a caller that stops waiting before the release, so
	// that the barrier does not later release without it.
	leave := func() {
		s.barrierMu.Lock()
		if b.gen == gen {
			delete(b.arrived, req.GetWorkerId())
		}
		s.barrierMu.Unlock()
	}
	select {
	case <-release:
		return &pspb.BarrierResponse{Generation: gen}, nil
	case <-ctx.Done():
		leave()
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.closed:
		leave()
		return nil, s.errorf(codes.Unavailable, "shutting down")
	}
}

// ---- the gRPC service ----

type service struct {
	pspb.UnimplementedParameterServerServer
	s *Server
}

func (v *service) Register(ctx context.Context, req *pspb.RegisterRequest) (*pspb.RegisterResponse, error) {
	return v.s.register(ctx, req)
}

func (v *service) Pull(req *pspb.PullRequest, stream pspb.ParameterServer_PullServer) error {
	msgs, n, err := v.s.collect(req)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := stream.SendMsg(&encodedMsg{parts: [][]byte{m}}); err != nil {
			return err
		}
	}
	v.s.stats.bytesOut.Add(n)
	return nil
}

func (v *service) Push(stream pspb.ParameterServer_PushServer) error {
	hdr, ups, err := v.s.receivePush(func(m *pushMsg) error { return stream.RecvMsg(m) })
	if err != nil {
		return err
	}
	resp, err := v.s.push(stream.Context(), hdr, ups)
	releaseUpdates(ups)
	if err != nil {
		return err
	}
	if h := v.s.testAfterPush; h != nil {
		if err := h(hdr.GetIdempotencyKey()); err != nil {
			return err
		}
	}
	return stream.SendAndClose(resp)
}

func (v *service) PushPull(stream pspb.ParameterServer_PushPullServer) error {
	hdr, ups, err := v.s.receivePush(func(m *pushMsg) error { return stream.RecvMsg(m) })
	if err != nil {
		return err
	}
	resp, err := v.s.push(stream.Context(), hdr, ups)
	releaseUpdates(ups)
	if err != nil {
		return err
	}
	msgs, n, err := v.s.collect(hdr.GetPull())
	if err != nil {
		return err
	}
	for i, m := range msgs {
		var push *pspb.PushResponse
		if i == 0 {
			push = resp
		}
		em, err := wrapPushPull(m, push)
		if err != nil {
			return v.s.errorf(codes.Internal, "push-pull: %v", err)
		}
		if err := stream.SendMsg(em); err != nil {
			return err
		}
	}
	v.s.stats.bytesOut.Add(n)
	return nil
}

func (v *service) Barrier(ctx context.Context, req *pspb.BarrierRequest) (*pspb.BarrierResponse, error) {
	return v.s.barrier(ctx, req)
}

func (v *service) Snapshot(context.Context, *pspb.SnapshotRequest) (*pspb.SnapshotResponse, error) {
	if v.s.o.snapshotDir == "" {
		return nil, v.s.errorf(codes.FailedPrecondition, "snapshot: no snapshot directory configured")
	}
	r, err := v.s.writeSnapshot()
	if err != nil {
		return nil, v.s.errorf(codes.Internal, "snapshot: %v", err)
	}
	return r, nil
}

func (v *service) Restore(context.Context, *pspb.RestoreRequest) (*pspb.RestoreResponse, error) {
	if v.s.o.snapshotDir == "" {
		return nil, v.s.errorf(codes.FailedPrecondition, "restore: no snapshot directory configured")
	}
	path, err := v.s.rollBack()
	if errors.Is(err, errNoSnapshot) {
		return nil, v.s.errorf(codes.NotFound, "restore: %v", err)
	}
	if err != nil {
		return nil, v.s.errorf(codes.DataLoss, "restore: %v", err)
	}
	return &pspb.RestoreResponse{Info: v.s.info(), Path: path}, nil
}

func (v *service) SetWorkers(_ context.Context, req *pspb.SetWorkersRequest) (*pspb.SetWorkersResponse, error) {
	return v.s.setWorkers(req)
}

func (v *service) Stats(context.Context, *pspb.StatsRequest) (*pspb.StatsResponse, error) {
	return v.s.statsProto(), nil
}
