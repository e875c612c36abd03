package ps

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// OptimizerConfig selects and tunes the optimizer a shard applies to pushed
// gradients. It is the Go form of SparkFlow's optimizerOptions JSON and
// follows Keras 3 names and defaults: a zero field means the Keras default
// (LearningRate, Beta1, Beta2, Epsilon, Rho, InitialAccumulatorValue, and
// WeightDecay for AdamW) or "off" (Momentum, WeightDecay, ClipNorm,
// GlobalClipNorm).
//
// The update formulas are those of keras.optimizers in float32, operation
// by operation, so that a shard reproduces what Keras computes for the same
// gradients.
type OptimizerConfig struct {
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
	Schedule *ScheduleConfig `json:"schedule,omitempty"`
}

// ScheduleConfig is a learning-rate schedule in Keras' terms; the initial
// learning rate is OptimizerConfig.LearningRate.
type ScheduleConfig struct {
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

// ParseOptimizerConfig reads an optimizer configuration from JSON such as
// {"optimizer": "adam", "learning_rate": 0.001, "beta1": 0.9}. Keys follow
// Keras; SparkFlow's TF1 spellings (beta1, beta2, use_nesterov, decay for
// RMSProp's rho, name for optimizer) are accepted too. Unknown keys are an
// error, and the result is validated.
func ParseOptimizerConfig(data []byte) (OptimizerConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return OptimizerConfig{}, fmt.Errorf("ps: optimizer config: %w", err)
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
			return OptimizerConfig{}, fmt.Errorf("ps: optimizer config: %q given twice (directly and as an alias)", key)
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
		return OptimizerConfig{}, fmt.Errorf("ps: optimizer config: unknown keys %s (known: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	buf, err := json.Marshal(norm)
	if err != nil {
		return OptimizerConfig{}, fmt.Errorf("ps: optimizer config: %w", err)
	}
	var c OptimizerConfig
	dec := json.NewDecoder(strings.NewReader(string(buf)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return OptimizerConfig{}, fmt.Errorf("ps: optimizer config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return OptimizerConfig{}, err
	}
	return c, nil
}

// JSON returns the configuration as JSON that ParseOptimizerConfig reads.
// A configuration that JSON cannot express (a NaN or Inf field, which
// Validate rejects) is returned in Go syntax instead.
func (c OptimizerConfig) JSON() string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("%+v", c)
	}
	return string(b)
}

// Validate reports the first invalid setting, naming the field and what it
// expects.
func (c OptimizerConfig) Validate() error {
	switch c.name() {
	case "sgd", "momentum", "adam", "adamw", "adagrad", "rmsprop":
	default:
		return fmt.Errorf("ps: optimizer %q unknown (want sgd, momentum, adam, adamw, adagrad or rmsprop)", c.Optimizer)
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
			return fmt.Errorf("ps: optimizer %s = %v, want %s", ch.name, ch.v, ch.want)
		}
	}
	if c.ClipNorm > 0 && c.GlobalClipNorm > 0 {
		return fmt.Errorf("ps: optimizer clipnorm and global_clipnorm both set; Keras allows one")
	}
	if c.Nesterov && c.name() != "sgd" && c.name() != "momentum" {
		return fmt.Errorf("ps: optimizer nesterov applies to sgd/momentum, not %s", c.name())
	}
	if s := c.Schedule; s != nil {
		switch s.Type {
		case "", "constant":
		case "exponential_decay":
			if s.DecaySteps <= 0 {
				return fmt.Errorf("ps: schedule exponential_decay: decay_steps = %d, want > 0", s.DecaySteps)
			}
			if !finite(s.DecayRate) || s.DecayRate <= 0 {
				return fmt.Errorf("ps: schedule exponential_decay: decay_rate = %v, want > 0", s.DecayRate)
			}
		case "cosine_decay":
			if s.DecaySteps <= 0 {
				return fmt.Errorf("ps: schedule cosine_decay: decay_steps = %d, want > 0", s.DecaySteps)
			}
			if !finite(s.Alpha) || s.Alpha < 0 || s.Alpha > 1 {
				return fmt.Errorf("ps: schedule cosine_decay: alpha = %v, want in [0, 1]", s.Alpha)
			}
			if s.WarmupSteps < 0 || (s.WarmupSteps > 0) != (s.WarmupTarget > 0) {
				return fmt.Errorf("ps: schedule cosine_decay: warmup_steps = %d and warmup_target = %v, want both > 0 or both 0", s.WarmupSteps, s.WarmupTarget)
			}
		default:
			return fmt.Errorf("ps: schedule type %q unknown (want constant, exponential_decay or cosine_decay)", s.Type)
		}
	}
	return nil
}

func (c OptimizerConfig) name() string {
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
func (c OptimizerConfig) withDefaults() OptimizerConfig {
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
func (c OptimizerConfig) slotNames() []string {
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

// optimizer applies one configuration; it is immutable and shared by all
// parts of a shard.
type optimizer struct {
	cfg   OptimizerConfig // with defaults
	kind  string
	slots []string
}

func newOptimizer(c OptimizerConfig) (*optimizer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d := c.withDefaults()
	return &optimizer{cfg: d, kind: d.name(), slots: c.slotNames()}, nil
}

// newSlots allocates the optimizer state of a part of n elements.
func (o *optimizer) newSlots(n int) [][]float32 {
	s := make([][]float32, len(o.slots))
	for i := range s {
		s[i] = make([]float32, n)
		if o.slots[i] == "accumulator" && o.cfg.InitialAccumulatorValue != 0 {
			v := float32(o.cfg.InitialAccumulatorValue)
			for j := range s[i] {
				s[i][j] = v
			}
		}
	}
	return s
}

// learningRate returns the rate at a part's update count iter (Keras'
// optimizer.iterations before the update), computed in float32 like Keras.
func (o *optimizer) learningRate(iter uint64) float32 {
	lr := float32(o.cfg.LearningRate)
	s := o.cfg.Schedule
	if s == nil {
		return lr
	}
	step := float32(iter)
	switch s.Type {
	case "exponential_decay":
		p := step / float32(s.DecaySteps)
		if s.Staircase {
			p = float32(math.Floor(float64(p)))
		}
		return lr * float32(math.Pow(float64(float32(s.DecayRate)), float64(p)))
	case "cosine_decay":
		decaySteps := float32(s.DecaySteps)
		alpha := float32(s.Alpha)
		decay := func(step, from float32) float32 {
			frac := step / decaySteps
			cosd := float32(0.5) * (1 + float32(math.Cos(float64(float32(math.Pi)*frac))))
			decayed := float32(1-s.Alpha)*cosd + alpha
			return from * decayed
		}
		if s.WarmupSteps == 0 {
			return decay(min(step, decaySteps), lr)
		}
		warmSteps := float32(s.WarmupSteps)
		target := float32(s.WarmupTarget)
		step = min(step, decaySteps+warmSteps)
		if step < warmSteps {
			return (target-lr)*(step/warmSteps) + lr
		}
		return decay(step-warmSteps, target)
	}
	return lr
}

// apply performs one Keras update of w with gradient g at update count iter
// (slots as made by newSlots); lrScale multiplies the learning rate
// (bounded-staleness scaling, 1 otherwise). Products are converted to
// float32 explicitly so that no fused multiply-add changes the rounding.
func (o *optimizer) apply(iter uint64, lrScale float32, w, g []float32, slots [][]float32) {
	c := &o.cfg
	lr := o.learningRate(iter)
	if lrScale != 1 {
		lr = float32(lr * lrScale)
	}
	if c.WeightDecay > 0 {
		wd := float32(c.WeightDecay)
		for i := range w {
			w[i] -= float32(float32(w[i]*wd) * lr)
		}
	}
	switch o.kind {
	case "sgd", "momentum":
		if c.Momentum == 0 {
			for i := range w {
				w[i] -= float32(g[i] * lr)
			}
			return
		}
		mom := float32(c.Momentum)
		m := slots[0][:len(w)]
		for i := range w {
			m[i] = float32(m[i]*mom) - float32(g[i]*lr)
			if c.Nesterov {
				w[i] += float32(m[i]*mom) - float32(g[i]*lr)
			} else {
				w[i] += m[i]
			}
		}
	case "adam", "adamw":
		step := float64(float32(iter + 1))
		b1p := float32(math.Pow(float64(float32(c.Beta1)), step))
		b2p := float32(math.Pow(float64(float32(c.Beta2)), step))
		alpha := float32(lr*sqrt32(1-b2p)) / (1 - b1p)
		omb1 := float32(1 - c.Beta1)
		omb2 := float32(1 - c.Beta2)
		eps := float32(c.Epsilon)
		m, v := slots[0][:len(w)], slots[1][:len(w)]
		var vh []float32
		if c.Amsgrad {
			vh = slots[2][:len(w)]
		}
		for i := range w {
			gi := g[i]
			m[i] += float32((gi - m[i]) * omb1)
			v[i] += float32((float32(gi*gi) - v[i]) * omb2)
			vi := v[i]
			if vh != nil {
				vh[i] = max(vh[i], vi)
				vi = vh[i]
			}
			w[i] -= float32(m[i]*alpha) / (sqrt32(vi) + eps)
		}
	case "adagrad":
		eps := float32(c.Epsilon)
		acc := slots[0][:len(w)]
		for i := range w {
			gi := g[i]
			acc[i] += float32(gi * gi)
			w[i] -= float32(lr*gi) / sqrt32(acc[i]+eps)
		}
	case "rmsprop":
		rho := float32(c.Rho)
		omr := float32(1 - c.Rho)
		eps := float32(c.Epsilon)
		vel := slots[0][:len(w)]
		k := 1
		var mom, avg []float32
		if c.Momentum > 0 {
			mom = slots[k][:len(w)]
			k++
		}
		if c.Centered {
			avg = slots[k][:len(w)]
		}
		momentum := float32(c.Momentum)
		for i := range w {
			gi := g[i]
			vel[i] = float32(rho*vel[i]) + float32(omr*float32(gi*gi))
			var denom float32
			if avg != nil {
				avg[i] = float32(rho*avg[i]) + float32(omr*gi)
				denom = (vel[i] - float32(avg[i]*avg[i])) + eps
			} else {
				denom = vel[i] + eps
			}
			inc := float32(lr*gi) / sqrt32(denom)
			if mom != nil {
				mom[i] = float32(momentum*mom[i]) + inc
				w[i] -= mom[i]
			} else {
				w[i] -= inc
			}
		}
	}
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// clipGradients applies Keras' clipnorm (each tensor by its own L2 norm) or
// global_clipnorm (all tensors by their joint norm) in place.
func clipGradients(c OptimizerConfig, grads [][]float32) {
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
