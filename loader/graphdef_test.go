package loader_test

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

func mlpPath(t *testing.T) (string, *testmodels.Expected) {
	exp := testmodels.MustLoadExpected(t, "mlp_frozen")
	return filepath.Join(testmodels.Dir("mlp_frozen"), exp.Info.Graph), exp
}

func TestLoadGraphDefRunsLikePython(t *testing.T) {
	path, exp := mlpPath(t)
	g, err := loader.LoadGraphDef(path)
	require.NoError(t, err)

	ph := g.Placeholders()
	require.Len(t, ph, len(exp.Info.Inputs))
	require.Equal(t, exp.Info.Inputs[0].Name, ph[0].Name)
	require.Equal(t, exp.Info.Inputs[0].DType, ph[0].DType.String())
	require.Equal(t, exp.Info.Inputs[0].Shape, ph[0].Shape)

	for _, o := range exp.Info.Outputs {
		name, err := g.Resolve(o.Name)
		require.NoError(t, err)
		require.Equal(t, o.Name, name)
	}
	name, err := g.Resolve("probs")
	require.NoError(t, err)
	require.Equal(t, "probs:0", name)

	graph, err := g.Import(tf.WithPrefix("m"))
	require.NoError(t, err)
	defer graph.Close()
	s, err := tf.NewSession(graph)
	require.NoError(t, err)
	defer s.Close()
	for _, c := range exp.Cases {
		x, err := graph.Output("m/" + exp.Info.Inputs[0].Name)
		require.NoError(t, err)
		out, err := graph.Output("m/probs:0")
		require.NoError(t, err)
		in := c.Feeds[exp.Info.Inputs[0].Name]
		ft, err := tf.NewTensor(in.Shape, in.Float32)
		require.NoError(t, err)
		res, err := s.Run(context.Background(), []tf.Feed{{Output: x, Tensor: ft}}, []tf.Output{out}, nil)
		require.NoError(t, err)
		got, err := tf.Data[float32](res[0])
		require.NoError(t, err)
		want := c.Fetches["probs:0"].Float32
		require.InDeltaSlice(t, want, got, 1e-5, c.Name)
		res[0].Close()
		ft.Close()
	}
}

func TestResolveSuggestsClosest(t *testing.T) {
	path, _ := mlpPath(t)
	g, err := loader.LoadGraphDef(path)
	require.NoError(t, err)
	_, err = g.Resolve("prob:0")
	require.ErrorIs(t, err, tf.ErrNotFound)
	require.ErrorContains(t, err, `tensor "prob:0" not found (closest: probs`)
	_, err = g.Resolve("probs:-1")
	require.ErrorContains(t, err, `"op" or "op:index"`)
}

func TestLoadGraphDefBadInput(t *testing.T) {
	path, _ := mlpPath(t)
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p
	}
	random := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(random)

	cases := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.pb"), "does not exist"},
		{"directory", dir, "is a directory"},
		{"empty file", write("empty.pb", nil), "empty input"},
		{"truncated in half", write("half.pb", good[:len(good)/2]), "invalid GraphDef"},
		{"last byte cut", write("cut.pb", good[:len(good)-1]), "invalid GraphDef"},
		{"random bytes", write("random.pb", random), "invalid GraphDef"},
		{"text", write("text.pb", []byte("node { name: 'x' op: 'Placeholder' }")), "invalid GraphDef"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := loader.LoadGraphDef(c.path)
			require.Error(t, err)
			require.Nil(t, g)
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestParseGraphDefChecksInputs(t *testing.T) {
	path, _ := mlpPath(t)
	g, err := loader.LoadGraphDef(path)
	require.NoError(t, err)
	def := g.Def
	// Rewire one node to read a node that does not exist.
	for _, n := range def.Node {
		if len(n.Input) > 0 {
			n.Input[0] = "no_such_node:0"
			break
		}
	}
	_, err = loader.NewGraphDef(def)
	require.ErrorIs(t, err, loader.ErrInvalidGraph)
	require.ErrorContains(t, err, `reads input "no_such_node:0": node "no_such_node" not found`)
}
