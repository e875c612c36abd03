package tune

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func space(t *testing.T, algo, params string) *Space {
	t.Helper()
	s, err := ParseSpace([]byte("objective: {type: minimize, objectiveMetricName: loss}\nalgorithm: {algorithmName: " + algo + "}\nmaxTrialCount: 400\nparameters:\n" + params))
	require.NoError(t, err)
	return s
}

func num(t *testing.T, v Value) float64 {
	x, err := strconv.ParseFloat(string(v), 64)
	require.NoError(t, err)
	return x
}

func TestGridCoversExactlyTheGrid(t *testing.T) {
	s := space(t, "grid", `
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "0.001", max: "0.1", step: "10", distribution: logUniform}}
  - {name: batch_size, parameterType: int, feasibleSpace: {min: 16, max: 64, step: 16}}
  - {name: optimizer, parameterType: categorical, feasibleSpace: {list: [adam, sgd]}}
`)
	require.Equal(t, 3*4*2, s.MaxTrialCount)
	smp := newSampler(s)
	seen := map[string]bool{}
	for id := range s.MaxTrialCount {
		p, err := smp.sample(id, nil)
		require.NoError(t, err)
		key := fmt.Sprint(p["learning_rate"], p["batch_size"], p["optimizer"])
		require.False(t, seen[key], "point %s twice", key)
		seen[key] = true
	}
	want := map[string]bool{}
	for _, lr := range []string{"0.001", "0.01", "0.1"} {
		for _, bs := range []string{"16", "32", "48", "64"} {
			for _, o := range []string{"adam", "sgd"} {
				want[fmt.Sprint(lr, bs, o)] = true
			}
		}
	}
	require.Equal(t, want, seen)
	_, err := smp.sample(s.MaxTrialCount, nil)
	require.ErrorContains(t, err, "past its end")

	// An end point at or below zero, which rounding overshoots, is kept.
	pts, err := gridPoints(Parameter{Name: "shift", ParameterType: "double", FeasibleSpace: FeasibleSpace{Min: "-0.3", Max: "0", Step: "0.1"}})
	require.NoError(t, err)
	require.Len(t, pts, 4)
}

func TestRandomSampler(t *testing.T) {
	s := space(t, "random", `
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "0.0001", max: "1", distribution: logUniform}}
  - {name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 3}}
  - {name: optimizer, parameterType: categorical, feasibleSpace: {list: [adam, sgd, rmsprop]}}
`)
	a, b := newSampler(s), newSampler(s)
	const n = 4000
	decades := make([]int, 4)
	ints := map[Value]int{}
	cats := map[Value]int{}
	for id := range n {
		p, err := a.sample(id, nil)
		require.NoError(t, err)
		q, err := b.sample(id, nil)
		require.NoError(t, err)
		require.Equal(t, p, q, "the same seed gives the same trials")
		lr := num(t, p["learning_rate"])
		require.True(t, lr >= 1e-4 && lr <= 1, "learning_rate %v within [1e-4, 1]", lr)
		decades[min(int(math.Floor(-math.Log10(lr))), 3)]++
		ints[p["epochs"]]++
		cats[p["optimizer"]]++
	}
	// Uniform in log space: each of the 4 decades gets a quarter.
	for i, c := range decades {
		require.InDelta(t, n/4, c, n/4*0.15, "decade 1e-%d..1e-%d: %d of %d", i+1, i, c, n)
	}
	require.Len(t, ints, 3, "int values %v", ints)
	for v, c := range ints {
		require.Contains(t, []Value{"1", "2", "3"}, v)
		require.InDelta(t, n/3, c, n/3*0.15)
	}
	require.Len(t, cats, 3)
	for v, c := range cats {
		require.Contains(t, []Value{"adam", "sgd", "rmsprop"}, v, "categorical values are honoured")
		require.InDelta(t, n/3, c, n/3*0.15)
	}
	// Another seed, other trials.
	s.Algorithm.AlgorithmSettings = []Setting{{Name: "random_state", Value: "2"}}
	p, _ := a.sample(0, nil)
	q, _ := newSampler(s).sample(0, nil)
	require.NotEqual(t, p, q)
}

// TestTPEBeatsRandom: on a synthetic objective with a narrow optimum
// (log learning rate near 1e-2, width near 48, optimizer "adam"), TPE's
// trials after its random start land closer to the optimum than random
// search's, across seeds.
func TestTPEBeatsRandom(t *testing.T) {
	params := `
  - {name: learning_rate, parameterType: double, feasibleSpace: {min: "0.00001", max: "1", distribution: logUniform}}
  - {name: batch_size, parameterType: int, feasibleSpace: {min: 1, max: 256}}
  - {name: optimizer, parameterType: categorical, feasibleSpace: {list: [sgd, adam, rmsprop, adagrad]}}
`
	f := func(p map[string]Value) float64 {
		lr := math.Log10(num(t, p["learning_rate"])) + 2
		bs := (num(t, p["batch_size"]) - 48) / 64
		v := lr*lr + bs*bs
		if p["optimizer"] != "adam" {
			v += 1
		}
		return v
	}
	run := func(algo string, seed int) float64 {
		s := space(t, algo, params)
		s.Algorithm.AlgorithmSettings = []Setting{{Name: "random_state", Value: Value(strconv.Itoa(seed))}}
		smp := newSampler(s)
		var done []observation
		best := math.Inf(1)
		for id := range 40 {
			p, err := smp.sample(id, done)
			require.NoError(t, err)
			v := f(p)
			done = append(done, observation{params: p, value: v})
			best = math.Min(best, v)
		}
		return best
	}
	var tpe, rnd []float64
	wins := 0
	for seed := 1; seed <= 10; seed++ {
		a, b := run("tpe", seed), run("random", seed)
		tpe, rnd = append(tpe, a), append(rnd, b)
		if a < b {
			wins++
		}
	}
	sort.Float64s(tpe)
	sort.Float64s(rnd)
	t.Logf("best of 40 trials over 10 seeds: tpe median %.4f, random median %.4f; tpe better in %d of 10", tpe[5], rnd[5], wins)
	require.Less(t, tpe[5], rnd[5], "median best: tpe %v, random %v", tpe, rnd)
	require.GreaterOrEqual(t, wins, 6)
}
