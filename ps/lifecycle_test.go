package ps

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSnapshotNeverReplacesNewer: a shard whose state is older than the
// snapshot on disk (an orphan of an earlier run, say) refuses to write over
// it, and every later owner of the directory gets a higher incarnation.
func TestSnapshotNeverReplacesNewer(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	newer, older := t.TempDir(), t.TempDir()
	vars := []Variable{{Name: "w", Shape: []int64{4}, Trainable: true}}
	train := func(dir string, pushes int) *LocalCluster {
		lc := newCluster(t, 1, sgd1(), WithSnapshotDir(dir, 0, 0))
		c := dialCluster(t, ctx, lc)
		require.NoError(t, c.Register(ctx, vars))
		for range pushes {
			_, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 1, 1, 1}}})
			require.NoError(t, err)
		}
		return lc
	}
	require.NoError(t, train(newer, 5).Close())
	stale := train(older, 2) // still running, at version 2
	name := "ps-shard-0-of-1.snapshot"
	b, err := os.ReadFile(filepath.Join(newer, name))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(older, name), b, 0o644))

	_, err = stale.Servers()[0].writeSnapshot()
	require.ErrorContains(t, err, "holds version 5 of incarnation 1, newer than this shard's version 2 of incarnation 1; not replacing it")
	require.Error(t, stale.Close(), "the final snapshot is refused too")
	h, err := readSnapshotHeader(filepath.Join(older, name))
	require.NoError(t, err)
	require.Equal(t, uint64(5), h.GetVersion(), "the newer snapshot is intact")

	// The next owner resumes version 5 as incarnation 2.
	lc := newCluster(t, 1, sgd1(), WithSnapshotDir(older, 0, 0))
	require.Equal(t, uint64(5), lc.Servers()[0].Stats().Version)
	require.NoError(t, lc.Close())
	h, err = readSnapshotHeader(filepath.Join(older, name))
	require.NoError(t, err)
	require.Equal(t, uint64(2), h.GetIncarnation())
}

// TestIdleTimeout: Idle stays open while requests keep coming and closes
// once none has come for the timeout.
func TestIdleTimeout(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 1, WithIdleTimeout(200*time.Millisecond))
	c := dialCluster(t, ctx, lc)
	busyUntil := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(busyUntil) {
		_, err := c.Stats(ctx)
		require.NoError(t, err)
		select {
		case <-lc.Servers()[0].Idle():
			t.Fatal("Idle closed while requests kept coming")
		default:
		}
		time.Sleep(20 * time.Millisecond) // the request rate, not a wait
	}
	select {
	case <-lc.Servers()[0].Idle():
	case <-ctx.Done():
		t.Fatal("Idle not closed 20s after the last request")
	}
}

// TestSyncSetWorkers: a sync step waiting for a worker that died completes
// as soon as the shard is told the step has one push fewer, long before
// its straggler timeout.
func TestSyncSetWorkers(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 1, sgd1(), WithMode(Sync), WithWorkers(3), WithSyncTimeout(time.Hour, StragglerFail))
	vars := []Variable{{Name: "w", Shape: []int64{2}, Trainable: true}}
	var clients []*Client
	for i := range 3 {
		c := dialCluster(t, ctx, lc, WithWorkerID(fmt.Sprint("w", i)))
		require.NoError(t, c.Register(ctx, vars))
		clients = append(clients, c)
	}
	done := make(chan error, 2)
	for i := range 2 { // worker 2 never pushes
		go func() {
			_, err := clients[i].Push(ctx, []Tensor{{Name: "w", Values: []float32{float32(i + 1), 0}}})
			done <- err
		}()
	}
	for lc.Servers()[0].Stats().Pushes < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the two pushes never arrived")
		case <-time.After(time.Millisecond):
		}
	}
	require.NoError(t, clients[2].SetWorkers(ctx, 2, "worker w2 died")) // clients[0] and [1] are busy pushing
	for range 2 {
		require.NoError(t, <-done)
	}
	got := []Tensor{{Name: "w", Values: make([]float32, 2)}}
	require.NoError(t, clients[0].Pull(ctx, got))
	require.Equal(t, []float32{-1.5, 0}, got[0].Values, "w = 0 - 1 * mean(1, 2)")
	require.Equal(t, uint64(1), lc.Servers()[0].Stats().Step)
	require.ErrorContains(t, clients[0].SetWorkers(ctx, 0, ""), "want at least 1")
}

// TestSyncExactAfterKill: two workers run synchronous SGD while the shard
// process is SIGKILLed twice; the final weights equal, bit for bit, those
// of the same steps in a shard that never failed.
func TestSyncExactAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ctx := testCtx(t, 60*time.Second)
	const steps, n = 120, 33
	vars := []Variable{{Name: "w", Shape: []int64{n}, Trainable: true, Init: make([]float32, n)}}
	grad := func(w, k int) []float32 {
		g := make([]float32, n)
		for i := range g {
			g[i] = float32(math.Sin(float64(w*7919+k*104729+i))) / 3
		}
		return g
	}
	train := func(dial func() (*Client, error), afterStep func(k int)) []float32 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[w] = func() error {
					c, err := dial()
					if err != nil {
						return err
					}
					defer c.Close()
					if err := c.Register(ctx, vars); err != nil {
						return err
					}
					for k := range steps {
						if _, err := c.Push(ctx, []Tensor{{Name: "w", Values: grad(w, k)}}); err != nil {
							return fmt.Errorf("worker %d step %d: %w", w, k, err)
						}
						if w == 0 {
							afterStep(k)
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
		c, err := dial()
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.Register(ctx, vars))
		got := []Tensor{{Name: "w", Values: make([]float32, n)}}
		require.NoError(t, c.Pull(ctx, got))
		return got[0].Values
	}

	lc := newCluster(t, 1, sgd1(), WithMode(Sync), WithWorkers(2))
	var refID atomic.Int32
	want := train(func() (*Client, error) { return lc.Dial(ctx, WithWorkerID(fmt.Sprint("w", refID.Add(1)))) }, func(int) {})

	dir := t.TempDir()
	sock := newShardSocket(t)
	var mu sync.Mutex
	proc := sock.start(t, dir+",sync")
	kills, id := 0, 0
	got := train(func() (*Client, error) {
		mu.Lock()
		id++
		wid := fmt.Sprint("w", id)
		mu.Unlock()
		return Dial(ctx, []string{sock.addr}, WithWorkerID(wid), WithRetry(100, 10*time.Millisecond, 200*time.Millisecond), WithRPCTimeout(5*time.Second))
	}, func(k int) {
		if k != 37 && k != 90 { // mid-training, once between snapshots
			return
		}
		mu.Lock()
		defer mu.Unlock()
		proc.Process.Signal(syscall.SIGKILL)
		proc.Wait()
		kills++
		proc = sock.start(t, dir+",sync")
	})
	require.Equal(t, 2, kills)
	require.Equal(t, want, got, "the same steps, applied exactly once each")
}

// TestWALFoldedByServerWithoutLog: a shard without a log that opens a
// directory holding one (its last owner was killed) replays it and folds
// it into its snapshot, so that a logging shard opening the directory
// afterwards applies nothing twice.
func TestWALFoldedByServerWithoutLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	sock := newShardSocket(t)
	cmd := sock.start(t, dir)
	vars := []Variable{{Name: "w", Shape: []int64{2}, Trainable: true}}
	c, err := Dial(ctx, []string{sock.addr})
	require.NoError(t, err)
	require.NoError(t, c.Register(ctx, vars))
	for range 7 { // below the child's snapshot count: in the log only
		_, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 2}}})
		require.NoError(t, err)
	}
	c.Close()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()

	// A write cut short by the kill leaves a partial record at the end of
	// the log: it is ignored (it was never acknowledged).
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal.*"))
	require.NoError(t, err)
	require.NotEmpty(t, segs)
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{200, 0, 0, 0, 1, 2, 3, 4, 5})
	require.NoError(t, err)
	require.NoError(t, f.Close())

	want := []float32{-7, -14}
	pull := func(lc *LocalCluster) []float32 {
		c := dialCluster(t, ctx, lc)
		require.NoError(t, c.Register(ctx, vars))
		got := []Tensor{{Name: "w", Values: make([]float32, 2)}}
		require.NoError(t, c.Pull(ctx, got))
		return got[0].Values
	}
	plain := newCluster(t, 1, sgd1(), WithMode(AsyncLock), WithSnapshotDir(dir, 0, 0), WithoutWAL())
	require.Equal(t, want, pull(plain), "the log was replayed")
	require.NoError(t, plain.Close())
	segs, err = filepath.Glob(filepath.Join(dir, "*.wal.*"))
	require.NoError(t, err)
	require.Empty(t, segs, "the log was folded into the snapshot")
	logged := newCluster(t, 1, sgd1(), WithMode(AsyncLock), WithSnapshotDir(dir, 0, 0))
	require.Equal(t, want, pull(logged), "nothing applied twice")
	require.Equal(t, uint64(7), logged.Servers()[0].Stats().Version)
}
