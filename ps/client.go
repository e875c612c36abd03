package ps

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/ps/pspb"
)

var (
	// ErrClosed is returned by a Client used after Close.
	ErrClosed = errors.New("ps: client closed")
	// ErrNotRegistered is returned by data calls before Register.
	ErrNotRegistered = errors.New("ps: no variables registered; call Register first")
	// ErrStale wraps codes.Aborted rejections: a push too stale for
	// BoundedStaleness, a Sync push for a step already applied, or a Sync
	// step discarded after its straggler timeout. Pull and push again.
	ErrStale = errors.New("ps: push rejected as stale")
)

// shardView is what a client knows of a shard.
type shardView struct {
	incarnation string
	version     uint64
	cursor      uint64
	step        uint64
	mode        string
}

// Client talks to all shards of a parameter server. Its methods serialise
// on an internal lock: give each worker its own Client.
type Client struct {
	o     clientOptions
	addrs []string
	conns []*grpc.ClientConn
	stubs []pspb.ParameterServerClient

	mu     sync.Mutex // serialises operations; guards everything below
	closed bool
	lay    *layout
	cache  [][]*segChunk // latest pulled value of each part, [variable][chunk]
	bulk   []bulkState   // per shard; nil when pushes and pulls use gRPC
	views  []shardView
	cfg    optim.Config
	seq    uint64
	// failed is the last push that returned an error: pushing the same
	// tensors again reuses its idempotency keys, so shards that applied it
	// answer "duplicate" and the others apply it once.
	failed   *failedPush
	hashSeed maphash.Seed
	// incarnation is random per Client, so that the idempotency keys of a
	// restarted worker with the same worker ID never match the keys its
	// previous incarnation left in a shard's snapshot.
	incarnation string
}

type failedPush struct {
	seq  uint64
	hash uint64
}

func (c *Client) hashTensors(ts []Tensor, kind pspb.PushKind) uint64 {
	var h maphash.Hash
	h.SetSeed(c.hashSeed)
	h.WriteByte(byte(kind))
	for _, t := range ts {
		h.WriteString(t.Name)
		h.WriteByte(0)
		h.Write(float32Bytes(t.Values))
	}
	return h.Sum64()
}

// PushResult describes an applied push.
type PushResult struct {
	// Staleness is the largest number of updates the shards had applied
	// since the weights the gradients were computed on.
	Staleness uint64
	// Duplicate is true if a shard had already applied this push (a retry).
	Duplicate bool
	// Step is the Sync step the gradients were averaged into.
	Step uint64
	// LRScale is the smallest learning-rate factor a shard used
	// (BoundedStaleness with WithStalenessScaling), 1 otherwise.
	LRScale float32
}

// Dial connects to the shards at addrs (shard i at addrs[i]) and waits until
// every shard accepts connections or ctx ends.
func Dial(ctx context.Context, addrs []string, opts ...ClientOption) (*Client, error) {
	o := defaultClientOptions()
	for _, op := range opts {
		op.applyClient(&o)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("ps: dial: no shard addresses")
	}
	if o.chunk <= 0 || 4*o.chunk > o.maxMessageBytes/2 {
		return nil, fmt.Errorf("ps: dial: chunk of %d elements, want 1 to %d (half the %d-byte message limit)", o.chunk, o.maxMessageBytes/8, o.maxMessageBytes)
	}
	if o.maxAttempts < 1 || o.rpcTimeout <= 0 {
		return nil, fmt.Errorf("ps: dial: %d attempts and RPC timeout %v, want >= 1 and > 0", o.maxAttempts, o.rpcTimeout)
	}
	if o.workerID == "" {
		o.workerID = "w" + strconv.FormatUint(rand.Uint64(), 36)
	}
	dopts := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxMessageBytes), grpc.MaxCallSendMsgSize(o.maxMessageBytes),
			grpc.ForceCodecV2(wireCodec{})),
		grpc.WithInitialWindowSize(32 << 20),
		grpc.WithInitialConnWindowSize(64 << 20),
		grpc.WithReadBufferSize(1 << 20),
		grpc.WithWriteBufferSize(1 << 20),
		experimental.WithBufferPool(wirePool),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
			Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second}}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
	}
	if o.tls != nil {
		dopts = append(dopts, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dopts = append(dopts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer{token: o.token, secure: o.tls != nil}))
	}
	if o.dialer != nil {
		dopts = append(dopts, grpc.WithContextDialer(o.dialer))
	}
	c := &Client{o: o, addrs: slices.Clone(addrs), hashSeed: maphash.MakeSeed(), incarnation: strconv.FormatUint(rand.Uint64(), 36)}
	if !o.viaGRPC && o.local == nil && littleEndian {
		c.bulk = make([]bulkState, len(addrs)) // bulk.go
	}
	for _, a := range addrs {
		target := a
		if o.dialer != nil {
			target = "passthrough:///" + a
		}
		conn, err := grpc.NewClient(target, dopts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("ps: dial %s: %w", a, err)
		}
		c.conns = append(c.conns, conn)
		c.stubs = append(c.stubs, pspb.NewParameterServerClient(conn))
	}
	for i, conn := range c.conns {
		if err := waitReady(ctx, conn); err != nil {
			c.closeConns()
			return nil, fmt.Errorf("ps: dial shard %d (%s): %w", i, addrs[i], err)
		}
	}
	return c, nil
}

func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	conn.Connect()
	for {
		s := conn.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if s == connectivity.Shutdown {
			return errors.New("connection shut down")
		}
		if !conn.WaitForStateChange(ctx, s) {
			return fmt.Errorf("not ready (%v): %w", s, ctx.Err())
		}
	}
}

// bearer sends the token with every RPC.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// Close closes the connections. It is idempotent; later calls return
// ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.releaseCache()
	return c.closeConns()
}

func (c *Client) closeConns() error {
	c.closeBulk()
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// WorkerID returns the worker name used in pushes and barriers.
func (c *Client) WorkerID() string { return c.o.workerID }

func (c *Client) lock() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (c *Client) lockRegistered() error {
	if err := c.lock(); err != nil {
		return err
	}
	if c.lay == nil {
		c.mu.Unlock()
		return ErrNotRegistered
	}
	return nil
}

// call runs f with a per-attempt deadline, retrying transient failures
// with exponential backoff.
func (c *Client) call(ctx context.Context, shard int, what string, f func(ctx context.Context) error) error {
	backoff := c.o.backoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.o.rpcTimeout)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		code := status.Code(err)
		transient := code == codes.Unavailable || (code == codes.DeadlineExceeded && ctx.Err() == nil)
		if !transient || attempt >= c.o.maxAttempts || ctx.Err() != nil {
			return c.wrap(shard, what, err)
		}
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return c.wrap(shard, what, err)
		}
		backoff = min(2*backoff, c.o.maxBackoff)
	}
}

func (c *Client) wrap(shard int, what string, err error) error {
	if status.Code(err) == codes.Aborted {
		return fmt.Errorf("ps: %s shard %d (%s): %w: %w", what, shard, c.addrs[shard], ErrStale, err)
	}
	return fmt.Errorf("ps: %s shard %d (%s): %w", what, shard, c.addrs[shard], err)
}

// forShards runs f for each listed shard concurrently and joins the errors.
func forShards(shards []int, f func(shard int) error) error {
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(s)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Client) allShards() []int {
	s := make([]int, len(c.addrs))
	for i := range s {
		s[i] = i
	}
	return s
}

func (c *Client) see(shard int, info *pspb.ServerInfo) {
	if info == nil {
		return
	}
	v := &c.views[shard]
	v.incarnation, v.version, v.step, v.mode = info.GetIncarnation(), info.GetVersion(), info.GetStep(), info.GetMode()
}

// Register declares vars on their shards and offers their Init values
// (zeros where Init is nil). It is idempotent across workers: the first
// value to reach a shard wins and later offers are ignored. When it
// returns, the client holds the current values; read them with Pull. Every
// worker must register the same variables in the same order with the same
// chunk size, which makes their routing identical.
func (c *Client) Register(ctx context.Context, vars []Variable) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	lay, err := newLayout(vars, c.o.chunk, len(c.addrs))
	if err != nil {
		return err
	}
	infos := make([]*pspb.ServerInfo, len(c.addrs))
	budget := min(targetMessageBytes, c.o.maxMessageBytes/2)
	err = forShards(c.allShards(), func(shard int) error {
		parts := lay.byShard[shard]
		for start := 0; start < len(parts) || (start == 0 && len(parts) == 0); {
			req := &pspb.RegisterRequest{Shard: uint32(shard), NumShards: uint32(len(c.addrs))}
			size := 0
			for start < len(parts) && (size == 0 || size+4*parts[start].length <= budget) {
				p := parts[start]
				init := vars[p.v].Init
				var vals []float32
				if init != nil {
					vals = init[p.offset : p.offset+p.length]
				} else {
					vals = make([]float32, p.length)
				}
				req.Parts = append(req.Parts, lay.spec(p))
				req.Values = append(req.Values, &pspb.Chunk{Name: vars[p.v].Name, Index: p.index, Dtype: pspb.DType_DTYPE_FLOAT32, Data: float32Bytes(vals)})
				size += 4 * p.length
				start++
			}
			var resp *pspb.RegisterResponse
			err := c.call(ctx, shard, "register", func(ctx context.Context) error {
				var err error
				resp, err = c.stubs[shard].Register(ctx, req)
				return err
			})
			if err != nil {
				return err
			}
			infos[shard] = resp.GetInfo()
			if len(parts) == 0 {
				break
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	cfgJSON, mode := infos[0].GetOptimizerJson(), infos[0].GetMode()
	for i, in := range infos {
		if in.GetOptimizerJson() != cfgJSON || in.GetMode() != mode {
			return fmt.Errorf("ps: register: shard %d runs %s with optimizer %s, shard 0 runs %s with %s; all shards must agree",
				i, in.GetMode(), in.GetOptimizerJson(), mode, cfgJSON)
		}
	}
	cfg, err := optim.ParseConfig([]byte(cfgJSON))
	if err != nil {
		return fmt.Errorf("ps: register: shard optimizer: %w", err)
	}
	c.cfg = cfg
	c.lay = lay
	c.releaseCache()
	c.cache = make([][]*segChunk, len(lay.vars))
	for i := range lay.vars {
		c.cache[i] = make([]*segChunk, len(lay.parts[i]))
	}
	c.views = make([]shardView, len(c.addrs))
	for i, in := range infos {
		c.see(i, in)
	}
	return c.pullShards(ctx, c.allShards(), nil)
}

// Variables returns the registered variables (without values).
func (c *Client) Variables() []Variable {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lay == nil {
		return nil
	}
	out := make([]Variable, len(c.lay.vars))
	for i, v := range c.lay.vars {
		out[i] = Variable{Name: v.Name, Shape: slices.Clone(v.Shape), Trainable: v.Trainable}
	}
	return out
}

// Optimizer returns the optimizer configuration the shards run.
func (c *Client) Optimizer() optim.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

func (c *Client) pullRequest(shard int) *pspb.PullRequest {
	v := c.views[shard]
	r := &pspb.PullRequest{Since: v.cursor, Incarnation: v.incarnation, Dtype: pspb.DType_DTYPE_FLOAT32, MaxMessageBytes: uint64(min(targetMessageBytes, c.o.maxMessageBytes/2))}
	if c.o.fp16 {
		r.Dtype = pspb.DType_DTYPE_FLOAT16
	}
	return r
}

// receiveChunks checks pulled chunks of shard and keeps them in the cache;
// chunks of variables the caller asked for (out[v] != nil) are decoded
// into out right away, overlapping with the transfer of the next message.
// It takes over the chunks: those it does not keep are released.
func (c *Client) receiveChunks(shard int, chunks []*segChunk, out *dstSet) error {
	for i, ch := range chunks {
		if err := c.receiveChunk(shard, ch, out); err != nil {
			for _, rest := range chunks[i:] {
				rest.release()
			}
			return err
		}
	}
	return nil
}

func (c *Client) receiveChunk(shard int, ch *segChunk, out *dstSet) error {
	name := fmt.Sprintf("variable %q chunk %d", ch.name, ch.index)
	vi, ok := c.lay.byName[ch.name]
	if !ok || int(ch.index) >= len(c.lay.parts[vi]) {
		return fmt.Errorf("ps: server sent %s, which this client did not register", name)
	}
	p := c.lay.parts[vi][ch.index]
	if p.shard != shard {
		return fmt.Errorf("ps: shard %d sent %s, which is routed to shard %d", shard, name, p.shard)
	}
	size := 4
	if ch.dtype == pspb.DType_DTYPE_FLOAT16 {
		size = 2
	} else if ch.dtype != pspb.DType_DTYPE_FLOAT32 {
		return fmt.Errorf("ps: shard %d sent %s with dtype %v", shard, name, ch.dtype)
	}
	if ch.n != size*p.length {
		return fmt.Errorf("ps: shard %d sent %s with %d bytes, want %d", shard, name, ch.n, size*p.length)
	}
	if old := c.cache[p.v][p.index]; old != nil {
		old.release()
	}
	c.cache[p.v][p.index] = ch
	if out != nil && out.vals[p.v] != nil {
		if err := ch.decode(out.vals[p.v][p.offset : p.offset+p.length]); err != nil {
			return err
		}
		out.done[p.v][p.index] = true
	}
	return nil
}

// releaseCache drops the cached chunks.
func (c *Client) releaseCache() {
	for _, parts := range c.cache {
		for i, ch := range parts {
			if ch != nil {
				ch.release()
				parts[i] = nil
			}
		}
	}
}

func (c *Client) pullShards(ctx context.Context, shards []int, out *dstSet) error {
	return forShards(shards, func(shard int) error {
		if ok, err := c.pullBulk(ctx, shard, out); ok {
			return err
		}
		if srv := c.localShard(shard); srv != nil {
			return c.call(ctx, shard, "pull", func(context.Context) error {
				chunks, info, err := srv.localPull(c.pullRequest(shard))
				if err != nil {
					return err
				}
				return c.received(shard, chunks, info, out)
			})
		}
		return c.call(ctx, shard, "pull", func(ctx context.Context) error {
			stream, err := c.stubs[shard].Pull(ctx, c.pullRequest(shard))
			if err != nil {
				return err
			}
			var info *pspb.ServerInfo
			for {
				m := &pullMsg{}
				err := stream.RecvMsg(m)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				if m.info != nil {
					info = m.info
				}
				if err := c.receiveChunks(shard, m.chunks, out); err != nil {
					return err
				}
			}
			if info == nil {
				return status.Error(codes.Internal, "ps: pull response without server info")
			}
			c.see(shard, info)
			c.views[shard].cursor = info.GetCursor()
			return nil
		})
	})
}

// dstSet is the caller's destination of a pull, by variable index.
type dstSet struct {
	vals [][]float32 // nil where not requested
	done [][]bool    // parts already written during this call
}

// prepareDst checks dst against the registered variables.
func (c *Client) prepareDst(dst []Tensor) (*dstSet, error) {
	out := &dstSet{vals: make([][]float32, len(c.lay.vars)), done: make([][]bool, len(c.lay.vars))}
	for _, t := range dst {
		i, ok := c.lay.byName[t.Name]
		if !ok {
			return nil, fmt.Errorf("ps: variable %q is not registered", t.Name)
		}
		if len(t.Values) != c.lay.sizes[i] {
			return nil, fmt.Errorf("ps: variable %q: destination holds %d values, want %d for shape %v", t.Name, len(t.Values), c.lay.sizes[i], c.lay.vars[i].Shape)
		}
		if out.vals[i] != nil {
			return nil, fmt.Errorf("ps: variable %q given twice", t.Name)
		}
		out.vals[i] = t.Values
		out.done[i] = make([]bool, len(c.lay.parts[i]))
	}
	return out, nil
}

// finishDst copies from the cache the parts that did not travel in this
// call.
func (c *Client) finishDst(out *dstSet) error {
	for i, vals := range out.vals {
		if vals == nil {
			continue
		}
		for _, p := range c.lay.parts[i] {
			if out.done[i][p.index] {
				continue
			}
			ch := c.cache[i][p.index]
			if ch == nil {
				return fmt.Errorf("ps: variable %q chunk %d was never pulled", c.lay.vars[i].Name, p.index)
			}
			if err := ch.decode(vals[p.offset : p.offset+p.length]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Pull fetches what changed on the shards since this client's last pull
// and copies the current values of the variables named in dst into
// dst[i].Values (which must have the variable's length). dst may be empty
// to refresh the client's copy only. If Pull fails, dst may hold a mix of
// old and new values.
func (c *Client) Pull(ctx context.Context, dst []Tensor) error {
	if err := c.lockRegistered(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	out, err := c.prepareDst(dst)
	if err != nil {
		return err
	}
	if err := c.pullShards(ctx, c.allShards(), out); err != nil {
		return err
	}
	return c.finishDst(out)
}

// float32Bytes views v as little-endian bytes without copying where the
// platform allows; the result must only be read.
func float32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
	}
	return encodeFloat32(v)
}

// outgoing splits tensors into per-shard chunk lists, checking names,
// trainability (for gradients) and lengths.
func (c *Client) outgoing(ts []Tensor, kind pspb.PushKind) ([][]*pspb.Chunk, error) {
	seen := map[string]bool{}
	vals := make([][]float32, len(ts))
	for k, t := range ts {
		i, ok := c.lay.byName[t.Name]
		if !ok {
			return nil, fmt.Errorf("ps: variable %q is not registered", t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("ps: variable %q given twice", t.Name)
		}
		seen[t.Name] = true
		if kind == pspb.PushKind_PUSH_KIND_GRADIENT && !c.lay.vars[i].Trainable {
			return nil, fmt.Errorf("ps: variable %q is not trainable; use Assign", t.Name)
		}
		if len(t.Values) != c.lay.sizes[i] {
			return nil, fmt.Errorf("ps: variable %q: %d values, want %d for shape %v", t.Name, len(t.Values), c.lay.sizes[i], c.lay.vars[i].Shape)
		}
		vals[k] = t.Values
	}
	if kind == pspb.PushKind_PUSH_KIND_GRADIENT && (c.cfg.ClipNorm > 0 || c.cfg.GlobalClipNorm > 0) {
		for k := range vals {
			vals[k] = slices.Clone(vals[k])
		}
		c.cfg.ClipGradients(vals)
	}
	out := make([][]*pspb.Chunk, len(c.addrs))
	for k, t := range ts {
		for _, p := range c.lay.parts[c.lay.byName[t.Name]] {
			v := vals[k][p.offset : p.offset+p.length]
			var ch *pspb.Chunk
			if c.o.fp16 {
				ch = encodeChunk(t.Name, p.index, v, pspb.DType_DTYPE_FLOAT16)
			} else {
				ch = &pspb.Chunk{Name: t.Name, Index: p.index, Dtype: pspb.DType_DTYPE_FLOAT32, Data: float32Bytes(v)}
			}
			out[p.shard] = append(out[p.shard], ch)
		}
	}
	return out, nil
}

func (c *Client) header(shard int, kind pspb.PushKind, seq uint64, n int) *pspb.PushHeader {
	v := c.views[shard]
	return &pspb.PushHeader{
		WorkerId:       c.o.workerID,
		Step:           v.step,
		BaseVersion:    v.version,
		IdempotencyKey: c.o.workerID + "/" + c.incarnation + "/" + strconv.FormatUint(seq, 10) + "/" + strconv.Itoa(shard),
		Kind:           kind,
		Chunks:         uint32(n),
	}
}

// sendPush streams hdr and chunks in messages of at most half the message
// limit.
func (c *Client) sendPush(send func(*pspb.PushRequest) error, hdr *pspb.PushHeader, chunks []*pspb.Chunk) error {
	budget := min(targetMessageBytes, c.o.maxMessageBytes/2)
	req := &pspb.PushRequest{Header: hdr}
	size := 0
	for _, ch := range chunks {
		if size+len(ch.Data) > budget && len(req.Chunks) > 0 {
			if err := send(req); err != nil {
				return err
			}
			req, size = &pspb.PushRequest{}, 0
		}
		req.Chunks = append(req.Chunks, ch)
		size += len(ch.Data)
	}
	return send(req)
}

// Push sends gradients for the named trainable variables; every shard
// applies its part through its optimizer according to its mode (in Sync,
// Push returns once the step is applied). The gradients are clipped first
// if the optimizer sets clipnorm or global_clipnorm. Push borrows grads
// until it returns. A push that fails on a transient error is retried with
// the same idempotency key, so it is applied once.
//
// With several shards a push can fail on some and be applied on others
// (for example rejected as stale by one shard only). Pushing the same
// tensors again right after a failed Push reuses its idempotency keys: the
// shards that applied it answer "duplicate", the others apply it once.
func (c *Client) Push(ctx context.Context, grads []Tensor, opts ...PushOption) (PushResult, error) {
	return c.pushKind(ctx, grads, pspb.PushKind_PUSH_KIND_GRADIENT, nil, pushOpts(opts))
}

// PushOption configures one Push or PushPull.
type PushOption interface{ applyPush(*pushOptions) }

type pushOptions struct{ position []byte }

type pushOptionFunc func(*pushOptions)

func (f pushOptionFunc) applyPush(o *pushOptions) { f(o) }

func pushOpts(opts []PushOption) pushOptions {
	var o pushOptions
	for _, op := range opts {
		op.applyPush(&o)
	}
	return o
}

// AtPosition attaches the worker's position in its input once this push's
// gradients are applied (at most 4 KiB, opaque to the shards); give the
// client a stable WithWorkerID to find it again after a restart. Every shard
// that applies the push keeps it under the client's worker ID, with the
// update, in its snapshots and write-ahead log: a job restored from them
// reads it back with Positions and resumes its input exactly where the
// restored weights end. A retried push carries the same position.
func AtPosition(p []byte) PushOption {
	return pushOptionFunc(func(o *pushOptions) { o.position = p })
}

// Positions returns, for every shard that applies this client's gradient
// pushes, the position (AtPosition) of the last push it applied from this
// client's worker ID, or nil where it holds none. The shards can disagree
// when a job stopped while a push was applied by some and not yet by
// others; a caller resuming from them takes the earliest.
func (c *Client) Positions(ctx context.Context) ([][]byte, error) {
	if err := c.lockRegistered(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var shards []int
	for s, parts := range c.lay.byShard {
		trains := c.views[0].mode == Sync.String()
		for _, p := range parts {
			trains = trains || c.lay.vars[p.v].Trainable
		}
		if trains {
			shards = append(shards, s)
		}
	}
	all := make([][]byte, len(c.addrs))
	err := forShards(shards, func(shard int) error {
		return c.call(ctx, shard, "positions", func(ctx context.Context) error {
			r, err := c.stubs[shard].Stats(ctx, &pspb.StatsRequest{})
			if err == nil {
				all[shard] = r.GetPositions()[c.o.workerID]
			}
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(shards))
	for _, s := range shards {
		out = append(out, all[s])
	}
	return out, nil
}

// Assign sets variables (typically non-trainable state such as batch-norm
// statistics) to values, atomically per shard, bypassing the optimizer.
func (c *Client) Assign(ctx context.Context, values []Tensor) error {
	_, err := c.pushKind(ctx, values, pspb.PushKind_PUSH_KIND_ASSIGN, nil, pushOptions{})
	return err
}

// PushPull pushes gradients like Push and, in the same round trip, pulls
// what changed into dst like Pull.
func (c *Client) PushPull(ctx context.Context, grads []Tensor, dst []Tensor, opts ...PushOption) (PushResult, error) {
	if dst == nil {
		dst = []Tensor{}
	}
	return c.pushKind(ctx, grads, pspb.PushKind_PUSH_KIND_GRADIENT, dst, pushOpts(opts))
}

func (c *Client) pushKind(ctx context.Context, ts []Tensor, kind pspb.PushKind, dst []Tensor, po pushOptions) (PushResult, error) {
	if len(po.position) > maxPosition {
		return PushResult{}, fmt.Errorf("ps: push position of %d bytes, at most %d allowed", len(po.position), maxPosition)
	}

	if err := c.lockRegistered(); err != nil {
		return PushResult{}, err
	}
	defer c.mu.Unlock()
	chunks, err := c.outgoing(ts, kind)
	if err != nil {
		return PushResult{}, err
	}
	var out *dstSet
	if dst != nil {
		if out, err = c.prepareDst(dst); err != nil {
			return PushResult{}, err
		}
	}
	var seq, hash uint64
	if c.failed != nil {
		hash = c.hashTensors(ts, kind)
		if hash == c.failed.hash {
			seq = c.failed.seq
		}
	}
	if seq == 0 {
		c.seq++
		seq = c.seq
	}
	sync := c.views[0].mode == Sync.String() && kind == pspb.PushKind_PUSH_KIND_GRADIENT
	var pushShards, pullOnly []int
	for s := range c.addrs {
		if len(chunks[s]) > 0 || sync {
			pushShards = append(pushShards, s)
		} else if dst != nil {
			pullOnly = append(pullOnly, s)
		}
	}
	results := make([]*pspb.PushResponse, len(c.addrs))
	err = forShards(pushShards, func(shard int) error {
		var err error
		results[shard], err = c.pushShard(ctx, shard, kind, seq, chunks[shard], out, po.position)
		if status.Code(err) != codes.NotFound {
			return err
		}
		// The shard does not know a variable this client registered: it
		// restarted without a snapshot. Offer it the values this client
		// last pulled and push once more.
		if rerr := c.reregister(ctx, shard); rerr != nil {
			return errors.Join(err, rerr)
		}
		results[shard], err = c.pushShard(ctx, shard, kind, seq, chunks[shard], out, po.position)
		return err
	})
	if err == nil && len(pullOnly) > 0 {
		err = c.pullShards(ctx, pullOnly, out)
	}
	res := PushResult{LRScale: 1}
	for s, r := range results {
		if r == nil {
			continue
		}
		if out == nil {
			c.see(s, r.GetInfo())
		}
		res.Staleness = max(res.Staleness, r.GetStaleness())
		res.Duplicate = res.Duplicate || r.GetDuplicate()
		res.Step = max(res.Step, r.GetAppliedStep())
		if r.GetLrScale() > 0 {
			res.LRScale = min(res.LRScale, r.GetLrScale())
		}
	}
	if err != nil {
		if hash == 0 {
			hash = c.hashTensors(ts, kind)
		}
		c.failed = &failedPush{seq: seq, hash: hash}
		return res, err
	}
	c.failed = nil
	if kind == pspb.PushKind_PUSH_KIND_ASSIGN {
		for _, t := range ts {
			i := c.lay.byName[t.Name]
			for _, p := range c.lay.parts[i] {
				if old := c.cache[i][p.index]; old != nil {
					old.release()
				}
				c.cache[i][p.index] = chunkFromBytes(encodeChunk(t.Name, p.index, t.Values[p.offset:p.offset+p.length], pspb.DType_DTYPE_FLOAT32))
			}
		}
	}
	if out != nil {
		return res, c.finishDst(out)
	}
	return res, nil
}

// pushShard sends one shard its chunks of a push (with retries) and, if
// out is not nil, pulls its changes in the same round trip.
func (c *Client) pushShard(ctx context.Context, shard int, kind pspb.PushKind, seq uint64, chunks []*pspb.Chunk, out *dstSet, position []byte) (*pspb.PushResponse, error) {
	hdr := c.header(shard, kind, seq, len(chunks))
	hdr.Position = position
	if srv := c.localShard(shard); srv != nil {
		return c.pushLocal(ctx, srv, shard, hdr, chunks, out)
	}
	if r, ok, err := c.pushBulk(ctx, shard, hdr, chunks, out); ok {
		return r, err
	}
	var result *pspb.PushResponse
	if out == nil {
		err := c.call(ctx, shard, "push", func(ctx context.Context) error {
			stream, err := c.stubs[shard].Push(ctx)
			if err != nil {
				return err
			}
			if err := c.sendPush(stream.Send, hdr, chunks); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			result, err = stream.CloseAndRecv()
			return err
		})
		return result, err
	}
	hdr.Pull = c.pullRequest(shard)
	err := c.call(ctx, shard, "push-pull", func(ctx context.Context) error {
		result = nil
		stream, err := c.stubs[shard].PushPull(ctx)
		if err != nil {
			return err
		}
		if err := c.sendPush(stream.Send, hdr, chunks); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if err := stream.CloseSend(); err != nil {
			return err
		}
		var info *pspb.ServerInfo
		for {
			m := &pullMsg{pushPull: true}
			err := stream.RecvMsg(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if m.push != nil {
				result = m.push
			}
			if m.info != nil {
				info = m.info
			}
			if err := c.receiveChunks(shard, m.chunks, out); err != nil {
				return err
			}
		}
		if result == nil || info == nil {
			return status.Error(codes.Internal, "ps: push-pull response without result")
		}
		c.see(shard, info)
		c.views[shard].cursor = info.GetCursor()
		return nil
	})
	return result, err
}

// localShard returns shard's Server when the client calls it in process.
func (c *Client) localShard(shard int) *Server {
	if c.o.local == nil {
		return nil
	}
	return c.o.local[shard]
}

// pushLocal is pushShard for an in-process shard.
func (c *Client) pushLocal(ctx context.Context, srv *Server, shard int, hdr *pspb.PushHeader, chunks []*pspb.Chunk, out *dstSet) (*pspb.PushResponse, error) {
	return c.pushVia(ctx, shard, hdr, out, func(ctx context.Context) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
		return srv.localPush(ctx, hdr, chunks)
	})
}

// pushVia runs a push (a push-pull when out is not nil) whose attempts
// return the whole answer at once, as the in-process and bulk transports
// do: attempt is retried by call, and the pulled chunks are taken over.
func (c *Client) pushVia(ctx context.Context, shard int, hdr *pspb.PushHeader, out *dstSet, attempt func(ctx context.Context) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error)) (*pspb.PushResponse, error) {
	what := "push"
	if out != nil {
		what = "push-pull"
		hdr.Pull = c.pullRequest(shard)
	}
	var result *pspb.PushResponse
	err := c.call(ctx, shard, what, func(ctx context.Context) error {
		r, pulled, info, err := attempt(ctx)
		if err != nil {
			return err
		}
		result = r
		if out == nil {
			return nil
		}
		return c.received(shard, pulled, info, out)
	})
	return result, err
}

// received takes over the chunks of a pull answered in process.
func (c *Client) received(shard int, chunks []*segChunk, info *pspb.ServerInfo, out *dstSet) error {
	if err := c.receiveChunks(shard, chunks, out); err != nil {
		return err
	}
	c.see(shard, info)
	c.views[shard].cursor = info.GetCursor()
	return nil
}

// reregister declares shard's parts again, offering the values this client
// last pulled (the first offer wins), after the shard lost them.
func (c *Client) reregister(ctx context.Context, shard int) error {
	parts := c.lay.byShard[shard]
	budget := min(targetMessageBytes, c.o.maxMessageBytes/2)
	var info *pspb.ServerInfo
	for start := 0; start < len(parts); {
		req := &pspb.RegisterRequest{Shard: uint32(shard), NumShards: uint32(len(c.addrs))}
		size := 0
		for start < len(parts) && (size == 0 || size+4*parts[start].length <= budget) {
			p := parts[start]
			vals := make([]float32, p.length)
			if ch := c.cache[p.v][p.index]; ch != nil {
				if err := ch.decode(vals); err != nil {
					return err
				}
			}
			req.Parts = append(req.Parts, c.lay.spec(p))
			req.Values = append(req.Values, &pspb.Chunk{Name: c.lay.vars[p.v].Name, Index: p.index, Dtype: pspb.DType_DTYPE_FLOAT32, Data: float32Bytes(vals)})
			size += 4 * p.length
			start++
		}
		err := c.call(ctx, shard, "re-register", func(ctx context.Context) error {
			resp, err := c.stubs[shard].Register(ctx, req)
			if err == nil {
				info = resp.GetInfo()
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	c.see(shard, info)
	c.views[shard].cursor = 0 // the next pull fetches everything
	return nil
}

// Barrier blocks until count workers (counted by worker id) have entered
// the barrier name on shard 0, or ctx ends.
func (c *Client) Barrier(ctx context.Context, name string, count int) error {
	if err := c.lock(); err != nil {
		return err
	}
	c.mu.Unlock() // a barrier must not block other calls of this client
	if count <= 0 {
		return fmt.Errorf("ps: barrier %q: count %d, want > 0", name, count)
	}
	return c.call(ctx, 0, "barrier", func(ctx context.Context) error {
		_, err := c.stubs[0].Barrier(ctx, &pspb.BarrierRequest{Name: name, WorkerId: c.o.workerID, Count: uint32(count)})
		return err
	})
}

// Snapshot asks every shard to write a snapshot and returns their paths.
func (c *Client) Snapshot(ctx context.Context) ([]string, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	paths := make([]string, len(c.addrs))
	err := forShards(c.allShards(), func(shard int) error {
		return c.call(ctx, shard, "snapshot", func(ctx context.Context) error {
			r, err := c.stubs[shard].Snapshot(ctx, &pspb.SnapshotRequest{})
			if err == nil {
				paths[shard] = r.GetPath()
			}
			return err
		})
	})
	return paths, err
}

// Restore makes every shard reload its latest snapshot; the next Pull
// fetches all values.
func (c *Client) Restore(ctx context.Context) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return forShards(c.allShards(), func(shard int) error {
		return c.call(ctx, shard, "restore", func(ctx context.Context) error {
			r, err := c.stubs[shard].Restore(ctx, &pspb.RestoreRequest{})
			if err == nil && c.views != nil {
				c.see(shard, r.GetInfo())
			}
			return err
		})
	})
}

// Stats returns the counters of every shard.
func (c *Client) Stats(ctx context.Context) ([]Stats, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	out := make([]Stats, len(c.addrs))
	err := forShards(c.allShards(), func(shard int) error {
		return c.call(ctx, shard, "stats", func(ctx context.Context) error {
			r, err := c.stubs[shard].Stats(ctx, &pspb.StatsRequest{})
			if err == nil {
				out[shard] = statsFromProto(r)
			}
			return err
		})
	})
	return out, err
}

// SetWorkers tells every shard that a Sync step is now made of n pushes
// (for example after a worker died), with a reason the shards log. A step
// already holding n pushes is applied at once. Other modes keep the count
// for their ServerInfo only.
func (c *Client) SetWorkers(ctx context.Context, n int, reason string) error {
	if n < 1 {
		return fmt.Errorf("ps: set workers to %d, want at least 1", n)
	}
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	return forShards(c.allShards(), func(shard int) error {
		return c.call(ctx, shard, "set workers", func(ctx context.Context) error {
			_, err := c.stubs[shard].SetWorkers(ctx, &pspb.SetWorkersRequest{Workers: uint32(n), Reason: reason})
			return err
		})
	})
}
