package tune

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestASHAPromotion follows the rung arithmetic by hand: max_t 9, grace
// 1, reduction factor 3 give rungs at 1 and 3 epochs; a trial reaching a
// rung goes on only if its reward is at least the 2/3 quantile (numpy's
// linear interpolation) of the rewards recorded there before it.
func TestASHAPromotion(t *testing.T) {
	a := newASHA(9, 1, 3)
	require.Equal(t, []int{1, 3}, a.milestones())
	// With a fractional factor a rung is reached at the next whole epoch
	// (1, 2.5, 6.25 of 10 epochs).
	require.Equal(t, []int{1, 3, 7}, newASHA(10, 1, 2.5).milestones())
	// Lower is better; rewards are the negated values.
	stop, _ := a.report("t0", 1, 0.5) // first at rung 1: no cutoff
	require.False(t, stop)
	stop, _ = a.report("t1", 1, 0.4) // cutoff = -0.5: -0.4 >= -0.5
	require.False(t, stop)
	// Recorded {-0.5, -0.4}: the 66.7th percentile is -0.5 + 2/3·0.1 = -0.4333.
	stop, why := a.report("t2", 1, 0.45) // -0.45 < -0.4333
	require.True(t, stop)
	require.Contains(t, why, "the 1-epoch rung")
	// Recorded {-0.5, -0.4, -0.45}: percentile 66.7 = -0.45 + (1.333-1)·0.05 = -0.4333.
	stop, _ = a.report("t3", 1, 0.43) // -0.43 >= -0.4333
	require.False(t, stop)
	// Epoch 2 is no rung: nothing is decided.
	stop, _ = a.report("t3", 2, 0.9)
	require.False(t, stop)
	// Rung 3: the first trial there goes on, the second must beat the
	// 2/3 quantile of one value, that value itself.
	stop, _ = a.report("t1", 3, 0.3)
	require.False(t, stop)
	stop, _ = a.report("t3", 3, 0.31)
	require.True(t, stop)
	stop, _ = a.report("t0", 3, 0.2)
	require.False(t, stop)
	// Past the last rung nothing stops.
	stop, _ = a.report("t0", 9, 5)
	require.False(t, stop)
	// A NaN result is the worst.
	stop, _ = a.report("t4", 1, math.NaN())
	require.True(t, stop)
}

// TestASHASynthetic runs 27 trials of a synthetic objective (trial k's
// value at epoch e is (k mod 9 + 1)/e: the order of the trials never
// changes) through rungs 1, 3 and 9 of max_t 27: the trials reaching each
// rung are the top third of the earlier arrivals, so the best trial runs
// to the end and the epochs spent are well under 27 × 27.
func TestASHASynthetic(t *testing.T) {
	a := newASHA(27, 1, 3)
	require.Equal(t, []int{1, 3, 9}, a.milestones())
	total, survivors := 0, map[int]bool{}
	for k := range 27 {
		for e := 1; e <= 27; e++ {
			total++
			if stop, _ := a.report(string(rune('a'+k)), e, float64(k%9+1)/float64(e)); stop {
				break
			}
			if e == 27 {
				survivors[k] = true
			}
		}
	}
	require.True(t, survivors[0], "the best trial (k mod 9 = 0, first) runs all 27 epochs")
	for k := range survivors {
		require.Equal(t, 0, k%9, "only trials as good as the best ones survive: %v", survivors)
	}
	require.Less(t, total, 27*27/3, "epochs spent %d", total)
}

func TestMedianStopping(t *testing.T) {
	m := &medianStopping{grace: 2, minSamples: 2, values: map[string][]float64{}}
	// Two trials with running means at epoch 2 of 1.5 and 3.5.
	for e, v := range []float64{1, 2, 3} {
		stop, _ := m.report("a", e+1, v)
		require.False(t, stop)
	}
	for e, v := range []float64{3, 4, 5} {
		stop, _ := m.report("b", e+1, v)
		require.False(t, stop, "one other trial is below min_samples_required")
	}
	stop, _ := m.report("c", 1, 10) // within the grace period
	require.False(t, stop)
	stop, why := m.report("c", 2, 2.6) // best 2.6 > median(1.5, 3.5) = 2.5
	require.True(t, stop)
	require.Contains(t, why, "median 2.5")
	stop, _ = m.report("d", 1, 9)
	require.False(t, stop)
	stop, _ = m.report("d", 2, 2.4) // best 2.4 <= median(1.5, 3.5, 6.3)
	require.False(t, stop)
}
