package ps

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps/optim"
)

// TestRestartedWorkerPushesAfterRestore: a worker that comes back with the
// same worker ID after its shard restored a snapshot must have its pushes
// applied, not answered as duplicates of its previous incarnation's.
func TestRestartedWorkerPushesAfterRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	opts := []ServerOption{WithMode(AsyncLock), WithOptimizer(optim.Config{Optimizer: "sgd", LearningRate: 1}), WithSnapshotDir(dir, 0, 0)}
	vars := []Variable{{Name: "w", Shape: []int64{2}, Trainable: true, Init: []float32{10, 20}}}
	grad := []Tensor{{Name: "w", Values: []float32{1, 1}}}
	pull := func(c *Client) []float32 {
		dst := []Tensor{{Name: "w", Values: make([]float32, 2)}}
		require.NoError(t, c.Pull(ctx, dst))
		return dst[0].Values
	}

	lc, err := NewLocalCluster(1, opts...)
	require.NoError(t, err)
	c, err := lc.Dial(ctx, WithWorkerID("worker:0"))
	require.NoError(t, err)
	require.NoError(t, c.Register(ctx, vars))
	for range 3 {
		_, err := c.Push(ctx, grad)
		require.NoError(t, err)
	}
	_, err = c.Snapshot(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	require.NoError(t, lc.Close())

	lc, err = NewLocalCluster(1, opts...)
	require.NoError(t, err)
	defer lc.Close()
	c, err = lc.Dial(ctx, WithWorkerID("worker:0"))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, vars))
	require.Equal(t, []float32{7, 17}, pull(c), "restored after three pushes")
	for range 2 {
		_, err := c.Push(ctx, grad)
		require.NoError(t, err)
	}
	require.Equal(t, []float32{5, 15}, pull(c), "the new incarnation's pushes are applied")
}
