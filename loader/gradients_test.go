package loader_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

// TestAddGradientsMatchesPython differentiates a graph built without the
// converter in Go (TF_AddGradients) and compares loss and gradients with
// what tf.GradientTape computed (testdata/gen_gradients.py).
func TestAddGradientsMatchesPython(t *testing.T) {
	def, err := loader.LoadGraphDef(filepath.Join("testdata", "gradients", "differentiable.pb"))
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join("testdata", "gradients", "differentiable.expected.json"))
	require.NoError(t, err)
	var exp struct {
		Weights   map[string]array `json:"weights"`
		X, Y      array
		Loss      float64          `json:"loss"`
		Gradients map[string]array `json:"gradients"`
	}
	require.NoError(t, json.Unmarshal(raw, &exp))
	names := []string{"w1", "b1", "w2", "b2"}
	var ws []string
	for _, n := range names {
		ws = append(ws, n+":0")
	}
	out, grads, err := loader.AddGradients(def, "loss:0", ws)
	require.NoError(t, err)
	require.Len(t, grads, len(ws))
	for _, gname := range grads {
		require.True(t, strings.HasPrefix(gname, "gradients/"), gname)
	}

	g, err := out.Import()
	require.NoError(t, err)
	defer g.Close()
	s, err := tf.NewSession(g)
	require.NoError(t, err)
	defer s.Close()
	var feeds []tf.Feed
	feed := func(name string, a array) {
		o, err := g.Output(name)
		require.NoError(t, err)
		feeds = append(feeds, tf.Feed{Output: o, Tensor: tensorOf(t, a)})
	}
	for _, n := range names {
		feed(n+":0", exp.Weights[n])
	}
	feed("x:0", exp.X)
	feed("y:0", exp.Y)
	fetches := make([]tf.Output, 0, len(grads)+1)
	for _, n := range append([]string{"loss:0"}, grads...) {
		o, err := g.Output(n)
		require.NoError(t, err)
		fetches = append(fetches, o)
	}
	res, err := s.Run(ctxT(t), feeds, fetches, nil)
	require.NoError(t, err)
	defer func() {
		for _, r := range res {
			r.Close()
		}
	}()
	require.InDelta(t, exp.Loss, values(t, res[0])[0], relTol*exp.Loss)
	for i, n := range names {
		requireClose(t, "gradient "+n, res[1+i], exp.Gradients[n])
	}
}

// Keras' and TF1's sparse softmax cross-entropy has no C++ gradient: the
// bundles' losses cannot be differentiated from Go, which is why the
// converter builds train.pb in Python. The error names exactly that op
// (not the dropout's random op, which only an integer shape connects to
// the weights).
func TestAddGradientsOnBundleLossesNamesTheOp(t *testing.T) {
	for _, name := range []string{"mlp", "cnn", "tf1"} {
		t.Run(name, func(t *testing.T) {
			b, err := loader.LoadBundle(bundleDir(name))
			require.NoError(t, err)
			var ws []string
			for _, i := range b.Trainable() {
				ws = append(ws, b.Variables[i].TrainPlaceholder)
			}
			_, _, err = loader.AddGradients(b.Train, b.Loss.Name, ws)
			var nge *loader.NoGradientError
			require.True(t, errors.As(err, &nge), "got %v", err)
			var types []string
			for typ := range nge.Ops {
				types = append(types, typ)
			}
			require.Equal(t, []string{"SparseSoftmaxCrossEntropyWithLogits"}, types)
		})
	}
}

func TestAddGradientsListsOpsWithoutGradient(t *testing.T) {
	def, err := loader.LoadGraphDef(filepath.Join("testdata", "gradients", "nograd.pb"))
	require.NoError(t, err)
	_, _, err = loader.AddGradients(def, "loss:0", []string{"w:0"})
	var nge *loader.NoGradientError
	require.True(t, errors.As(err, &nge), "got %v", err)
	require.Equal(t, map[string]string{"Cumprod": "Cumprod", "Digamma": "Digamma"}, nge.Ops)
	require.ErrorContains(t, err, `no C++ gradient for Cumprod (node "Cumprod"), Digamma (node "Digamma")`)
}

func TestAddGradientsRejects(t *testing.T) {
	def, err := loader.LoadGraphDef(filepath.Join("testdata", "gradients", "nograd.pb"))
	require.NoError(t, err)
	_, _, err = loader.AddGradients(def, "los:0", []string{"w:0"})
	require.ErrorIs(t, err, tf.ErrNotFound)
	_, _, err = loader.AddGradients(def, "MatMul:0", []string{"w:0"})
	require.ErrorContains(t, err, "want a scalar")
	_, _, err = loader.AddGradients(def, "loss:0", []string{"MatMul:0"})
	require.ErrorContains(t, err, "is a MatMul op, want a Placeholder")
	_, _, err = loader.AddGradients(def, "loss:0", nil)
	require.ErrorContains(t, err, "no weights")
}
