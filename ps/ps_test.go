package ps

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/ps/optim"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newCluster(t *testing.T, n int, opts ...ServerOption) *LocalCluster {
	t.Helper()
	lc, err := NewLocalCluster(n, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, lc.Close()) })
	return lc
}

// transports runs f with pushes and pulls called in process (the default
// of a LocalCluster) and over gRPC (ViaGRPC); f dials its clients with
// dial.
func transports(t *testing.T, f func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client)) {
	t.Run("direct", func(t *testing.T) { f(t, dialCluster) })
	t.Run("grpc", func(t *testing.T) {
		f(t, func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client {
			t.Helper()
			return dialCluster(t, ctx, lc, append(opts, ViaGRPC())...)
		})
	})
}

func dialCluster(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client {
	t.Helper()
	c, err := lc.Dial(ctx, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// serveLoopback serves srv on a loopback port until the test ends, then
// stops it gracefully, and returns its address.
func serveLoopback(t *testing.T, srv *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() { require.NoError(t, srv.GracefulStop()); require.NoError(t, <-done) })
	return lis.Addr().String()
}

func sgd1() ServerOption { return WithOptimizer(optim.Config{Optimizer: "sgd", LearningRate: 1}) }

// testVars are two trainable variables, one split into 4 chunks of 256 by
// WithChunkElements(256), and one non-trainable statistic.
func testVars() []Variable {
	a := make([]float32, 1000)
	for i := range a {
		a[i] = float32(i%50) - 25
	}
	b := make([]float32, 37)
	for i := range b {
		b[i] = float32(i) / 4
	}
	return []Variable{
		{Name: "dense/kernel", Shape: []int64{50, 20}, Trainable: true, Init: a},
		{Name: "dense/bias", Shape: []int64{37}, Trainable: true, Init: b},
		{Name: "bn/moving_mean", Shape: []int64{3}, Init: []float32{0, 0, 0}},
	}
}

func tensorsLike(vars []Variable, trainableOnly bool) []Tensor {
	var out []Tensor
	for _, v := range vars {
		if trainableOnly && !v.Trainable {
			continue
		}
		out = append(out, Tensor{Name: v.Name, Values: make([]float32, len(v.Init))})
	}
	return out
}

// knownGrad is the gradient worker c sends at push k: small integers, so
// that every sum in float32 is exact in any order.
func knownGrad(c, k, i int) float32 { return float32((c*7+k*13+i*3)%17 - 8) }

func fillGrads(ts []Tensor, c, k int) {
	for _, t := range ts {
		for i := range t.Values {
			t.Values[i] = knownGrad(c, k, i)
		}
	}
}

func TestRegisterPullPushAcrossShards(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		ctx := testCtx(t, 20*time.Second)
		lc := newCluster(t, 3, sgd1())
		vars := testVars()
		c1 := dial(t, ctx, lc, WithChunkElements(256), WithWorkerID("w1"))
		require.NoError(t, c1.Register(ctx, vars))

		// A second worker offering other initial values gets the first ones.
		other := testVars()
		other[0].Init = make([]float32, 1000)
		c2 := dial(t, ctx, lc, WithChunkElements(256), WithWorkerID("w2"))
		require.NoError(t, c2.Register(ctx, other))
		got := tensorsLike(vars, false)
		require.NoError(t, c2.Pull(ctx, got))
		for i, v := range vars {
			require.Equal(t, v.Init, got[i].Values, v.Name)
		}

		// The 5 parts are spread over the 3 shards by size.
		total := 0
		for _, s := range lc.Servers() {
			st := s.Stats()
			require.Positive(t, st.Parts)
			total += st.Parts
		}
		require.Equal(t, 4+1+1, total)

		grads := tensorsLike(vars, true)
		fillGrads(grads, 1, 1)
		res, err := c1.Push(ctx, grads)
		require.NoError(t, err)
		require.Zero(t, res.Staleness)
		require.NoError(t, c2.Pull(ctx, got))
		for i := range grads {
			for j := range got[i].Values {
				require.Equal(t, vars[i].Init[j]-grads[i].Values[j], got[i].Values[j])
			}
		}

		// c2 has not pulled since its own view: its push is one version stale
		// on the shards c1 touched.
		fillGrads(grads, 2, 2)
		_, err = c1.Push(ctx, grads)
		require.NoError(t, err)
		res, err = c2.PushPull(ctx, grads, got)
		require.NoError(t, err)
		require.Equal(t, uint64(1), res.Staleness)
		for i := range grads {
			for j := range got[i].Values {
				require.Equal(t, vars[i].Init[j]-knownGrad(1, 1, j)-2*knownGrad(2, 2, j), got[i].Values[j])
			}
		}

		// Assignment replaces non-trainable state and is visible to others.
		require.NoError(t, c2.Assign(ctx, []Tensor{{Name: "bn/moving_mean", Values: []float32{1, 2, 3}}}))
		mm := []Tensor{{Name: "bn/moving_mean", Values: make([]float32, 3)}}
		require.NoError(t, c1.Pull(ctx, mm))
		require.Equal(t, []float32{1, 2, 3}, mm[0].Values)

		// Client-side validation names the problem.
		_, err = c1.Push(ctx, []Tensor{{Name: "bn/moving_mean", Values: []float32{1, 2, 3}}})
		require.ErrorContains(t, err, `"bn/moving_mean" is not trainable`)
		_, err = c1.Push(ctx, []Tensor{{Name: "dense/bias", Values: []float32{1}}})
		require.ErrorContains(t, err, `"dense/bias": 1 values, want 37`)
		_, err = c1.Push(ctx, []Tensor{{Name: "nope", Values: []float32{1}}})
		require.ErrorContains(t, err, `"nope" is not registered`)
		require.ErrorContains(t, c1.Pull(ctx, []Tensor{{Name: "dense/bias", Values: nil}}), "want 37")
	})
}

func TestRegisterConflicts(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 1)
	c := dialCluster(t, ctx, lc)
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{2, 3}, Trainable: true}}))
	c2 := dialCluster(t, ctx, lc)
	err := c2.Register(ctx, []Variable{{Name: "w", Shape: []int64{3, 2}, Trainable: true}})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "registered as shape [2 3]")

	_, err = NewServer(WithShard(2, 2))
	require.ErrorContains(t, err, "shard 2 of 2")
	lc2 := newCluster(t, 2)
	c3, err := Dial(ctx, lc2.Addrs()[:1], clientOptionFunc(func(o *clientOptions) { o.dialer = lcDialer(lc2) }))
	require.NoError(t, err)
	defer c3.Close()
	err = c3.Register(ctx, []Variable{{Name: "w", Shape: []int64{1}, Trainable: true}})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "shard 0 of 1, but this server is shard 0 of 2")

	require.ErrorIs(t, c3.Pull(ctx, nil), ErrNotRegistered)
	require.ErrorContains(t, c.Register(ctx, []Variable{{Name: "x", Shape: []int64{-1}}}), "negative dimension")
	require.ErrorContains(t, c.Register(ctx, []Variable{{Name: "x", Shape: []int64{2}, Init: []float32{1}}}), "1 initial values, want 2")
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Pull(ctx, nil), ErrClosed)
}

func lcDialer(lc *LocalCluster) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		for i, a := range lc.Addrs() {
			if a == addr {
				return lc.listeners[i].DialContext(ctx)
			}
		}
		return nil, errors.New("no such shard")
	}
}

// TestExactUnderLoad: with SGD and learning rate 1, 16 concurrent clients
// push known gradients; the result is the initial weights minus the exact
// sum (Sync: minus the sum of per-step averages), and Sync applies exactly
// one update per step.
func TestExactUnderLoad(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		const clients = 16
		pushes := 1000 // 16,000 pushes per mode
		switch {
		case testing.Short():
			pushes = 100
		case raceEnabled: // the race detector makes each push ~10x slower
			pushes = 300
		}
		modes := []struct {
			name string
			opts []ServerOption
		}{
			{"hogwild", []ServerOption{WithMode(Hogwild)}},
			{"async-lock", []ServerOption{WithMode(AsyncLock)}},
			{"bounded-staleness", []ServerOption{WithMode(BoundedStaleness), WithMaxStaleness(8)}},
			{"sync", []ServerOption{WithMode(Sync), WithWorkers(clients), WithSyncTimeout(30*time.Second, StragglerFail)}},
		}
		for _, m := range modes {
			t.Run(m.name, func(t *testing.T) {
				ctx := testCtx(t, 120*time.Second)
				lc := newCluster(t, 2, append(m.opts, sgd1())...)
				vars := testVars()[:2]
				var wg sync.WaitGroup
				errs := make([]error, clients)
				stale := make([]int, clients)
				for c := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[c] = func() error {
							cl, err := lc.Dial(ctx, WithChunkElements(256), WithWorkerID(fmt.Sprintf("w%d", c)))
							if err != nil {
								return err
							}
							defer cl.Close()
							if err := cl.Register(ctx, vars); err != nil {
								return err
							}
							grads := tensorsLike(vars, true)
							weights := tensorsLike(vars, true)
							for k := 0; k < pushes; k++ {
								fillGrads(grads, c, k)
								for {
									_, err := cl.PushPull(ctx, grads, weights)
									if errors.Is(err, ErrStale) && m.name == "bounded-staleness" {
										stale[c]++
										if err := cl.Pull(ctx, nil); err != nil {
											return err
										}
										continue
									}
									if err != nil {
										return fmt.Errorf("worker %d push %d: %w", c, k, err)
									}
									break
								}
							}
							return nil
						}()
					}()
				}
				wg.Wait()
				for _, err := range errs {
					require.NoError(t, err)
				}
				cl := dial(t, ctx, lc, WithChunkElements(256))
				require.NoError(t, cl.Register(ctx, vars))
				got := tensorsLike(vars, true)
				require.NoError(t, cl.Pull(ctx, got))
				for vi, v := range vars {
					for i := range v.Init {
						var sum float64
						for k := 0; k < pushes; k++ {
							var step float64
							for c := range clients {
								step += float64(knownGrad(c, k, i))
							}
							if m.name == "sync" {
								step /= clients
							}
							sum += step
						}
						want := float32(float64(v.Init[i]) - sum)
						if got[vi].Values[i] != want {
							t.Fatalf("%s[%d] = %v, want exactly %v", v.Name, i, got[vi].Values[i], want)
						}
					}
				}
				stats, err := cl.Stats(ctx)
				require.NoError(t, err)
				for _, st := range stats {
					switch m.name {
					case "sync":
						require.Equal(t, uint64(pushes), st.Updates, "shard %d updates", st.Shard)
						require.Equal(t, uint64(pushes), st.Step, "shard %d steps", st.Shard)
						require.Equal(t, uint64(pushes), st.Version)
					default:
						require.Equal(t, uint64(clients*pushes), st.Updates, "shard %d updates", st.Shard)
					}
				}
				if m.name == "bounded-staleness" {
					var rejected uint64
					for _, st := range stats {
						rejected += st.Rejections["stale"]
					}
					n := 0
					for _, s := range stale {
						n += s
					}
					require.Positive(t, n, "16 clients with a bound of 8 should see stale rejections")
					require.GreaterOrEqual(t, rejected, uint64(n))
				}
			})
		}
	})
}

// TestRetriedPushAppliedOnce loses the replies of pushes after the shard
// applied them; the client retries with the same idempotency key and the
// shard answers without applying again.
func TestRetriedPushAppliedOnce(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		for _, mode := range []Mode{Hogwild, AsyncLock, Sync} {
			t.Run(mode.String(), func(t *testing.T) {
				ctx := testCtx(t, 20*time.Second)
				lc := newCluster(t, 2, sgd1(), WithMode(mode))
				var mu sync.Mutex
				lost := map[string]int{}
				for _, s := range lc.Servers() {
					s.testAfterPush = func(key string) error {
						mu.Lock()
						defer mu.Unlock()
						if lost[key] < 2 {
							lost[key]++
							return status.Error(codes.Unavailable, "reply lost")
						}
						return nil
					}
				}
				vars := testVars()[:2]
				c := dial(t, ctx, lc, WithChunkElements(256), WithRetry(5, time.Millisecond, 5*time.Millisecond))
				require.NoError(t, c.Register(ctx, vars))
				grads := tensorsLike(vars, true)
				const n = 5
				for k := 0; k < n; k++ {
					fillGrads(grads, 0, k)
					res, err := c.Push(ctx, grads)
					require.NoError(t, err)
					require.True(t, res.Duplicate)
				}
				got := tensorsLike(vars, true)
				require.NoError(t, c.Pull(ctx, got))
				for vi, v := range vars {
					for i := range v.Init {
						want := v.Init[i]
						for k := 0; k < n; k++ {
							want -= knownGrad(0, k, i)
						}
						require.Equal(t, want, got[vi].Values[i], "%s[%d]", v.Name, i)
					}
				}
				stats, err := c.Stats(ctx)
				require.NoError(t, err)
				for _, st := range stats {
					require.Equal(t, uint64(n), st.Updates)
					require.Equal(t, uint64(2*n), st.Duplicates)
				}
			})
		}
	})
}

func TestSyncStragglers(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		t.Run("fail", func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			lc := newCluster(t, 1, sgd1(), WithMode(Sync), WithWorkers(2), WithSyncTimeout(100*time.Millisecond, StragglerFail))
			vars := []Variable{{Name: "w", Shape: []int64{2}, Trainable: true, Init: []float32{1, 1}}}
			c := dial(t, ctx, lc)
			require.NoError(t, c.Register(ctx, vars))
			_, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 1}}})
			require.ErrorIs(t, err, ErrStale)
			require.ErrorContains(t, err, "sync step 0: 1 of 2 workers pushed within 100ms")
			st := lc.Servers()[0].Stats()
			require.Zero(t, st.Updates)
			require.Equal(t, uint64(1), st.Rejections["sync_timeout"])
			// The step is retried with both workers and applied once.
			c2 := dial(t, ctx, lc)
			require.NoError(t, c2.Register(ctx, vars))
			var wg sync.WaitGroup
			var err1, err2 error
			wg.Add(2)
			go func() { defer wg.Done(); _, err1 = c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 3}}}) }()
			go func() { defer wg.Done(); _, err2 = c2.Push(ctx, []Tensor{{Name: "w", Values: []float32{3, 5}}}) }()
			wg.Wait()
			require.NoError(t, err1)
			require.NoError(t, err2)
			got := []Tensor{{Name: "w", Values: make([]float32, 2)}}
			require.NoError(t, c.Pull(ctx, got))
			require.Equal(t, []float32{1 - 2, 1 - 4}, got[0].Values)
		})
		t.Run("drop", func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			lc := newCluster(t, 1, sgd1(), WithMode(Sync), WithWorkers(3), WithSyncTimeout(100*time.Millisecond, StragglerDrop))
			vars := []Variable{{Name: "w", Shape: []int64{1}, Trainable: true, Init: []float32{10}}}
			a := dial(t, ctx, lc)
			b := dial(t, ctx, lc)
			late := dial(t, ctx, lc)
			for _, c := range []*Client{a, b, late} {
				require.NoError(t, c.Register(ctx, vars))
			}
			var wg sync.WaitGroup
			results := make([]PushResult, 2)
			errs := make([]error, 2)
			wg.Add(2)
			for i, c := range []*Client{a, b} {
				go func() {
					defer wg.Done()
					results[i], errs[i] = c.Push(ctx, []Tensor{{Name: "w", Values: []float32{float32(2 + 2*i)}}})
				}()
			}
			wg.Wait()
			for i := range results {
				require.NoError(t, errs[i])
				require.Equal(t, uint64(0), results[i].Step)
			}
			// The two that arrived were averaged: 10 - (2+4)/2.
			got := []Tensor{{Name: "w", Values: make([]float32, 1)}}
			require.NoError(t, a.Pull(ctx, got))
			require.Equal(t, float32(7), got[0].Values[0])
			_, err := late.Push(ctx, []Tensor{{Name: "w", Values: []float32{100}}})
			require.ErrorIs(t, err, ErrStale)
			require.ErrorContains(t, err, "for step 0, but the shard is at step 1")
			st := lc.Servers()[0].Stats()
			require.Equal(t, uint64(1), st.DroppedStragglers)
			require.Equal(t, uint64(1), st.Updates)
		})
	})
}

func TestBoundedStalenessScaling(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		ctx := testCtx(t, 20*time.Second)
		lc := newCluster(t, 1, sgd1(), WithMode(BoundedStaleness), WithMaxStaleness(1), WithStalenessScaling())
		vars := []Variable{{Name: "w", Shape: []int64{1}, Trainable: true, Init: []float32{0}}}
		fast := dial(t, ctx, lc)
		slow := dial(t, ctx, lc)
		require.NoError(t, fast.Register(ctx, vars))
		require.NoError(t, slow.Register(ctx, vars))
		for range 4 {
			_, err := fast.Push(ctx, []Tensor{{Name: "w", Values: []float32{1}}})
			require.NoError(t, err)
		}
		res, err := slow.Push(ctx, []Tensor{{Name: "w", Values: []float32{8}}})
		require.NoError(t, err)
		require.Equal(t, uint64(4), res.Staleness)
		require.Equal(t, float32(0.25), res.LRScale)
		got := []Tensor{{Name: "w", Values: make([]float32, 1)}}
		require.NoError(t, fast.Pull(ctx, got))
		require.Equal(t, float32(-4-2), got[0].Values[0])
	})
}

func TestFP16Transport(t *testing.T) {
	transports(t, func(t *testing.T, dial func(t *testing.T, ctx context.Context, lc *LocalCluster, opts ...ClientOption) *Client) {
		ctx := testCtx(t, 20*time.Second)
		lc := newCluster(t, 2, sgd1())
		vars := testVars()[:2]
		c := dial(t, ctx, lc, WithChunkElements(256), WithFP16())
		require.NoError(t, c.Register(ctx, vars))
		grads := tensorsLike(vars, true)
		fillGrads(grads, 3, 4)
		_, err := c.Push(ctx, grads)
		require.NoError(t, err)
		got := tensorsLike(vars, true)
		require.NoError(t, c.Pull(ctx, got))
		for vi, v := range vars {
			for i := range v.Init {
				// Small integers and quarters are exact in half precision.
				require.Equal(t, v.Init[i]-grads[vi].Values[i], got[vi].Values[i])
			}
		}
		st, err := c.Stats(ctx)
		require.NoError(t, err)
		var in uint64
		for _, s := range st {
			in += s.BytesIn
		}
		require.Equal(t, uint64(2*(1000+37)), in, "half precision is 2 bytes per element")
	})
}

func TestHalfConversion(t *testing.T) {
	tests := []struct {
		f float32
		h uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {1e6, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {6.103515625e-05, 0x0400}, {5.960464477539063e-08, 0x0001},
		{1.0009765625, 0x3c01}, {1.00048828125, 0x3c00} /* tie to even */, {1.00146484375, 0x3c02},
	}
	for _, tc := range tests {
		require.Equal(t, tc.h, floatToHalf(tc.f), "%v", tc.f)
		if tc.f != 1e6 && tc.f != 1.00048828125 && tc.f != 1.00146484375 {
			require.Equal(t, tc.f, halfToFloat(tc.h), "%#04x", tc.h)
		}
	}
	require.True(t, math.IsNaN(float64(halfToFloat(floatToHalf(float32(math.NaN()))))))
}

func TestBarrier(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	passed := 0
	var errs []error
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := lc.Dial(ctx, WithWorkerID(fmt.Sprintf("w%d", i)))
			if err == nil {
				defer c.Close()
				err = c.Barrier(ctx, "start", 3)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			passed++
		}()
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, 3, passed)
	c := dialCluster(t, ctx, lc)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := c.Barrier(short, "alone", 2)
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)

	// The worker that gave up is not counted: one more arrival does not
	// release the barrier. The shards learn that it gave up when its
	// cancellation reaches them; wait for that first.
	for _, s := range lc.Servers() {
		for {
			s.barrierMu.Lock()
			b := s.barriers["alone"]
			waiting := b != nil && len(b.arrived) > 0
			s.barrierMu.Unlock()
			if !waiting {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("shard never withdrew the worker that gave up")
			case <-time.After(time.Millisecond):
			}
		}
	}
	other, err := lc.Dial(ctx, WithWorkerID("other"))
	require.NoError(t, err)
	defer other.Close()
	short2, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	err = other.Barrier(short2, "alone", 2)
	require.Equal(t, codes.DeadlineExceeded, status.Code(err), "released without the worker that gave up: %v", err)
}

func TestMetricsHandler(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 1, sgd1(), WithMode(Hogwild))
	c := dialCluster(t, ctx, lc)
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{2}, Trainable: true}}))
	for range 3 {
		_, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 2}}})
		require.NoError(t, err)
	}
	_, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{float32(math.NaN()), 2}}})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	rec := httptest.NewRecorder()
	lc.Servers()[0].MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`gotflow_ps_version{shard="0"} 3`,
		`gotflow_ps_updates_total{shard="0"} 3`,
		`gotflow_ps_rejections_total{reason="non_finite",shard="0"} 1`,
		`gotflow_ps_staleness_bucket{shard="0",le="0"} 3`,
		`gotflow_ps_staleness_count{shard="0"} 3`,
		`gotflow_ps_bytes_in_total{shard="0"} 32`,
	} {
		require.Contains(t, body, want)
	}
}
