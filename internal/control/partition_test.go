package control

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplit(t *testing.T) {
	got, err := Split(10, 3)
	require.NoError(t, err)
	require.Equal(t, []Range{{0, 4}, {4, 7}, {7, 10}}, got)

	got, err = Split(2, 4)
	require.NoError(t, err)
	require.Equal(t, []Range{{0, 1}, {1, 2}, {2, 2}, {2, 2}}, got)

	_, err = Split(10, 0)
	require.ErrorContains(t, err, "into 0 partitions, expected at least 1")
	_, err = Split(-1, 2)
	require.ErrorContains(t, err, "cannot split -1 rows")
}

// coverage counts how often each row appears in the plan's live ranges.
func coverage(t *testing.T, p *WorkPlan, rows int64) []int {
	t.Helper()
	seen := make([]int, rows)
	for rank := range p.Ranks() {
		for _, r := range p.Ranges(rank) {
			require.LessOrEqual(t, r.Start, r.End)
			for i := r.Start; i < r.End; i++ {
				seen[i]++
			}
		}
	}
	return seen
}

func TestWorkPlanReassign(t *testing.T) {
	p, err := NewWorkPlan(100, 4) // 25 rows each
	require.NoError(t, err)
	require.Equal(t, []Range{{25, 50}}, p.Ranges(1))

	// Rank 1 dies after 10 rows: rows 35..50 go to ranks 0, 2, 3 (5 each).
	got, err := p.Reassign(1, 10)
	require.NoError(t, err)
	require.Equal(t, []int{0, 2, 3}, got)
	require.Equal(t, uint64(1), p.Version())
	require.False(t, p.Alive(1))
	require.Nil(t, p.Ranges(1))
	require.Equal(t, []Range{{0, 25}, {35, 40}}, p.Ranges(0))
	require.Equal(t, []Range{{50, 75}, {40, 45}}, p.Ranges(2))
	require.Equal(t, []Range{{75, 100}, {45, 50}}, p.Ranges(3))

	// Rank 2 dies after 27 rows (all of 50..75, then 40..42): its rest,
	// 42..45, is three rows for two survivors.
	got, err = p.Reassign(2, 27)
	require.NoError(t, err)
	require.Equal(t, []int{0, 3}, got)
	require.Equal(t, []Range{{0, 25}, {35, 40}, {42, 44}}, p.Ranges(0))
	require.Equal(t, []Range{{75, 100}, {45, 50}, {44, 45}}, p.Ranges(3))
	require.Equal(t, []int{0, 3}, p.Survivors())

	_, err = p.Reassign(2, 0)
	require.ErrorContains(t, err, "rank 2 is already dead")
	_, err = p.Reassign(7, 0)
	require.ErrorContains(t, err, "rank 7 out of range, plan has 4 ranks")
	_, err = p.Reassign(0, -1)
	require.ErrorContains(t, err, "reported -1 rows done")

	// A rank that finished all its rows hands over nothing.
	got, err = p.Reassign(3, 1000)
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = p.Reassign(0, 0)
	require.ErrorContains(t, err, "last rank alive")
	require.True(t, p.Alive(0))
}

// TestWorkPlanNoRowLost kills random ranks after random progress and checks
// that the unconsumed rows stay covered exactly once.
func TestWorkPlanNoRowLost(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		rows := rng.Int64N(500)
		ranks := 1 + rng.IntN(8)
		p, err := NewWorkPlan(rows, ranks)
		require.NoError(t, err)
		consumed := make([]bool, rows)
		for len(p.Survivors()) > 1 {
			alive := p.Survivors()
			victim := alive[rng.IntN(len(alive))]
			var have int64
			for _, r := range p.Ranges(victim) {
				have += r.Len()
			}
			done := rng.Int64N(have + 1)
			// Mark the rows the victim consumed.
			left := done
			for _, r := range p.Ranges(victim) {
				for i := r.Start; i < r.End && left > 0; i++ {
					consumed[i] = true
					left--
				}
			}
			_, err := p.Reassign(victim, done)
			require.NoError(t, err)
			seen := coverage(t, p, rows)
			for i := range rows {
				want := 1
				if consumed[i] {
					want = 0
				}
				require.Equal(t, want, seen[i], "trial %d row %d", trial, i)
			}
		}
	}
}
