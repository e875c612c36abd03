package tfserving_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/tfserving"
)

// copyHalfPlusTwo copies TF's half_plus_two SavedModel into base/123.
func copyHalfPlusTwo(t *testing.T, base string) { testmodels.HalfPlusTwo(t, base, 123) }

// startREST serves half_plus_two's REST API on a loopback port.
func startREST(t *testing.T, cfg serving.Config) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	base := t.TempDir()
	copyHalfPlusTwo(t, base)
	cfg.Models = []serving.ModelConfig{{Name: "half_plus_two", BasePath: base}}
	s, err := serving.NewServer(ctx, cfg)
	require.NoError(t, err)
	tfserving.RegisterREST(s)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(nil, lis) }()
	t.Cleanup(func() {
		s.Close()
		require.NoError(t, <-done)
	})
	require.NoError(t, s.WaitReady(ctx))
	return "http://" + lis.Addr().String()
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// squash removes the whitespace TF Serving's pretty printing adds.
func squash(s string) string { return strings.Join(strings.Fields(s), "") }

// TestRESTHalfPlusTwo: the REST API answers what TF Serving answers for
// half_plus_two (y = 0.5x + 2; y3 = 0.5x2 + 3): predict in the row and
// columnar formats, NaN and Infinity, classify and regress on tf.Examples,
// status and metadata.
func TestRESTHalfPlusTwo(t *testing.T) {
	url := startREST(t, serving.Config{}) + "/v1/models/half_plus_two"
	for _, tc := range []struct{ path, body, want string }{
		{":predict", `{"instances": [1.0, 2.0, 5.0]}`, `{"predictions":[2.5,3.0,4.5]}`},
		{"/versions/123:predict", `{"instances": [[1.0], [2.0]]}`, `{"predictions":[[2.5],[3.0]]}`},
		{":predict", `{"inputs": [1.0, 2.0, 5.0]}`, `{"outputs":[2.5,3.0,4.5]}`},
		{":predict", `{"inputs": {"x": [[1.0], [2.0]]}}`, `{"outputs":[[2.5],[3.0]]}`},
		{":predict", `{"instances": [{"x": 1}, {"x": -4e1}]}`, `{"predictions":[2.5,-18.0]}`},
		{":predict", `{"instances": [NaN, Infinity, -Infinity]}`, `{"predictions":[NaN,Infinity,-Infinity]}`},
		{":predict", `{"instances": [[1.0], [NaN], [-2e0]]}`, `{"predictions":[[2.5],[NaN],[1.0]]}`},
		{":predict", `{"inputs": {"x": [[1], [2.5]]}}`, `{"outputs":[[2.5],[3.25]]}`},
		{":predict", `{"signature_name": "regress_x2_to_y3", "instances": [[1.0], [4.0]]}`, `{"predictions":[[3.5],[5.0]]}`},
		{":classify", `{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}`, `{"result":[[["",2.5]],[["",3.0]]]}`},
		{":regress", `{"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}`, `{"result":[2.5,3.0]}`},
		{":regress", `{"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}, {}]}`, `{"result":[4.0,4.0]}`},
	} {
		code, body := do(t, http.MethodPost, url+tc.path, tc.body)
		require.Equal(t, http.StatusOK, code, "%s %s: %s", tc.path, tc.body, body)
		require.Equal(t, tc.want, squash(body), "%s %s", tc.path, tc.body)
	}

	code, body := do(t, http.MethodGet, url, "")
	require.Equal(t, http.StatusOK, code, body)
	require.JSONEq(t, `{"model_version_status": [{"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}`, body)
	code, body = do(t, http.MethodGet, url+"/versions/123/metadata", "")
	require.Equal(t, http.StatusOK, code, body)
	var md struct {
		ModelSpec struct{ Name, Version string } `json:"model_spec"`
		Metadata  struct {
			SignatureDef struct {
				SignatureDef map[string]struct {
					Inputs     map[string]struct{ Dtype, Name string }
					MethodName string `json:"method_name"`
				} `json:"signature_def"`
			} `json:"signature_def"`
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &md), body)
	require.Equal(t, "half_plus_two", md.ModelSpec.Name)
	require.Equal(t, "123", md.ModelSpec.Version)
	def := md.Metadata.SignatureDef.SignatureDef["serving_default"]
	require.Equal(t, "tensorflow/serving/predict", def.MethodName)
	require.Equal(t, "DT_FLOAT", def.Inputs["x"].Dtype)
	require.Equal(t, "x:0", def.Inputs["x"].Name)
	require.Len(t, md.Metadata.SignatureDef.SignatureDef, 6)
}

// TestRESTBadInput: each bad request gets TF Serving's status and a
// {"error": ...} naming the problem, and the server keeps serving.
func TestRESTBadInput(t *testing.T) {
	url := startREST(t, serving.Config{MaxRequestBytes: 1 << 10}) + "/v1/models/"
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"malformed JSON", "POST", "half_plus_two:predict", `{"instances": [1.0,`, 400, "JSON Parse error"},
		{"not an object", "POST", "half_plus_two:predict", `[1]`, 400, "Is not an object"},
		{"both formats", "POST", "half_plus_two:predict", `{"instances": [1], "inputs": [1]}`, 400, "expecting only one of 'inputs' or 'instances'"},
		{"neither format", "POST", "half_plus_two:predict", `{"signature_name": "serving_default"}`, 400, "Missing 'inputs' or 'instances' key"},
		{"ragged", "POST", "half_plus_two:predict", `{"instances": [[1.0], [2.0, 3.0]]}`, 400, "ragged list"},
		{"wrong type", "POST", "half_plus_two:predict", `{"instances": ["a"]}`, 400, "expected a number for a float32 tensor"},
		{"wrong shape", "POST", "half_plus_two:predict", `{"instances": [[1.0, 2.0]]}`, 400, "does not match the signature's [-1 1]"},
		{"unknown input", "POST", "half_plus_two:predict", `{"inputs": {"z": [1.0]}}`, 400, "input tensor alias not found in signature: z"},
		{"unknown signature", "POST", "half_plus_two:predict", `{"signature_name": "nope", "instances": [1.0]}`, 400, `Serving signature key "nope" not found`},
		{"unknown model", "POST", "nope:predict", `{"instances": [1.0]}`, 404, "Servable not found for request: Latest(nope)"},
		{"unknown version", "POST", "half_plus_two/versions/9:predict", `{"instances": [1.0]}`, 404, "Specific(half_plus_two, 9)"},
		{"bad version", "POST", "half_plus_two/versions/x:predict", `{"instances": [1.0]}`, 400, `version "x" is not a positive integer`},
		{"unknown label", "GET", "half_plus_two/labels/stable", ``, 400, "Unrecognized servable version label: stable"},
		{"unknown verb", "POST", "half_plus_two:explain", `{}`, 400, "unknown method :explain"},
		{"classify on predict", "POST", "half_plus_two:classify", `{"examples": [{"x": 1.0}]}`, 400, ""},
		{"body over the limit", "POST", "half_plus_two:predict", `{"instances": [` + strings.Repeat("1.0,", 400) + `1.0]}`, 413, "larger than the limit of 1024 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, url+tc.path, tc.body)
			require.Equal(t, tc.code, code, body)
			var e struct{ Error string }
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			require.Contains(t, e.Error, tc.msg)
			require.NotEmpty(t, e.Error)
			code, body = do(t, "POST", url+"half_plus_two:predict", `{"instances": [2.0]}`)
			require.Equal(t, 200, code, body)
			require.Equal(t, `{"predictions":[3.0]}`, squash(body))
		})
	}
	_ = fmt.Sprint
}
