package ps

import (
	"fmt"
	"os"
	"path/filepath"
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
