package loader_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

// The fixtures in testdata/bundles are written by testdata/gen_bundles.py,
// which also records what Python TF computed for them.

// relTol bounds the relative error per tensor: max|got-want| / max|want|.
const relTol = 1e-5

type array struct {
	DType string    `json:"dtype"`
	Shape []int64   `json:"shape"`
	Data  []float64 `json:"data"`
}

type expected struct {
	Format    string             `json:"format"`
	Inputs    map[string]array   `json:"inputs"`
	Labels    map[string]array   `json:"labels"`
	Loss      float64            `json:"loss"`
	Gradients map[string]array   `json:"gradients"`
	Metrics   map[string]float64 `json:"metrics"`
	Updates   map[string]array   `json:"updates"`
	Outputs   map[string]array   `json:"outputs"`
	// Eval is what Keras' model.evaluate reports for the batch: the loss
	// and metrics with training=False.
	Eval struct {
		Loss    float64            `json:"loss"`
		Metrics map[string]float64 `json:"metrics"`
	} `json:"eval"`
}

func bundleDir(name string) string { return filepath.Join("testdata", "bundles", name) }

func loadExpected(t *testing.T, name string) *expected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "bundles", name+".expected.json"))
	require.NoError(t, err)
	var e expected
	require.NoError(t, json.Unmarshal(b, &e))
	require.Equal(t, "gotflow.bundle-expected/v1", e.Format)
	return &e
}

func tensorOf(t *testing.T, a array) *tf.Tensor {
	t.Helper()
	var (
		x   *tf.Tensor
		err error
	)
	switch a.DType {
	case "float32":
		v := make([]float32, len(a.Data))
		for i, f := range a.Data {
			v[i] = float32(f)
		}
		x, err = tf.NewTensor(a.Shape, v)
	case "int32":
		v := make([]int32, len(a.Data))
		for i, f := range a.Data {
			v[i] = int32(f)
		}
		x, err = tf.NewTensor(a.Shape, v)
	default:
		t.Fatalf("unsupported dtype %s", a.DType)
	}
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	return x
}

func values(t *testing.T, x *tf.Tensor) []float64 {
	t.Helper()
	switch x.DataType() {
	case tf.Float:
		d, err := tf.Data[float32](x)
		require.NoError(t, err)
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case tf.Int64:
		d, err := tf.Data[int64](x)
		require.NoError(t, err)
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	}
	t.Fatalf("unsupported dtype %s", x.DataType())
	return nil
}

// relErr is max|got-want| / max|want| over a tensor.
func relErr(got, want []float64) float64 {
	var diff, scale float64
	for i := range want {
		diff = math.Max(diff, math.Abs(got[i]-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	if scale == 0 {
		return diff
	}
	return diff / scale
}

func requireClose(t *testing.T, what string, x *tf.Tensor, want array) {
	t.Helper()
	require.Equal(t, want.Shape, x.Shape(), "%s shape", what)
	got := values(t, x)
	e := relErr(got, want.Data)
	require.LessOrEqual(t, e, relTol, "%s: relative error %.3g", what, e)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func batch(t *testing.T, b *loader.Bundle, exp *expected) (inputs, labels []*tf.Tensor) {
	for _, in := range b.Inputs {
		inputs = append(inputs, tensorOf(t, exp.Inputs[in.Alias]))
	}
	for _, l := range b.Labels {
		labels = append(labels, tensorOf(t, exp.Labels[l.Alias]))
	}
	return inputs, labels
}

func weightTensors(t *testing.T, b *loader.Bundle) []*tf.Tensor {
	ws, err := b.WeightTensors()
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, w := range ws {
			w.Close()
		}
	})
	return ws
}

func TestTrainStepMatchesPython(t *testing.T) {
	for _, name := range []string{"mlp", "cnn", "tf1", "finetune"} {
		t.Run(name, func(t *testing.T) {
			b, err := loader.LoadBundle(bundleDir(name))
			require.NoError(t, err)
			exp := loadExpected(t, name)
			st, err := b.NewTrainStep()
			require.NoError(t, err)
			t.Cleanup(func() { st.Close() })
			inputs, labels := batch(t, b, exp)
			r, err := st.Run(ctxT(t), weightTensors(t, b), inputs, labels)
			require.NoError(t, err)
			defer r.Close()

			loss := values(t, r.Loss)[0]
			require.InDelta(t, exp.Loss, loss, relTol*math.Abs(exp.Loss), "loss")
			tr := b.Trainable()
			require.Len(t, r.Gradients, len(tr))
			require.Len(t, exp.Gradients, len(tr), "every trainable variable has a Python gradient")
			for i, vi := range tr {
				v := b.Variables[vi]
				want, ok := exp.Gradients[v.Name]
				require.True(t, ok, "no Python gradient for %s", v.Name)
				requireClose(t, "gradient "+v.Name, r.Gradients[i], want)
			}
			for i, m := range b.Metrics {
				got := values(t, r.Metrics[i])[0]
				require.InDelta(t, exp.Metrics[m.Alias], got, 1e-6, "metric %s", m.Alias)
			}
			st8 := b.Stateful()
			require.Len(t, r.Updates, len(exp.Updates))
			for i, vi := range st8 {
				v := b.Variables[vi]
				requireClose(t, "update "+v.Name, r.Updates[i], exp.Updates[v.Name])
			}
		})
	}
}

func TestEvalStepMatchesPython(t *testing.T) {
	for _, name := range []string{"mlp", "cnn", "tf1", "finetune"} {
		t.Run(name, func(t *testing.T) {
			b, err := loader.LoadBundle(bundleDir(name))
			require.NoError(t, err)
			require.NotNil(t, b.Eval, "the converter writes eval.pb")
			exp := loadExpected(t, name)
			require.NotEmpty(t, exp.Eval.Metrics, "the fixture records the eval values")
			st, err := b.NewEvalStep()
			require.NoError(t, err)
			t.Cleanup(func() { st.Close() })
			require.False(t, st.TrainingMode())
			inputs, labels := batch(t, b, exp)
			r, err := st.Run(ctxT(t), weightTensors(t, b), inputs, labels)
			require.NoError(t, err)
			defer r.Close()
			loss := values(t, r.Loss)[0]
			require.InDelta(t, exp.Eval.Loss, loss, relTol*math.Abs(exp.Eval.Loss), "eval loss")
			require.Len(t, r.Metrics, len(b.Metrics))
			for i, m := range b.Metrics {
				got := values(t, r.Metrics[i])[0]
				require.InDelta(t, exp.Eval.Metrics[m.Alias], got, 1e-6, "metric %s", m.Alias)
			}
			if name == "cnn" {
				// Dropout and batch-norm batch statistics make the
				// training step's loss another number.
				require.Greater(t, math.Abs(exp.Loss-loss), 1e-3, "eval loss %v, train loss %v", loss, exp.Loss)
			}
		})
	}
}

// A bundle written before eval.pb existed is evaluated with its training
// graph, in training mode.
func TestEvalStepWithoutEvalGraph(t *testing.T) {
	dir := copyBundle(t, "cnn")
	editManifest(t, dir, func(m map[string]any) { delete(m, "eval_graph") })
	require.NoError(t, os.Remove(filepath.Join(dir, "eval.pb")))
	b, err := loader.LoadBundle(dir)
	require.NoError(t, err)
	require.Nil(t, b.Eval)
	exp := loadExpected(t, "cnn")
	st, err := b.NewEvalStep()
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	require.True(t, st.TrainingMode())
	inputs, labels := batch(t, b, exp)
	r, err := st.Run(ctxT(t), weightTensors(t, b), inputs, labels)
	require.NoError(t, err)
	defer r.Close()
	require.InDelta(t, exp.Loss, values(t, r.Loss)[0], relTol*math.Abs(exp.Loss), "training-mode loss")
	require.Len(t, r.Metrics, 1)
	require.InDelta(t, exp.Metrics["accuracy"], values(t, r.Metrics[0])[0], 1e-6)
}

func TestEvalStepBadInput(t *testing.T) {
	b, err := loader.LoadBundle(bundleDir("cnn"))
	require.NoError(t, err)
	exp := loadExpected(t, "cnn")
	st, err := b.NewEvalStep()
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	inputs, labels := batch(t, b, exp)
	ws := weightTensors(t, b)
	_, err = st.Run(ctxT(t), ws[:2], inputs, labels)
	require.ErrorContains(t, err, "loader: eval: got 2 weight tensors, want 8 (one per variable)")
	_, err = st.Run(ctxT(t), ws, inputs, nil)
	require.ErrorContains(t, err, "got 0 label tensors, want 1")
	// eval.pb does not read the dropout layer's seed: it needs no tensor.
	seed := slices.IndexFunc(b.Variables, func(v loader.Variable) bool { return strings.HasSuffix(v.Name, "seed_generator_state") })
	require.GreaterOrEqual(t, seed, 0)
	partial := slices.Clone(ws)
	partial[seed] = nil
	r, err := st.Run(ctxT(t), partial, inputs, labels)
	require.NoError(t, err)
	r.Close()
	partial[0] = nil
	_, err = st.Run(ctxT(t), partial, inputs, labels)
	require.ErrorContains(t, err, `loader: eval: no tensor for variable "cnn/conv/kernel"`)
}

func TestPredictorMatchesPython(t *testing.T) {
	for _, name := range []string{"mlp", "cnn", "tf1", "finetune"} {
		t.Run(name, func(t *testing.T) {
			b, err := loader.LoadBundle(bundleDir(name))
			require.NoError(t, err)
			exp := loadExpected(t, name)
			p, err := b.NewPredictor()
			require.NoError(t, err)
			t.Cleanup(func() { p.Close() })
			inputs, _ := batch(t, b, exp)
			out, err := p.Run(ctxT(t), weightTensors(t, b), inputs)
			require.NoError(t, err)
			require.Len(t, out, len(exp.Outputs))
			for i, o := range b.Outputs {
				requireClose(t, "output "+o.Alias, out[i], exp.Outputs[o.Alias])
				out[i].Close()
			}
		})
	}
}

func TestFreezeMatchesPython(t *testing.T) {
	for _, name := range []string{"mlp", "cnn", "tf1", "finetune"} {
		t.Run(name, func(t *testing.T) {
			b, err := loader.LoadBundle(bundleDir(name))
			require.NoError(t, err)
			exp := loadExpected(t, name)
			frozen, err := b.Freeze(b.Weights)
			require.NoError(t, err)
			var phs []string
			for _, p := range frozen.Placeholders() {
				phs = append(phs, p.Name)
			}
			var want []string
			for _, in := range b.Inputs {
				want = append(want, in.Name)
			}
			slices.Sort(want)
			require.Equal(t, want, phs, "only the inputs stay placeholders")

			g, err := frozen.Import()
			require.NoError(t, err)
			defer g.Close()
			s, err := tf.NewSession(g)
			require.NoError(t, err)
			defer s.Close()
			inputs, _ := batch(t, b, exp)
			var feeds []tf.Feed
			for i, in := range b.Inputs {
				o, err := g.Output(in.Name)
				require.NoError(t, err)
				feeds = append(feeds, tf.Feed{Output: o, Tensor: inputs[i]})
			}
			var fetches []tf.Output
			for _, o := range b.Outputs {
				out, err := g.Output(o.Name)
				require.NoError(t, err)
				fetches = append(fetches, out)
			}
			res, err := s.Run(ctxT(t), feeds, fetches, nil)
			require.NoError(t, err)
			for i, o := range b.Outputs {
				requireClose(t, "frozen output "+o.Alias, res[i], exp.Outputs[o.Alias])
				res[i].Close()
			}
		})
	}
}

func TestFreezeUsesGivenWeights(t *testing.T) {
	b, err := loader.LoadBundle(bundleDir("tf1"))
	require.NoError(t, err)
	// Zero every weight: the logits become zero and the probabilities 1/3.
	ws := make([]loader.Weight, len(b.Weights))
	for i, w := range b.Weights {
		ws[i] = loader.Weight{Name: w.Name, DType: w.DType, Shape: w.Shape, Data: make([]byte, len(w.Data))}
	}
	frozen, err := b.Freeze(ws)
	require.NoError(t, err)
	g, err := frozen.Import()
	require.NoError(t, err)
	defer g.Close()
	s, err := tf.NewSession(g)
	require.NoError(t, err)
	defer s.Close()
	x, err := tf.NewTensor([]int64{2, 6}, make([]float32, 12))
	require.NoError(t, err)
	defer x.Close()
	in, err := g.Output(b.Inputs[0].Name)
	require.NoError(t, err)
	out, err := g.Output("output/probs:0")
	require.NoError(t, err)
	res, err := s.Run(ctxT(t), []tf.Feed{{Output: in, Tensor: x}}, []tf.Output{out}, nil)
	require.NoError(t, err)
	defer res[0].Close()
	for _, v := range values(t, res[0]) {
		require.InDelta(t, 1.0/3, v, 1e-6)
	}
}

func TestFreezeRejectsBadWeights(t *testing.T) {
	b, err := loader.LoadBundle(bundleDir("mlp"))
	require.NoError(t, err)
	w0 := b.Weights[0]
	cases := []struct {
		name    string
		weights []loader.Weight
		msg     string
	}{
		{"missing", b.Weights[1:], `no weight for variable "` + w0.Name + `"`},
		{"unknown", append(slices.Clone(b.Weights), loader.Weight{Name: "nope", DType: tf.Float, Shape: []int64{}, Data: make([]byte, 4)}), "unknown variables: [nope]"},
		{"shape", append([]loader.Weight{{Name: w0.Name, DType: tf.Float, Shape: []int64{1}, Data: make([]byte, 4)}}, b.Weights[1:]...), "is float32[1], variable is float32"},
		{"bytes", append([]loader.Weight{{Name: w0.Name, DType: w0.DType, Shape: w0.Shape, Data: w0.Data[:4]}}, b.Weights[1:]...), "has 4 bytes"},
		{"twice", append(slices.Clone(b.Weights), w0), "given twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := b.Freeze(c.weights)
			require.ErrorContains(t, err, c.msg)
		})
	}
}

func TestLoadBundleDescribesItself(t *testing.T) {
	b, err := loader.LoadBundle(bundleDir("cnn"))
	require.NoError(t, err)
	require.Equal(t, []loader.BundleTensor{{Alias: "x", TensorSpec: tf.TensorSpec{Name: "input/x:0", DType: tf.Float, Shape: []int64{-1, 6, 6, 2}}}}, b.Inputs)
	require.Equal(t, []loader.BundleTensor{{Alias: "y", TensorSpec: tf.TensorSpec{Name: "label/y:0", DType: tf.Int32, Shape: []int64{-1}}}}, b.Labels)
	require.Equal(t, []loader.BundleTensor{{Alias: "output", TensorSpec: tf.TensorSpec{Name: "output/output:0", DType: tf.Float, Shape: []int64{-1, 3}}}}, b.Outputs)
	require.Equal(t, loader.BundleTensor{Alias: "sparse_categorical_crossentropy", TensorSpec: tf.TensorSpec{Name: "loss:0", DType: tf.Float, Shape: []int64{}}}, b.Loss)
	var names []string
	for _, i := range b.Stateful() {
		names = append(names, b.Variables[i].Name)
	}
	require.Equal(t, []string{"cnn/bn/moving_mean", "cnn/bn/moving_variance", "cnn/dropout/seed_generator_state"}, names)
	v, i, err := b.Variable("cnn/logits/kernel")
	require.NoError(t, err)
	require.Equal(t, []int64{36, 3}, v.Shape)
	require.True(t, v.Trainable)
	require.Equal(t, b.Weights[i].Name, v.Name)
	_, _, err = b.Variable("cnn/logits/kernal")
	require.ErrorIs(t, err, tf.ErrNotFound)
	require.ErrorContains(t, err, "cnn/logits/kernel")
}

// copyBundle copies a fixture bundle into a temporary directory.
func copyBundle(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.CopyFS(dst, os.DirFS(bundleDir(name))))
	return dst
}

func editManifest(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "manifest.json")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	edit(m)
	b, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, b, 0o644))
}

func variable(m map[string]any, i int) map[string]any {
	return m["variables"].([]any)[i].(map[string]any)
}

func TestLoadBundleBadInput(t *testing.T) {
	cases := []struct {
		name string
		edit func(t *testing.T, dir string)
		msg  string
	}{
		{"missing tensor", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { variable(m, 0)["gradient"] = "grad/mlp/dense/kernal:0" })
		}, `train.pb: variable "mlp/hidden1/kernel" gradient tensor "grad/mlp/dense/kernal:0"`},
		{"wrong dtype", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["labels"].([]any)[0].(map[string]any)["dtype"] = "int64" })
		}, `label "y" tensor "label/y:0" has dtype int32, the manifest says int64`},
		{"wrong shape", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["outputs"].([]any)[0].(map[string]any)["shape"] = []int{-1, 4} })
		}, `output "output" tensor "output/output:0" has shape [-1 3], the manifest says [-1 4]`},
		{"gradient of another shape", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { variable(m, 0)["gradient"] = "loss:0" })
		}, `variable "mlp/hidden1/kernel" gradient tensor "loss:0" has shape [], the manifest says [6 10]`},
		{"placeholder is not a placeholder", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { variable(m, 0)["train_placeholder"] = variable(m, 0)["gradient"] })
		}, `train.pb: variable "mlp/hidden1/kernel" placeholder "grad/mlp/hidden1/kernel:0" is a Identity op, want Placeholder`},
		{"trainable without gradient", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { delete(variable(m, 2), "gradient") })
		}, `is trainable but has no gradient tensor`},
		{"version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["format"] = "gotflow.bundle/v2" })
		}, `manifest format "gotflow.bundle/v2" is not supported (want "gotflow.bundle/v1")`},
		{"unknown field", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["optimizer"] = "sgd" })
		}, `unknown field "optimizer"`},
		{"shared placeholder", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { variable(m, 1)["train_placeholder"] = variable(m, 0)["train_placeholder"] })
		}, `tensor "var/mlp/hidden1/kernel:0" is used by both variable "mlp/hidden1/kernel" and variable "mlp/hidden1/bias"`},
		{"input is a label", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["labels"].([]any)[0].(map[string]any)["tensor"] = m["inputs"].([]any)[0].(map[string]any)["tensor"]
			})
		}, `tensor "input/x:0" is used by both input "x" and label "y"`},
		{"path escape", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["weights"] = "../weights.safetensors" })
		}, `must be a file name inside the bundle directory`},
		{"truncated weights", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "weights.safetensors")
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, b[:len(b)-10], 0o644))
		}, `lies beyond the`},
		{"weights header cut", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "weights.safetensors")
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, b[:40], 0o644))
		}, `exceeds the 32 bytes after it (truncated?)`},
		{"truncated graph", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "train.pb")
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, b[:len(b)/2], 0o644))
		}, `train.pb: loader: invalid GraphDef`},
		{"missing graph", func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "infer.pb")))
		}, `infer.pb does not exist`},
		{"weight of wrong shape", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				v := variable(m, 1)
				v["shape"] = []int{11}
			})
		}, `weight "mlp/hidden1/bias" is float32[10], the manifest says float32[11]`},
		{"stateful graph", func(t *testing.T, dir string) {
			src, err := os.ReadFile(filepath.Join("testdata", "gradients", "nograd.pb"))
			require.NoError(t, err)
			def, err := loader.ParseGraphDef(src)
			require.NoError(t, err)
			def.Def.Node[0].Op = "VarHandleOp"
			d2, err := loader.NewGraphDef(def.Def)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "infer.pb"), d2.Bytes(), 0o644))
		}, `infer.pb: node "x" is a VarHandleOp op; bundle graphs must be pure functions`},
		{"eval graph missing", func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "eval.pb")))
		}, `eval.pb does not exist`},
		{"eval graph path escape", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["eval_graph"] = "../eval.pb" })
		}, `eval_graph "../eval.pb" must be a file name inside the bundle directory`},
		{"eval graph without labels", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["eval_graph"] = "infer.pb" })
		}, `infer.pb: label "y" tensor "label/y:0"`},
		{"eval graph with an unfed placeholder", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "eval.pb")
			def, err := loader.LoadGraphDef(p)
			require.NoError(t, err)
			// Rename a weight placeholder (and its readers): the manifest no
			// longer names it.
			for _, n := range def.Def.Node {
				if n.GetName() == "var/mlp/hidden1/bias" {
					n.Name = "var/stray"
				}
				for i, in := range n.Input {
					if in == "var/mlp/hidden1/bias" {
						n.Input[i] = "var/stray"
					}
				}
			}
			d2, err := loader.NewGraphDef(def.Def)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, d2.Bytes(), 0o644))
		}, `eval.pb: placeholder "var/stray" is not a variable's train_placeholder, an input or a label`},
		{"eval graph without the loss", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "eval.pb")
			def, err := loader.LoadGraphDef(p)
			require.NoError(t, err)
			i, ok := def.Node("loss")
			require.True(t, ok)
			def.Def.Node[i].Name = "eval_loss"
			d2, err := loader.NewGraphDef(def.Def)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(p, d2.Bytes(), 0o644))
		}, `eval.pb: loss tensor "loss:0"`},
		{"not json", func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{\"format\": "), 0o644))
		}, `manifest.json: loader: manifest: unexpected EOF`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyBundle(t, "mlp")
			c.edit(t, dir)
			_, err := loader.LoadBundle(dir)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.msg)
		})
	}
	_, err := loader.LoadBundle(filepath.Join(t.TempDir(), "none"))
	require.ErrorContains(t, err, "does not exist")
}

func TestWeightsRoundTrip(t *testing.T) {
	b, err := loader.LoadBundle(bundleDir("cnn"))
	require.NoError(t, err)
	enc, err := loader.EncodeWeights(b.Weights, map[string]string{"step": "3"})
	require.NoError(t, err)
	dec, err := loader.ParseWeights(enc)
	require.NoError(t, err)
	require.Equal(t, b.Weights, dec)
	// The converter's file and ours agree byte for byte but for metadata.
	py, err := os.ReadFile(filepath.Join(bundleDir("cnn"), "weights.safetensors"))
	require.NoError(t, err)
	enc2, err := loader.EncodeWeights(b.Weights, map[string]string{"format": "gotflow.bundle/v1"})
	require.NoError(t, err)
	require.Equal(t, py, enc2)
	seed, _, err := b.Variable("cnn/dropout/seed_generator_state")
	require.NoError(t, err)
	require.Equal(t, tf.Int64, seed.DType)
}

func TestWriteWeights(t *testing.T) {
	b, err := loader.LoadBundle(bundleDir("mlp"))
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "snapshot.safetensors")
	require.NoError(t, loader.WriteWeights(p, b.Weights, map[string]string{"step": "10"}))
	back, err := loader.ReadWeights(p)
	require.NoError(t, err)
	require.Equal(t, b.Weights, back)
	entries, err := os.ReadDir(filepath.Dir(p))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left")
	err = loader.WriteWeights(p, []loader.Weight{{Name: "w", DType: tf.Float, Shape: []int64{2}, Data: make([]byte, 4)}}, nil)
	require.ErrorContains(t, err, `weight "w" has 4 bytes, want 8`)
}

func TestParseWeightsRejects(t *testing.T) {
	for name, c := range map[string]struct {
		data []byte
		msg  string
	}{
		"short":    {[]byte{1, 2}, "shorter than its 8-byte header length"},
		"huge":     {[]byte{0, 0, 0, 0, 0, 0, 0, 1}, "over the"},
		"not json": {append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, "{["...), "not a JSON object"},
		"dtype":    {header(`{"a":{"dtype":"F7","shape":[],"data_offsets":[0,4]}}`, 4), `dtype "F7"`},
		"size":     {header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "has 4 data bytes, want 8"},
		"overlap": {header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}`, 8),
			"overlap"},
		"negative": {header(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "unknown dimension"},
		"byte count overflows": {header(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}`, 0),
			"more bytes than a file can hold"},
		"overlap past an empty entry": {header(`{"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]},"b":{"dtype":"U8","shape":[0],"data_offsets":[50,50]},"c":{"dtype":"U8","shape":[10],"data_offsets":[60,70]}}`, 100),
			`entries "a" and "c" overlap`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loader.ParseWeights(c.data)
			require.ErrorContains(t, err, c.msg)
		})
	}
}

func header(h string, body int) []byte {
	out := make([]byte, 8, 8+len(h)+body)
	out[0] = byte(len(h))
	out = append(out, h...)
	return append(out, make([]byte, body)...)
}

// TestManifestRoundTrip checks that every committed manifest decodes and
// encodes back to the same JSON, key for key and value for value: the
// tensors' "name", "tensor", "dtype" and "shape" survive BundleTensor's
// Alias and embedded tf.TensorSpec.
func TestManifestRoundTrip(t *testing.T) {
	for _, name := range []string{"cnn", "finetune", "mlp", "tf1"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(bundleDir(name), "manifest.json"))
			require.NoError(t, err)
			m, err := loader.ParseManifest(raw)
			require.NoError(t, err)
			out, err := json.Marshal(m)
			require.NoError(t, err)
			var want, got map[string]any
			require.NoError(t, json.Unmarshal(raw, &want))
			require.NoError(t, json.Unmarshal(out, &got))
			require.Equal(t, want, got)
			again, err := loader.ParseManifest(out)
			require.NoError(t, err)
			require.Equal(t, m, again)
		})
	}
	raw, err := os.ReadFile(filepath.Join(bundleDir("cnn"), "manifest.json"))
	require.NoError(t, err)
	m, err := loader.ParseManifest(raw)
	require.NoError(t, err)
	in, err := json.Marshal(m.Inputs[0])
	require.NoError(t, err)
	require.JSONEq(t, `{"name": "x", "tensor": "input/x:0", "dtype": "float32", "shape": [-1, 6, 6, 2]}`, string(in))
	var bt loader.BundleTensor
	require.NoError(t, json.Unmarshal(in, &bt))
	require.Equal(t, loader.BundleTensor{Alias: "x", TensorSpec: tf.TensorSpec{Name: "input/x:0", DType: tf.Float, Shape: []int64{-1, 6, 6, 2}}}, bt)
	require.ErrorContains(t, json.Unmarshal([]byte(`{"name": "x", "tensor": "x:0", "dtype": "float32", "shape": [], "alias": "y"}`), &bt), `unknown field "alias"`)
}

func TestParseManifestRejects(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(bundleDir("tf1"), "manifest.json"))
	require.NoError(t, err)
	_, err = loader.ParseManifest(good)
	require.NoError(t, err)
	for name, c := range map[string]struct{ from, to, msg string }{
		"non-scalar loss": {`"loss": {
    "name": "loss",
    "tensor": "loss:0",
    "dtype": "float32",
    "shape": []`, `"loss": {"name": "loss", "tensor": "loss:0", "dtype": "float32", "shape": [2]`, "want a scalar"},
		"int loss": {`"tensor": "loss:0",
    "dtype": "float32"`, `"tensor": "loss:0", "dtype": "int32"`, "want a floating-point type"},
		"bad dtype":  {`"dtype": "int32"`, `"dtype": "int33"`, `dtype "int33"`},
		"bad tensor": {`"tensor": "x:0"`, `"tensor": "x:zero"`, `is not a tensor name`},
		"dup input":  {`"inputs": [`, `"inputs": [{"name": "x", "tensor": "x:0", "dtype": "float32", "shape": [-1, 6]},`, `input name "x" is used twice`},
		"trailing":   {`"format": "gotflow.bundle/v1",`, `"format": "gotflow.bundle/v1", "format": "gotflow.bundle/v1",`, ""},
		"wrong shape": {`"shape": [
        -1,
        6
      ]`, `"shape": [-2, 6]`, "dimensions are sizes or -1"},
	} {
		t.Run(name, func(t *testing.T) {
			s := string(good)
			require.Contains(t, s, c.from)
			_, err := loader.ParseManifest([]byte(strings.Replace(s, c.from, c.to, 1)))
			if c.msg == "" {
				return // duplicate keys are legal JSON; only check no panic
			}
			require.ErrorContains(t, err, c.msg)
		})
	}
	_, err = loader.ParseManifest(append(slices.Clone(good), "{}"...))
	require.ErrorContains(t, err, "trailing data")
}
