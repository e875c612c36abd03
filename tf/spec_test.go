package tf_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/tf"
)

func TestTensorSpecString(t *testing.T) {
	for name, c := range map[string]struct {
		spec tf.TensorSpec
		want string
	}{
		"matrix":        {tf.TensorSpec{Name: "x:0", DType: tf.Float, Shape: []int64{-1, 8}}, "x:0: float32[-1,8]"},
		"scalar":        {tf.TensorSpec{Name: "loss:0", DType: tf.Double, Shape: []int64{}}, "loss:0: float64[]"},
		"unknown rank":  {tf.TensorSpec{Name: "s:1", DType: tf.String}, "s:1: string<unknown rank>"},
		"unknown dtype": {tf.TensorSpec{Name: "y:0", Shape: []int64{3}}, "y:0: invalid[3]"},
	} {
		t.Run(name, func(t *testing.T) { require.Equal(t, c.want, c.spec.String()) })
	}
}

func TestCompatibleShapes(t *testing.T) {
	for name, c := range map[string]struct {
		a, b []int64
		want bool
	}{
		"equal":            {[]int64{2, 3}, []int64{2, 3}, true},
		"unknown dim":      {[]int64{-1, 3}, []int64{5, 3}, true},
		"unknown rank":     {nil, []int64{5, 3}, true},
		"both scalars":     {[]int64{}, []int64{}, true},
		"scalar vs vector": {[]int64{}, []int64{-1}, false},
		"other rank":       {[]int64{-1, 3}, []int64{-1, 3, 1}, false},
		"other dim":        {[]int64{-1, 3}, []int64{-1, 4}, false},
	} {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, c.want, tf.CompatibleShapes(c.a, c.b))
			require.Equal(t, c.want, tf.CompatibleShapes(c.b, c.a))
		})
	}
}

func TestOutputSpec(t *testing.T) {
	g, exp := loadGraph(t, "mlp_frozen")
	want := exp.Info.Inputs[0]
	in, err := g.Output(want.Name)
	require.NoError(t, err)
	spec, err := in.Spec()
	require.NoError(t, err)
	require.Equal(t, tf.TensorSpec{Name: want.Name, DType: tf.Float, Shape: want.Shape}, spec)
	require.Equal(t, want.DType, spec.DType.String())

	g.Close()
	spec, err = in.Spec()
	require.ErrorIs(t, err, tf.ErrClosed)
	require.Equal(t, tf.TensorSpec{}, spec)
}
