package estimator

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/tf"
)

func TestByTensor(t *testing.T) {
	full := feeder.Mapping{{Column: "img", Tensor: "pixels", DType: tf.Float, Shape: []int64{28, 28, 1}, Cast: true}}
	got, err := byTensor(full, map[string]string{"a": "x", "b": "z"}, map[string]string{"label": "y"})
	require.NoError(t, err)
	require.Equal(t, map[string]feeder.Input{
		"x":      {Column: "a", Tensor: "x"},
		"z":      {Column: "b", Tensor: "z"},
		"y":      {Column: "label", Tensor: "y"},
		"pixels": full[0],
	}, got)

	for name, c := range map[string]struct {
		full  feeder.Mapping
		short []map[string]string
		want  string
	}{
		"within a map":   {nil, []map[string]string{{"b": "x", "a": "x"}}, `columns "a" and "b" are both mapped to "x"`},
		"across maps":    {nil, []map[string]string{{"b": "x"}, {"a": "x"}}, `columns "b" and "a" are both mapped to "x"`},
		"short and full": {feeder.Mapping{{Column: "c", Tensor: "x"}}, []map[string]string{{"a": "x"}}, `columns "a" and "c" are both mapped to "x"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := byTensor(c.full, c.short...)
			require.EqualError(t, err, c.want)
		})
	}
}
