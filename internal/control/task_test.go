package control

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRole(t *testing.T) {
	for in, want := range map[string]Role{"chief": RoleChief, "Master": RoleChief, " worker ": RoleWorker, "PS": RolePS, "evaluator": RoleEvaluator} {
		r, err := ParseRole(in)
		require.NoError(t, err, in)
		require.Equal(t, want, r, in)
	}
	_, err := ParseRole("driver")
	require.ErrorContains(t, err, `unknown task type "driver"`)
}
