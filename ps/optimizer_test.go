package ps

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps/optim"
)

// parityCase is one case of optim/testdata/optimizer_parity.json (what
// Keras computed; optim's tests replay it without a server).
type parityCase struct {
	Name      string `json:"name"`
	Config    string `json:"config"`
	Variables []struct {
		Name  string    `json:"name"`
		Shape []int64   `json:"shape"`
		Init  []float32 `json:"init"`
	} `json:"variables"`
	Gradients []map[string][]float32 `json:"gradients"`
	After     []map[string][]float32 `json:"after"`
}

func loadParity(t *testing.T) []parityCase {
	t.Helper()
	data, err := os.ReadFile("optim/testdata/optimizer_parity.json")
	require.NoError(t, err)
	var f struct {
		Cases []parityCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &f))
	require.NotEmpty(t, f.Cases)
	return f.Cases
}

// requireClose compares with Keras within optim's parity tolerance.
func requireClose(t *testing.T, want, got []float32, what string) {
	t.Helper()
	const tol = 1e-6
	require.Len(t, got, len(want), what)
	for i := range want {
		d := math.Abs(float64(want[i]) - float64(got[i]))
		if d > tol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d]: Keras %v, Go %v (diff %.3g > %g)", what, i, want[i], got[i], d, tol)
		}
	}
}

// TestOptimizerParityThroughServer replays the fixtures through two shards
// with chunks of 5 elements, so that the 12-element kernel is split over
// both shards and clipping happens in the client: every step must still
// match Keras.
func TestOptimizerParityThroughServer(t *testing.T) {
	for _, tc := range loadParity(t) {
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
					requireClose(t, tc.After[step][v.Name], got[i].Values, fmt.Sprintf("%s after step %d", v.Name, step+1))
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
