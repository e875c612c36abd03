package ps

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps/pspb"
)

// TestPositionsKeptWithUpdates: the input position a push carries is kept
// with its update. A shard that stops without a final snapshot comes back
// (snapshot plus write-ahead log) with the position of the last push it
// acknowledged; rolled back to its snapshot, or without a log, it has the
// position of the last push the snapshot holds. In every mode, on every
// shard that applies gradients.
func TestPositionsKeptWithUpdates(t *testing.T) {
	for _, tc := range []struct {
		mode Mode
		wal  bool
	}{{AsyncLock, true}, {Sync, true}, {Hogwild, true}, {Hogwild, false}, {BoundedStaleness, true}} {
		t.Run(fmt.Sprintf("%v/wal=%t", tc.mode, tc.wal), func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			dir := t.TempDir()
			opts := []ServerOption{sgd1(), WithMode(tc.mode), WithSnapshotDir(dir, 0, 0), WithoutFinalSnapshot()}
			if !tc.wal {
				opts = append(opts, WithoutWAL())
			}
			vars := testVars()
			open := func() (*LocalCluster, *Client) {
				lc, err := NewLocalCluster(2, opts...)
				require.NoError(t, err)
				c, err := lc.Dial(ctx, WithWorkerID("worker:0"), WithChunkElements(256))
				require.NoError(t, err)
				require.NoError(t, c.Register(ctx, vars))
				return lc, c
			}
			lc, c := open()
			pos, err := c.Positions(ctx)
			require.NoError(t, err)
			require.Equal(t, [][]byte{nil, nil}, pos, "no push yet")
			grads := tensorsLike(vars, true)
			for k := 1; k <= 5; k++ {
				fillGrads(grads, 0, k)
				_, err := c.Push(ctx, grads, AtPosition(fmt.Appendf(nil, "batch %d", k)))
				require.NoError(t, err)
				if k == 3 {
					_, err := c.Snapshot(ctx)
					require.NoError(t, err)
				}
			}
			// A push without a position leaves the last one in place.
			fillGrads(grads, 0, 6)
			_, err = c.Push(ctx, grads)
			require.NoError(t, err)
			pos, err = c.Positions(ctx)
			require.NoError(t, err)
			require.Equal(t, [][]byte{[]byte("batch 5"), []byte("batch 5")}, pos)
			c.Close()
			require.NoError(t, lc.Close())

			lc, c = open()
			defer lc.Close()
			defer c.Close()
			pos, err = c.Positions(ctx)
			require.NoError(t, err)
			want, version := "batch 5", uint64(6)
			if !tc.wal {
				want, version = "batch 3", 3
			}
			require.Equal(t, [][]byte{[]byte(want), []byte(want)}, pos, "after a restart")
			for _, s := range lc.Servers() {
				require.Equal(t, version, s.Stats().Version)
				require.Equal(t, map[string][]byte{"worker:0": []byte(want)}, s.Stats().Positions)
			}
			require.NoError(t, c.Restore(ctx))
			pos, err = c.Positions(ctx)
			require.NoError(t, err)
			require.Equal(t, [][]byte{[]byte("batch 3"), []byte("batch 3")}, pos, "rolled back to the snapshot")
		})
	}
}

func TestPositionBadInput(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 1, sgd1())
	vars := []Variable{{Name: "w", Shape: []int64{1}, Trainable: true}}
	c := dialCluster(t, ctx, lc, WithWorkerID("w"))
	require.NoError(t, c.Register(ctx, vars))
	_, err := rawPush(ctx, c.stubs[0], &pspb.PushRequest{Header: &pspb.PushHeader{Position: []byte("x")}, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1)}})
	require.ErrorContains(t, err, "no worker_id")
	_, err = c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1}}}, AtPosition(make([]byte, maxPosition+1)))
	require.ErrorContains(t, err, "at most 4096")
	require.Equal(t, uint64(0), lc.Servers()[0].Stats().Version, "nothing applied")
}
