package ps

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/ps/optim"
)

// The two transports of a LocalCluster leave the shards in the same state:
// the same values bit for bit (Adam, so slots and step counts matter too),
// the same counters, the same bytes in and out.
func TestDirectEqualsWire(t *testing.T) {
	run := func(wire bool) ([]Tensor, []Stats) {
		ctx := testCtx(t, 20*time.Second)
		lc, err := NewLocalCluster(3, WithOptimizer(optim.Config{Optimizer: "adam", LearningRate: 0.01}))
		require.NoError(t, err)
		defer func() { require.NoError(t, lc.Close()) }()
		opts := []ClientOption{WithChunkElements(256), WithWorkerID("w")}
		if wire {
			opts = append(opts, ViaGRPC())
		}
		c, err := lc.Dial(ctx, opts...)
		require.NoError(t, err)
		defer c.Close()
		return exercise(t, c, 1)
	}
	direct, dstats := run(false)
	wire, wstats := run(true)
	require.Equal(t, wire, direct)
	require.Len(t, dstats, 3)
	for i := range dstats {
		require.Equal(t, wstats[i].Updates, dstats[i].Updates, "shard %d", i)
		require.Equal(t, wstats[i].Pushes, dstats[i].Pushes, "shard %d", i)
		require.Equal(t, wstats[i].BytesIn, dstats[i].BytesIn, "shard %d", i)
		require.Equal(t, wstats[i].BytesOut, dstats[i].BytesOut, "shard %d", i)
	}
	require.Equal(t, []float32{1, 2, 4}, direct[2].Values)
}

// exercise registers testVars through c and runs 20 mixed pushes (whole,
// with a pull, with a pull of one variable) of the gradients of client
// seed, an assignment and a pull; it returns the values pulled last and
// the shards' counters.
func exercise(t *testing.T, c *Client, seed int) ([]Tensor, []Stats) {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	vars := testVars()
	require.NoError(t, c.Register(ctx, vars))
	grads := tensorsLike(vars, true)
	got := tensorsLike(vars, false)
	var err error
	for k := range 20 {
		fillGrads(grads, seed, k)
		switch k % 3 {
		case 0:
			_, err = c.Push(ctx, grads)
		case 1:
			_, err = c.PushPull(ctx, grads, got)
		default:
			_, err = c.PushPull(ctx, grads[k%2:k%2+1], got[k%2:k%2+1]) // one variable travels
		}
		require.NoError(t, err)
	}
	require.NoError(t, c.Assign(ctx, []Tensor{{Name: "bn/moving_mean", Values: []float32{1, 2, 4}}}))
	require.NoError(t, c.Pull(ctx, got))
	stats, err := c.Stats(ctx)
	require.NoError(t, err)
	return got, stats
}

// A push refused by a shard is refused the same way in process: the
// non-finite gradient names its element and nothing is applied.
func TestDirectRejects(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		ctx := testCtx(t, 10*time.Second)
		lc := newCluster(t, 1, sgd1())
		vars := testVars()[:1]
		c := dial(t, ctx, lc)
		require.NoError(t, c.Register(ctx, vars))
		grads := tensorsLike(vars, true)
		grads[0].Values[777] = float32(math.Inf(-1))
		_, err := c.Push(ctx, grads)
		require.Equal(t, codes.InvalidArgument, status.Code(errorsUnwrapStatus(err)), "%v", err)
		require.ErrorContains(t, err, "element 777 is -Inf")
		got := tensorsLike(vars, true)
		require.NoError(t, c.Pull(ctx, got))
		require.Equal(t, vars[0].Init, got[0].Values)
	})
}

// errorsUnwrapStatus returns the gRPC status error wrapped in err.
func errorsUnwrapStatus(err error) error {
	for e := err; e != nil; {
		if _, ok := status.FromError(e); ok {
			return e
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}

// Stopping a shard ends an in-process push waiting in Sync mode with
// codes.Unavailable, and later pushes are refused the same way, as a
// stopped network shard does; Close does not hang on either.
func TestDirectStop(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc, err := NewLocalCluster(1, sgd1(), WithMode(Sync), WithWorkers(2), WithSyncTimeout(time.Minute, StragglerFail))
	require.NoError(t, err)
	vars := testVars()[:1]
	c, err := lc.Dial(ctx, WithRetry(1, time.Millisecond, time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, vars))
	grads := tensorsLike(vars, true)
	pushed := make(chan error, 1)
	go func() {
		_, err := c.Push(ctx, grads) // waits for a second worker that never comes
		pushed <- err
	}()
	require.Eventually(t, func() bool { return lc.Servers()[0].Stats().Pushes == 1 }, 10*time.Second, time.Millisecond,
		"the push did not reach its Sync step")
	require.NoError(t, lc.Close())
	select {
	case err := <-pushed:
		require.Equal(t, codes.Unavailable, status.Code(errorsUnwrapStatus(err)), "%v", err)
	case <-ctx.Done():
		t.Fatal("the waiting push did not end when its shard stopped")
	}
	_, err = c.Push(ctx, grads)
	require.Error(t, err)
	require.Equal(t, codes.Unavailable, status.Code(errorsUnwrapStatus(err)), "%v", err)
	require.ErrorContains(t, err, "shard 0 is stopped")
}

func TestAllFinite(t *testing.T) {
	ref := func(v []float32) (int, bool) {
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return i, false
			}
		}
		return 0, true
	}
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]float32, 2000)
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0xffc00001), math.Float32frombits(0x7f800001)}
	edge := []float32{math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 0, float32(math.Copysign(0, -1)), math.Float32frombits(0x7f7fffff), math.Float32frombits(0xff7fffff)}
	for trial := range 3000 {
		off, n := r.IntN(3), r.IntN(1500)
		v := buf[off : off+n]
		for i := range v {
			v[i] = edge[r.IntN(len(edge))] * float32(r.NormFloat64())
			if r.IntN(2) == 0 {
				v[i] = edge[r.IntN(len(edge))]
			}
		}
		for range r.IntN(3) {
			if n > 0 {
				v[r.IntN(n)] = bad[r.IntN(len(bad))]
			}
		}
		wi, wok := ref(v)
		gi, gok := allFinite(v)
		require.Equal(t, wok, gok, "trial %d", trial)
		if !wok {
			require.Equal(t, wi, gi, "trial %d", trial)
		}
	}
}

func TestDirtyPool(t *testing.T) {
	p := newDirtyPool(8, 12)
	for _, n := range []int{0, 1, 255, 256, 257, 4095, 4096} {
		b := p.Get(n)
		require.Len(t, *b, n)
		require.GreaterOrEqual(t, cap(*b), max(n, 256))
		require.Zero(t, cap(*b)&(cap(*b)-1), "power-of-two class")
		p.Put(b)
	}
	big := p.Get(5000) // beyond the largest class: allocated, not kept
	require.Len(t, *big, 5000)
	p.Put(big)
	odd := make([]byte, 300) // not from the pool: dropped
	p.Put(&odd)
	b := p.Get(300)
	require.Equal(t, 512, cap(*b))
}

// Updates large enough to be applied on several cores at once give the
// same values, bit for bit, as one optimizer call over the whole variable,
// in every mode that applies them directly.
func TestSplitApplyExact(t *testing.T) {
	const n = 100_003 // several ranges, one part, not a multiple of anything
	cfg := optim.Config{Optimizer: "adam", LearningRate: 0.01, Amsgrad: true}
	opt, err := optim.New(cfg)
	require.NoError(t, err)
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(i%97) / 50
	}
	grads := make([][]float32, 3)
	for k := range grads {
		grads[k] = make([]float32, n)
		for i := range grads[k] {
			grads[k][i] = float32((i*7+k*13)%23-11) / 10
		}
	}
	want := slices.Clone(init)
	slots := opt.NewSlots(n)
	for k, g := range grads {
		opt.Apply(uint64(k), 1, want, g, slots)
	}
	for _, mode := range []Mode{Hogwild, AsyncLock} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			lc := newCluster(t, 1, WithMode(mode), WithOptimizer(cfg))
			c := dialCluster(t, ctx, lc, WithChunkElements(n))
			require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{n}, Trainable: true, Init: init}}))
			got := []Tensor{{Name: "w", Values: make([]float32, n)}}
			for _, g := range grads {
				_, err := c.PushPull(ctx, []Tensor{{Name: "w", Values: g}}, got)
				require.NoError(t, err)
			}
			require.Equal(t, want, got[0].Values)
		})
	}
}

func TestSpreadCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 1<<20 - 1, 1 << 20, 2<<20 + 3, 5<<20 + 7} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(r.IntN(256))
		}
		dst := make([]byte, n)
		spreadCopy(dst, src)
		require.Equal(t, src, dst, "%d bytes", n)
	}
}
