package savedmodel_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/internal/tftest"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
	"github.com/stretchr/testify/require"
	pb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// runCase feeds a fixture case to m and compares every fetch with Python's.
func runCase(t *testing.T, m *savedmodel.Model, c *testmodels.Case) {
	t.Helper()
	feeds := map[string]*tf.Tensor{}
	for k, a := range c.Feeds {
		feeds[k] = tftest.Tensor(t, a)
	}
	keys := c.FetchKeys()
	out, err := m.Run(testCtx(t), feeds, keys...)
	require.NoError(t, err)
	for i, k := range keys {
		tftest.RequireEqual(t, c.Fetches[k], out[i], c.Name+" "+k)
		require.NoError(t, out[i].Close())
	}
}

func TestReadListsSignaturesLikePython(t *testing.T) {
	for _, name := range []string{"tf2_savedmodel", "tf1_savedmodel", "mlp_savedmodel", "cnn_savedmodel"} {
		t.Run(name, func(t *testing.T) {
			exp := testmodels.MustLoadExpected(t, name)
			info, err := savedmodel.Read(testmodels.Dir(name))
			require.NoError(t, err)
			require.Len(t, info.MetaGraphs, len(exp.Info.MetaGraphs))
			for i, want := range exp.Info.MetaGraphs {
				got := info.MetaGraphs[i]
				require.Equal(t, want.Tags, got.Tags)
				var wantSigs []testmodels.Signature
				for _, s := range want.Signatures {
					if !strings.HasPrefix(s.Key, "__") {
						wantSigs = append(wantSigs, s)
					}
				}
				require.Len(t, got.Signatures, len(wantSigs))
				for j, ws := range wantSigs {
					gs := got.Signatures[j]
					require.Equal(t, ws.Key, gs.Key)
					require.Equal(t, ws.MethodName, gs.MethodName)
					requireSpecs(t, ws.Inputs, gs.Inputs)
					requireSpecs(t, ws.Outputs, gs.Outputs)
				}
			}
		})
	}
}

func requireSpecs(t *testing.T, want []testmodels.TensorInfo, got []savedmodel.SignatureTensor) {
	t.Helper()
	require.Len(t, got, len(want))
	for i, w := range want {
		require.Equal(t, w.Alias, got[i].Alias)
		require.Equal(t, w.Name, got[i].Name)
		require.Equal(t, w.DType, got[i].DType.String())
		require.Equal(t, w.Shape, got[i].Shape)
	}
}

func TestSavedModelCasesMatchPython(t *testing.T) {
	for _, name := range []string{"tf2_savedmodel", "tf1_savedmodel", "mlp_savedmodel", "cnn_savedmodel"} {
		exp := testmodels.MustLoadExpected(t, name)
		for _, c := range exp.Cases {
			t.Run(name+"/"+c.Name, func(t *testing.T) {
				opts := []savedmodel.Option{savedmodel.WithTags(c.Tags...)}
				if c.Style == "raw" {
					opts = append(opts, savedmodel.WithRawTensorNames())
				} else {
					opts = append(opts, savedmodel.WithSignature(c.Signature))
				}
				m, err := savedmodel.Load(testCtx(t), testmodels.Dir(name), opts...)
				require.NoError(t, err)
				t.Cleanup(func() { m.Close() })
				require.Equal(t, savedmodel.KindSavedModel, m.Kind())
				runCase(t, m, &c)
			})
		}
	}
}

func TestDefaultsAreServeAndServingDefault(t *testing.T) {
	m, err := savedmodel.Load(testCtx(t), testmodels.Dir("tf2_savedmodel"))
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, []string{"serve"}, m.Tags())
	require.Equal(t, "serving_default", m.Signature().Key)
	in := m.Inputs()
	require.Len(t, in, 2)
	require.Equal(t, "k", in[0].Alias)
	require.Equal(t, tf.Int64, in[0].DType)
	require.Equal(t, "x", in[1].Alias)
	require.Equal(t, []int64{-1, 4}, in[1].Shape)
	require.Equal(t, []string{"serving_default", "strings"}, m.MetaGraph().SignatureKeys())
}

func TestFrozenGraphsMatchPython(t *testing.T) {
	for _, name := range []string{"mlp_frozen", "strings_identity"} {
		exp := testmodels.MustLoadExpected(t, name)
		m, err := savedmodel.LoadFrozenGraph(testCtx(t), filepath.Join(testmodels.Dir(name), exp.Info.Graph))
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		require.Nil(t, m.Signature())
		var ins []string
		for _, s := range m.Inputs() {
			ins = append(ins, s.Name)
		}
		var wantIns []string
		for _, s := range exp.Info.Inputs {
			wantIns = append(wantIns, s.Name)
		}
		require.Equal(t, wantIns, ins)
		for _, c := range exp.Cases {
			t.Run(name+"/"+c.Name, func(t *testing.T) { runCase(t, m, &c) })
		}
	}
}

func TestCheckpointMatchesPython(t *testing.T) {
	exp := testmodels.MustLoadExpected(t, "tf1_checkpoint")
	dir := testmodels.Dir("tf1_checkpoint")
	ck := exp.Info.Checkpoint
	for _, path := range []string{dir, filepath.Join(dir, ck.Prefix), filepath.Join(dir, ck.MetaGraph)} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m, err := savedmodel.LoadCheckpoint(testCtx(t), path)
			require.NoError(t, err)
			defer m.Close()
			require.Equal(t, savedmodel.KindCheckpoint, m.Kind())
			require.Equal(t, filepath.Join(dir, ck.Prefix), m.Path())
			for _, c := range exp.Cases {
				runCase(t, m, &c)
			}
		})
	}
}

// copyDir copies a fixture so a test can damage it.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
	return dst
}

func TestErrors(t *testing.T) {
	ctx := testCtx(t)
	tf2 := testmodels.Dir("tf2_savedmodel")
	tf1 := testmodels.Dir("tf1_savedmodel")

	t.Run("wrong tags lists tag sets", func(t *testing.T) {
		_, err := savedmodel.Load(ctx, tf1, savedmodel.WithTags("gpu"))
		var nf *savedmodel.NotFoundError
		require.ErrorAs(t, err, &nf)
		require.ErrorIs(t, err, tf.ErrNotFound)
		require.Contains(t, err.Error(), `"{gpu}"`)
		require.Contains(t, err.Error(), "{custom,train}, {serve}")
	})
	t.Run("wrong signature lists keys", func(t *testing.T) {
		_, err := savedmodel.Load(ctx, tf1) // {serve} has no serving_default
		require.ErrorContains(t, err, `signature "serving_default" not found in tags {serve} (have: activation, scores)`)
	})
	t.Run("unknown alias lists aliases", func(t *testing.T) {
		m, err := savedmodel.Load(ctx, tf2)
		require.NoError(t, err)
		defer m.Close()
		_, err = m.Input("X")
		require.ErrorContains(t, err, `input "X" not found in signature "serving_default" (have: k, x)`)
		_, err = m.Output("serving_default_x:0")
		require.ErrorContains(t, err, "(have: total, y)")
	})
	t.Run("unknown raw tensor", func(t *testing.T) {
		m, err := savedmodel.Load(ctx, tf2, savedmodel.WithRawTensorNames())
		require.NoError(t, err)
		defer m.Close()
		_, err = m.Input("serving_default_z:0")
		require.ErrorIs(t, err, tf.ErrNotFound)
		require.ErrorContains(t, err, "serving_default_z")
	})
	t.Run("dtype mismatch in feed", func(t *testing.T) {
		m, err := savedmodel.Load(ctx, tf2)
		require.NoError(t, err)
		defer m.Close()
		x, err := tf.NewTensor([]int64{1, 4}, []float64{1, 2, 3, 4})
		require.NoError(t, err)
		defer x.Close()
		k, err := tf.NewTensor([]int64{1}, []int64{1})
		require.NoError(t, err)
		defer k.Close()
		_, err = m.Run(ctx, map[string]*tf.Tensor{"x": x, "k": k}, "y")
		require.ErrorContains(t, err, "float64")
	})
	t.Run("missing directory", func(t *testing.T) {
		_, err := savedmodel.Load(ctx, filepath.Join(t.TempDir(), "nope"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("not a saved model", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hi"), 0o644))
		_, err := savedmodel.Load(ctx, dir)
		require.ErrorIs(t, err, savedmodel.ErrNotSavedModel)
		require.ErrorContains(t, err, "notes.txt")
	})
	t.Run("truncated saved_model.pb", func(t *testing.T) {
		dir := copyDir(t, tf2)
		pbPath := filepath.Join(dir, "saved_model.pb")
		b, err := os.ReadFile(pbPath)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(pbPath, b[:len(b)/2], 0o644))
		_, err = savedmodel.Load(ctx, dir)
		require.ErrorContains(t, err, "not a valid SavedModel protocol buffer")
	})
	t.Run("random saved_model.pb", func(t *testing.T) {
		dir := copyDir(t, tf2)
		r := rand.New(rand.NewPCG(1, 2))
		b := make([]byte, 4096)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, "saved_model.pb"), b, 0o644))
		_, err := savedmodel.Load(ctx, dir)
		require.Error(t, err)
		require.ErrorContains(t, err, "saved_model.pb")
	})
	t.Run("empty saved_model.pb", func(t *testing.T) {
		dir := copyDir(t, tf2)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "saved_model.pb"), nil, 0o644))
		_, err := savedmodel.Load(ctx, dir)
		require.ErrorContains(t, err, "holds no meta graph")
	})
	t.Run("corrupt frozen graph", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "g.pb")
		require.NoError(t, os.WriteFile(path, []byte("\x0a\x05garbage-not-a-graph"), 0o644))
		_, err := savedmodel.LoadFrozenGraph(ctx, path)
		require.Error(t, err)
		require.ErrorContains(t, err, path)
	})
	t.Run("missing checkpoint", func(t *testing.T) {
		_, err := savedmodel.LoadCheckpoint(ctx, filepath.Join(t.TempDir(), "model"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("checkpoint without data files", func(t *testing.T) {
		dir := copyDir(t, testmodels.Dir("tf1_checkpoint"))
		require.NoError(t, os.Remove(filepath.Join(dir, "model.index")))
		_, err := savedmodel.LoadCheckpoint(ctx, dir)
		require.ErrorContains(t, err, "model.index")
	})
	t.Run("closed model", func(t *testing.T) {
		m, err := savedmodel.Load(ctx, tf2)
		require.NoError(t, err)
		require.NoError(t, m.Close())
		require.NoError(t, m.Close())
		_, err = m.Input("x")
		require.True(t, errors.Is(err, tf.ErrClosed))
	})
}

func TestDanglingInputIsRejectedBeforeTF(t *testing.T) {
	dir := copyDir(t, testmodels.Dir("tf1_savedmodel"))
	path := filepath.Join(dir, "saved_model.pb")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	sm := &pb.SavedModel{}
	require.NoError(t, proto.Unmarshal(b, sm))
	nodes := sm.GetMetaGraphs()[0].GetGraphDef().GetNode()
	for _, n := range nodes {
		if len(n.Input) > 0 {
			n.Input[0] = "no_such_node:0"
			break
		}
	}
	b, err = proto.Marshal(sm)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	_, err = savedmodel.Load(testCtx(t), dir, savedmodel.WithTags("serve"), savedmodel.WithSignature("scores"))
	require.ErrorContains(t, err, `there is no node "no_such_node"`)
}
