package tf_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tf"
)

// loadGraph imports a fixture's frozen graph.
func loadGraph(t *testing.T, name string) (*tf.Graph, *testmodels.Expected) {
	t.Helper()
	exp := testmodels.MustLoadExpected(t, name)
	def, err := os.ReadFile(filepath.Join(testmodels.Dir(name), exp.Info.Graph))
	require.NoError(t, err)
	g, err := tf.ImportGraphDef(def)
	require.NoError(t, err)
	t.Cleanup(func() { g.Close() })
	return g, exp
}

func newSession(t *testing.T, g *tf.Graph, opts ...tf.SessionOption) *tf.Session {
	t.Helper()
	s, err := tf.NewSession(g, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// feedsFor converts a case's feeds into tensors fed to the named outputs.
func feedsFor(t *testing.T, g *tf.Graph, c *testmodels.Case) []tf.Feed {
	t.Helper()
	var feeds []tf.Feed
	for _, name := range c.FeedKeys() {
		a := c.Feeds[name]
		out, err := g.Output(name)
		require.NoError(t, err)
		var tt *tf.Tensor
		switch a.DType {
		case "float32":
			tt, err = tf.NewTensor(a.Shape, a.Float32)
		case "string":
			tt, err = tf.NewStringTensor(a.Shape, a.Bytes)
		case "int32":
			tt, err = tf.NewTensor(a.Shape, a.Int32)
		case "int64":
			tt, err = tf.NewTensor(a.Shape, a.Int64)
		default:
			t.Fatalf("feed %s: dtype %s not handled by this test", name, a.DType)
		}
		require.NoError(t, err)
		t.Cleanup(func() { tt.Close() })
		feeds = append(feeds, tf.Feed{Output: out, Tensor: tt})
	}
	return feeds
}

// requireMatches checks a fetched tensor against Python's value: numbers
// within 1e-5 (absolute for small values, relative for large), strings and
// integers exactly.
func requireMatches(t *testing.T, name string, want *testmodels.Array, got *tf.Tensor) {
	t.Helper()
	requireSame(t, want.Shape, got.Shape(), name)
	require.Equal(t, want.DType, got.DataType().String(), name)
	switch want.DType {
	case "string":
		s, err := got.Strings()
		require.NoError(t, err)
		requireSame(t, want.Bytes, s, name)
	case "float32":
		g, err := tf.Data[float32](got)
		require.NoError(t, err)
		for i := range want.Float32 {
			w := float64(want.Float32[i])
			require.LessOrEqual(t, math.Abs(float64(g[i])-w), 1e-5*math.Max(1, math.Abs(w)), "%s[%d]: got %v want %v", name, i, g[i], w)
		}
	case "int32":
		g, err := tf.Data[int32](got)
		require.NoError(t, err)
		requireSame(t, want.Int32, g, name)
	case "int64":
		g, err := tf.Data[int64](got)
		require.NoError(t, err)
		requireSame(t, want.Int64, g, name)
	default:
		t.Fatalf("%s: dtype %s not handled by this test", name, want.DType)
	}
}

// requireSame compares slices, treating nil and empty as equal.
func requireSame[T any](t *testing.T, want, got []T, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	if len(want) > 0 {
		require.Equal(t, want, got, msg)
	}
}

// runCase runs one raw-style case and compares every fetch with Python's.
func runCase(t *testing.T, s *tf.Session, g *tf.Graph, c *testmodels.Case) {
	t.Helper()
	feeds := feedsFor(t, g, c)
	names := c.FetchKeys()
	fetches := make([]tf.Output, len(names))
	for i, n := range names {
		var err error
		fetches[i], err = g.Output(n)
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	outs, err := s.Run(ctx, feeds, fetches, nil)
	require.NoError(t, err)
	for i, n := range names {
		requireMatches(t, n, c.Fetches[n], outs[i])
		require.NoError(t, outs[i].Close())
	}
}

func TestFrozenMLPMatchesPython(t *testing.T) {
	before := tf.LiveTensors()
	g, exp := loadGraph(t, "mlp_frozen")
	s := newSession(t, g)
	for i := range exp.Cases {
		c := &exp.Cases[i]
		t.Run(c.Name, func(t *testing.T) { runCase(t, s, g, c) })
	}
	require.Equal(t, before, tf.LiveTensors())
}

func TestStringsThroughTensorFlow(t *testing.T) {
	g, exp := loadGraph(t, "strings_identity")
	s := newSession(t, g)
	for i := range exp.Cases {
		c := &exp.Cases[i]
		t.Run(c.Name, func(t *testing.T) { runCase(t, s, g, c) })
	}
}

func TestGraphLookups(t *testing.T) {
	g, exp := loadGraph(t, "mlp_frozen")
	in, err := g.Output(exp.Info.Inputs[0].Name)
	require.NoError(t, err)
	require.Equal(t, tf.Float, in.DataType())
	shape, ok, err := in.Shape()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, exp.Info.Inputs[0].Shape, shape)
	require.Equal(t, "Placeholder", in.Op.Type())

	_, err = g.Output("logitz:0")
	require.ErrorIs(t, err, tf.ErrNotFound)
	require.ErrorContains(t, err, `operation "logitz" not found (closest: logits`)

	_, err = g.Output("logits:7")
	require.ErrorIs(t, err, tf.ErrNotFound)
	require.ErrorContains(t, err, "has 1 outputs, no output 7")

	_, err = g.Output("logits:x")
	require.ErrorContains(t, err, `"op" or "op:index"`)

	def, err := g.GraphDef()
	require.NoError(t, err)
	g2, err := tf.ImportGraphDef(def, tf.WithPrefix("copy"))
	require.NoError(t, err)
	defer g2.Close()
	_, err = g2.Output("copy/logits:0")
	require.NoError(t, err)
	require.Equal(t, len(g.Operations()), len(g2.Operations()))
}

func TestImportRejectsGarbage(t *testing.T) {
	for name, def := range map[string][]byte{
		"empty":  nil,
		"random": []byte("\x12\x34this is not a GraphDef\xff\xfe"),
	} {
		t.Run(name, func(t *testing.T) {
			g, err := tf.ImportGraphDef(def)
			require.Error(t, err)
			require.Nil(t, g)
		})
	}
	exp := testmodels.MustLoadExpected(t, "mlp_frozen")
	def, err := os.ReadFile(filepath.Join(testmodels.Dir("mlp_frozen"), exp.Info.Graph))
	require.NoError(t, err)
	_, err = tf.ImportGraphDef(def[:len(def)/2])
	require.Error(t, err, "a truncated GraphDef must not import")
}

func TestRunBadFeeds(t *testing.T) {
	g, exp := loadGraph(t, "mlp_frozen")
	s := newSession(t, g)
	x, err := g.Output(exp.Info.Inputs[0].Name)
	require.NoError(t, err)
	logits, err := g.Output("logits:0")
	require.NoError(t, err)
	ctx := context.Background()

	wrongType, err := tf.NewTensor([]int64{1, 8}, make([]int32, 8))
	require.NoError(t, err)
	defer wrongType.Close()
	_, err = s.Run(ctx, []tf.Feed{{Output: x, Tensor: wrongType}}, []tf.Output{logits}, nil)
	require.ErrorIs(t, err, tf.ErrInvalidArgument)
	require.ErrorContains(t, err, "x:0: InvalidArgument: feed has dtype int32, the graph expects float32")

	wrongShape, err := tf.NewTensor([]int64{1, 5}, make([]float32, 5))
	require.NoError(t, err)
	defer wrongShape.Close()
	_, err = s.Run(ctx, []tf.Feed{{Output: x, Tensor: wrongShape}}, []tf.Output{logits}, nil)
	require.ErrorContains(t, err, "feed has shape [1 5], the graph expects [-1 8]")

	_, err = s.Run(ctx, nil, []tf.Output{logits}, nil)
	require.Error(t, err, "a missing feed is TensorFlow's error, not a crash")
	var tfErr *tf.Error
	require.ErrorAs(t, err, &tfErr)
	require.Equal(t, tf.InvalidArgument, tfErr.Code)

	expired, cancel := context.WithTimeout(ctx, -time.Second)
	defer cancel()
	_, err = s.Run(expired, nil, []tf.Output{logits}, nil)
	require.ErrorIs(t, err, tf.ErrDeadlineExceeded)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	_, err = s.Run(canceled, nil, []tf.Output{logits}, nil)
	require.ErrorIs(t, err, context.Canceled)

	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	_, err = s.Run(ctx, nil, []tf.Output{logits}, nil)
	require.ErrorIs(t, err, tf.ErrClosed)
}

func TestConcurrentRunsAndCloseWaits(t *testing.T) {
	g, exp := loadGraph(t, "mlp_frozen")
	s, err := tf.NewSession(g, tf.WithIntraOpThreads(1), tf.WithInterOpThreads(1))
	require.NoError(t, err)
	c := &exp.Cases[len(exp.Cases)-1]
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				runCase(t, s, g, c)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, s.Close())
}

func TestDevicesAndVersion(t *testing.T) {
	ds, err := tf.LocalDevices()
	require.NoError(t, err)
	require.NotEmpty(t, ds)
	require.Equal(t, "CPU", ds[0].Type)
	if !tf.HasGPU() {
		t.Log("no GPU device listed; GPU cases skipped")
	}
	v := tf.Version()
	want := os.Getenv("GOTFLOW_TF_VERSION")
	if want == "" {
		want = "2.21.0"
	}
	require.Equal(t, want, v)
}

func TestSessionOptionsValidated(t *testing.T) {
	g, _ := loadGraph(t, "mlp_frozen")
	_, err := tf.NewSession(g, tf.WithIntraOpThreads(-1))
	require.ErrorContains(t, err, "thread counts must be >= 0")
	_, err = tf.NewSession(g, tf.WithGPUMemoryFraction(2))
	require.ErrorContains(t, err, "GPU memory fraction")
	s := newSession(t, g, tf.WithSoftPlacement(true), tf.WithGPUMemoryGrowth(true), tf.WithDeviceCount("GPU", 0))
	ds, err := s.Devices()
	require.NoError(t, err)
	require.NotEmpty(t, ds)
}

func TestGPUPlacement(t *testing.T) {
	if !tf.HasGPU() {
		t.Skip("no GPU device listed by TensorFlow")
	}
	g, exp := loadGraph(t, "mlp_frozen")
	s := newSession(t, g, tf.WithVisibleGPUs("0"), tf.WithGPUMemoryGrowth(true))
	ds, err := s.Devices()
	require.NoError(t, err)
	var gpus int
	for _, d := range ds {
		if d.Type == "GPU" {
			gpus++
		}
	}
	require.Equal(t, 1, gpus)
	runCase(t, s, g, &exp.Cases[0])
}
