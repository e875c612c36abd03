package arrowio_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

func TestEqualSteps(t *testing.T) {
	for _, c := range []struct {
		shares  []int64
		batch   int
		steps   int
		dropped []int64
	}{
		{[]int64{10, 10}, 4, 3, []int64{0, 0}},
		{[]int64{9, 8}, 4, 3, []int64{0, 0}},
		{[]int64{9, 8}, 8, 2, []int64{0, 0}},
		{[]int64{5, 4}, 1, 4, []int64{1, 0}},
		{[]int64{7}, 3, 3, []int64{0}},
	} {
		s := arrowio.EqualSteps(c.shares, c.batch)
		require.Equal(t, c.steps, s.Steps, "%v", c)
		require.Equal(t, c.dropped, s.Dropped, "%v", c)
		for i, r := range c.shares {
			l := arrowio.BatchLayout(r, s.Steps, c.batch)
			require.Len(t, l, s.Steps)
			sum := 0
			for _, n := range l {
				require.GreaterOrEqual(t, n, 1)
				require.LessOrEqual(t, n, c.batch)
				sum += n
			}
			require.Equal(t, r-c.dropped[i], int64(sum))
		}
	}
}
