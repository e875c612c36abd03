package optim

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/ps/optim/optimtest"
)

// TestOptimizerParity replays the recorded gradients through the Go
// optimizers and compares every step's variables and the final slots with
// what Keras computed.
func TestOptimizerParity(t *testing.T) {
	f := optimtest.LoadParity(t, "testdata/optimizer_parity.json")
	for _, tc := range f.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.Config))
			require.NoError(t, err)
			opt, err := New(cfg)
			require.NoError(t, err)
			w := make([][]float32, len(tc.Variables))
			slots := make([][][]float32, len(tc.Variables))
			for i, v := range tc.Variables {
				w[i] = append([]float32(nil), v.Init...)
				slots[i] = opt.NewSlots(len(v.Init))
			}
			for step, grads := range tc.Gradients {
				g := make([][]float32, len(tc.Variables))
				for i, v := range tc.Variables {
					g[i] = append([]float32(nil), grads[v.Name]...)
				}
				cfg.ClipGradients(g)
				for i := range tc.Variables {
					opt.Apply(uint64(step), 1, w[i], g[i], slots[i])
				}
				for i, v := range tc.Variables {
					optimtest.RequireClose(t, tc.After[step][v.Name], w[i], v.Name+" after step "+string(rune('1'+step)))
				}
			}
			require.Len(t, tc.Slots, len(opt.Slots()), "slots %v", opt.Slots())
			for k, name := range opt.Slots() {
				for i, v := range tc.Variables {
					optimtest.RequireClose(t, tc.Slots[name][v.Name], slots[i][k], "slot "+name+" of "+v.Name)
				}
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, json string
		want       Config
		err        string
	}{
		{name: "sparkflow adam", json: `{"name":"adam","learning_rate":0.01,"beta1":0.8,"beta2":0.99}`,
			want: Config{Optimizer: "adam", LearningRate: 0.01, Beta1: 0.8, Beta2: 0.99}},
		{name: "tf1 momentum", json: `{"optimizer":"momentum","learning_rate":0.1,"momentum":0.5,"use_nesterov":true}`,
			want: Config{Optimizer: "momentum", LearningRate: 0.1, Momentum: 0.5, Nesterov: true}},
		{name: "rmsprop decay alias", json: `{"optimizer":"rmsprop","decay":0.8}`,
			want: Config{Optimizer: "rmsprop", Rho: 0.8}},
		{name: "schedule", json: `{"optimizer":"sgd","schedule":{"type":"cosine_decay","decay_steps":10}}`,
			want: Config{Optimizer: "sgd", Schedule: &Schedule{Type: "cosine_decay", DecaySteps: 10}}},
		{name: "unknown key", json: `{"optimizer":"sgd","learning_rte":0.1}`, err: `unknown keys learning_rte`},
		{name: "unknown optimizer", json: `{"optimizer":"lion"}`, err: `optimizer "lion" unknown`},
		{name: "bad beta", json: `{"optimizer":"adam","beta_1":1.5}`, err: `beta_1 = 1.5, want in [0, 1)`},
		{name: "two clips", json: `{"clipnorm":1,"global_clipnorm":1}`, err: `both set`},
		{name: "bad decay steps", json: `{"schedule":{"type":"exponential_decay","decay_rate":0.5}}`, err: `decay_steps = 0, want > 0`},
		{name: "bad schedule", json: `{"schedule":{"type":"polynomial"}}`, err: `schedule type "polynomial" unknown`},
		{name: "alias twice", json: `{"beta1":0.9,"beta_1":0.9,"optimizer":"adam"}`, err: `given twice`},
		{name: "not json", json: `{"optimizer":`, err: `optim: config`},
		{name: "wrong type", json: `{"learning_rate":"fast"}`, err: `learning_rate`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.json))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			back, err := ParseConfig([]byte(got.JSON()))
			require.NoError(t, err)
			require.Equal(t, got, back)
		})
	}
}

func TestConfigInvalidValues(t *testing.T) {
	c := Config{Optimizer: "adam", LearningRate: math.NaN()}
	require.ErrorContains(t, c.Validate(), "learning_rate = NaN")
	require.Contains(t, c.JSON(), "LearningRate:NaN")
	_, err := New(c)
	require.EqualError(t, err, "optim: learning_rate = NaN, want >= 0")
	_, err = New(Config{Optimizer: "sgd", Schedule: &Schedule{Type: "cosine_decay", DecaySteps: 10, WarmupSteps: 5}})
	require.EqualError(t, err, "optim: schedule cosine_decay: warmup_steps = 5 and warmup_target = 0, want both > 0 or both 0")
}

// TestConfigJSON pins the JSON form: shards compare it with the one in
// their snapshots, so it must not change with the Go types.
func TestConfigJSON(t *testing.T) {
	c := Config{Optimizer: "adam", LearningRate: 0.001, Amsgrad: true, Schedule: &Schedule{Type: "cosine_decay", DecaySteps: 3, Alpha: 0.5}}
	require.Equal(t, `{"optimizer":"adam","learning_rate":0.001,"amsgrad":true,"schedule":{"type":"cosine_decay","decay_steps":3,"alpha":0.5}}`, c.JSON())
	require.Equal(t, `{"optimizer":"sgd"}`, Config{Optimizer: "sgd"}.JSON())
}

func TestSlots(t *testing.T) {
	tests := []struct {
		cfg   Config
		slots []string
	}{
		{Config{}, nil},
		{Config{Optimizer: "momentum"}, []string{"momentum"}},
		{Config{Optimizer: "adam"}, []string{"momentum", "velocity"}},
		{Config{Optimizer: "adamw", Amsgrad: true}, []string{"momentum", "velocity", "velocity_hat"}},
		{Config{Optimizer: "adagrad"}, []string{"accumulator"}},
		{Config{Optimizer: "rmsprop", Momentum: 0.5, Centered: true}, []string{"velocity", "momentum", "average_gradient"}},
	}
	for _, tc := range tests {
		t.Run(tc.cfg.JSON(), func(t *testing.T) {
			o, err := New(tc.cfg)
			require.NoError(t, err)
			require.Equal(t, tc.slots, o.Slots())
			s := o.NewSlots(3)
			require.Len(t, s, len(tc.slots))
			for i, name := range tc.slots {
				want := float32(0)
				if name == "accumulator" {
					want = 0.1 // Keras' initial_accumulator_value
				}
				require.Equal(t, []float32{want, want, want}, s[i], name)
			}
		})
	}
}
