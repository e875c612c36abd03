package ps

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/ps/pspb"
)

// TestMain lets the fault test re-run this binary as a standalone shard
// process (GOTFLOW_PS_TEST_SERVER=snapshot-dir, listener at fd 3).
func TestMain(m *testing.M) {
	if spec := os.Getenv("GOTFLOW_PS_TEST_SERVER"); spec != "" {
		os.Exit(runTestServer(spec))
	}
	os.Exit(m.Run())
}

// shardSocket is a loopback socket that the shard processes of a test
// inherit one after the other (as gotflow's launcher hands them theirs).
type shardSocket struct {
	addr string
	file *os.File
	logs syncLog
}

func newShardSocket(t *testing.T) *shardSocket {
	t.Helper()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	f, err := lis.File()
	require.NoError(t, err)
	s := &shardSocket{addr: lis.Addr().String(), file: f}
	t.Cleanup(func() {
		f.Close()
		lis.Close()
		if t.Failed() {
			t.Logf("shard output:\n%s", s.logs.String())
		}
	})
	return s
}

// start runs a shard process on the socket (spec as for
// GOTFLOW_PS_TEST_SERVER); it is killed when the test ends.
func (s *shardSocket) start(t *testing.T, spec string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GOTFLOW_PS_TEST_SERVER="+spec)
	cmd.ExtraFiles = []*os.File{s.file}
	cmd.Stdout, cmd.Stderr = &s.logs, &s.logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// syncLog collects the output of shard processes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runTestServer serves a shard on the listening socket inherited as fd 3
// (GOTFLOW_PS_TEST_SERVER=dir[,sync]), snapshotting every 50 updates.
func runTestServer(spec string) int {
	dir, mode, _ := strings.Cut(spec, ",")
	opts := []ServerOption{sgd1(), WithMode(AsyncLock), WithSnapshotDir(dir, 50, 0)}
	if mode == "sync" {
		opts = append(opts, WithMode(Sync), WithWorkers(2), WithSyncTimeout(time.Minute, StragglerFail))
	}
	s, err := NewServer(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lis, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	stopped := make(chan error, 1)
	go func() {
		<-sig
		stopped <- s.GracefulStop()
	}()
	// The parent gives up after its own deadline; make sure an orphan ends.
	go func() {
		time.Sleep(2 * time.Minute)
		os.Exit(3)
	}()
	if err := s.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := <-stopped; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestSnapshotRestoreExact(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	adam := WithOptimizer(optim.Config{Optimizer: "adam", LearningRate: 0.01})
	lc := newCluster(t, 2, adam, WithSnapshotDir(dir, 0, 0))
	vars := testVars()
	c := dialCluster(t, ctx, lc, WithChunkElements(256))
	require.NoError(t, c.Register(ctx, vars))
	grads := tensorsLike(vars, true)
	for k := range 3 {
		fillGrads(grads, 1, k)
		_, err := c.Push(ctx, grads)
		require.NoError(t, err)
	}
	require.NoError(t, c.Assign(ctx, []Tensor{{Name: "bn/moving_mean", Values: []float32{7, 8, 9}}}))
	paths, err := c.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, paths, 2)
	w3 := tensorsLike(vars, false)
	require.NoError(t, c.Pull(ctx, w3))
	for k := 3; k < 5; k++ {
		fillGrads(grads, 1, k)
		_, err := c.Push(ctx, grads)
		require.NoError(t, err)
	}
	w5 := tensorsLike(vars, false)
	require.NoError(t, c.Pull(ctx, w5))

	require.NoError(t, c.Restore(ctx))
	got := tensorsLike(vars, false)
	require.NoError(t, c.Pull(ctx, got))
	require.Equal(t, w3, got)
	// Replaying the same two pushes reproduces the same Adam state, which
	// needs the restored moments and iteration counts.
	for k := 3; k < 5; k++ {
		fillGrads(grads, 1, k)
		_, err := c.Push(ctx, grads)
		require.NoError(t, err)
	}
	require.NoError(t, c.Pull(ctx, got))
	require.Equal(t, w5, got)

	// A graceful stop writes a final snapshot; a new shard resumes from it.
	require.NoError(t, lc.Close())
	lc2 := newCluster(t, 2, adam, WithSnapshotDir(dir, 0, 0))
	for i, s := range lc2.Servers() {
		require.Equal(t, uint64(5), s.Stats().Version, "shard %d", i)
	}
	c2 := dialCluster(t, ctx, lc2, WithChunkElements(256))
	require.NoError(t, c2.Register(ctx, testVars()))
	require.NoError(t, c2.Pull(ctx, got))
	require.Equal(t, w5, got)

	// While lc2 owns the directory no other server may use it.
	_, err = NewServer(WithShard(0, 2), adam, WithSnapshotDir(dir, 0, 0))
	require.ErrorIs(t, err, ErrSnapshotDirInUse)
	require.ErrorContains(t, err, "ps-shard-0-of-2.snapshot.lock is held by pid")

	// A different optimizer cannot resume these slots.
	require.NoError(t, lc2.Close())
	_, err = NewServer(WithShard(0, 2), WithSnapshotDir(dir, 0, 0))
	require.ErrorContains(t, err, "was taken with optimizer")
}

func TestSnapshotKeepsAppliedKeys(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	lc := newCluster(t, 1, sgd1(), WithSnapshotDir(dir, 0, 0))
	c := dialCluster(t, ctx, lc)
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{1}, Trainable: true, Init: []float32{0}}}))
	push := &pspb.PushRequest{Header: &pspb.PushHeader{IdempotencyKey: "k1"}, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1)}}
	r, err := rawPush(ctx, c.stubs[0], push)
	require.NoError(t, err)
	require.False(t, r.GetDuplicate())
	_, err = c.Snapshot(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Restore(ctx))
	r, err = rawPush(ctx, c.stubs[0], push)
	require.NoError(t, err)
	require.True(t, r.GetDuplicate())
	require.Equal(t, uint64(1), r.GetInfo().GetVersion())
}

func TestSnapshotCorruptionAndLeftovers(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	s, err := NewServer(sgd1(), WithSnapshotDir(dir, 0, 0))
	require.NoError(t, err)
	_, err = s.register(context.Background(), &pspb.RegisterRequest{NumShards: 1, Parts: []*pspb.PartSpec{{Name: "w", Shape: []int64{3}, Length: 3, Trainable: true}}, Values: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3)}})
	require.NoError(t, err)
	r, err := s.writeSnapshot()
	require.NoError(t, err)
	require.NoError(t, s.Stop())
	_ = ctx

	// A snapshot interrupted before its rename leaves a temporary file,
	// which the next start removes without reading.
	leftover := r.GetPath() + ".123.tmp"
	require.NoError(t, os.WriteFile(leftover, []byte("half"), 0o644))
	hidden := filepath.Join(filepath.Dir(r.GetPath()), "."+filepath.Base(r.GetPath())+".456.tmp")
	require.NoError(t, os.WriteFile(hidden, []byte("half"), 0o644))
	s2, err := NewServer(sgd1(), WithSnapshotDir(dir, 0, 0))
	require.NoError(t, err)
	require.Equal(t, 1, s2.Stats().Parts)
	require.NoError(t, s2.Stop())
	_, err = os.Stat(leftover)
	require.True(t, errors.Is(err, os.ErrNotExist))
	_, err = os.Stat(hidden)
	require.True(t, errors.Is(err, os.ErrNotExist))

	// Damaged snapshots are refused with the reason, never half-loaded.
	data, err := os.ReadFile(r.GetPath())
	require.NoError(t, err)
	for name, bad := range map[string][]byte{
		"truncated": data[:len(data)-5],
		"flipped":   append(append([]byte(nil), data[:len(data)/2]...), append([]byte{data[len(data)/2] ^ 0x40}, data[len(data)/2+1:]...)...),
		"empty":     {},
	} {
		require.NoError(t, os.WriteFile(r.GetPath(), bad, 0o644))
		_, err := NewServer(sgd1(), WithSnapshotDir(dir, 0, 0))
		require.Error(t, err, name)
		require.ErrorContains(t, err, r.GetPath(), name)
	}
}

// TestFaultKillAndRestart SIGKILLs a shard process while four workers
// push, restarts it on the same socket from its snapshot directory, and
// checks that nothing acknowledged was lost and nothing applied twice:
// every push subtracts exactly 1 from every element, the restarted shard
// holds at least every push acknowledged before the kill (its snapshot
// plus its write-ahead log), and at the end w == -version == -(all pushes).
func TestFaultKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ctx := testCtx(t, 60*time.Second)
	dir := t.TempDir()
	sock := newShardSocket(t)
	addr := sock.addr
	start := func() *exec.Cmd { return sock.start(t, dir) }
	proc := start()

	const workers, pushes, n = 4, 300, 64
	vars := []Variable{{Name: "w", Shape: []int64{n}, Trainable: true, Init: make([]float32, n)}}
	var done sync.WaitGroup
	var acked atomic.Uint64
	errs := make([]error, workers)
	for i := range workers {
		done.Add(1)
		go func() {
			defer done.Done()
			errs[i] = func() error {
				c, err := Dial(ctx, []string{addr}, WithRetry(100, 10*time.Millisecond, 200*time.Millisecond), WithRPCTimeout(5*time.Second))
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.Register(ctx, vars); err != nil {
					return err
				}
				ones := make([]float32, n)
				for j := range ones {
					ones[j] = 1
				}
				for k := 0; k < pushes; k++ {
					if _, err := c.Push(ctx, []Tensor{{Name: "w", Values: ones}}); err != nil {
						return fmt.Errorf("push %d: %w", k, err)
					}
					acked.Add(1)
				}
				return nil
			}()
		}()
	}
	// Kill once the shard has applied some pushes (and so written snapshots).
	probe, err := Dial(ctx, []string{addr})
	require.NoError(t, err)
	defer probe.Close()
	for {
		st, err := probe.Stats(ctx)
		require.NoError(t, err)
		if st[0].Version >= 200 && st[0].Snapshots > 0 && st[0].Version%50 > 10 {
			break // records after the snapshot are in the log only
		}
		select {
		case <-ctx.Done():
			t.Fatal("the shard never got far enough to be killed")
		case <-time.After(time.Millisecond):
		}
	}
	require.NoError(t, proc.Process.Signal(syscall.SIGKILL))
	proc.Wait()
	ackedAtKill := acked.Load()

	// The snapshot on disk is complete and self-consistent.
	path := filepath.Join(dir, "ps-shard-0-of-1.snapshot")
	snap, err := readSnapshot(path)
	require.NoError(t, err)
	v := snap.header.GetVersion()
	require.Positive(t, v)
	vals := make([]float32, n)
	require.NoError(t, decodeInto(vals, &pspb.Chunk{Dtype: pspb.DType_DTYPE_FLOAT32, Data: snap.parts[0].GetValues()}))
	for _, x := range vals {
		require.Equal(t, -float32(v), x)
	}
	proc = start()
	st, err := probe.Stats(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st[0].Version, ackedAtKill, "every push acknowledged before the kill survived it (snapshot at %d)", v)

	done.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	st, err = probe.Stats(ctx)
	require.NoError(t, err)
	final := st[0].Version
	require.Equal(t, uint64(workers*pushes), final, "every acknowledged push applied exactly once")
	c, err := Dial(ctx, []string{addr})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, vars))
	got := []Tensor{{Name: "w", Values: make([]float32, n)}}
	require.NoError(t, c.Pull(ctx, got))
	for _, x := range got[0].Values {
		require.Equal(t, -float32(final), x)
	}
	t.Logf("snapshot at kill: version %d; acknowledged at kill %d; final version %d of %d pushes", v, ackedAtKill, final, workers*pushes)

	// A graceful stop drains and leaves a snapshot at the final version.
	require.NoError(t, proc.Process.Signal(syscall.SIGTERM))
	require.NoError(t, proc.Wait())
	snap, err = readSnapshot(path)
	require.NoError(t, err)
	require.Equal(t, final, snap.header.GetVersion())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		require.False(t, strings.HasSuffix(e.Name(), ".tmp"), "leftover %s", e.Name())
	}
}

// TestGracefulStopDrains holds a push inside the shard while GracefulStop
// runs: the stop waits for it, the push succeeds, and the final snapshot
// contains it. A Sync push still waiting for other workers is failed with
// codes.Unavailable instead of blocking the stop.
func TestGracefulStopDrains(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	dir := t.TempDir()
	lc, err := NewLocalCluster(1, sgd1(), WithSnapshotDir(dir, 0, 0))
	require.NoError(t, err)
	s := lc.Servers()[0]
	inside := make(chan struct{})
	release := make(chan struct{})
	s.testAfterPush = func(string) error {
		close(inside)
		<-release
		return nil
	}
	c, err := lc.Dial(ctx, WithRetry(1, time.Millisecond, time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{1}, Trainable: true, Init: []float32{0}}}))
	pushed := make(chan error, 1)
	go func() {
		_, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1}}})
		pushed <- err
	}()
	<-inside
	stopped := make(chan error, 1)
	go func() { stopped <- lc.Close() }()
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a push in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-pushed)
	require.NoError(t, <-stopped)
	snap, err := readSnapshot(filepath.Join(dir, "ps-shard-0-of-1.snapshot"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), snap.header.GetVersion())

	lc2, err := NewLocalCluster(1, sgd1(), WithMode(Sync), WithWorkers(2))
	require.NoError(t, err)
	c2, err := lc2.Dial(ctx, WithRetry(1, time.Millisecond, time.Millisecond))
	require.NoError(t, err)
	defer c2.Close()
	require.NoError(t, c2.Register(ctx, []Variable{{Name: "w", Shape: []int64{1}, Trainable: true}}))
	go func() {
		_, err := c2.Push(ctx, []Tensor{{Name: "w", Values: []float32{1}}})
		pushed <- err
	}()
	for lc2.Servers()[0].Stats().Pushes == 0 {
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, lc2.Close())
	require.Equal(t, codes.Unavailable, status.Code(<-pushed))
}

// TestRestartWithoutSnapshot: a shard that comes back empty (no snapshot
// directory) is re-registered by the next push from the values the client
// last pulled, and training continues from there.
func TestRestartWithoutSnapshot(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	start := func(addr string) (*Server, string) {
		s, err := NewServer(sgd1())
		require.NoError(t, err)
		var lis net.Listener
		for i := 0; ; i++ { // the old socket may linger briefly
			if lis, err = net.Listen("tcp", addr); err == nil || i == 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		require.NoError(t, err)
		go s.Serve(lis)
		return s, lis.Addr().String()
	}
	s1, addr := start("127.0.0.1:0")
	c, err := Dial(ctx, []string{addr}, WithRetry(50, 10*time.Millisecond, 100*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{3}, Trainable: true, Init: []float32{10, 20, 30}}}))
	got := []Tensor{{Name: "w", Values: make([]float32, 3)}}
	_, err = c.PushPull(ctx, []Tensor{{Name: "w", Values: []float32{1, 2, 3}}}, got)
	require.NoError(t, err)
	require.Equal(t, []float32{9, 18, 27}, got[0].Values)
	require.NoError(t, s1.Stop())

	s2, _ := start(addr)
	defer s2.Stop()
	_, err = c.PushPull(ctx, []Tensor{{Name: "w", Values: []float32{1, 1, 1}}}, got)
	require.NoError(t, err)
	require.Equal(t, []float32{8, 17, 26}, got[0].Values)
	require.Equal(t, 1, s2.Stats().Parts)
	require.Equal(t, uint64(1), s2.Stats().Updates)
}
