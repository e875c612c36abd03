package ps

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/internal/testcerts"
	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/ps/pspb"
)

// bulkConns counts srv's open bulk connections.
func bulkConns(srv *Server) int {
	srv.localMu.Lock()
	defer srv.localMu.Unlock()
	return len(srv.bulkConns)
}

// acceptEach runs handle on every connection lis accepts until the test
// ends.
func acceptEach(t *testing.T, lis net.Listener, handle func(net.Conn)) {
	t.Helper()
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go handle(conn)
		}
	}()
}

// networked serves n shards on loopback ports for the test.
func networked(t *testing.T, n int, opts ...ServerOption) ([]*Server, []string) {
	t.Helper()
	var srvs []*Server
	var addrs []string
	for i := range n {
		srv, err := NewServer(append(append([]ServerOption(nil), opts...), WithShard(i, n))...)
		require.NoError(t, err)
		srvs = append(srvs, srv)
		addrs = append(addrs, serveLoopback(t, srv))
	}
	return srvs, addrs
}

// Over the network, the bulk transport and gRPC leave the shards in the
// same state, bit for bit, with the same counters.
func TestBulkEqualsGRPC(t *testing.T) {
	run := func(via ...ClientOption) ([]Tensor, []Stats, int) {
		ctx := testCtx(t, 20*time.Second)
		srvs, addrs := networked(t, 3, WithOptimizer(optim.Config{Optimizer: "adam", LearningRate: 0.01}))
		c, err := Dial(ctx, addrs, append([]ClientOption{WithChunkElements(256), WithWorkerID("w")}, via...)...)
		require.NoError(t, err)
		defer c.Close()
		got, stats := exercise(t, c, 2)
		open := 0
		for _, s := range srvs {
			open += bulkConns(s)
		}
		return got, stats, open
	}
	bulk, bstats, bconns := run()
	wire, wstats, wconns := run(ViaGRPC())
	require.Equal(t, 3, bconns, "one bulk connection per shard")
	require.Zero(t, wconns)
	require.Equal(t, wire, bulk)
	for i := range bstats {
		require.Equal(t, wstats[i].Updates, bstats[i].Updates, "shard %d", i)
		require.Equal(t, wstats[i].Pushes, bstats[i].Pushes, "shard %d", i)
		require.Equal(t, wstats[i].BytesIn, bstats[i].BytesIn, "shard %d", i)
		require.Equal(t, wstats[i].BytesOut, bstats[i].BytesOut, "shard %d", i)
	}
}

// A reply lost after the push applied is retried over the bulk
// connection with the same key and applied once; a refused push keeps the
// connection usable and names what was wrong.
func TestBulkRetriesAndRefusals(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srvs, addrs := networked(t, 2, sgd1())
	var mu sync.Mutex
	lost := map[string]int{}
	losing := true
	for _, s := range srvs {
		s.testAfterPush = func(key string) error {
			mu.Lock()
			defer mu.Unlock()
			if losing && lost[key] < 2 {
				lost[key]++
				return status.Error(codes.Unavailable, "reply lost")
			}
			return nil
		}
	}
	c, err := Dial(ctx, addrs, WithChunkElements(256), WithRetry(5, time.Millisecond, 5*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	vars := testVars()[:2]
	require.NoError(t, c.Register(ctx, vars))
	grads := tensorsLike(vars, true)
	got := tensorsLike(vars, true)
	const n = 4
	for k := range n {
		fillGrads(grads, 0, k)
		res, err := c.PushPull(ctx, grads, got)
		require.NoError(t, err)
		require.True(t, res.Duplicate)
	}
	for vi, v := range vars {
		for i := range v.Init {
			want := v.Init[i]
			for k := range n {
				want -= knownGrad(0, k, i)
			}
			require.Equal(t, want, got[vi].Values[i], "%s[%d]", v.Name, i)
		}
	}
	for _, s := range srvs {
		require.Equal(t, uint64(n), s.Stats().Updates)
		// Each lost reply dropped its connection; the client's last one is
		// the only one left once the shard has seen the others close.
		require.Eventually(t, func() bool { return bulkConns(s) == 1 }, 10*time.Second, time.Millisecond)
	}
	mu.Lock()
	losing = false
	mu.Unlock()
	conns := [2]*bulkConn{c.bulk[0].conn, c.bulk[1].conn}

	grads[0].Values[300] = float32(math.NaN())
	_, err = c.Push(ctx, grads)
	require.Equal(t, codes.InvalidArgument, status.Code(errorsUnwrapStatus(err)), "%v", err)
	require.ErrorContains(t, err, "element 44 is NaN") // chunk 1 of the kernel starts at 256
	grads[0].Values[300] = 0
	_, err = c.PushPull(ctx, grads, got)
	require.NoError(t, err)
	require.Equal(t, conns, [2]*bulkConn{c.bulk[0].conn, c.bulk[1].conn}, "a refused push keeps its connection")
}

// A client without the shard's token is refused over the bulk transport
// as over gRPC; with it, it pushes.
func TestBulkToken(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	_, addrs := networked(t, 1, sgd1(), WithToken("s3cret"))
	vars := testVars()[:1]
	bad, err := Dial(ctx, addrs, WithToken("wrong"), WithRetry(1, time.Millisecond, time.Millisecond))
	require.NoError(t, err)
	defer bad.Close()
	_, err = bad.dialBulk(ctx, 0)
	require.Equal(t, codes.Unauthenticated, status.Code(errorsUnwrapStatus(err)), "%v", err)
	good, err := Dial(ctx, addrs, WithToken("s3cret"))
	require.NoError(t, err)
	defer good.Close()
	require.NoError(t, good.Register(ctx, vars))
	_, err = good.PushPull(ctx, tensorsLike(vars, true), tensorsLike(vars, true))
	require.NoError(t, err)
	require.NotNil(t, good.bulk[0].conn)
}

// A shard that serves gRPC alone (its listener not split by first bytes)
// is reached through gRPC after one refused hello.
func TestBulkFallsBackToGRPC(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	srv, err := NewServer(sgd1())
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.gs.Serve(lis) }()
	defer func() { require.NoError(t, srv.GracefulStop()); <-done }()
	c, err := Dial(ctx, []string{lis.Addr().String()})
	require.NoError(t, err)
	defer c.Close()
	vars := testVars()[:1]
	require.NoError(t, c.Register(ctx, vars))
	got := tensorsLike(vars, true)
	_, err = c.PushPull(ctx, tensorsLike(vars, true), got)
	require.NoError(t, err)
	require.True(t, c.bulk[0].off)
	require.Equal(t, vars[0].Init, got[0].Values) // zero gradient
	require.Equal(t, uint64(1), srv.Stats().Updates)
}

// A client that gives up on a Sync push waiting for other workers hangs up
// its bulk connection; the shard ends the push's wait, as it does for a
// cancelled gRPC call, and drops the connection.
func TestBulkHangUpEndsWaitingPush(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srvs, addrs := networked(t, 1, sgd1(), WithMode(Sync), WithWorkers(2), WithSyncTimeout(time.Minute, StragglerFail))
	c, err := Dial(ctx, addrs, WithRetry(1, time.Millisecond, time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	vars := testVars()[:1]
	require.NoError(t, c.Register(ctx, vars))
	pushCtx, cancel := context.WithCancel(ctx)
	pushed := make(chan error, 1)
	go func() {
		_, err := c.Push(pushCtx, tensorsLike(vars, true)) // waits for a second worker that never comes
		pushed <- err
	}()
	require.Eventually(t, func() bool { return srvs[0].Stats().Pushes == 1 }, 10*time.Second, time.Millisecond, "the push did not reach the shard")
	cancel()
	require.Equal(t, codes.Canceled, status.Code(errorsUnwrapStatus(<-pushed)))
	require.Eventually(t, func() bool { return bulkConns(srvs[0]) == 0 }, 10*time.Second, time.Millisecond,
		"the shard kept the connection of a client that hung up")
}

// Malformed bulk requests are answered with an error or a closed
// connection, never a crash, and leave the shard serving.
func TestBulkMalformed(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srvs, addrs := networked(t, 1, sgd1())
	c, err := Dial(ctx, addrs)
	require.NoError(t, err)
	defer c.Close()
	vars := testVars()[:1]
	require.NoError(t, c.Register(ctx, vars))
	hello := binary.LittleEndian.AppendUint32(append([]byte(nil), bulkMagic...), 0)
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 200 {
		conn, err := net.Dial("tcp", addrs[0])
		require.NoError(t, err)
		junk := make([]byte, r.IntN(64))
		for i := range junk {
			junk[i] = byte(r.IntN(256))
		}
		if trial%2 == 0 && len(junk) > 0 {
			junk[0] = byte(1 + r.IntN(3)) // a valid kind, then junk
		}
		_, err = conn.Write(append(append([]byte(nil), hello...), junk...))
		require.NoError(t, err)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(conn)
		require.NoError(t, err, "trial %d: the shard must answer and close, not hang", trial)
		conn.Close()
	}
	_, err = c.PushPull(ctx, tensorsLike(vars, true), tensorsLike(vars, true))
	require.NoError(t, err)
	require.Equal(t, uint64(1), srvs[0].Stats().Updates)
}

// Stop does not wait for a bulk client that stopped reading its answer:
// the connection is closed and the stalled write ends.
func TestBulkStopWithStalledReader(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv, err := NewServer(sgd1())
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	c, err := Dial(ctx, []string{lis.Addr().String()})
	require.NoError(t, err)
	defer c.Close()
	const n = 8 << 20 // 32 MiB of answer: more than the socket buffers hold
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{n}, Trainable: true, Init: make([]float32, n)}}))

	conn, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	req := binary.LittleEndian.AppendUint32(append([]byte(nil), bulkMagic...), 0)
	req = append(req, bulkPull)
	req = binary.LittleEndian.AppendUint64(req, 0)
	req, err = appendMessage(req, &pspb.PullRequest{})
	require.NoError(t, err)
	req = binary.LittleEndian.AppendUint32(req, 0) // no chunks
	_, err = conn.Write(req)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.Stats().Pulls == 1 }, 10*time.Second, time.Millisecond, "the pull was not answered")

	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop() }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(5 * time.Second): // the connection's own timeouts are longer
		t.Fatal("Stop waited for a client that does not read")
	}
	require.NoError(t, <-served)
}

// A greeting answered in another protocol turns the bulk transport off
// for that shard; one closed without an answer (a shard stopping, say)
// only sends that call through gRPC.
func TestBulkGreetingClassified(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	for _, tc := range []struct {
		name  string
		reply []byte
		off   bool
	}{{"closed", nil, false}, {"http2", []byte("\x00\x00\x12\x04\x00\x00\x00\x00\x00"), true}} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			acceptEach(t, lis, func(conn net.Conn) {
				conn.Write(tc.reply)
				conn.Close()
			})
			c := &Client{o: defaultClientOptions(), addrs: []string{lis.Addr().String()}, bulk: make([]bulkState, 1)}
			bc, err := c.bulkFor(ctx, 0)
			require.NoError(t, err)
			require.Nil(t, bc)
			require.Equal(t, tc.off, c.bulk[0].off)
		})
	}
}

// cutProxy forwards connections to target; the first bulk connection is
// cut after limit bytes in one direction (up: client to shard).
func cutProxy(t *testing.T, target string, up bool, limit int64) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var once sync.Once
	acceptEach(t, lis, func(in net.Conn) {
		defer in.Close()
		out, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer out.Close()
		head := make([]byte, len(bulkMagic))
		if _, err := io.ReadFull(in, head); err != nil {
			return
		}
		cut := false
		if string(head) == string(bulkMagic) {
			once.Do(func() { cut = true })
		}
		if _, err := out.Write(head); err != nil {
			return
		}
		upLimit, downLimit := int64(1<<62), int64(1<<62)
		if cut && up {
			upLimit = limit
		} else if cut {
			downLimit = limit
		}
		done := make(chan struct{}, 2)
		go func() { io.CopyN(out, in, upLimit); in.Close(); out.Close(); done <- struct{}{} }()
		go func() { io.CopyN(in, out, downLimit); in.Close(); out.Close(); done <- struct{}{} }()
		<-done
		<-done
	})
	return lis.Addr().String()
}

// A bulk connection cut in the middle of a push, or in the middle of the
// answer after the push was applied, is retried on a new connection with
// the same idempotency key: every push is applied exactly once.
func TestBulkConnectionCutMidTransfer(t *testing.T) {
	// Register's pull of the 800 KB variable is the first answer on the
	// first bulk connection: the cut of the answers comes after it.
	for _, tc := range []struct {
		name  string
		up    bool
		limit int64
	}{{"during the push", true, 300 << 10}, {"during the answer", false, 800_000 + 300<<10}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			srvs, addrs := networked(t, 1, sgd1())
			proxy := cutProxy(t, addrs[0], tc.up, tc.limit)
			c, err := Dial(ctx, []string{proxy}, WithRetry(5, time.Millisecond, 5*time.Millisecond))
			require.NoError(t, err)
			defer c.Close()
			const n = 200_000 // 800 KB each way
			init := make([]float32, n)
			for i := range init {
				init[i] = float32(i % 91)
			}
			require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{n}, Trainable: true, Init: init}}))
			grad := []Tensor{{Name: "w", Values: make([]float32, n)}}
			got := []Tensor{{Name: "w", Values: make([]float32, n)}}
			const pushes = 3
			for k := range pushes {
				fillGrads(grad, 3, k)
				_, err := c.PushPull(ctx, grad, got)
				require.NoError(t, err)
			}
			for i := range init {
				want := init[i]
				for k := range pushes {
					want -= knownGrad(3, k, i)
				}
				require.Equal(t, want, got[0].Values[i], "element %d", i)
			}
			st := srvs[0].Stats()
			require.Equal(t, uint64(pushes), st.Updates)
			if tc.up {
				require.Equal(t, uint64(pushes), st.Pushes, "the cut push never reached the optimizer")
			} else {
				require.Equal(t, uint64(1), st.Duplicates, "the push whose answer was cut was retried")
			}
		})
	}
}

// With TLS (and client certificates and a token) pushes and pulls use the
// bulk transport inside TLS, gRPC calls share the port, and both give the
// same values.
func TestBulkTLS(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	files := testcerts.Write(t)
	creds := Credentials{Token: "tok", CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA}
	sopts, err := creds.ServerOptions()
	require.NoError(t, err)
	srv, err := NewServer(append(sopts, sgd1())...)
	require.NoError(t, err)
	addrs := []string{serveLoopback(t, srv)}
	copts, err := creds.ClientOptions()
	require.NoError(t, err)
	bulk, err := Dial(ctx, addrs, copts...)
	require.NoError(t, err)
	defer bulk.Close()
	wire, err := Dial(ctx, addrs, append(copts, ViaGRPC())...)
	require.NoError(t, err)
	defer wire.Close()
	vars := testVars()[:2]
	require.NoError(t, bulk.Register(ctx, vars))
	require.NoError(t, wire.Register(ctx, vars))
	grads := tensorsLike(vars, true)
	fromBulk, fromWire := tensorsLike(vars, true), tensorsLike(vars, true)
	for k := range 4 {
		fillGrads(grads, 4, k)
		c := bulk
		if k%2 == 1 {
			c = wire
		}
		_, err := c.Push(ctx, grads)
		require.NoError(t, err)
	}
	require.NoError(t, bulk.Pull(ctx, fromBulk))
	require.NoError(t, wire.Pull(ctx, fromWire))
	require.Equal(t, fromWire, fromBulk)
	require.NotNil(t, bulk.bulk[0].conn)
	_, isTLS := bulk.bulk[0].conn.conn.(*tls.Conn)
	require.True(t, isTLS, "the bulk connection is inside TLS")
	require.Nil(t, wire.bulk)
	require.Equal(t, uint64(4), srv.Stats().Updates)

	// A client without a certificate gets no further than the handshake
	// on either transport.
	noCert := creds
	noCert.CertFile, noCert.KeyFile = "", ""
	nopts, err := noCert.ClientOptions()
	require.NoError(t, err)
	c := &Client{o: defaultClientOptions(), addrs: addrs, bulk: make([]bulkState, 1)}
	for _, op := range nopts {
		op.applyClient(&c.o)
	}
	bc, _ := c.bulkFor(ctx, 0) // refused in the handshake or at its first read: gRPC says why
	require.Nil(t, bc, "a client without a certificate reached the bulk transport")
}

// A TLS shard that offers only gRPC (h2) refuses the bulk protocol in the
// handshake: the client goes to gRPC from then on. A shard whose TLS
// configuration is chosen per client (GetConfigForClient) serves both.
func TestBulkTLSProtocols(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	files := testcerts.Write(t)
	creds := Credentials{CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA}
	stls, err := creds.ServerTLS()
	require.NoError(t, err)
	ctls, err := creds.ClientTLS()
	require.NoError(t, err)

	old := stls.Clone()
	old.NextProtos = []string{"h2"}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", old)
	require.NoError(t, err)
	acceptEach(t, lis, func(conn net.Conn) {
		defer conn.Close()
		conn.(*tls.Conn).Handshake()
	})
	c := &Client{o: defaultClientOptions(), addrs: []string{lis.Addr().String()}, bulk: make([]bulkState, 1)}
	c.o.tls = ctls
	bc, err := c.bulkFor(ctx, 0)
	require.NoError(t, err)
	require.Nil(t, bc)
	require.True(t, c.bulk[0].off, "a refused protocol turns the bulk transport off")

	perClient := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return stls, nil }}
	srv, err := NewServer(sgd1(), WithTLS(perClient))
	require.NoError(t, err)
	addrs := []string{serveLoopback(t, srv)}
	cl, err := Dial(ctx, addrs, WithTLS(ctls))
	require.NoError(t, err)
	defer cl.Close()
	vars := testVars()[:1]
	require.NoError(t, cl.Register(ctx, vars)) // gRPC
	_, err = cl.PushPull(ctx, tensorsLike(vars, true), tensorsLike(vars, true))
	require.NoError(t, err)
	require.NotNil(t, cl.bulk[0].conn, "bulk inside a per-client TLS configuration")
}
