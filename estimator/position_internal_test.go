package estimator

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps"
)

// TestResumePositionAcrossEpochs: the position a restarted worker resumes
// from is the one its pushes left on the shards for this plan (none for
// another plan or before any push), including a later epoch than the one
// the job restarts at; the caller then skips that whole share.
func TestResumePositionAcrossEpochs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lc, err := ps.NewLocalCluster(2)
	require.NoError(t, err)
	defer lc.Close()
	c, err := lc.Dial(ctx, ps.WithWorkerID("worker:0"))
	require.NoError(t, err)
	defer c.Close()
	vars := []ps.Variable{{Name: "a", Shape: []int64{4}, Trainable: true, Init: make([]float32, 4)},
		{Name: "b", Shape: []int64{3}, Trainable: true, Init: make([]float32, 3)}}
	require.NoError(t, c.Register(ctx, vars))

	_, found, err := resumePosition(ctx, c, "plan-a")
	require.NoError(t, err)
	require.False(t, found, "no push yet")

	push := func(p workerPosition) {
		b, err := json.Marshal(p)
		require.NoError(t, err)
		_, err = c.Push(ctx, []ps.Tensor{{Name: "a", Values: make([]float32, 4)}, {Name: "b", Values: make([]float32, 3)}}, ps.AtPosition(b))
		require.NoError(t, err)
	}
	push(workerPosition{Plan: "plan-a", Epoch: 2, Batches: 5, Steps: 17})
	at, found, err := resumePosition(ctx, c, "plan-a")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, workerPosition{Plan: "plan-a", Epoch: 2, Batches: 5, Steps: 17}, at)

	_, found, err = resumePosition(ctx, c, "plan-b")
	require.NoError(t, err)
	require.False(t, found, "another plan's position is not this job's")
}
