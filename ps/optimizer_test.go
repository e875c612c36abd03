package ps

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// parityFixture is ps/testdata/optimizer_parity.json, written by
// ps/testdata/record_optimizers.py from Keras.
type parityFixture struct {
	Keras string `json:"keras"`
	Cases []struct {
		Name      string `json:"name"`
		Config    string `json:"config"`
		Variables []struct {
			Name  string    `json:"name"`
			Shape []int64   `json:"shape"`
			Init  []float32 `json:"init"`
		} `json:"variables"`
		Gradients  []map[string][]float32          `json:"gradients"`
		After      []map[string][]float32          `json:"after"`
		Slots      map[string]map[string][]float32 `json:"slots"`
		Iterations int                             `json:"iterations"`
	} `json:"cases"`
}

func loadParity(t *testing.T) parityFixture {
	t.Helper()
	data, err := os.ReadFile("testdata/optimizer_parity.json")
	require.NoError(t, err)
	var f parityFixture
	require.NoError(t, json.Unmarshal(data, &f))
	require.NotEmpty(t, f.Cases)
	return f
}

const parityTol = 1e-6

func requireClose(t *testing.T, want, got []float32, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		d := math.Abs(float64(want[i]) - float64(got[i]))
		if d > parityTol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d]: Keras %v, Go %v (diff %.3g > %g)", what, i, want[i], got[i], d, parityTol)
		}
	}
}

// TestOptimizerParity replays the recorded gradients through the Go
// optimizers and compares every step's variables and the final slots with
// what Keras computed.
func TestOptimizerParity(t *testing.T) {
	f := loadParity(t)
	for _, tc := range f.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			cfg, err := ParseOptimizerConfig([]byte(tc.Config))
			require.NoError(t, err)
			opt, err := newOptimizer(cfg)
			require.NoError(t, err)
			w := make([][]float32, len(tc.Variables))
			slots := make([][][]float32, len(tc.Variables))
			for i, v := range tc.Variables {
				w[i] = append([]float32(nil), v.Init...)
				slots[i] = opt.newSlots(len(v.Init))
			}
			for step, grads := range tc.Gradients {
				g := make([][]float32, len(tc.Variables))
				for i, v := range tc.Variables {
					g[i] = append([]float32(nil), grads[v.Name]...)
				}
				clipGradients(cfg, g)
				for i := range tc.Variables {
					opt.apply(uint64(step), 1, w[i], g[i], slots[i])
				}
				for i, v := range tc.Variables {
					requireClose(t, tc.After[step][v.Name], w[i], v.Name+" after step "+string(rune('1'+step)))
				}
			}
			require.Len(t, tc.Slots, len(opt.slots), "slots %v", opt.slots)
			for k, name := range opt.slots {
				for i, v := range tc.Variables {
					requireClose(t, tc.Slots[name][v.Name], slots[i][k], "slot "+name+" of "+v.Name)
				}
			}
		})
	}
}

func TestParseOptimizerConfig(t *testing.T) {
	tests := []struct {
		name, json string
		want       OptimizerConfig
		err        string
	}{
		{name: "sparkflow adam", json: `{"name":"adam","learning_rate":0.01,"beta1":0.8,"beta2":0.99}`,
			want: OptimizerConfig{Optimizer: "adam", LearningRate: 0.01, Beta1: 0.8, Beta2: 0.99}},
		{name: "tf1 momentum", json: `{"optimizer":"momentum","learning_rate":0.1,"momentum":0.5,"use_nesterov":true}`,
			want: OptimizerConfig{Optimizer: "momentum", LearningRate: 0.1, Momentum: 0.5, Nesterov: true}},
		{name: "rmsprop decay alias", json: `{"optimizer":"rmsprop","decay":0.8}`,
			want: OptimizerConfig{Optimizer: "rmsprop", Rho: 0.8}},
		{name: "schedule", json: `{"optimizer":"sgd","schedule":{"type":"cosine_decay","decay_steps":10}}`,
			want: OptimizerConfig{Optimizer: "sgd", Schedule: &ScheduleConfig{Type: "cosine_decay", DecaySteps: 10}}},
		{name: "unknown key", json: `{"optimizer":"sgd","learning_rte":0.1}`, err: `unknown keys learning_rte`},
		{name: "unknown optimizer", json: `{"optimizer":"lion"}`, err: `optimizer "lion" unknown`},
		{name: "bad beta", json: `{"optimizer":"adam","beta_1":1.5}`, err: `beta_1 = 1.5, want in [0, 1)`},
		{name: "two clips", json: `{"clipnorm":1,"global_clipnorm":1}`, err: `both set`},
		{name: "bad decay steps", json: `{"schedule":{"type":"exponential_decay","decay_rate":0.5}}`, err: `decay_steps = 0, want > 0`},
		{name: "bad schedule", json: `{"schedule":{"type":"polynomial"}}`, err: `schedule type "polynomial" unknown`},
		{name: "alias twice", json: `{"beta1":0.9,"beta_1":0.9,"optimizer":"adam"}`, err: `given twice`},
		{name: "not json", json: `{"optimizer":`, err: `optimizer config`},
		{name: "wrong type", json: `{"learning_rate":"fast"}`, err: `learning_rate`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOptimizerConfig([]byte(tc.json))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			back, err := ParseOptimizerConfig([]byte(got.JSON()))
			require.NoError(t, err)
			require.Equal(t, got, back)
		})
	}
}

func TestOptimizerConfigInvalidValues(t *testing.T) {
	c := OptimizerConfig{Optimizer: "adam", LearningRate: math.NaN()}
	require.ErrorContains(t, c.Validate(), "learning_rate = NaN")
	require.Contains(t, c.JSON(), "LearningRate:NaN")
	_, err := NewServer(WithOptimizer(c))
	require.ErrorContains(t, err, "learning_rate = NaN")
	_, err = NewServer(WithOptimizer(OptimizerConfig{Optimizer: "sgd", Schedule: &ScheduleConfig{Type: "cosine_decay", DecaySteps: 10, WarmupSteps: 5}}))
	require.ErrorContains(t, err, "warmup_steps = 5 and warmup_target = 0")
}

// TestOptimizerParityThroughServer replays the fixtures through two shards
// with chunks of 5 elements, so that the 12-element kernel is split over
// both shards and clipping happens in the client: every step must still
// match Keras.
func TestOptimizerParityThroughServer(t *testing.T) {
	f := loadParity(t)
	for _, tc := range f.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			ctx := testCtx(t, 20*time.Second)
			cfg, err := ParseOptimizerConfig([]byte(tc.Config))
			require.NoError(t, err)
			lc := newCluster(t, 2, WithOptimizer(cfg), WithMode(AsyncLock))
			c := dialCluster(t, ctx, lc, WithChunkElements(5))
			var vars []Variable
			for _, v := range tc.Variables {
				vars = append(vars, Variable{Name: v.Name, Shape: v.Shape, Trainable: true, Init: v.Init})
			}
			require.NoError(t, c.Register(ctx, vars))
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
