package serving_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	attrpb "github.com/wamuir/graft/tensorflow/core/framework/attr_value_go_proto"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	nodepb "github.com/wamuir/graft/tensorflow/core/framework/node_def_go_proto"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	"google.golang.org/grpc/codes"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// halfPlusTwo copies TF's half_plus_two SavedModel into base/<version>.
func halfPlusTwo(t *testing.T, base string, version int) { testmodels.HalfPlusTwo(t, base, version) }

// affine exports a SavedModel computing y = a·x + b (x float32 [-1,1])
// into base/<version>, atomically (written beside, then renamed), as a
// deployment would.
func affine(t *testing.T, base string, version int, a, b float32) {
	t.Helper()
	float := &attrpb.AttrValue{Value: &attrpb.AttrValue_Type{Type: typespb.DataType_DT_FLOAT}}
	konst := func(name string, v float32) *nodepb.NodeDef {
		return &nodepb.NodeDef{Name: name, Op: "Const", Attr: map[string]*attrpb.AttrValue{"dtype": float, "value": {Value: &attrpb.AttrValue_Tensor{
			Tensor: &tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: &tspb.TensorShapeProto{}, FloatVal: []float32{v}}}}}}
	}
	shape := &tspb.TensorShapeProto{Dim: []*tspb.TensorShapeProto_Dim{{Size: -1}, {Size: 1}}}
	def := &graphpb.GraphDef{Node: []*nodepb.NodeDef{
		{Name: "x", Op: "Placeholder", Attr: map[string]*attrpb.AttrValue{"dtype": float, "shape": {Value: &attrpb.AttrValue_Shape{Shape: shape}}}},
		konst("a", a), konst("b", b),
		{Name: "ax", Op: "Mul", Input: []string{"x", "a"}, Attr: map[string]*attrpb.AttrValue{"T": float}},
		{Name: "y", Op: "AddV2", Input: []string{"ax", "b"}, Attr: map[string]*attrpb.AttrValue{"T": float}},
	}}
	g, err := loader.NewGraphDef(def)
	require.NoError(t, err)
	sig := savedmodel.Signature{Key: "serving_default", MethodName: savedmodel.PredictMethodName,
		Inputs:  []savedmodel.SignatureTensor{{Alias: "x", TensorSpec: tf.TensorSpec{Name: "x:0", DType: tf.Float, Shape: []int64{-1, 1}}}},
		Outputs: []savedmodel.SignatureTensor{{Alias: "y", TensorSpec: tf.TensorSpec{Name: "y:0", DType: tf.Float, Shape: []int64{-1, 1}}}}}
	tmp := filepath.Join(base, fmt.Sprintf(".tmp-%d", version))
	require.NoError(t, savedmodel.Export(tmp, g, sig))
	require.NoError(t, os.Rename(tmp, filepath.Join(base, fmt.Sprint(version))))
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newServer(t *testing.T, ctx context.Context, cfg serving.Config) *serving.Server {
	t.Helper()
	s, err := serving.NewServer(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.WaitReady(ctx))
	return s
}

func predictX(ctx context.Context, s *serving.Server, model string, xs ...float32) ([]float32, int64, error) {
	resp, err := s.Predict(ctx, &serving.Request{Model: model, Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{int64(len(xs)), 1}, xs)}})
	if err != nil {
		return nil, 0, err
	}
	y, err := serving.Values[float32](resp.Outputs["y"])
	return y, resp.Version, err
}

func codeOf(err error) codes.Code { return serving.Code(err) }

func ones(n int) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// TestPredictHalfPlusTwo runs TF's half_plus_two through the server core:
// y = 0.5x + 2, the other signatures by key, and bad requests refused
// with the code and message TF Serving gives, the server answering after
// each.
func TestPredictHalfPlusTwo(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	halfPlusTwo(t, base, 123)
	s := newServer(t, ctx, serving.Config{Models: []serving.ModelConfig{{Name: "half_plus_two", BasePath: base}}})

	y, v, err := predictX(ctx, s, "half_plus_two", 1, 2, 5)
	require.NoError(t, err)
	require.Equal(t, []float32{2.5, 3, 4.5}, y)
	require.EqualValues(t, 123, v)

	resp, err := s.Predict(ctx, &serving.Request{Model: "half_plus_two", Signature: "regress_x2_to_y3",
		Inputs: map[string]*serving.Tensor{"inputs": serving.NewTensor([]int64{2, 1}, []float32{1, 4})}})
	require.NoError(t, err)
	y3, err := serving.Values[float32](resp.Outputs["outputs"])
	require.NoError(t, err)
	require.Equal(t, []float32{3.5, 5}, y3, "y3 = 0.5·x2 + 3")
	require.Equal(t, "tensorflow/serving/regress", resp.Method)

	md, err := s.Metadata("half_plus_two", 0, "")
	require.NoError(t, err)
	require.Len(t, md.SignatureDefs, 6)
	require.Equal(t, []serving.TensorInfo{{Name: "x", DType: tf.Float, Shape: []int64{-1, 1}}}, md.Signatures["serving_default"].Inputs)
	require.True(t, md.Signatures["serving_default"].Servable)
	st, err := s.ModelStatus("half_plus_two", 0, "")
	require.NoError(t, err)
	require.Equal(t, []serving.VersionStatus{{Version: 123, State: serving.StateAvailable}}, st)

	x := serving.NewTensor([]int64{1, 1}, []float32{1})
	for _, tc := range []struct {
		name string
		req  serving.Request
		code codes.Code
		msg  string
	}{
		{"unknown model", serving.Request{Model: "nope", Inputs: map[string]*serving.Tensor{"x": x}}, codes.NotFound, "Servable not found for request: Latest(nope)"},
		{"unknown version", serving.Request{Model: "half_plus_two", Version: 7, Inputs: map[string]*serving.Tensor{"x": x}}, codes.NotFound, "Specific(half_plus_two, 7)"},
		{"unknown label", serving.Request{Model: "half_plus_two", Label: "stable", Inputs: map[string]*serving.Tensor{"x": x}}, codes.InvalidArgument, "Unrecognized servable version label: stable"},
		{"unknown signature", serving.Request{Model: "half_plus_two", Signature: "nope", Inputs: map[string]*serving.Tensor{"x": x}}, codes.FailedPrecondition, `Serving signature key "nope" not found`},
		{"extra input", serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{"x": x, "z": x}}, codes.InvalidArgument, "input tensor alias not found in signature: z"},
		{"missing input", serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{}}, codes.InvalidArgument, "Missing but required: {x}"},
		{"wrong type", serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{1, 1}, []int32{1})}}, codes.InvalidArgument, `input "x": got int32, the signature expects float32`},
		{"wrong shape", serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{1, 2}, []float32{1, 2})}}, codes.InvalidArgument, "does not match the signature's [-1 1]"},
		{"short buffer", serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{"x": {DType: tf.Float, Shape: []int64{2, 1}, Data: make([]byte, 4)}}}, codes.InvalidArgument, "4 bytes of float32 for shape [2 1], want 8"},
		{"unknown output", serving.Request{Model: "half_plus_two", Outputs: []string{"z"}, Inputs: map[string]*serving.Tensor{"x": x}}, codes.InvalidArgument, "output tensor alias not found in signature: z"},
		// TensorFlow aborts the process on a rank above 254.
		{"rank 300", serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{"x": serving.NewTensor(ones(300), []float32{1})}}, codes.InvalidArgument, "rank 300 is more than TensorFlow's maximum of 254"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Predict(ctx, &tc.req)
			require.Error(t, err)
			require.Equal(t, tc.code, codeOf(err), "%v", err)
			require.Contains(t, serving.Message(err), tc.msg)
			y, _, err := predictX(ctx, s, "half_plus_two", 4)
			require.NoError(t, err)
			require.Equal(t, []float32{4}, y)
		})
	}
}

// TestHotReloadUnderLoad: while clients predict without pause, new
// versions appear one after another (20 of them). Every request succeeds,
// each answer is one of the versions' (never a mix or an error), the
// answers move to each new version, every old version ends up closed,
// the process's RSS after the last reload is within a margin of what it
// was after the fifth, and exactly one session and graph (the newest
// version's) are open: none is kept per reload.
func TestHotReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("20 reloads")
	}
	ctx := testCtx(t, 3*time.Minute)
	base := t.TempDir()
	affine(t, base, 1, 1, 1)
	before := tf.Live()
	s := newServer(t, ctx, serving.Config{PollInterval: 10 * time.Millisecond, Models: []serving.ModelConfig{{Name: "m", BasePath: base}}})

	var newest atomic.Int64
	newest.Store(1)
	var requests, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				low := newest.Load()
				y, v, err := predictX(ctx, s, "m", 2)
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				// Version v computes v·x + v.
				if v < low-1 || y[0] != float32(3*v) {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("version %d answered %v (newest deployed %d)", v, y, low))
				}
			}
		}()
	}
	var rss5 int64
	for v := 2; v <= 21; v++ {
		affine(t, base, v, float32(v), float32(v))
		newest.Store(int64(v))
		// Answers move to the new version, and the old one ends.
		require.Eventually(t, func() bool {
			_, got, err := predictX(ctx, s, "m", 1)
			st, _ := s.ModelStatus("m", int64(v-1), "")
			return err == nil && got == int64(v) && len(st) == 1 && st[0].State == serving.StateEnd
		}, 30*time.Second, 5*time.Millisecond, "version %d serves and %d ends", v, v-1)
		if v == 6 {
			rss5 = rssBytes(t)
		}
	}
	close(stop)
	wg.Wait()
	require.Zero(t, failures.Load(), "of %d requests; first: %v", requests.Load(), firstErr.Load())
	require.Greater(t, requests.Load(), int64(100))
	rss := rssBytes(t)
	t.Logf("requests %d, RSS after reload 5: %.1f MiB, after 20: %.1f MiB", requests.Load(), float64(rss5)/(1<<20), float64(rss)/(1<<20))
	require.Less(t, rss-rss5, int64(40<<20), "RSS grew by %.1f MiB over 15 reloads", float64(rss-rss5)/(1<<20))
	live := tf.Live()
	require.Equal(t, before.Sessions+1, live.Sessions, "one session (the newest version's) is open after 20 reloads")
	require.Equal(t, before.Graphs+1, live.Graphs)
	require.Equal(t, before.Tensors, live.Tensors, "no tensor is left open")
	require.NoError(t, s.Close())
	require.Equal(t, before, tf.Live(), "Close frees the last version")
	require.Zero(t, tf.Leaked().Sessions)
}

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	require.NoError(t, err)
	var size, res int64
	_, err = fmt.Sscan(string(b), &size, &res)
	require.NoError(t, err)
	return res * int64(os.Getpagesize())
}

// TestBadVersionKeepsPrevious: a version directory that does not load is
// logged and reported in the status with its error; the version serving
// before stays up. Once the directory is fixed, it loads.
func TestBadVersionKeepsPrevious(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	affine(t, base, 1, 1, 1)
	s := newServer(t, ctx, serving.Config{PollInterval: 10 * time.Millisecond, Models: []serving.ModelConfig{{Name: "m", BasePath: base}}})
	require.NoError(t, os.MkdirAll(filepath.Join(base, "2"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(base, "2", "saved_model.pb"), []byte("not a model"), 0o644))
	require.Eventually(t, func() bool {
		st, err := s.ModelStatus("m", 2, "")
		return err == nil && st[0].State == serving.StateEnd && st[0].Err != nil
	}, 20*time.Second, 5*time.Millisecond)
	y, v, err := predictX(ctx, s, "m", 2)
	require.NoError(t, err)
	require.EqualValues(t, 1, v)
	require.Equal(t, []float32{3}, y)

	require.NoError(t, os.RemoveAll(filepath.Join(base, "2")))
	affine(t, base, 2, 2, 2)
	require.Eventually(t, func() bool {
		_, v, err := predictX(ctx, s, "m", 1)
		return err == nil && v == 2
	}, 20*time.Second, 5*time.Millisecond)
}

// TestLabelsAndPolicies: an "all" policy serves every version; a label and
// an explicit version pick one.
func TestLabelsAndPolicies(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	affine(t, base, 1, 1, 1)
	affine(t, base, 2, 2, 2)
	affine(t, base, 3, 3, 3)
	s := newServer(t, ctx, serving.Config{PollInterval: -1, Models: []serving.ModelConfig{{Name: "m", BasePath: base,
		Policy: serving.VersionPolicy{Specific: []int64{1, 2}}, Labels: map[string]int64{"stable": 1, "canary": 2}}}})
	for _, tc := range []struct {
		version int64
		label   string
		want    int64
	}{{0, "", 2}, {1, "", 1}, {0, "stable", 1}, {0, "canary", 2}} {
		resp, err := s.Predict(ctx, &serving.Request{Model: "m", Version: tc.version, Label: tc.label,
			Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{1, 1}, []float32{1})}})
		require.NoError(t, err)
		require.Equal(t, tc.want, resp.Version)
	}
	_, err := s.Predict(ctx, &serving.Request{Model: "m", Version: 3, Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{1, 1}, []float32{1})}})
	require.Equal(t, codes.NotFound, codeOf(err), "version 3 is not in the policy")
}

// TestBatcher: with batching on, concurrent requests are answered with
// their own rows (including requests split across batches and batches
// padded to an allowed size), and with a small queue, excess requests
// fail at once with UNAVAILABLE while the server keeps answering.
func TestBatcher(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	affine(t, base, 1, 2, 1)
	s := newServer(t, ctx, serving.Config{Models: []serving.ModelConfig{{Name: "m", BasePath: base}},
		Batching: &serving.BatchingParameters{MaxBatchSize: 8, BatchTimeout: 2 * time.Millisecond, NumBatchThreads: 2,
			MaxEnqueuedBatches: 100, AllowedBatchSizes: []int{2, 4, 8}}})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for c := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 1 + c%11 // up to 11 rows: some larger than a batch
			xs := make([]float32, n)
			for i := range xs {
				xs[i] = float32(c*100 + i)
			}
			y, _, err := predictX(ctx, s, "m", xs...)
			if err != nil {
				errs <- err
				return
			}
			for i, x := range xs {
				if y[i] != 2*x+1 {
					errs <- fmt.Errorf("request %d row %d: %v for x=%v", c, i, y[i], x)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestBatcherOverload(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	affine(t, base, 1, 2, 1)
	s := newServer(t, ctx, serving.Config{Models: []serving.ModelConfig{{Name: "m", BasePath: base}},
		Batching: &serving.BatchingParameters{MaxBatchSize: 1, BatchTimeout: 200 * time.Millisecond, NumBatchThreads: 1, MaxEnqueuedBatches: 2}})
	var ok, unavailable atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	var slowest atomic.Int64
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			_, _, err := predictX(ctx, s, "m", 1)
			switch {
			case err == nil:
				ok.Add(1)
			case codeOf(err) == codes.Unavailable:
				unavailable.Add(1)
				if d := time.Since(t0); d > time.Duration(slowest.Load()) {
					slowest.Store(int64(d))
				}
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	require.Positive(t, unavailable.Load(), "some requests are refused")
	require.Positive(t, ok.Load(), "some are served")
	require.Less(t, time.Duration(slowest.Load()), 150*time.Millisecond, "refusals come at once, not after a batch timeout")
	t.Logf("served %d, refused %d in %v", ok.Load(), unavailable.Load(), time.Since(start))
	y, _, err := predictX(ctx, s, "m", 3)
	require.NoError(t, err)
	require.Equal(t, []float32{7}, y)
	_ = errors.New
}

// TestBatcherLimits: a request larger than the whole queue runs alone
// (it can never fit, so "retry later" would be wrong); requests of many
// kinds (inner shapes) do not start goroutines without end; and a request
// whose deadline passes while it waits is withdrawn, its tensors no
// longer read once Predict returns.
func TestBatcherLimits(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	affine(t, base, 1, 2, 1)
	s := newServer(t, ctx, serving.Config{Models: []serving.ModelConfig{{Name: "m", BasePath: base}},
		Batching: &serving.BatchingParameters{MaxBatchSize: 2, BatchTimeout: time.Second, NumBatchThreads: 2, MaxEnqueuedBatches: 2}})
	y, _, err := predictX(ctx, s, "m", 1, 2, 3, 4, 5)
	require.NoError(t, err, "5 rows need 3 batches of 2, more than the queue's 2")
	require.Equal(t, []float32{3, 5, 7, 9, 11}, y)

	x := make([]float32, 1)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = s.Predict(short, &serving.Request{Model: "m", Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{1, 1}, x)}})
	require.Equal(t, codes.DeadlineExceeded, codeOf(err), "%v", err)
	y, _, err = predictX(ctx, s, "m", 3, 4)
	require.NoError(t, err)
	require.Equal(t, []float32{7, 9}, y)

	before := runtime.NumGoroutine()
	for k := range 100 {
		// Inner shapes the graph refuses: each is a kind of its own (two
		// rows fill a batch, so none waits for the timeout).
		s.Predict(ctx, &serving.Request{Model: "m", Inputs: map[string]*serving.Tensor{"x": serving.NewTensor([]int64{2, 1, int64(k + 1)}, make([]float32, 2*(k+1)))}})
	}
	require.Less(t, runtime.NumGoroutine()-before, 80, "batchers are bounded")
}

// TestMetrics: after a good and a bad request, the registry reports them by
// code, one available version, the batch sizes, and the TensorFlow objects
// the version holds (one session, one graph, no leaked object).
func TestMetrics(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	base := t.TempDir()
	halfPlusTwo(t, base, 1)
	s := newServer(t, ctx, serving.Config{Models: []serving.ModelConfig{{Name: "half_plus_two", BasePath: base}}})
	_, _, err := predictX(ctx, s, "half_plus_two", 1, 2)
	require.NoError(t, err)
	_, err = s.Predict(ctx, &serving.Request{Model: "half_plus_two", Inputs: map[string]*serving.Tensor{}})
	require.Error(t, err)

	want := `
# HELP gotflow_serving_model_versions_available Versions of each model that serve.
# TYPE gotflow_serving_model_versions_available gauge
gotflow_serving_model_versions_available{model="half_plus_two"} 1
# HELP gotflow_tf_leaked_objects TensorFlow objects the garbage collector found unreachable before their Close (their C memory is never freed), by kind.
# TYPE gotflow_tf_leaked_objects gauge
gotflow_tf_leaked_objects{kind="graph"} 0
gotflow_tf_leaked_objects{kind="session"} 0
gotflow_tf_leaked_objects{kind="tensor"} 0
`
	require.NoError(t, testutil.GatherAndCompare(s.Registry(), strings.NewReader(want),
		"gotflow_serving_model_versions_available", "gotflow_tf_leaked_objects"))
	mfs, err := s.Registry().Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	require.Equal(t, float64(tf.Live().Sessions), got["gotflow_tf_live_objects,kind=session"])
	require.GreaterOrEqual(t, got["gotflow_tf_live_objects,kind=session"], 1.0)
	var ok, bad float64
	for k, v := range got {
		if strings.HasPrefix(k, "gotflow_serving_requests_total,") && strings.Contains(k, "model=half_plus_two") {
			if strings.Contains(k, "code=OK") {
				ok += v
			} else {
				bad += v
			}
		}
	}
	require.Equal(t, 1.0, ok, "%v", got)
	require.Equal(t, 1.0, bad, "%v", got)
}
