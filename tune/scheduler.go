package tune

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// scheduler decides after each epoch of a trial whether it goes on.
// Values are lower-is-better (a maximised metric is negated).
type scheduler interface {
	// report records trial's value after epochs epochs (1-based) and says
	// whether to stop the trial, and why.
	report(trial string, epochs int, value float64) (stop bool, reason string)
}

// noStopping lets every trial run its epochs.
type noStopping struct{}

func (noStopping) report(string, int, float64) (bool, string) { return false, "" }

// newScheduler builds the space's early stopping; maxEpochs is the
// trials' epoch count (ASHA's max_t is capped by it).
func newScheduler(s *Space, maxEpochs int) scheduler {
	es := s.EarlyStopping
	if es == nil {
		return noStopping{}
	}
	switch es.AlgorithmName {
	case "asha":
		maxT := int(setting(es.AlgorithmSettings, "max_t", 100))
		return newASHA(min(maxT, maxEpochs), int(setting(es.AlgorithmSettings, "grace_period", 1)),
			setting(es.AlgorithmSettings, "reduction_factor", 4))
	default:
		return &medianStopping{grace: int(setting(es.AlgorithmSettings, "grace_period", 1)),
			minSamples: int(setting(es.AlgorithmSettings, "min_samples_required", 3)), values: map[string][]float64{}}
	}
}

// asha is asynchronous successive halving (Li et al., 2018) with one
// bracket, as Ray Tune's ASHAScheduler: rungs at grace·rf^k epochs below
// max_t; a trial reaching a rung is recorded there and stopped unless its
// result is within the top 1/rf of the results recorded at that rung so
// far (the first trial at a rung always goes on).
type asha struct {
	rf    float64
	rungs []rung // highest milestone first
}

type rung struct {
	milestone int
	recorded  map[string]float64 // trial -> reward (higher is better)
}

func newASHA(maxT, grace int, rf float64) *asha {
	if grace < 1 {
		grace = 1
	}
	if rf < 2 {
		rf = 2
	}
	a := &asha{rf: rf}
	for m := float64(grace); m < float64(maxT); m *= rf {
		// A trial is at rung grace·rf^k once its epochs reach it: with a
		// fractional rf, at the next whole epoch.
		a.rungs = append(a.rungs, rung{milestone: int(math.Ceil(m - 1e-9)), recorded: map[string]float64{}})
	}
	slices.Reverse(a.rungs)
	return a
}

// milestones returns the rungs' epochs, lowest first.
func (a *asha) milestones() []int {
	var out []int
	for _, r := range a.rungs {
		out = append(out, r.milestone)
	}
	slices.Reverse(out)
	return out
}

func (a *asha) report(trial string, epochs int, value float64) (bool, string) {
	reward := -value
	if math.IsNaN(reward) {
		reward = math.Inf(-1)
	}
	for _, r := range a.rungs {
		if epochs < r.milestone {
			continue
		}
		if _, done := r.recorded[trial]; done {
			continue
		}
		cut, ok := a.cutoff(r.recorded)
		r.recorded[trial] = reward
		if ok && reward < cut {
			return true, fmt.Sprintf("asha: below the top 1/%g at the %d-epoch rung", a.rf, r.milestone)
		}
		return false, ""
	}
	return false, ""
}

// cutoff is the (1 - 1/rf) quantile of the recorded rewards, linearly
// interpolated (numpy's percentile).
func (a *asha) cutoff(recorded map[string]float64) (float64, bool) {
	if len(recorded) == 0 {
		return 0, false
	}
	vs := make([]float64, 0, len(recorded))
	for _, v := range recorded {
		vs = append(vs, v)
	}
	return percentile(vs, (1-1/a.rf)*100), true
}

// percentile is numpy.percentile with linear interpolation.
func percentile(vs []float64, q float64) float64 {
	s := slices.Clone(vs)
	sort.Float64s(s)
	pos := q / 100 * float64(len(s)-1)
	lo := int(math.Floor(pos))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	frac := pos - float64(lo)
	if math.IsInf(s[lo], -1) && frac > 0 {
		return s[lo+1]
	}
	return s[lo] + frac*(s[lo+1]-s[lo])
}

// medianStopping is the median stopping rule (Golovin et al., 2017), as
// Katib's medianstop and Ray Tune's MedianStoppingRule: after grace
// epochs, a trial whose best result is worse than the median of the other
// trials' running means at the same epoch is stopped, once at least
// minSamples other trials got that far.
type medianStopping struct {
	grace, minSamples int
	values            map[string][]float64 // per trial, by epoch
}

func (m *medianStopping) report(trial string, epochs int, value float64) (bool, string) {
	if math.IsNaN(value) {
		value = math.Inf(1)
	}
	vs := m.values[trial]
	if len(vs) >= epochs {
		vs = vs[:epochs-1]
	}
	vs = append(vs, value)
	m.values[trial] = vs
	if epochs < m.grace {
		return false, ""
	}
	var means []float64
	for t, o := range m.values {
		if t == trial || len(o) < epochs {
			continue
		}
		var sum float64
		for _, v := range o[:epochs] {
			sum += v
		}
		means = append(means, sum/float64(epochs))
	}
	if len(means) < max(m.minSamples, 1) {
		return false, ""
	}
	med := percentile(means, 50)
	if best := slices.Min(vs); best > med {
		return true, fmt.Sprintf("median: best %.6g worse than the median %.6g of %d trials' running means at epoch %d", best, med, len(means), epochs)
	}
	return false, ""
}
