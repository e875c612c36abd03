package ps

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/ps/optim/optimtest"
)

// TestOptimizerParityThroughServer replays the fixtures through two shards
// with chunks of 5 elements, so that the 12-element kernel is split over
// both shards and clipping happens in the client: every step must still
// match Keras.
func TestOptimizerParityThroughServer(t *testing.T) {
	for _, tc := range optimtest.LoadParity(t, "optim/testdata/optimizer_parity.json").Cases {
		t.Run(tc.Name, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			cfg, err := optim.ParseConfig([]byte(tc.Config))
			require.NoError(t, err)
			lc := newCluster(t, 2, WithOptimizer(cfg), WithMode(AsyncLock))
			c := dialCluster(t, ctx, lc, WithChunkElements(5))
			var vars []Variable
			for _, v := range tc.Variables {
				vars = append(vars, Variable{Name: v.Name, Shape: v.Shape, Trainable: true, Init: v.Init})
			}
			require.NoError(t, c.Register(ctx, vars))
			require.Equal(t, cfg, c.Optimizer())
			got := tensorsLike(vars, true)
			for step, grads := range tc.Gradients {
				var g []Tensor
				for _, v := range tc.Variables {
					g = append(g, Tensor{Name: v.Name, Values: grads[v.Name]})
				}
				_, err := c.PushPull(ctx, g, got)
				require.NoError(t, err)
				for i, v := range tc.Variables {
					optimtest.RequireClose(t, tc.After[step][v.Name], got[i].Values, fmt.Sprintf("%s after step %d", v.Name, step+1))
				}
			}
		})
	}
}

// TestNewServerRefusesInvalidOptimizer: the optimizer is validated when
// the shard is built, not at its first push.
func TestNewServerRefusesInvalidOptimizer(t *testing.T) {
	_, err := NewServer(WithOptimizer(optim.Config{Optimizer: "adam", LearningRate: math.NaN()}))
	require.ErrorContains(t, err, "learning_rate = NaN")
	_, err = NewServer(WithOptimizer(optim.Config{Optimizer: "sgd", Schedule: &optim.Schedule{Type: "cosine_decay", DecaySteps: 10, WarmupSteps: 5}}))
	require.ErrorContains(t, err, "warmup_steps = 5 and warmup_target = 0")
}
