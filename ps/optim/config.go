package optim

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Config selects and tunes an optimizer. It is the Go form of SparkFlow's optimizerOptions JSON and
// follows Keras 3 names and defaults: a zero field means the Keras default
// (LearningRate, Beta1, Beta2, Epsilon, Rho, InitialAccumulatorValue, and
// WeightDecay for AdamW) or "off" (Momentum, WeightDecay, ClipNorm,
// GlobalClipNorm).
//
// The update formulas are those of keras.optimizers in float32, operation
// by operation, so that a shard reproduces what Keras computes for the same
// gradients.
type Config struct {
	// Optimizer is one of "sgd", "momentum" (SGD with momentum 0.9 unless
	// set), "adam", "adamw", "adagrad", "rmsprop". Empty means "sgd".
	Optimizer    string  `json:"optimizer"`
	LearningRate float64 `json:"learning_rate,omitempty"`
	// SGD.
	Momentum float64 `json:"momentum,omitempty"`
	Nesterov bool    `json:"nesterov,omitempty"`
	// Adam, AdamW.
	Beta1   float64 `json:"beta_1,omitempty"`
	Beta2   float64 `json:"beta_2,omitempty"`
	Amsgrad bool    `json:"amsgrad,omitempty"`
	// Adam, AdamW, Adagrad, RMSProp.
	Epsilon float64 `json:"epsilon,omitempty"`
	// Adagrad.
	InitialAccumulatorValue float64 `json:"initial_accumulator_value,omitempty"`
	// RMSProp (Momentum above also applies).
	Rho      float64 `json:"rho,omitempty"`
	Centered bool    `json:"centered,omitempty"`
	// All optimizers: decoupled weight decay (Keras' weight_decay).
	WeightDecay float64 `json:"weight_decay,omitempty"`
	// Gradient clipping, applied by the client to each worker's gradients
	// before they are pushed (the client sees whole variables; a shard may
	// hold only a chunk). At most one of the two may be set.
	ClipNorm       float64 `json:"clipnorm,omitempty"`
	GlobalClipNorm float64 `json:"global_clipnorm,omitempty"`
	// Schedule makes the learning rate a function of the update count of
	// each variable part; nil means constant.
	Schedule *Schedule `json:"schedule,omitempty"`
}

// Schedule is a learning-rate schedule in Keras' terms; the initial
// learning rate is Config.LearningRate.
type Schedule struct {
	// Type is "constant", "exponential_decay" or "cosine_decay".
	Type string `json:"type"`
	// DecaySteps is required by both decays.
	DecaySteps int64 `json:"decay_steps,omitempty"`
	// DecayRate and Staircase: exponential_decay.
	DecayRate float64 `json:"decay_rate,omitempty"`
	Staircase bool    `json:"staircase,omitempty"`
	// Alpha (minimum as a fraction of the initial rate), WarmupTarget and
	// WarmupSteps: cosine_decay.
	Alpha        float64 `json:"alpha,omitempty"`
	WarmupTarget float64 `json:"warmup_target,omitempty"`
	WarmupSteps  int64   `json:"warmup_steps,omitempty"`
}

// optimizerAliases maps SparkFlow / TF1 optimizerOptions keys to ours.
var optimizerAliases = map[string]string{
	"name":          "optimizer",
	"learningRate":  "learning_rate",
	"lr":            "learning_rate",
	"beta1":         "beta_1",
	"beta2":         "beta_2",
	"use_nesterov":  "nesterov",
	"decay":         "rho",
	"clip_norm":     "clipnorm",
	"global_clip":   "global_clipnorm",
	"weightDecay":   "weight_decay",
	"initial_accum": "initial_accumulator_value",
}

var optimizerKeys = map[string]bool{
	"optimizer": true, "learning_rate": true, "momentum": true, "nesterov": true,
	"beta_1": true, "beta_2": true, "amsgrad": true, "epsilon": true,
	"initial_accumulator_value": true, "rho": true, "centered": true,
	"weight_decay": true, "clipnorm": true, "global_clipnorm": true, "schedule": true,
}

// ParseConfig reads an optimizer configuration from JSON such as
// {"optimizer": "adam", "learning_rate": 0.001, "beta1": 0.9}. Keys follow
// Keras; SparkFlow's TF1 spellings (beta1, beta2, use_nesterov, decay for
// RMSProp's rho, name for optimizer) are accepted too. Unknown keys are an
// error, and the result is validated.
func ParseConfig(data []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("optim: config: %w", err)
	}
	norm := make(map[string]json.RawMessage, len(raw))
	var unknown []string
	for k, v := range raw {
		key := k
		if a, ok := optimizerAliases[k]; ok {
			key = a
		}
		if !optimizerKeys[key] {
			unknown = append(unknown, k)
			continue
		}
		if _, dup := norm[key]; dup {
			return Config{}, fmt.Errorf("optim: config: %q given twice (directly and as an alias)", key)
		}
		norm[key] = v
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		known := make([]string, 0, len(optimizerKeys))
		for k := range optimizerKeys {
			known = append(known, k)
		}
		sort.Strings(known)
		return Config{}, fmt.Errorf("optim: config: unknown keys %s (known: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	buf, err := json.Marshal(norm)
	if err != nil {
		return Config{}, fmt.Errorf("optim: config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(buf)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("optim: config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// JSON returns the configuration as JSON that ParseConfig reads.
// A configuration that JSON cannot express (a NaN or Inf field, which
// Validate rejects) is returned in Go syntax instead.
func (c Config) JSON() string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("%+v", c)
	}
	return string(b)
}

// Validate reports the first invalid setting, naming the field and what it
// expects.
func (c Config) Validate() error {
	switch c.name() {
	case "sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop":
	default:
		return fmt.Errorf("optim: optimizer %q unknown (want sgd, momentum, adam, adamw, adagrad or rmsprop)", c.Optimizer)
	}
	type check struct {
		name string
		v    float64
		ok   bool
		want string
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	checks := []check{
		{"learning_rate", c.LearningRate, c.LearningRate >= 0, ">= 0"},
		{"momentum", c.Momentum, c.Momentum >= 0 && c.Momentum <= 1, "in [0, 1]"},
		{"beta_1", c.Beta1, c.Beta1 >= 0 && c.Beta1 < 1, "in [0, 1)"},
		{"beta_2", c.Beta2, c.Beta2 >= 0 && c.Beta2 < 1, "in [0, 1)"},
		{"epsilon", c.Epsilon, c.Epsilon >= 0, ">= 0"},
		{"initial_accumulator_value", c.InitialAccumulatorValue, c.InitialAccumulatorValue >= 0, ">= 0"},
		{"rho", c.Rho, c.Rho >= 0 && c.Rho < 1, "in [0, 1)"},
		{"weight_decay", c.WeightDecay, c.WeightDecay >= 0, ">= 0"},
		{"clipnorm", c.ClipNorm, c.ClipNorm >= 0, ">= 0"},
		{"global_clipnorm", c.GlobalClipNorm, c.GlobalClipNorm >= 0, ">= 0"},
	}
	for _, ch := range checks {
		if !finite(ch.v) || !ch.ok {
			return fmt.Errorf("optim: %s = %v, want %s", ch.name, ch.v, ch.want)
		}
	}
	if c.ClipNorm > 0 && c.GlobalClipNorm > 0 {
		return fmt.Errorf("optim: clipnorm and global_clipnorm both set; Keras allows one")
	}
	if c.Nesterov && c.name() != "sgd" && c.name() != "momentum" {
		return fmt.Errorf("optim: nesterov applies to sgd/momentum, not %s", c.name())
	}
	if s := c.Schedule; s != nil {
		switch s.Type {
		case "", "constant":
		case "exponential_decay":
			if s.DecaySteps <= 0 {
				return fmt.Errorf("optim: schedule exponential_decay: decay_steps = %d, want > 0", s.DecaySteps)
			}
			if !finite(s.DecayRate) || s.DecayRate <= 0 {
				return fmt.Errorf("optim: schedule exponential_decay: decay_rate = %v, want > 0", s.DecayRate)
			}
		case "cosine_decay":
			if s.DecaySteps <= 0 {
				return fmt.Errorf("optim: schedule cosine_decay: decay_steps = %d, want > 0", s.DecaySteps)
			}
			if !finite(s.Alpha) || s.Alpha < 0 || s.Alpha > 1 {
				return fmt.Errorf("optim: schedule cosine_decay: alpha = %v, want in [0, 1]", s.Alpha)
			}
			if s.WarmupSteps < 0 || (s.WarmupSteps > 0) != (s.WarmupTarget > 0) {
				return fmt.Errorf("optim: schedule cosine_decay: warmup_steps = %d and warmup_target = %v, want both > 0 or both 0", s.WarmupSteps, s.WarmupTarget)
			}
		default:
			return fmt.Errorf("optim: schedule type %q unknown (want constant, exponential_decay or cosine_decay)", s.Type)
		}
	}
	return nil
}

func (c Config) name() string {
	n := strings.ToLower(c.Optimizer)
	switch n {
	case "":
		return "sgd"
	case "gradientdescent", "gradient_descent":
		return "sgd"
	}
	return n
}

// withDefaults fills Keras defaults into zero fields.
func (c Config) withDefaults() Config {
	def := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	switch c.name() {
	case "sgd":
		def(&c.LearningRate, 0.01)
	case "momentum":
		def(&c.LearningRate, 0.01)
		def(&c.Momentum, 0.9)
	case "adam", "adamw":
		def(&c.LearningRate, 0.001)
		def(&c.Beta1, 0.9)
		def(&c.Beta2, 0.999)
		def(&c.Epsilon, 1e-7)
		if c.name() == "adamw" {
			def(&c.WeightDecay, 0.004)
		}
	case "adagrad":
		def(&c.LearningRate, 0.001)
		def(&c.InitialAccumulatorValue, 0.1)
		def(&c.Epsilon, 1e-7)
	case "rmsprop":
		def(&c.LearningRate, 0.001)
		def(&c.Rho, 0.9)
		def(&c.Epsilon, 1e-7)
	}
	return c
}

// slotNames lists the per-variable optimizer state, in the order slots are
// stored, using Keras' names.
func (c Config) slotNames() []string {
	c = c.withDefaults()
	switch c.name() {
	case "sgd", "momentum":
		if c.Momentum != 0 {
			return []string{"momentum"}
		}
	case "adam", "adamw":
		if c.Amsgrad {
			return []string{"momentum", "velocity", "velocity_hat"}
		}
		return []string{"momentum", "velocity"}
	case "adagrad":
		return []string{"accumulator"}
	case "rmsprop":
		s := []string{"velocity"}
		if c.Momentum > 0 {
			s = append(s, "momentum")
		}
		if c.Centered {
			s = append(s, "average_gradient")
		}
		return s
	}
	return nil
}

// ClipGradients applies Keras' clipnorm (each tensor by its own L2 norm) or
// global_clipnorm (all tensors by their joint norm) to grads in place, the
// gradients of all variables of one step. It does nothing when neither is
// set.
func (c Config) ClipGradients(grads [][]float32) {
	switch {
	case c.ClipNorm > 0:
		clip := float32(c.ClipNorm)
		for _, g := range grads {
			var sum float64
			for _, x := range g {
				sum += float64(x) * float64(x)
			}
			norm := float32(math.Sqrt(sum))
			den := max(norm, clip)
			for i, x := range g {
				g[i] = float32(x*clip) / den
			}
		}
	case c.GlobalClipNorm > 0:
		var sum float64
		for _, g := range grads {
			for _, x := range g {
				sum += float64(x) * float64(x)
			}
		}
		norm := float32(math.Sqrt(sum))
		clip := float32(c.GlobalClipNorm)
		scale := clip * min(1/norm, 1/clip)
		if math.IsNaN(float64(norm)) || math.IsInf(float64(norm), 0) {
			scale = float32(math.NaN())
		}
		for _, g := range grads {
			for i := range g {
				g[i] *= scale
			}
		}
	}
}
