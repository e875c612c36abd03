package optim

import (
	"math"
	"slices"
)

// Optimizer applies one Config. It holds no per-variable state (that is in
// the slots the caller keeps) and never changes after New.
type Optimizer struct {
	cfg   Config // with defaults
	kind  string
	slots []string
}

// New validates c and returns the optimizer it describes.
func New(c Config) (*Optimizer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	d := c.withDefaults()
	return &Optimizer{cfg: d, kind: d.name(), slots: c.slotNames()}, nil
}

// Slots returns the names of the per-variable state, in the order of the
// slices NewSlots returns, using Keras' names ("momentum", "velocity",
// "velocity_hat", "accumulator", "average_gradient"); none for plain SGD.
func (o *Optimizer) Slots() []string { return slices.Clone(o.slots) }

// NewSlots allocates the state of a variable (or a part of one) of n
// elements, initialised as Keras does.
func (o *Optimizer) NewSlots(n int) [][]float32 {
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
func (o *Optimizer) learningRate(iter uint64) float32 {
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

// Apply performs one Keras update of w with gradient g (len(w) elements)
// at update count iter, Keras' iterations before the update; slots are
// those NewSlots made, at least len(w) long, and are updated in place.
// lrScale multiplies the learning rate (1 for none). Products are converted
// to float32 explicitly so that no fused multiply-add changes the rounding.
func (o *Optimizer) Apply(iter uint64, lrScale float32, w, g []float32, slots [][]float32) {
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
			g := g[:len(w)]
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
