package tune

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
)

// observation is a finished trial as a sampler sees it: its parameters
// and its objective, lower is better (a maximised metric is negated).
type observation struct {
	params map[string]Value
	value  float64
	// stopped trials ended early: they rank after every completed trial
	// (their value is from fewer epochs), as Optuna ranks pruned trials.
	stopped bool
}

// sampler proposes the parameters of trial id (0-based), knowing the
// trials finished so far.
type sampler interface {
	sample(id int, done []observation) (map[string]Value, error)
}

func newSampler(s *Space) sampler {
	seed := uint64(setting(s.Algorithm.AlgorithmSettings, "random_state", 1))
	switch s.Algorithm.AlgorithmName {
	case "grid":
		return &gridSampler{ps: s.Parameters}
	case "tpe":
		st := setting(s.Algorithm.AlgorithmSettings, "n_startup_trials", 10)
		return &tpeSampler{ps: s.Parameters, seed: seed, startup: max(int(st), 1),
			gamma:      setting(s.Algorithm.AlgorithmSettings, "gamma", 0.25),
			candidates: max(int(setting(s.Algorithm.AlgorithmSettings, "n_ei_candidates", 24)), 1)}
	}
	return &randomSampler{ps: s.Parameters, seed: seed}
}

// randomSampler draws every parameter independently: uniformly, or
// uniformly in log space for logUniform. Trial id's draw depends only on
// the seed and id, so a resumed study proposes the same trials.
type randomSampler struct {
	ps   []Parameter
	seed uint64
}

func (r *randomSampler) sample(id int, _ []observation) (map[string]Value, error) {
	rng := rand.New(rand.NewPCG(r.seed, uint64(id)))
	out := make(map[string]Value, len(r.ps))
	for _, p := range r.ps {
		if p.ParameterType == "categorical" || p.ParameterType == "discrete" {
			out[p.Name] = p.FeasibleSpace.List[rng.IntN(len(p.FeasibleSpace.List))]
			continue
		}
		d := newDim(p)
		out[p.Name] = d.value(d.a + rng.Float64()*(d.b-d.a))
	}
	return out, nil
}

// dim is a numeric parameter in the coordinates a sampler works in: log
// space for logUniform, and for int parameters the interval that rounds to
// [min, max].
type dim struct {
	p        Parameter
	a, b     float64
	log, int bool
	lo, hi   float64
}

func newDim(p Parameter) dim {
	lo, _ := strconv.ParseFloat(string(p.FeasibleSpace.Min), 64)
	hi, _ := strconv.ParseFloat(string(p.FeasibleSpace.Max), 64)
	d := dim{p: p, lo: lo, hi: hi, log: p.FeasibleSpace.Distribution == "logUniform", int: p.ParameterType == "int"}
	a, b := lo, hi
	if d.int {
		a, b = lo-0.5, hi+0.5
		if d.log {
			a = max(a, lo/2)
		}
	}
	if d.log {
		a, b = math.Log(a), math.Log(b)
	}
	d.a, d.b = a, b
	return d
}

// coord maps a parameter value to the sampler's coordinate.
func (d dim) coord(v Value) (float64, bool) {
	x, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(x) {
		return 0, false
	}
	if d.log {
		if x <= 0 {
			return 0, false
		}
		x = math.Log(x)
	}
	return min(max(x, d.a), d.b), true
}

// value maps a coordinate back to a parameter value within [min, max].
func (d dim) value(c float64) Value {
	x := c
	if d.log {
		x = math.Exp(c)
	}
	if d.int {
		n := min(max(math.Round(x), d.lo), d.hi)
		return Value(strconv.FormatInt(int64(n), 10))
	}
	x = min(max(x, d.lo), d.hi)
	return Value(strconv.FormatFloat(x, 'g', 6, 64))
}

// gridSampler walks the grid in order, the first parameter slowest.
type gridSampler struct{ ps []Parameter }

func (g *gridSampler) sample(id int, _ []observation) (map[string]Value, error) {
	pts := make([][]Value, len(g.ps))
	n := 1
	for i, p := range g.ps {
		var err error
		if pts[i], err = gridPoints(p); err != nil {
			return nil, err
		}
		n *= len(pts[i])
	}
	if id >= n {
		return nil, fmt.Errorf("tune: grid has %d points, trial %d is past its end", n, id)
	}
	out := make(map[string]Value, len(g.ps))
	for i := len(g.ps) - 1; i >= 0; i-- {
		out[g.ps[i].Name] = pts[i][id%len(pts[i])]
		id /= len(pts[i])
	}
	return out, nil
}

// tpeSampler is the Tree-structured Parzen Estimator (Bergstra et al.,
// 2011), over each parameter independently. After startup random trials,
// the finished trials are split into the best gamma fraction ("good") and
// the rest; each side's values of a parameter make a density (a mixture
// of truncated Gaussians, one per value plus a wide prior, each as wide as
// the gap to its neighbours; for categorical values, smoothed frequencies),
// and of candidates drawn from the good density the one with the highest
// good/bad density ratio is proposed.
type tpeSampler struct {
	ps         []Parameter
	seed       uint64
	startup    int
	gamma      float64
	candidates int
}

func (t *tpeSampler) sample(id int, done []observation) (map[string]Value, error) {
	var obs []observation
	for _, o := range done {
		if !math.IsNaN(o.value) && !math.IsInf(o.value, 0) {
			obs = append(obs, o)
		}
	}
	if len(obs) < max(t.startup, 2) {
		return (&randomSampler{ps: t.ps, seed: t.seed}).sample(id, nil)
	}
	slices.SortStableFunc(obs, func(a, b observation) int {
		if a.stopped != b.stopped {
			if a.stopped {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.value, b.value)
	})
	nGood := min(max(int(math.Ceil(t.gamma*float64(len(obs)))), 1), len(obs)-1)
	good, bad := obs[:nGood], obs[nGood:]
	rng := rand.New(rand.NewPCG(t.seed^0x5851f42d4c957f2d, uint64(id)))
	out := make(map[string]Value, len(t.ps))
	for _, p := range t.ps {
		if p.ParameterType == "categorical" || p.ParameterType == "discrete" {
			out[p.Name] = t.categorical(rng, p, good, bad)
			continue
		}
		d := newDim(p)
		coords := func(os []observation) []float64 {
			var xs []float64
			for _, o := range os {
				if c, ok := d.coord(o.params[p.Name]); ok {
					xs = append(xs, c)
				}
			}
			return xs
		}
		l, g := newParzen(coords(good), d.a, d.b), newParzen(coords(bad), d.a, d.b)
		best, bestScore := 0.0, math.Inf(-1)
		for range t.candidates {
			x := l.draw(rng)
			if s := l.logPDF(x) - g.logPDF(x); s > bestScore {
				best, bestScore = x, s
			}
		}
		out[p.Name] = d.value(best)
	}
	return out, nil
}

func (t *tpeSampler) categorical(rng *rand.Rand, p Parameter, good, bad []observation) Value {
	list := p.FeasibleSpace.List
	freq := func(os []observation) []float64 {
		w := make([]float64, len(list))
		for i := range w {
			w[i] = 1 // the prior: every value once
		}
		for _, o := range os {
			if i := slices.Index(list, o.params[p.Name]); i >= 0 {
				w[i]++
			}
		}
		var sum float64
		for _, x := range w {
			sum += x
		}
		for i := range w {
			w[i] /= sum
		}
		return w
	}
	l, g := freq(good), freq(bad)
	best, bestScore := 0, math.Inf(-1)
	for range t.candidates {
		u, i := rng.Float64(), 0
		for ; i < len(l)-1 && u >= l[i]; i++ {
			u -= l[i]
		}
		if s := math.Log(l[i]) - math.Log(g[i]); s > bestScore {
			best, bestScore = i, s
		}
	}
	return list[best]
}

// parzen is a mixture of Gaussians truncated to [a, b]: one per
// observation and a prior centred on the interval, as wide as it.
type parzen struct {
	a, b       float64
	mu, sigma  []float64
	mass       []float64 // each component's probability within [a, b]
	components float64
}

func newParzen(xs []float64, a, b float64) *parzen {
	w := b - a
	if w <= 0 {
		w = 1
	}
	type comp struct {
		mu    float64
		prior bool
	}
	cs := []comp{{mu: (a + b) / 2, prior: true}}
	for _, x := range xs {
		cs = append(cs, comp{mu: x})
	}
	slices.SortStableFunc(cs, func(x, y comp) int { return cmp.Compare(x.mu, y.mu) })
	n := len(cs)
	p := &parzen{a: a, b: b, mu: make([]float64, n), sigma: make([]float64, n), mass: make([]float64, n), components: float64(n)}
	lo, hi := w/math.Min(100, float64(n)), w
	for i, c := range cs {
		left, right := a, b
		if i > 0 {
			left = cs[i-1].mu
		}
		if i < n-1 {
			right = cs[i+1].mu
		}
		s := math.Max(c.mu-left, right-c.mu)
		if c.prior {
			s = w
		}
		p.mu[i], p.sigma[i] = c.mu, min(max(s, lo), hi)
		p.mass[i] = max(normCDF((b-c.mu)/p.sigma[i])-normCDF((a-c.mu)/p.sigma[i]), 1e-12)
	}
	return p
}

func normCDF(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

func (p *parzen) draw(rng *rand.Rand) float64 {
	i := rng.IntN(len(p.mu))
	for range 100 {
		x := p.mu[i] + rng.NormFloat64()*p.sigma[i]
		if x >= p.a && x <= p.b {
			return x
		}
	}
	return min(max(p.mu[i], p.a), p.b)
}

func (p *parzen) logPDF(x float64) float64 {
	var sum float64
	for i, m := range p.mu {
		z := (x - m) / p.sigma[i]
		sum += math.Exp(-z*z/2) / (p.sigma[i] * math.Sqrt(2*math.Pi) * p.mass[i])
	}
	return math.Log(sum/p.components + 1e-300)
}
