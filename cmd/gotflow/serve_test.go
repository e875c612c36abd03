package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	arrowflight "github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gotflow/gotflow/feeder/arrowio"
	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/kserve/inferencepb"
	"github.com/gotflow/gotflow/serving/tfserving/tfservingpb"
)

// TestServeAndDrain starts `gotflow serve` on half_plus_two with free
// ports, predicts over REST, then sends SIGTERM: the command drains and
// exits 0, and the port is closed. A non-loopback bind without TLS and a
// token is refused.
func TestServeAndDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := t.TempDir()
	testmodels.HalfPlusTwo(t, base, 123)

	cmd := exec.CommandContext(ctx, os.Args[0], "serve", "--model_base_path", base, "--model_name", "half_plus_two",
		"--port", "0", "--rest_api_port", "0", "--enable_batching")
	cmd.Env = append(os.Environ(), "GOTFLOW_TEST_MAIN=1", "TF_CPP_MIN_LOG_LEVEL=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	line := make(chan string, 1)
	go func() {
		rd := bufio.NewReader(stdout)
		l, _ := rd.ReadString('\n')
		line <- l
		io.Copy(io.Discard, rd)
		exited <- cmd.Wait()
	}()
	var first string
	select {
	case first = <-line:
	case <-ctx.Done():
		t.Fatalf("no address line from gotflow serve\n%s", stderr.String())
	}
	m := regexp.MustCompile(`REST on (\S+)`).FindStringSubmatch(first)
	require.NotNil(t, m, "%q\n%s", first, stderr.String())
	url := "http://" + m[1] + "/v1/models/half_plus_two:predict"
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"instances": [1.0, 2.0, 5.0]}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "%s", body)
	require.Equal(t, `{"predictions":[2.5,3.0,4.5]}`, strings.Join(strings.Fields(string(body)), ""))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "%s", stderr.String())
	case <-ctx.Done():
		t.Fatal("gotflow serve did not exit after SIGTERM")
	}
	require.Contains(t, stderr.String(), "draining requests in flight")
	_, err = http.Post(url, "application/json", strings.NewReader(`{"instances": [1.0]}`))
	require.Error(t, err, "the port is closed")

	var errOut strings.Builder
	refused := exec.CommandContext(ctx, os.Args[0], "serve", "--model_base_path", base, "--host", "0.0.0.0", "--port", "0", "--rest_api_port", "0")
	refused.Env, refused.Stderr = cmd.Env, &errOut
	require.Error(t, refused.Run())
	require.Contains(t, errOut.String(), "without both TLS")
}

// TestServeAgreesWithPredict sends the same 20 rows to the MLP fixture
// through every front end of `gotflow serve` (TF Serving REST and gRPC,
// KServe V2 over HTTP and gRPC, Arrow Flight) and runs `gotflow predict`
// on them with the same batch: every answer equals predict's, max |Δ| = 0.
func TestServeAgreesWithPredict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rows, width = 20, 32
	dir := t.TempDir()
	data := make([]float32, rows*width)
	for i := range data {
		data[i] = float32((i*7919)%1000)/500 - 1
	}
	lb := array.NewFixedSizeListBuilder(leakcheck.Allocator(), width, arrow.PrimitiveTypes.Float32)
	lb.ValueBuilder().(*array.Float32Builder).AppendValues(data, nil)
	for range rows {
		lb.Append(true)
	}
	col := lb.NewArray()
	lb.Release()
	schema := arrow.NewSchema([]arrow.Field{{Name: "features", Type: col.DataType()}}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{col}, rows)
	col.Release()
	defer rec.Release()
	in := filepath.Join(dir, "in.parquet")
	sink, err := arrowio.CreateParquet(in, schema)
	require.NoError(t, err)
	require.NoError(t, sink.Write(rec))
	require.NoError(t, sink.Close())
	model := filepath.Join(testmodels.Root(), "scripts/fixtures/mlp_savedmodel")
	var stdout, stderr bytes.Buffer
	code := run([]string{"predict", "--model", model, "--data", in, "--output", filepath.Join(dir, "out.arrow"), "--batch-size", "20", "--quiet"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	want, n := readColumn(t, filepath.Join(dir, "out.arrow"), "output_0")
	require.EqualValues(t, rows, n)

	base := filepath.Join(dir, "models", "mlp")
	require.NoError(t, os.MkdirAll(base, 0o755))
	require.NoError(t, os.Symlink(model, filepath.Join(base, "1")))
	srv, err := serving.NewServer(ctx, serving.Config{Models: []serving.ModelConfig{{Name: "mlp", BasePath: base}}, PollInterval: -1})
	require.NoError(t, err)
	defer srv.Close()
	registerFrontEnds(srv)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(gl, hl)
	require.NoError(t, srv.WaitReady(ctx))
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	same := func(api string, got []float64) {
		t.Helper()
		require.Len(t, got, len(want), api)
		for i := range want {
			// JSON carries the shortest decimal that reads back as the
			// same float32.
			require.Equal(t, float32(want[i]), float32(got[i]), "%s value %d (max |Δ| must be 0)", api, i)
		}
	}
	post := func(url, body string) []byte {
		t.Helper()
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode, "%s", b)
		return b
	}
	nums := func(v []float32) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = strconv.FormatFloat(float64(x), 'g', -1, 32)
		}
		return strings.Join(s, ",")
	}

	// TF Serving REST, row format.
	var instances []string
	for r := range rows {
		instances = append(instances, "["+nums(data[r*width:(r+1)*width])+"]")
	}
	var rest struct{ Predictions [][]float64 }
	require.NoError(t, json.Unmarshal(post("http://"+hl.Addr().String()+"/v1/models/mlp:predict", `{"instances": [`+strings.Join(instances, ",")+`]}`), &rest))
	same("rest", slices.Concat(rest.Predictions...))

	// TF Serving gRPC.
	content := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(content[4*i:], math.Float32bits(v))
	}
	pr, err := tfservingpb.NewPredictionServiceClient(conn).Predict(ctx, &tfservingpb.PredictRequest{ModelSpec: &tfservingpb.ModelSpec{Name: "mlp"},
		Inputs: map[string]*tensorpb.TensorProto{"features": {Dtype: typespb.DataType_DT_FLOAT,
			TensorShape: &tspb.TensorShapeProto{Dim: []*tspb.TensorShapeProto_Dim{{Size: rows}, {Size: width}}}, TensorContent: content}}})
	require.NoError(t, err)
	var g []float64
	for _, v := range pr.Outputs["output_0"].GetFloatVal() {
		g = append(g, float64(v))
	}
	same("grpc", g)

	// KServe V2 over HTTP (JSON) and gRPC (raw contents).
	var v2 struct{ Outputs []struct{ Data []float64 } }
	require.NoError(t, json.Unmarshal(post("http://"+hl.Addr().String()+"/v2/models/mlp/infer",
		fmt.Sprintf(`{"inputs": [{"name": "features", "shape": [%d, %d], "datatype": "FP32", "data": [%s]}]}`, rows, width, nums(data))), &v2))
	require.Len(t, v2.Outputs, 1)
	same("v2 http", v2.Outputs[0].Data)
	ir, err := inferencepb.NewGRPCInferenceServiceClient(conn).ModelInfer(ctx, &inferencepb.ModelInferRequest{ModelName: "mlp",
		Inputs:           []*inferencepb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{rows, width}}},
		RawInputContents: [][]byte{content}})
	require.NoError(t, err)
	require.Len(t, ir.RawOutputContents, 1)
	g = g[:0]
	for i := 0; i+4 <= len(ir.RawOutputContents[0]); i += 4 {
		g = append(g, float64(math.Float32frombits(binary.LittleEndian.Uint32(ir.RawOutputContents[0][i:]))))
	}
	same("v2 grpc", g)

	// Arrow Flight DoExchange.
	fc, err := arrowflight.NewClientWithMiddleware(gl.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer fc.Close()
	stream, err := fc.DoExchange(ctx)
	require.NoError(t, err)
	w := arrowflight.NewRecordWriter(stream, ipc.WithSchema(schema))
	w.SetFlightDescriptor(&arrowflight.FlightDescriptor{Type: arrowflight.DescriptorPATH, Path: []string{"mlp"}})
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
	require.NoError(t, stream.CloseSend())
	rd, err := arrowflight.NewRecordReader(stream)
	require.NoError(t, err)
	defer rd.Release()
	require.True(t, rd.Next(), "%v", rd.Err())
	out := rd.RecordBatch()
	idx := out.Schema().FieldIndices("output_0")
	require.NotEmpty(t, idx, "%s", out.Schema())
	g = g[:0]
	for _, v := range out.Column(idx[0]).(*array.FixedSizeList).ListValues().(*array.Float32).Float32Values() {
		g = append(g, float64(v))
	}
	same("flight", g)
}
