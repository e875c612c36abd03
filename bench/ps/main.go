// Command ps measures gotflow's parameter server over TCP loopback and
// writes bench/results/ps.json:
//
//   - push+pull round trip (one PushPull) for 1M and 10M float32 parameters,
//     beside a plain TCP loopback echo of the same bytes in the same run,
//     beside the apply floor (floor.go: a TCP server doing only the work a
//     shard cannot skip) and beside the same calls through gRPC;
//   - the same in process: a LocalCluster's direct calls beside the same
//     cluster through gRPC;
//   - push-pull latency p50/p99 for a 100k-parameter model, beside the TCP
//     echo of the same bytes;
//   - updates/s with 1, 4 and 16 concurrent clients in each mode, beside the
//     same mode with one client;
//   - the cost of the write-ahead log: updates/s of shards that log every
//     change and fsync before answering, beside the same shards with a
//     snapshot directory and no log.
//
// Run it from the repository root: go run ./bench/ps [-out path] [-quick].
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gotflow/gotflow/internal/benchfmt"
	"github.com/gotflow/gotflow/ps"
	"github.com/gotflow/gotflow/ps/optim"
)

func main() {
	out := flag.String("out", "bench/results/ps.json", "where to write the results")
	quick := flag.Bool("quick", false, "shorter runs (for a smoke test)")
	only := flag.String("only", "", "run only the updates/s part for this mode, or push_pull for the round trips (for investigating); writes nothing")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if *only == "push_pull" {
		if _, err := roundTripRows(context.Background(), *quick); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *only != "" {
		m, err := ps.ParseMode(*only)
		if err != nil {
			log.Fatal(err)
		}
		for _, clients := range []int{1, 4, 16} {
			ups, pushes, err := updatesPerSecond(context.Background(), m, clients, 1500*time.Millisecond, nil)
			if err != nil {
				log.Fatal(err)
			}
			log.Printf("%v %d clients: %.0f updates/s, %.0f pushes/s", m, clients, ups, pushes)
		}
		return
	}
	if err := run(*out, *quick); err != nil {
		log.Fatal(err)
	}
}

func run(out string, quick bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results, err := roundTripRows(ctx, quick)
	if err != nil {
		return err
	}

	// Updates per second per mode and client count.
	dur := 1500 * time.Millisecond
	if quick {
		dur = 300 * time.Millisecond
	}
	modes := []ps.Mode{ps.Hogwild, ps.AsyncLock, ps.Sync, ps.BoundedStaleness}
	for _, m := range modes {
		var base float64
		for _, clients := range []int{1, 4, 16} {
			ups, pushes, err := updatesPerSecond(ctx, m, clients, dur, nil)
			if err != nil {
				return fmt.Errorf("%v with %d clients: %w", m, clients, err)
			}
			if clients == 1 {
				base = ups
			}
			r := benchfmt.New(fmt.Sprintf("updates/%s/%d_clients", m, clients), "throughput", "updates/s", ups, fmt.Sprintf("%s/1_client", m), base)
			r.Note = fmt.Sprintf("10k float32 params in 2 variables on 2 shards, PushPull per step, %.0f pushes/s absorbed", pushes)
			if m == ps.Sync {
				r.Note += fmt.Sprintf("; one update averages %d pushes", clients)
			}
			if m == ps.BoundedStaleness {
				r.Note += "; bound 4, stale pushes re-pulled and retried"
			}
			results = append(results, r)
			log.Printf("%s: %.0f updates/s, %.0f pushes/s", r.Name, ups, pushes)
		}
	}

	// The write-ahead log's cost, logged and unlogged shards side by side.
	for _, m := range []ps.Mode{ps.AsyncLock, ps.Sync} {
		for _, clients := range []int{1, 4} {
			var ups [2]float64
			for k, wal := range []bool{false, true} {
				dir, err := os.MkdirTemp("", "gotflow-bench-wal-")
				if err != nil {
					return err
				}
				opts := []ps.ServerOption{ps.WithSnapshotDir(dir, 0, 0)}
				if !wal {
					opts = append(opts, ps.WithoutWAL())
				}
				ups[k], _, err = updatesPerSecond(ctx, m, clients, dur, opts)
				os.RemoveAll(dir)
				if err != nil {
					return fmt.Errorf("wal %v, %v with %d clients: %w", wal, m, clients, err)
				}
			}
			r := benchfmt.New(fmt.Sprintf("wal/%s/%d_clients", m, clients), "throughput", "updates/s", ups[1], "no_wal", ups[0])
			r.Note = "10k float32 params in 2 variables on 2 shards, PushPull per step; every change logged and fsynced (group commit) before its answer, beside the same shards without the log"
			results = append(results, r)
			log.Printf("%s: %.0f updates/s with the log, %.0f without", r.Name, ups[1], ups[0])
		}
	}
	return benchfmt.Write(out, results)
}

// roundTripRows measures PushPull round trips: over loopback (the bulk
// transport) against a TCP loopback echo, the apply floor (floor.go) and
// the same shard through gRPC, for
// 1M and 10M float32 (throughput) and 100k (latency); and in process, a
// LocalCluster's direct calls against the same cluster over gRPC.
func roundTripRows(ctx context.Context, quick bool) ([]benchfmt.Result, error) {
	var results []benchfmt.Result
	echo, err := startEcho()
	if err != nil {
		return nil, err
	}
	defer echo.Close()
	floor, err := startFloor()
	if err != nil {
		return nil, err
	}
	defer floor.Close()
	for _, n := range []int{1 << 20, 10 << 20} {
		iters := 60
		if n > 1<<20 {
			iters = 24
		}
		if quick {
			iters = 3
		}
		t, err := roundTrips(ctx, echo.Addr().String(), floor.Addr().String(), n, iters)
		if err != nil {
			return nil, err
		}
		bytes := float64(2 * 4 * n) // pushed and pulled
		name := fmt.Sprintf("push_pull/%dM_float32", n>>20)
		r := benchfmt.New(name, "throughput", "bytes/s", bytes/median(t.own).Seconds(), "tcp_loopback_echo", bytes/median(t.echo).Seconds())
		r.Note = fmt.Sprintf("median of %d PushPull calls, SGD, one shard over 127.0.0.1 (the bulk transport); peer echoes the same %d bytes over a plain TCP socket, interleaved call by call", iters, 4*n)
		results = append(results, r)
		f := benchfmt.New(name+"/vs_apply_floor", "throughput", "bytes/s", bytes/median(t.own).Seconds(), "tcp_apply_floor", bytes/median(t.floor).Seconds())
		f.Note = "the same PushPull calls against a plain-TCP server doing only a shard's unavoidable work (finite check, SGD, reply) and a client reading straight into its destination, interleaved call by call; the floor itself ran at " +
			fmt.Sprintf("%.3f of the echo", median(t.echo).Seconds()/median(t.floor).Seconds())
		results = append(results, f)
		gr := benchfmt.New(name+"/bulk_vs_grpc", "throughput", "bytes/s", bytes/median(t.own).Seconds(), "grpc", bytes/median(t.grpc).Seconds())
		gr.Note = "the same PushPull calls beside a client of the same shard that pushes and pulls through gRPC (ps.ViaGRPC), interleaved call by call"
		results = append(results, gr)
		log.Printf("%s: %.2f GB/s vs TCP echo %.2f GB/s (ratio %.3f) vs apply floor %.2f GB/s (ratio %.3f; floor/echo %.3f) vs gRPC %.2f GB/s (ratio %.3f); p10-p90 gotflow %v-%v, echo %v-%v", name,
			r.Value/1e9, r.PeerValue/1e9, r.Ratio, f.PeerValue/1e9, f.Ratio, median(t.echo).Seconds()/median(t.floor).Seconds(), gr.PeerValue/1e9, gr.Ratio,
			quantile(t.own, 0.1).Round(time.Millisecond/10), quantile(t.own, 0.9).Round(time.Millisecond/10), quantile(t.echo, 0.1).Round(time.Millisecond/10), quantile(t.echo, 0.9).Round(time.Millisecond/10))

		direct, grpc, err := inProcess(ctx, n, iters)
		if err != nil {
			return nil, err
		}
		d := benchfmt.New(name+"/in_process", "throughput", "bytes/s", bytes/median(direct).Seconds(), "in_process_grpc", bytes/median(grpc).Seconds())
		d.Note = fmt.Sprintf("median of %d PushPull calls, SGD, one shard of a LocalCluster called directly (what single-process training uses), beside the same cluster over gRPC on its in-memory listener, interleaved call by call", iters)
		results = append(results, d)
		log.Printf("%s: %.2f GB/s vs %.2f GB/s over gRPC (ratio %.3f)", d.Name, d.Value/1e9, d.PeerValue/1e9, d.Ratio)
	}

	// Small-model latency.
	{
		const n = 100_000
		iters := 400
		if quick {
			iters = 50
		}
		t, err := roundTrips(ctx, echo.Addr().String(), floor.Addr().String(), n, iters)
		if err != nil {
			return nil, err
		}
		direct, _, err := inProcess(ctx, n, iters)
		if err != nil {
			return nil, err
		}
		for _, q := range []struct {
			metric string
			p      float64
		}{{"latency_p50", 0.50}, {"latency_p99", 0.99}} {
			r := benchfmt.New("push_pull/100k_float32", q.metric, "us", us(quantile(t.own, q.p)), "tcp_loopback_echo", us(quantile(t.echo, q.p)))
			r.Note = fmt.Sprintf("%d PushPull calls of 100k float32, SGD, one shard over 127.0.0.1 (the bulk transport); the apply floor's %s: %.0f us, gRPC's %.0f us", iters, q.metric, us(quantile(t.floor, q.p)), us(quantile(t.grpc, q.p)))
			results = append(results, r)
			l := benchfmt.New("push_pull/100k_float32/in_process", q.metric, "us", us(quantile(direct, q.p)), "tcp_loopback_echo", us(quantile(t.echo, q.p)))
			l.Note = fmt.Sprintf("%d PushPull calls of 100k float32, SGD, one shard of a LocalCluster called directly", iters)
			results = append(results, l)
			log.Printf("push_pull/100k %s: %.0f us (in process %.0f us, gRPC %.0f us) vs TCP echo %.0f us, apply floor %.0f us", q.metric, r.Value, l.Value, us(quantile(t.grpc, q.p)), r.PeerValue, us(quantile(t.floor, q.p)))
		}
	}
	return results, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

// serve starts shards on loopback ports.
func serve(n int, opts ...ps.ServerOption) ([]string, func(), error) {
	var addrs []string
	var servers []*ps.Server
	var wg sync.WaitGroup
	stop := func() {
		for _, s := range servers {
			s.Stop()
		}
		wg.Wait()
	}
	for i := range n {
		s, err := ps.NewServer(append(slices.Clone(opts), ps.WithShard(i, n))...)
		if err != nil {
			stop()
			return nil, nil, err
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, err
		}
		servers = append(servers, s)
		addrs = append(addrs, lis.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Serve(lis)
		}()
	}
	return addrs, stop, nil
}

// timings are the round trips of one size, call by call.
type timings struct{ own, grpc, echo, floor []time.Duration }

// roundTrips times iters PushPull calls of n float32 against one loopback
// shard and, interleaved call by call so that all see the same machine
// load, as many through gRPC, TCP echoes of the same 4n bytes and round
// trips to the apply floor.
func roundTrips(ctx context.Context, echoAddr, floorAddr string, n, iters int) (timings, error) {
	var t timings
	addrs, stop, err := serve(1, ps.WithMode(ps.AsyncLock), ps.WithOptimizer(optim.Config{Optimizer: "sgd", LearningRate: 1e-6}))
	if err != nil {
		return t, err
	}
	defer stop()
	c, err := ps.Dial(ctx, addrs)
	if err != nil {
		return t, err
	}
	defer c.Close()
	grad, dst, err := registerOne(ctx, c, n)
	if err != nil {
		return t, err
	}
	g, err := ps.Dial(ctx, addrs, ps.ViaGRPC()) // the same shard through gRPC
	if err != nil {
		return t, err
	}
	defer g.Close()
	if _, _, err := registerOne(ctx, g, n); err != nil {
		return t, err
	}
	conn, err := net.Dial("tcp", echoAddr)
	if err != nil {
		return t, err
	}
	defer conn.Close()
	fconn, err := net.Dial("tcp", floorAddr)
	if err != nil {
		return t, err
	}
	defer fconn.Close()
	src, back := make([]byte, 4*n), make([]byte, 4*n)
	hdr := []byte{byte(4 * n), byte(4 * n >> 8), byte(4 * n >> 16), byte(4 * n >> 24), 0, 0, 0, 0}
	for i := -2; i < iters; i++ { // two warm-up rounds
		t0 := time.Now()
		if _, err := c.PushPull(ctx, grad, dst); err != nil {
			return t, err
		}
		tg := time.Now()
		if _, err := g.PushPull(ctx, grad, dst); err != nil {
			return t, err
		}
		t1 := time.Now()
		if _, err := conn.Write(hdr); err != nil {
			return t, err
		}
		if _, err := conn.Write(src); err != nil {
			return t, err
		}
		if _, err := io.ReadFull(conn, back); err != nil {
			return t, err
		}
		t2 := time.Now()
		if err := floorRoundTrip(fconn, grad[0].Values, dst[0].Values); err != nil {
			return t, err
		}
		if i >= 0 {
			t.own = append(t.own, tg.Sub(t0))
			t.grpc = append(t.grpc, t1.Sub(tg))
			t.echo = append(t.echo, t2.Sub(t1))
			t.floor = append(t.floor, time.Since(t2))
		}
	}
	return t, nil
}

// registerOne registers one variable of n float32 and returns a gradient
// of ones and a destination for it.
func registerOne(ctx context.Context, c *ps.Client, n int) (grad, dst []ps.Tensor, err error) {
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(i%1000) / 1000
	}
	if err := c.Register(ctx, []ps.Variable{{Name: "w", Shape: []int64{int64(n)}, Trainable: true, Init: init}}); err != nil {
		return nil, nil, err
	}
	grad = []ps.Tensor{{Name: "w", Values: make([]float32, n)}}
	for i := range grad[0].Values {
		grad[0].Values[i] = 1
	}
	return grad, []ps.Tensor{{Name: "w", Values: make([]float32, n)}}, nil
}

// inProcess times iters PushPull calls of n float32 on a one-shard
// LocalCluster called directly and, interleaved, on a second one reached
// over gRPC through its in-memory listener.
func inProcess(ctx context.Context, n, iters int) (direct, grpc []time.Duration, err error) {
	var clients [2]*ps.Client
	for k := range clients {
		lc, err := ps.NewLocalCluster(1, ps.WithMode(ps.AsyncLock), ps.WithOptimizer(optim.Config{Optimizer: "sgd", LearningRate: 1e-6}))
		if err != nil {
			return nil, nil, err
		}
		defer lc.Close()
		if k == 0 {
			clients[k], err = lc.Dial(ctx)
		} else {
			clients[k], err = lc.Dial(ctx, ps.ViaGRPC())
		}
		if err != nil {
			return nil, nil, err
		}
		defer clients[k].Close()
	}
	var grads, dsts [2][]ps.Tensor
	for k, c := range clients {
		if grads[k], dsts[k], err = registerOne(ctx, c, n); err != nil {
			return nil, nil, err
		}
	}
	for i := -2; i < iters; i++ {
		t0 := time.Now()
		if _, err := clients[0].PushPull(ctx, grads[0], dsts[0]); err != nil {
			return nil, nil, err
		}
		t1 := time.Now()
		if _, err := clients[1].PushPull(ctx, grads[1], dsts[1]); err != nil {
			return nil, nil, err
		}
		if i >= 0 {
			direct = append(direct, t1.Sub(t0))
			grpc = append(grpc, time.Since(t1))
		}
	}
	return direct, grpc, nil
}

// startEcho runs a TCP server that reads a block of the size the client
// announces in an 8-byte header and writes it back.
func startEcho() (net.Listener, error) {
	return serveTCP(func(conn net.Conn) {
		var hdr [8]byte
		var buf []byte
		for {
			if _, err := io.ReadFull(conn, hdr[:]); err != nil {
				return
			}
			n := int(uint64(hdr[0]) | uint64(hdr[1])<<8 | uint64(hdr[2])<<16 | uint64(hdr[3])<<24)
			if cap(buf) < n {
				buf = make([]byte, n)
			}
			if _, err := io.ReadFull(conn, buf[:n]); err != nil {
				return
			}
			if _, err := conn.Write(buf[:n]); err != nil {
				return
			}
		}
	})
}

// serveTCP runs handle on every connection to a new loopback listener
// until it is closed; handle's connection is closed when it returns.
func serveTCP(handle func(net.Conn)) (net.Listener, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				handle(conn)
			}()
		}
	}()
	return lis, nil
}

// updatesPerSecond runs clients workers doing PushPull in a loop for dur
// and returns the shards' applied updates per second and pushes per second.
func updatesPerSecond(ctx context.Context, m ps.Mode, clients int, dur time.Duration, extra []ps.ServerOption) (float64, float64, error) {
	opts := append([]ps.ServerOption{ps.WithMode(m), ps.WithOptimizer(optim.Config{Optimizer: "adam"})}, extra...)
	switch m {
	case ps.Sync:
		opts = append(opts, ps.WithWorkers(clients), ps.WithSyncTimeout(10*time.Second, ps.StragglerFail))
	case ps.BoundedStaleness:
		opts = append(opts, ps.WithMaxStaleness(4))
	}
	addrs, stop, err := serve(2, opts...)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	vars := []ps.Variable{
		{Name: "dense/kernel", Shape: []int64{100, 96}, Trainable: true, Init: make([]float32, 9600)},
		{Name: "dense/bias", Shape: []int64{400}, Trainable: true, Init: make([]float32, 400)},
	}
	cls := make([]*ps.Client, clients)
	for i := range cls {
		c, err := ps.Dial(ctx, addrs, ps.WithWorkerID(fmt.Sprintf("w%d", i)))
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		if err := c.Register(ctx, vars); err != nil {
			return 0, 0, err
		}
		cls[i] = c
	}
	var pushes atomic.Int64
	var stopFlag atomic.Bool
	errs := make([]error, clients)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, c := range cls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			grads := []ps.Tensor{{Name: "dense/kernel", Values: make([]float32, 9600)}, {Name: "dense/bias", Values: make([]float32, 400)}}
			dst := []ps.Tensor{{Name: "dense/kernel", Values: make([]float32, 9600)}, {Name: "dense/bias", Values: make([]float32, 400)}}
			for k := 0; ; k++ {
				// In Sync all workers must push each step; they stop together
				// at a step count agreed through the shared flag.
				if stopFlag.Load() && m != ps.Sync {
					return
				}
				for _, g := range grads {
					for j := range g.Values {
						g.Values[j] = float32((i+k+j)%7-3) / 100
					}
				}
				_, err := c.PushPull(ctx, grads, dst)
				if err != nil && m == ps.BoundedStaleness {
					if err := c.Pull(ctx, nil); err != nil {
						errs[i] = err
						return
					}
					continue
				}
				if err != nil {
					errs[i] = err
					return
				}
				pushes.Add(1)
				if m == ps.Sync && k+1 >= syncSteps(dur, clients) {
					return
				}
			}
		}()
	}
	if m != ps.Sync { // Sync workers stop by themselves after a fixed step count
		time.Sleep(dur)
		stopFlag.Store(true)
	}
	wg.Wait()
	elapsed := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	stats, err := cls[0].Stats(ctx)
	if err != nil {
		return 0, 0, err
	}
	return float64(stats[0].Updates) / elapsed.Seconds(), float64(pushes.Load()) / elapsed.Seconds(), nil
}

// syncSteps is a step count that Sync workers all complete; it is sized to
// take roughly dur.
func syncSteps(dur time.Duration, clients int) int {
	return max(20, int(dur.Seconds()*1500/float64(clients)))
}

func init() { log.SetFlags(0); log.SetOutput(os.Stderr) }
