//go:build linux

package kserve_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/serving"
)

// TestTritonClient runs testdata/triton_client.py, which talks to the
// server with Triton's clients (tritonclient.http and tritonclient.grpc,
// from the Python in GOTFLOW_PYTHON): health, metadata, and inference
// over HTTP with binary tensors (the client's default) and JSON, with
// compressed bodies, over gRPC with raw contents, another signature by
// signature_name, BYTES inputs, and errors.
func TestTritonClient(t *testing.T) {
	py := os.Getenv("GOTFLOW_PYTHON")
	if py == "" {
		t.Skip("GOTFLOW_PYTHON is not set (a Python with tritonclient[http,grpc] and numpy)")
	}
	ctx := testCtx(t, 3*time.Minute)
	e := start(t, ctx)

	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(pctx, py, "testdata/triton_client.py",
		"--http", strings.TrimPrefix(e.url, "http://"), "--grpc", e.grpcAddr, "--model", model,
		"--examples", hex.EncodeToString(example(1))+","+hex.EncodeToString(example(5)))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost", "PYTHONUNBUFFERED=1")
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr:\n%s", stderr.String())

	var got struct {
		HTTP struct {
			Live, Ready       bool
			ModelReady        bool           `json:"model_ready"`
			ModelReady123     bool           `json:"model_ready_123"`
			UnknownModelReady bool           `json:"unknown_model_ready"`
			ServerMetadata    map[string]any `json:"server_metadata"`
			ModelMetadata     map[string]any `json:"model_metadata"`
			Binary            struct {
				SentBinaryDataSize *int `json:"sent_binary_data_size"`
				Y                  [][]float64
				Response           map[string]any
			}
			JSON struct {
				Y        [][]float64
				Response map[string]any
			}
			Compressed, Signature, Bytes map[string][][]float64
			UnknownModel                 map[string]string `json:"unknown_model"`
			WrongDatatype                map[string]string `json:"wrong_datatype"`
		}
		GRPC struct {
			Live, Ready    bool
			ModelReady     bool           `json:"model_ready"`
			ServerMetadata map[string]any `json:"server_metadata"`
			ModelMetadata  map[string]any `json:"model_metadata"`
			Infer          struct {
				Y            [][]float64
				ID           string
				ModelName    string `json:"model_name"`
				ModelVersion string `json:"model_version"`
				RawOutputs   int    `json:"raw_outputs"`
			}
			InferVersion     map[string][][]float64 `json:"infer_version"`
			Signature, Bytes map[string][][]float64
			UnknownModel     map[string]string `json:"unknown_model"`
		}
	}
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&got), "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())

	y := [][]float64{{2.5}, {3}, {4.5}}
	h := got.HTTP
	require.True(t, h.Live)
	require.True(t, h.Ready)
	require.True(t, h.ModelReady)
	require.True(t, h.ModelReady123)
	require.False(t, h.UnknownModelReady)
	require.Equal(t, map[string]any{"name": "gotflow", "version": serving.Version, "extensions": []any{"binary_tensor_data"}}, h.ServerMetadata)
	require.Equal(t, map[string]any{"name": model, "versions": []any{"123"}, "platform": "tensorflow_savedmodel",
		"inputs":  []any{map[string]any{"name": "x", "datatype": "FP32", "shape": []any{-1.0, 1.0}}},
		"outputs": []any{map[string]any{"name": "y", "datatype": "FP32", "shape": []any{-1.0, 1.0}}}}, h.ModelMetadata)

	require.NotNil(t, h.Binary.SentBinaryDataSize, "the client sent the input as JSON")
	require.Equal(t, 12, *h.Binary.SentBinaryDataSize)
	require.Equal(t, y, h.Binary.Y)
	require.Equal(t, map[string]any{"model_name": model, "model_version": "123", "id": "b1", "outputs": []any{
		map[string]any{"name": "y", "datatype": "FP32", "shape": []any{3.0, 1.0}, "parameters": map[string]any{"binary_data_size": 12.0}}}}, h.Binary.Response)
	require.Equal(t, y, h.JSON.Y)
	require.Equal(t, map[string]any{"model_name": model, "model_version": "123", "outputs": []any{
		map[string]any{"name": "y", "datatype": "FP32", "shape": []any{3.0, 1.0}, "data": []any{2.5, 3.0, 4.5}}}}, h.JSON.Response)
	require.Equal(t, y, h.Compressed["y"])
	require.Equal(t, [][]float64{{3.5}, {4}, {5.5}}, h.Signature["outputs"])
	require.Equal(t, [][]float64{{2.5}, {4.5}}, h.Bytes["outputs"])
	require.Equal(t, "404", h.UnknownModel["status"])
	require.Contains(t, h.UnknownModel["message"], "Servable not found for request: Latest(nope)")
	require.Equal(t, "400", h.WrongDatatype["status"])
	require.Contains(t, h.WrongDatatype["message"], `input "x": got float64, the signature expects float32`)

	g := got.GRPC
	require.True(t, g.Live)
	require.True(t, g.Ready)
	require.True(t, g.ModelReady)
	require.Equal(t, map[string]any{"name": "gotflow", "version": serving.Version, "extensions": []any{"binary_tensor_data"}}, g.ServerMetadata)
	// MessageToJson writes int64 as strings.
	require.Equal(t, map[string]any{"name": model, "versions": []any{"123"}, "platform": "tensorflow_savedmodel",
		"inputs":  []any{map[string]any{"name": "x", "datatype": "FP32", "shape": []any{"-1", "1"}}},
		"outputs": []any{map[string]any{"name": "y", "datatype": "FP32", "shape": []any{"-1", "1"}}}}, g.ModelMetadata)
	require.Equal(t, y, g.Infer.Y)
	require.Equal(t, "g1", g.Infer.ID)
	require.Equal(t, model, g.Infer.ModelName)
	require.Equal(t, "123", g.Infer.ModelVersion)
	require.Equal(t, 1, g.Infer.RawOutputs)
	require.Equal(t, y, g.InferVersion["y"])
	require.Equal(t, [][]float64{{3.5}, {4}, {5.5}}, g.Signature["outputs"])
	require.Equal(t, [][]float64{{2.5}, {4.5}}, g.Bytes["outputs"])
	require.Equal(t, "StatusCode.NOT_FOUND", g.UnknownModel["status"])
	require.Contains(t, g.UnknownModel["message"], "Servable not found for request: Latest(nope)")
}
