package kserve_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	examplepb "github.com/wamuir/graft/tensorflow/core/example/example_protos_go_proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/kserve"
	pb "github.com/gotflow/gotflow/serving/kserve/inferencepb"
)

const model = "half_plus_two"

// halfPlusTwo copies TF's half_plus_two SavedModel into base/<version>.
func halfPlusTwo(t *testing.T, base string, version int) { testmodels.HalfPlusTwo(t, base, version) }

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// env is a serving.Server with the protocol registered, serving
// half_plus_two (version 123, labelled stable) on loopback ports.
type env struct {
	srv      *serving.Server
	url      string // http://127.0.0.1:port
	grpcAddr string
	http     *http.Client
	grpc     pb.GRPCInferenceServiceClient
}

func start(t *testing.T, ctx context.Context) *env { return startWith(t, ctx, nil) }

func startWith(t *testing.T, ctx context.Context, batching *serving.BatchingParameters) *env {
	t.Helper()
	base := t.TempDir()
	halfPlusTwo(t, base, 123)
	srv, err := serving.NewServer(ctx, serving.Config{
		Models:       []serving.ModelConfig{{Name: model, BasePath: base, Labels: map[string]int64{"stable": 123}}},
		PollInterval: -1,
		Batching:     batching,
	})
	require.NoError(t, err)
	kserve.Register(srv)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(gl, hl) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		select {
		case err := <-served:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	require.NoError(t, srv.WaitReady(ctx))
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &env{srv: srv, url: "http://" + hl.Addr().String(), grpcAddr: gl.Addr().String(),
		http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, grpc: pb.NewGRPCInferenceServiceClient(conn)}
}

// reply is an HTTP answer, read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t *testing.T, method, path string, header http.Header, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{resp.StatusCode, resp.Header, b}
}

func (e *env) get(t *testing.T, path string) reply { return e.do(t, "GET", path, nil, nil) }

func (e *env) infer(t *testing.T, path, body string) reply {
	return e.do(t, "POST", path, http.Header{"Content-Type": {"application/json"}}, []byte(body))
}

// jsonOf decodes a JSON body into a generic value.
func jsonOf(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal(b, &v), "%s", b)
	return v
}

// checkGood runs x=[[1],[2],[5]] over HTTP and gRPC: the server still
// answers correctly.
func (e *env) checkGood(t *testing.T) {
	t.Helper()
	r := e.infer(t, "/v2/models/"+model+"/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"data":[[1],[2],[5]]}]}`)
	require.Equal(t, 200, r.status, "%s", r.body)
	require.Contains(t, string(r.body), `"data":[2.5,3,4.5]`)
	resp, err := e.grpc.ModelInfer(context.Background(), rawFP32Request("x", []float32{1, 2, 5}))
	require.NoError(t, err)
	require.Equal(t, []float32{2.5, 3, 4.5}, float32s(t, resp.RawOutputContents[0]))
}

func f32bytes(xs ...float32) []byte {
	b := make([]byte, 4*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func float32s(t *testing.T, b []byte) []float32 {
	t.Helper()
	require.Zero(t, len(b)%4, "%d bytes", len(b))
	return float32sOf(b)
}

func rawFP32Request(input string, xs []float32) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: model,
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: input, Datatype: "FP32", Shape: []int64{int64(len(xs)), 1}}},
		RawInputContents: [][]byte{f32bytes(xs...)}}
}

// binaryBody is a request body with binary tensor data: the JSON, then
// the data; it returns the header that gives the JSON's length.
func binaryBody(js string, data ...[]byte) (http.Header, []byte) {
	body := []byte(js)
	for _, d := range data {
		body = append(body, d...)
	}
	return http.Header{"Content-Type": {"application/octet-stream"}, kserve.HeaderLengthHeader: {strconv.Itoa(len(js))}}, body
}

// example is a serialized tf.Example with the float feature x, what
// half_plus_two's regress_x_to_y signature reads.
func example(x float32) []byte {
	b, err := proto.Marshal(&examplepb.Example{Features: &examplepb.Features{Feature: map[string]*examplepb.Feature{
		"x": {Kind: &examplepb.Feature_FloatList{FloatList: &examplepb.FloatList{Value: []float32{x}}}}}}})
	if err != nil {
		panic(err)
	}
	return b
}

func gzipWriter(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }

func inflate(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := zlib.NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	out, err := io.ReadAll(zr)
	require.NoError(t, err)
	return out
}

// TestHTTPHalfPlusTwo: health, metadata and inference over HTTP with JSON
// and binary tensors, against TF's half_plus_two (y = 0.5x + 2).
func TestHTTPHalfPlusTwo(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	e := start(t, ctx)

	for _, p := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/" + model + "/ready",
		"/v2/models/" + model + "/versions/123/ready", "/v2/models/" + model + "/versions/stable/ready"} {
		r := e.get(t, p)
		require.Equal(t, 200, r.status, "%s: %s", p, r.body)
		require.Empty(t, r.body, p)
	}

	r := e.get(t, "/v2")
	require.Equal(t, 200, r.status)
	require.JSONEq(t, fmt.Sprintf(`{"name":"gotflow","version":%q,"extensions":["binary_tensor_data"]}`, serving.Version), string(r.body))

	want := `{"name":"half_plus_two","versions":["123"],"platform":"tensorflow_savedmodel",
		"inputs":[{"name":"x","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}`
	for _, p := range []string{"", "/versions/123", "/versions/stable"} {
		r = e.get(t, "/v2/models/"+model+p)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.JSONEq(t, want, string(r.body), p)
	}
	r = e.get(t, "/v2/models/"+model+"?signature_name=regress_x2_to_y3")
	require.Equal(t, 200, r.status, "%s", r.body)
	require.JSONEq(t, `{"name":"half_plus_two","versions":["123"],"platform":"tensorflow_savedmodel",
		"inputs":[{"name":"inputs","datatype":"FP32","shape":[-1,1]}],"outputs":[{"name":"outputs","datatype":"FP32","shape":[-1,1]}]}`, string(r.body))

	t.Run("json", func(t *testing.T) {
		for _, data := range []string{`[[1],[2],[5]]`, `[1,2,5]`, `[[1,2],[5]]`, `[1.0, 2e0, 5]`} {
			r := e.infer(t, "/v2/models/"+model+"/infer", `{"id":"req-7","inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"data":`+data+`}]}`)
			require.Equal(t, 200, r.status, "%s", r.body)
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			require.Empty(t, r.header.Get(kserve.HeaderLengthHeader))
			require.Equal(t, `{"model_name":"half_plus_two","model_version":"123","id":"req-7","outputs":[{"name":"y","datatype":"FP32","shape":[3,1],"data":[2.5,3,4.5]}]}`, string(r.body), data)
		}
		// A version, a label, the output filter, no id.
		for _, p := range []string{"/versions/123", "/versions/stable"} {
			r := e.infer(t, "/v2/models/"+model+p+"/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2,1],"data":[-4,0.5]}],"outputs":[{"name":"y"}]}`)
			require.Equal(t, 200, r.status, "%s", r.body)
			require.Equal(t, `{"model_name":"half_plus_two","model_version":"123","outputs":[{"name":"y","datatype":"FP32","shape":[2,1],"data":[0,2.25]}]}`, string(r.body))
		}
	})

	t.Run("signature_name", func(t *testing.T) {
		r := e.infer(t, "/v2/models/"+model+"/infer", `{"parameters":{"signature_name":"regress_x2_to_y3"},"inputs":[{"name":"inputs","datatype":"FP32","shape":[3,1],"data":[1,2,5]}]}`)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Contains(t, string(r.body), `"name":"outputs","datatype":"FP32","shape":[3,1],"data":[3.5,4,5.5]`, "y3 = 0.5·x2 + 3")
	})

	t.Run("binary", func(t *testing.T) {
		// Binary input, binary output for every output by default.
		h, body := binaryBody(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"parameters":{"binary_data_size":12}}],"parameters":{"binary_data_output":true}}`, f32bytes(1, 2, 5))
		r := e.do(t, "POST", "/v2/models/"+model+"/infer", h, body)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Equal(t, "application/octet-stream", r.header.Get("Content-Type"))
		n, err := strconv.Atoi(r.header.Get(kserve.HeaderLengthHeader))
		require.NoError(t, err)
		require.Equal(t, `{"model_name":"half_plus_two","model_version":"123","outputs":[{"name":"y","datatype":"FP32","shape":[3,1],"parameters":{"binary_data_size":12}}]}`, string(r.body[:n]))
		require.Equal(t, []float32{2.5, 3, 4.5}, float32s(t, r.body[n:]))

		// Binary input, the output asked for as JSON (binary_data false
		// overrides binary_data_output).
		h, body = binaryBody(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"parameters":{"binary_data_size":12}}],"outputs":[{"name":"y","parameters":{"binary_data":false}}],"parameters":{"binary_data_output":true}}`, f32bytes(1, 2, 5))
		r = e.do(t, "POST", "/v2/models/"+model+"/infer", h, body)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Empty(t, r.header.Get(kserve.HeaderLengthHeader))
		require.Contains(t, string(r.body), `"data":[2.5,3,4.5]`)

		// JSON input, the output asked for as binary.
		r = e.infer(t, "/v2/models/"+model+"/infer", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[7]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`)
		require.Equal(t, 200, r.status, "%s", r.body)
		n, err = strconv.Atoi(r.header.Get(kserve.HeaderLengthHeader))
		require.NoError(t, err)
		require.Equal(t, []float32{5.5}, float32s(t, r.body[n:]))
	})

	t.Run("bytes", func(t *testing.T) {
		// regress_x_to_y takes serialized tf.Examples (BYTES) with a float
		// feature x; BYTES travel length-prefixed in binary.
		ex := [][]byte{example(1), example(5)}
		var data []byte
		for _, s := range ex {
			data = binary.LittleEndian.AppendUint32(data, uint32(len(s)))
			data = append(data, s...)
		}
		h, body := binaryBody(fmt.Sprintf(`{"parameters":{"signature_name":"regress_x_to_y"},"inputs":[{"name":"inputs","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":%d}}]}`, len(data)), data)
		r := e.do(t, "POST", "/v2/models/"+model+"/infer", h, body)
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Contains(t, string(r.body), `"name":"outputs","datatype":"FP32","shape":[2,1],"data":[2.5,4.5]`)
	})

	t.Run("compression", func(t *testing.T) {
		js := `{"id":"z","inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"data":[1,2,5]}]}`
		var zb bytes.Buffer
		zw := gzipWriter(&zb)
		zw.Write([]byte(js))
		zw.Close()
		r := e.do(t, "POST", "/v2/models/"+model+"/infer", http.Header{"Content-Encoding": {"gzip"}, "Accept-Encoding": {"deflate;q=0.5, gzip;q=0"}}, zb.Bytes())
		require.Equal(t, 200, r.status, "%s", r.body)
		require.Equal(t, "deflate", r.header.Get("Content-Encoding"))
		out := inflate(t, r.body)
		require.Contains(t, string(out), `"data":[2.5,3,4.5]`)
	})

	t.Run("errors", func(t *testing.T) {
		infer := "/v2/models/" + model + "/infer"
		xbin := func(shape string, size int) string {
			return fmt.Sprintf(`{"inputs":[{"name":"x","datatype":"FP32","shape":%s,"parameters":{"binary_data_size":%d}}]}`, shape, size)
		}
		binHeader := func(js string) http.Header { return http.Header{kserve.HeaderLengthHeader: {strconv.Itoa(len(js))}} }
		x := func(datatype, shape, data string) string {
			return `{"inputs":[{"name":"x","datatype":"` + datatype + `","shape":` + shape + `,"data":` + data + `}]}`
		}
		for _, tc := range []struct {
			name, method, path string
			header             http.Header
			body               string
			status             int
			msg                string
		}{
			{"unknown model", "POST", "/v2/models/nope/infer", nil, x("FP32", "[1,1]", "[1]"), 404, "Servable not found for request: Latest(nope)"},
			{"unknown version", "POST", "/v2/models/" + model + "/versions/7/infer", nil, x("FP32", "[1,1]", "[1]"), 404, "Specific(half_plus_two, 7)"},
			{"unknown label", "POST", "/v2/models/" + model + "/versions/canary/infer", nil, x("FP32", "[1,1]", "[1]"), 400, "Unrecognized servable version label: canary"},
			{"bad version", "POST", "/v2/models/" + model + "/versions/-1/infer", nil, x("FP32", "[1,1]", "[1]"), 400, "versions are positive integers"},
			{"unknown model metadata", "GET", "/v2/models/nope", nil, "", 404, "nope"},
			{"unknown version metadata", "GET", "/v2/models/" + model + "/versions/7", nil, "", 404, "Specific(half_plus_two, 7)"},
			{"unknown model ready", "GET", "/v2/models/nope/ready", nil, "", 404, `model "nope" is not served`},
			{"unknown version ready", "GET", "/v2/models/" + model + "/versions/7/ready", nil, "", 404, "Could not find version 7"},
			{"unknown endpoint", "GET", "/v2/models/" + model + "/stats", nil, "", 404, "no endpoint GET /v2/models/half_plus_two/stats"},
			{"wrong datatype", "POST", infer, nil, x("FP64", "[1,1]", "[1]"), 400, `input "x": got float64, the signature expects float32`},
			{"unknown datatype", "POST", infer, nil, x("FLOAT", "[1,1]", "[1]"), 400, `input "x": unknown datatype "FLOAT"`},
			{"too few elements", "POST", infer, nil, x("FP32", "[3,1]", "[1,2]"), 400, `input "x": data holds 2 elements, shape [3 1] has 3`},
			{"too many elements", "POST", infer, nil, x("FP32", "[1,1]", "[1,2]"), 400, `input "x": data holds more than the 1 elements of shape [1 1]`},
			{"wrong shape", "POST", infer, nil, x("FP32", "[1,2]", "[1,2]"), 400, "does not match the signature's [-1 1]"},
			{"negative dimension", "POST", infer, nil, x("FP32", "[-1,1]", "[1]"), 400, "negative dimension"},
			{"string for FP32", "POST", infer, nil, x("FP32", "[1,1]", `["1"]`), 400, "want a number for FP32, not a string"},
			{"out of range", "POST", infer, nil, x("FP32", "[1,1]", `[1e40]`), 400, "1e40 is out of range for FP32"},
			{"no data", "POST", infer, nil, `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1]}]}`, 400, `input "x" has no data`},
			{"no shape", "POST", infer, nil, `{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`, 400, `input "x" has no shape`},
			{"missing input", "POST", infer, nil, `{"inputs":[]}`, 400, "Missing but required: {x}"},
			{"duplicate input", "POST", infer, nil, `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]},{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`, 400, `input "x" is given twice`},
			{"malformed JSON", "POST", infer, nil, `{"inputs":[{"name":"x",`, 400, "malformed JSON"},
			{"trailing garbage", "POST", infer, nil, x("FP32", "[1,1]", "[1]") + "}", 400, "malformed JSON"},
			{"not an object", "POST", infer, nil, `[1]`, 400, "want an object"},
			{"unknown output", "POST", infer, nil, `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}],"outputs":[{"name":"z"}]}`, 400, "output tensor alias not found in signature: z"},
			{"unknown signature", "POST", infer, nil, `{"parameters":{"signature_name":"nope"},"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`, 400, `Serving signature key "nope" not found`},
			{"signature_name not a string", "POST", infer, nil, `{"parameters":{"signature_name":3},"inputs":[]}`, 400, `parameter "signature_name": want a string, not a number`},
			{"object parameter", "POST", infer, nil, `{"parameters":{"p":{}},"inputs":[]}`, 400, `parameter "p": want a string, number or boolean`},
			{"timeout", "POST", infer, nil, `{"parameters":{"timeout":1},"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`, 504, "deadline"},
			{"negative timeout", "POST", infer, nil, `{"parameters":{"timeout":-1},"inputs":[]}`, 400, "negative timeout"},
			{"classification", "POST", infer, nil, `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}],"outputs":[{"name":"y","parameters":{"classification":2}}]}`, 400, "classification extension is not supported"},
			{"binary size too large", "POST", infer, binHeader(xbin("[1,1]", 8)), xbin("[1,1]", 8) + "\x00\x00\x80\x3f", 400, "binary_data_size 8, but only 4 bytes of binary data are left"},
			{"binary size wrong for shape", "POST", infer, binHeader(xbin("[2,1]", 4)), xbin("[2,1]", 4) + "\x00\x00\x80\x3f", 400, "4 bytes of FP32 data for shape [2 1], want 8"},
			{"binary left over", "POST", infer, binHeader(xbin("[1,1]", 4)), xbin("[1,1]", 4) + "\x00\x00\x80\x3f\x00", 400, "1 bytes of binary data follow the inputs' data"},
			{"binary and data", "POST", infer, nil, `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1],"parameters":{"binary_data_size":4}}]}`, 400, `input "x" has both binary_data_size and data`},
			{"header length past the body", "POST", infer, http.Header{kserve.HeaderLengthHeader: {"1000"}}, x("FP32", "[1,1]", "[1]"), 400, "does not fit the"},
			{"unknown content encoding", "POST", infer, http.Header{"Content-Encoding": {"br"}}, x("FP32", "[1,1]", "[1]"), 400, `unsupported Content-Encoding "br"`},
			{"bad gzip", "POST", infer, http.Header{"Content-Encoding": {"gzip"}}, x("FP32", "[1,1]", "[1]"), 400, "decompressing the request body"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(t, tc.method, tc.path, tc.header, []byte(tc.body))
				require.Equal(t, tc.status, r.status, "%s", r.body)
				require.Equal(t, "application/json", r.header.Get("Content-Type"))
				msg, ok := jsonOf(t, r.body)["error"].(string)
				require.True(t, ok, "%s", r.body)
				require.Contains(t, msg, tc.msg)
				e.checkGood(t)
			})
		}
	})
}

// TestGRPCHalfPlusTwo: the GRPCInferenceService through the generated
// client, raw and typed contents, and errors as status codes.
func TestGRPCHalfPlusTwo(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	e := start(t, ctx)
	c := e.grpc

	live, err := c.ServerLive(ctx, &pb.ServerLiveRequest{})
	require.NoError(t, err)
	require.True(t, live.Live)
	ready, err := c.ServerReady(ctx, &pb.ServerReadyRequest{})
	require.NoError(t, err)
	require.True(t, ready.Ready)
	for _, v := range []string{"", "123", "stable"} {
		mr, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: model, Version: v})
		require.NoError(t, err)
		require.True(t, mr.Ready, v)
	}
	sm, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	require.NoError(t, err)
	require.Equal(t, "gotflow", sm.Name)
	require.Equal(t, serving.Version, sm.Version)
	require.Equal(t, []string{"binary_tensor_data"}, sm.Extensions)
	md, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: model})
	require.NoError(t, err)
	require.Equal(t, model, md.Name)
	require.Equal(t, []string{"123"}, md.Versions)
	require.Equal(t, "tensorflow_savedmodel", md.Platform)
	require.Len(t, md.Inputs, 1)
	require.Equal(t, "x", md.Inputs[0].Name)
	require.Equal(t, "FP32", md.Inputs[0].Datatype)
	require.Equal(t, []int64{-1, 1}, md.Inputs[0].Shape)
	require.Len(t, md.Outputs, 1)
	require.Equal(t, "y", md.Outputs[0].Name)
	require.Equal(t, "FP32", md.Outputs[0].Datatype)
	require.Equal(t, []int64{-1, 1}, md.Outputs[0].Shape)

	t.Run("raw", func(t *testing.T) {
		req := rawFP32Request("x", []float32{1, 2, 5})
		req.Id = "r1"
		resp, err := c.ModelInfer(ctx, req)
		require.NoError(t, err)
		require.Equal(t, model, resp.ModelName)
		require.Equal(t, "123", resp.ModelVersion)
		require.Equal(t, "r1", resp.Id)
		require.Len(t, resp.Outputs, 1)
		require.Equal(t, "y", resp.Outputs[0].Name)
		require.Equal(t, "FP32", resp.Outputs[0].Datatype)
		require.Equal(t, []int64{3, 1}, resp.Outputs[0].Shape)
		require.Nil(t, resp.Outputs[0].Contents)
		require.Len(t, resp.RawOutputContents, 1)
		require.Equal(t, []float32{2.5, 3, 4.5}, float32s(t, resp.RawOutputContents[0]))
	})

	t.Run("typed", func(t *testing.T) {
		resp, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: model, ModelVersion: "stable",
			Inputs:  []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{3, 1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 5}}}},
			Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "y"}}})
		require.NoError(t, err)
		require.Empty(t, resp.RawOutputContents)
		require.Equal(t, []float32{2.5, 3, 4.5}, resp.Outputs[0].Contents.Fp32Contents)
	})

	t.Run("signature_name", func(t *testing.T) {
		req := rawFP32Request("inputs", []float32{1, 2, 5})
		req.Parameters = map[string]*pb.InferParameter{"signature_name": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "regress_x2_to_y3"}}}
		resp, err := c.ModelInfer(ctx, req)
		require.NoError(t, err)
		require.Equal(t, "outputs", resp.Outputs[0].Name)
		require.Equal(t, []float32{3.5, 4, 5.5}, float32s(t, resp.RawOutputContents[0]))
	})

	t.Run("bytes", func(t *testing.T) {
		resp, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: model,
			Parameters: map[string]*pb.InferParameter{"signature_name": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "regress_x_to_y"}}},
			Inputs:     []*pb.ModelInferRequest_InferInputTensor{{Name: "inputs", Datatype: "BYTES", Shape: []int64{2}, Contents: &pb.InferTensorContents{BytesContents: [][]byte{example(1), example(5)}}}}})
		require.NoError(t, err)
		require.Equal(t, []float32{2.5, 4.5}, resp.Outputs[0].Contents.Fp32Contents)
	})

	t.Run("errors", func(t *testing.T) {
		good := func() *pb.ModelInferRequest { return rawFP32Request("x", []float32{1}) }
		for _, tc := range []struct {
			name string
			call func() error
			code string
			msg  string
		}{
			{"unknown model", func() error {
				r := good()
				r.ModelName = "nope"
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "NotFound", "Latest(nope)"},
			{"unknown version", func() error {
				r := good()
				r.ModelVersion = "7"
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "NotFound", "Specific(half_plus_two, 7)"},
			{"unknown model metadata", func() error {
				_, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"})
				return err
			}, "NotFound", "nope"},
			{"unknown model ready", func() error {
				_, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "nope"})
				return err
			}, "NotFound", `model "nope" is not served`},
			{"unknown version ready", func() error {
				_, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: model, Version: "7"})
				return err
			}, "NotFound", "Could not find version 7"},
			{"wrong datatype", func() error {
				r := good()
				r.Inputs[0].Datatype = "INT32"
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "InvalidArgument", `input "x": got int32, the signature expects float32`},
			{"wrong raw size", func() error {
				r := good()
				r.Inputs[0].Shape = []int64{2, 1}
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "InvalidArgument", "4 bytes of FP32 data for shape [2 1], want 8"},
			{"wrong typed count", func() error {
				_, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: model,
					Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{3, 1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2}}}}})
				return err
			}, "InvalidArgument", "2 values in fp32_contents for shape [3 1] (3 elements)"},
			{"raw and typed", func() error {
				r := good()
				r.Inputs[0].Contents = &pb.InferTensorContents{Fp32Contents: []float32{1}}
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "InvalidArgument", "uses raw_input_contents"},
			{"raw count", func() error {
				r := good()
				r.RawInputContents = append(r.RawInputContents, nil)
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "InvalidArgument", "2 raw_input_contents for 1 inputs"},
			{"unknown output", func() error {
				r := good()
				r.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "z"}}
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "InvalidArgument", "output tensor alias not found in signature: z"},
			{"timeout", func() error {
				r := good()
				r.Parameters = map[string]*pb.InferParameter{"timeout": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 1}}}
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "DeadlineExceeded", "deadline"},
			{"signature_name type", func() error {
				r := good()
				r.Parameters = map[string]*pb.InferParameter{"signature_name": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 1}}}
				_, err := c.ModelInfer(ctx, r)
				return err
			}, "InvalidArgument", "want a string_param"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call()
				require.Error(t, err)
				require.Equal(t, tc.code, serving.Code(err).String(), "%v", err)
				require.Contains(t, serving.Message(err), tc.msg)
				e.checkGood(t)
			})
		}
	})
}

// TestReadyWhileLoading: a configured model with no version yet is not
// ready (400 over HTTP, false over gRPC), which is not an error.
func TestReadyWhileLoading(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	srv, err := serving.NewServer(ctx, serving.Config{Models: []serving.ModelConfig{{Name: "later", BasePath: t.TempDir()}}, PollInterval: -1})
	require.NoError(t, err)
	kserve.Register(srv)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(gl, hl) }()
	defer func() {
		srv.Close()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return after Close")
		}
	}()
	cl := &http.Client{Timeout: 30 * time.Second}
	for p, want := range map[string]int{"/v2/health/live": 200, "/v2/health/ready": 400, "/v2/models/later/ready": 400} {
		resp, err := cl.Get("http://" + hl.Addr().String() + p)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, p)
	}
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	mr, err := pb.NewGRPCInferenceServiceClient(conn).ModelReady(ctx, &pb.ModelReadyRequest{Name: "later"})
	require.NoError(t, err)
	require.False(t, mr.Ready)
	_, err = pb.NewGRPCInferenceServiceClient(conn).ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "later"})
	require.Equal(t, "NotFound", serving.Code(err).String(), "%v", err)
	require.False(t, errors.Is(err, context.DeadlineExceeded))
}

// TestConcurrentBatched: clients on both ports at once, with the
// server's batcher merging their requests; every answer is its own
// request's (y = 0.5x + 2 row for row).
func TestConcurrentBatched(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	e := startWith(t, ctx, &serving.BatchingParameters{MaxBatchSize: 16, BatchTimeout: 2 * time.Millisecond})
	const workers, requests = 6, 20
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			errs <- func() error {
				for i := range requests {
					xs := []float32{float32(w*1000 + i), float32(-w), 0.5}
					want := []float32{xs[0]/2 + 2, xs[1]/2 + 2, 2.25}
					var got []float32
					switch (w + i) % 3 {
					case 0:
						resp, err := e.grpc.ModelInfer(ctx, rawFP32Request("x", xs))
						if err != nil {
							return err
						}
						if len(resp.RawOutputContents) != 1 || len(resp.RawOutputContents[0]) != 12 {
							return fmt.Errorf("gRPC answer %v", resp)
						}
						got = float32sOf(resp.RawOutputContents[0])
					case 1:
						h, body := binaryBody(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"parameters":{"binary_data_size":12}}],"parameters":{"binary_data_output":true}}`, f32bytes(xs...))
						req, err := http.NewRequestWithContext(ctx, "POST", e.url+"/v2/models/"+model+"/infer", bytes.NewReader(body))
						if err != nil {
							return err
						}
						req.Header = h
						b, hdr, err := fetch(e.http, req)
						if err != nil {
							return err
						}
						n, err := strconv.Atoi(hdr.Get(kserve.HeaderLengthHeader))
						if err != nil || n+12 != len(b) {
							return fmt.Errorf("binary answer %q", b)
						}
						got = float32sOf(b[n:])
					default:
						js := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"data":[%v,%v,%v]}]}`, xs[0], xs[1], xs[2])
						req, err := http.NewRequestWithContext(ctx, "POST", e.url+"/v2/models/"+model+"/infer", strings.NewReader(js))
						if err != nil {
							return err
						}
						b, _, err := fetch(e.http, req)
						if err != nil {
							return err
						}
						var r struct{ Outputs []struct{ Data []float32 } }
						if err := json.Unmarshal(b, &r); err != nil || len(r.Outputs) != 1 {
							return fmt.Errorf("JSON answer %s: %v", b, err)
						}
						got = r.Outputs[0].Data
					}
					if fmt.Sprint(got) != fmt.Sprint(want) {
						return fmt.Errorf("worker %d request %d: x=%v answered %v, want %v", w, i, xs, got, want)
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		select {
		case err := <-errs:
			require.NoError(t, err)
		case <-ctx.Done():
			t.Fatal("clients did not finish")
		}
	}
}

// fetch runs an HTTP request that must succeed and reads its body.
func fetch(c *http.Client, req *http.Request) ([]byte, http.Header, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return b, resp.Header, err
}

func float32sOf(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}
