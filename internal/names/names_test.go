package names

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClosest(t *testing.T) {
	have := []string{"dense/kernel", "logits", "probs", "x", "dense_1/bias"}
	require.Equal(t, []string{"logits", "probs"}, Closest("logitz", have, 2))
	require.Equal(t, `operation "logitz" not found (closest: logits, probs, x, dense_1/bias, dense/kernel)`, NotFound("operation", "logitz", have))
	require.Equal(t, `input "a" not found (there are none)`, NotFound("input", "a", nil))
	require.Equal(t, 3, distance("kitten", "sitting"))
}
