package tune_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tune"
)

// predictions runs a model over the fit data and returns its output rows
// and the label column.
func predictions(t *testing.T, m *estimator.TFModel) ([][]float32, []int32) {
	t.Helper()
	src, err := openData()
	require.NoError(t, err)
	s, err := m.Transform(testCtx(t), src)
	require.NoError(t, err)
	defer s.Close()
	var out [][]float32
	var labels []int32
	for s.Next() {
		r := s.RecordBatch()
		col := r.Column(int(r.NumCols()) - 1).(*array.FixedSizeList)
		vals := col.ListValues().(*array.Float32).Float32Values()
		w := int(col.DataType().(interface{ Len() int32 }).Len())
		for i := 0; i < col.Len(); i++ {
			out = append(out, append([]float32(nil), vals[i*w:(i+1)*w]...))
		}
		idx := r.Schema().FieldIndices("y")[0]
		labels = append(labels, r.Column(idx).(*array.Int32).Int32Values()...)
	}
	require.NoError(t, s.Err())
	return out, labels
}

func accuracy(rows [][]float32, labels []int32) float64 {
	right := 0
	for i, r := range rows {
		best := 0
		for c := range r {
			if r[c] > r[best] {
				best = c
			}
		}
		if int32(best) == labels[i] {
			right++
		}
	}
	return float64(right) / float64(len(rows))
}

// TestEnsembleFit trains 4 members from seeds, 2 at a time, and checks the
// ensemble model through Transform: every output is the mean of the
// members' outputs, and its accuracy is at least the best member's.
func TestEnsembleFit(t *testing.T) {
	b := base()
	b.ValidationSplit, b.Epochs, b.LearningRate = 0, 8, 0.02
	en := tune.Ensemble{Dir: t.TempDir(), Base: b, Data: openData, Members: 4, Parallel: 2, CPUs: 2}
	m, members, err := en.Fit(testCtx(t))
	require.NoError(t, err)
	defer m.Close()
	require.Len(t, members, 4)
	got, labels := predictions(t, m)
	var each [][][]float32
	best := 0.0
	for _, dir := range members {
		mm, err := estimator.Load(dir)
		require.NoError(t, err)
		rows, _ := predictions(t, mm)
		mm.Close()
		each = append(each, rows)
		best = max(best, accuracy(rows, labels))
	}
	require.NotEqual(t, each[0], each[1], "members trained from different seeds differ")
	for i := range got {
		for c := range got[i] {
			var mean float64
			for _, e := range each {
				mean += float64(e[i][c]) / 4
			}
			require.InDelta(t, mean, got[i][c], 1e-5, "row %d class %d", i, c)
		}
	}
	acc := accuracy(got, labels)
	t.Logf("ensemble accuracy %.4f, best member %.4f", acc, best)
	require.GreaterOrEqual(t, acc, best)

	// Bagging: members on bootstrap samples; the vote combine.
	en = tune.Ensemble{Dir: t.TempDir(), Base: b, Data: openData, Members: 3, Bootstrap: true, Combine: savedmodel.CombineVote, CPUs: 2}
	vm, _, err := en.Fit(testCtx(t))
	require.NoError(t, err)
	defer vm.Close()
	votes, _ := predictions(t, vm)
	for _, row := range votes {
		var sum float32
		for _, v := range row {
			sum += v
			require.Contains(t, []float32{0, 1.0 / 3, 2.0 / 3, 1}, float32(int(v*3+0.5))/3)
		}
		require.InDelta(t, 1, sum, 1e-6, "votes of every member")
	}

	_, _, err = (&tune.Ensemble{Dir: t.TempDir(), Base: b, Data: openData, Members: 1}).Fit(testCtx(t))
	require.ErrorContains(t, err, "at least 2 members")
}

// TestTopTrials: the best trials of a study are the highest final
// val_accuracy for maximize and the lowest final val_loss for minimize.
func TestTopTrials(t *testing.T) {
	for _, obj := range []string{"{type: maximize, objectiveMetricName: val_accuracy}", "{type: minimize, objectiveMetricName: val_loss}"} {
		dir := t.TempDir()
		sp := mustSpace(t, "objective: "+obj+`
maxTrialCount: 4
parameters: [{name: learning_rate, parameterType: double, feasibleSpace: {min: "0.001", max: "0.3", distribution: logUniform}}]`)
		res, err := (&tune.Study{Dir: dir, Space: sp, Base: base(), Data: openData, CPUs: 2}).Run(testCtx(t))
		require.NoError(t, err)
		top, err := tune.TopTrials(dir, 3)
		require.NoError(t, err)
		ranked := res.Ranked(sp.Objective)
		for i := 1; i < len(ranked); i++ {
			if sp.Objective.Type == "maximize" {
				require.GreaterOrEqual(t, ranked[i-1].Final, ranked[i].Final)
			} else {
				require.LessOrEqual(t, ranked[i-1].Final, ranked[i].Final)
			}
		}
		require.Equal(t, []string{ranked[0].Export, ranked[1].Export, ranked[2].Export}, top)
		require.Equal(t, res.Best.Export, top[0])
		_, err = tune.TopTrials(dir, 5)
		require.ErrorContains(t, err, "fewer than the 5 asked for")
		m, err := tune.ExportEnsemble(filepath.Join(dir, "ensemble"), top, savedmodel.CombineSoftmax)
		require.NoError(t, err)
		rows, _ := predictions(t, m)
		m.Close()
		require.Len(t, rows, 96)
		votes := func(rows [][]float32) bool { // every value a multiple of 1/3: 3 members' votes
			for _, row := range rows {
				for _, v := range row {
					if math.Abs(float64(v)*3-math.Round(float64(v)*3)) > 1e-5 {
						return false
					}
				}
			}
			return true
		}
		require.False(t, votes(rows), "softmax averages")

		// Exported again to the same place, the ensemble replaces the
		// first one whole and leaves nothing else beside it.
		m, err = tune.ExportEnsemble(filepath.Join(dir, "ensemble"), top, savedmodel.CombineVote)
		require.NoError(t, err)
		rows, _ = predictions(t, m)
		m.Close()
		require.Len(t, rows, 96)
		require.True(t, votes(rows), "votes after the replacement")
		entries, err := os.ReadDir(filepath.Join(dir, "ensemble"))
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		require.ElementsMatch(t, []string{"saved_model", tune.EnsembleFile, estimator.ModelFile}, names)
	}
}
