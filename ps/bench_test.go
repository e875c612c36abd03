package ps

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/gotflow/gotflow/ps/optim"
)

// loopbackShard serves one shard on a 127.0.0.1 port for benchmarks.
func loopbackShard(b *testing.B, opts ...ServerOption) string {
	b.Helper()
	s, err := NewServer(opts...)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(lis) }()
	b.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

// BenchmarkPushPull measures one PushPull of n float32 over TCP loopback
// with SGD; bytes are those pushed plus those pulled.
func BenchmarkPushPull(b *testing.B) {
	for _, n := range []int{100_000, 1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ctx := context.Background()
			addr := loopbackShard(b, WithOptimizer(optim.Config{LearningRate: 1e-6}))
			c, err := Dial(ctx, []string{addr})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Register(ctx, []Variable{{Name: "w", Shape: []int64{int64(n)}, Trainable: true}}); err != nil {
				b.Fatal(err)
			}
			g := []Tensor{{Name: "w", Values: make([]float32, n)}}
			dst := []Tensor{{Name: "w", Values: make([]float32, n)}}
			b.SetBytes(int64(8 * n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.PushPull(ctx, g, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTCPEcho is the peer of BenchmarkPushPull: the same bytes sent
// and received back over a plain TCP loopback socket.
func BenchmarkTCPEcho(b *testing.B) {
	for _, n := range []int{100_000, 1 << 20, 10 << 20} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer lis.Close()
			size := 4 * n
			go func() {
				conn, err := lis.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(conn, buf); err != nil {
						return
					}
					if _, err := conn.Write(buf); err != nil {
						return
					}
				}
			}()
			conn, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			src, dst := make([]byte, size), make([]byte, size)
			b.SetBytes(int64(2 * size))
			for b.Loop() {
				if _, err := conn.Write(src); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(conn, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFP16Encode measures the half-precision transport conversion.
func BenchmarkFP16Encode(b *testing.B) {
	v := make([]float32, 1<<20)
	for i := range v {
		v[i] = float32(i) / 1000
	}
	b.SetBytes(4 << 20)
	b.ReportAllocs()
	for b.Loop() {
		encodeChunk("w", 0, v, 2)
	}
}

// BenchmarkUpdates measures PushPull calls per second of a 10k-parameter
// model on two loopback shards with 1, 4 and 16 concurrent clients.
func BenchmarkUpdates(b *testing.B) {
	for _, mode := range []Mode{Hogwild, AsyncLock, Sync, BoundedStaleness} {
		for _, clients := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", mode, clients), func(b *testing.B) {
				ctx := context.Background()
				opts := []ServerOption{WithMode(mode), WithOptimizer(optim.Config{Optimizer: "adam"}), WithWorkers(clients), WithMaxStaleness(1 << 30)}
				addrs := []string{loopbackShard(b, append(opts, WithShard(0, 2))...), loopbackShard(b, append(opts, WithShard(1, 2))...)}
				vars := []Variable{{Name: "kernel", Shape: []int64{100, 96}, Trainable: true}, {Name: "bias", Shape: []int64{400}, Trainable: true}}
				cls := make([]*Client, clients)
				for i := range cls {
					c, err := Dial(ctx, addrs, WithWorkerID(fmt.Sprint(i)))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					if err := c.Register(ctx, vars); err != nil {
						b.Fatal(err)
					}
					cls[i] = c
				}
				per := max(1, b.N/clients)
				b.ReportAllocs()
				b.ResetTimer()
				var wg sync.WaitGroup
				for _, c := range cls {
					wg.Add(1)
					go func() {
						defer wg.Done()
						g := []Tensor{{Name: "kernel", Values: make([]float32, 9600)}, {Name: "bias", Values: make([]float32, 400)}}
						d := []Tensor{{Name: "kernel", Values: make([]float32, 9600)}, {Name: "bias", Values: make([]float32, 400)}}
						for range per {
							if _, err := c.PushPull(ctx, g, d); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(per*clients)/b.Elapsed().Seconds(), "pushes/s")
			})
		}
	}
}
