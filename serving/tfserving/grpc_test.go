package tfserving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	expb "github.com/wamuir/graft/tensorflow/core/example/example_protos_go_proto"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	tslpb "github.com/wamuir/graft/tensorflow/tsl/protobuf/for_core_protos_go_proto"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/tfserving"
	pb "github.com/gotflow/gotflow/serving/tfserving/tfservingpb"
)

const model = "half_plus_two"

// halfPlusTwoModel copies TF's half_plus_two SavedModel (shipped in
// graft's module) into a new base path as version 123. Its signatures:
// serving_default x→y = 0.5x+2 (float [-1,1]); classify_x2_to_y3 and
// regress_x2_to_y3 on a float x2 ("inputs") giving y3 = 0.5x2+3
// ("scores", "outputs"); classify_x_to_y and regress_x_to_y on serialized
// tf.Examples with a float feature "x" giving y ("scores", "outputs").
func halfPlusTwoModel(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	testmodels.HalfPlusTwo(t, base, 123)
	return base
}

type grpcClients struct {
	addr    string
	predict pb.PredictionServiceClient
	models  pb.ModelServiceClient
}

// startGRPC serves half_plus_two (label "stable" → 123) with the TF
// Serving gRPC API on a loopback port of the test process.
func startGRPC(t *testing.T, opts ...tfserving.Option) grpcClients {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := halfPlusTwoModel(t)
	s, err := serving.NewServer(ctx, serving.Config{
		Models:       []serving.ModelConfig{{Name: model, BasePath: base, Labels: map[string]int64{"stable": 123}}},
		PollInterval: -1,
	})
	require.NoError(t, err)
	tfserving.Register(s, opts...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis, nil) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			t.Error("Serve did not return after Close")
		}
	})
	require.NoError(t, s.WaitReady(ctx))
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return grpcClients{addr: lis.Addr().String(), predict: pb.NewPredictionServiceClient(conn), models: pb.NewModelServiceClient(conn)}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func floats(shape []int64, v ...float32) *tensorpb.TensorProto {
	p := &tensorpb.TensorProto{Dtype: typespb.DataType_DT_FLOAT, TensorShape: &tspb.TensorShapeProto{}, FloatVal: v}
	for _, d := range shape {
		p.TensorShape.Dim = append(p.TensorShape.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	return p
}

func shapeOf(p *tensorpb.TensorProto) []int64 {
	var out []int64
	for _, d := range p.GetTensorShape().GetDim() {
		out = append(out, d.GetSize())
	}
	return out
}

// outFloats decodes a float output in either encoding.
func outFloats(t *testing.T, p *tensorpb.TensorProto) []float32 {
	t.Helper()
	x, err := tfserving.FromTensorProto(p)
	require.NoError(t, err)
	v, err := serving.Values[float32](x)
	require.NoError(t, err)
	return v
}

func spec(name string, version int64, sig string) *pb.ModelSpec {
	ms := &pb.ModelSpec{Name: name, SignatureName: sig}
	if version != 0 {
		ms.VersionChoice = &pb.ModelSpec_Version{Version: wrapperspb.Int64(version)}
	}
	return ms
}

func example(features map[string]float32) *expb.Example {
	f := map[string]*expb.Feature{}
	for k, v := range features {
		f[k] = &expb.Feature{Kind: &expb.Feature_FloatList{FloatList: &expb.FloatList{Value: []float32{v}}}}
	}
	return &expb.Example{Features: &expb.Features{Feature: f}}
}

func requireCode(t *testing.T, err error, code codes.Code, contains ...string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, code, st.Code(), "%v", err)
	for _, c := range contains {
		require.Contains(t, st.Message(), c)
	}
}

// goodPredict checks that the server still answers.
func goodPredict(t *testing.T, c grpcClients) {
	t.Helper()
	resp, err := c.predict.Predict(callCtx(t), &pb.PredictRequest{ModelSpec: spec(model, 0, ""),
		Inputs: map[string]*tensorpb.TensorProto{"x": floats([]int64{1, 1}, 4)}})
	require.NoError(t, err)
	require.Equal(t, []float32{4}, outFloats(t, resp.Outputs["y"]))
}

// TestGRPCPredict: y = 0.5x + 2 exactly, from float_val and from
// tensor_content, by newest version, number and label; the response
// names the model, version 123 and the signature, and holds the output in
// float_val as TF Serving does (or in tensor_content with
// OutputsAsTensorContent); a
// classification signature runs through Predict too (y3 = 0.5x2 + 3).
func TestGRPCPredict(t *testing.T) {
	c := startGRPC(t)
	ctx := callCtx(t)

	for _, ms := range []*pb.ModelSpec{
		spec(model, 0, ""),
		spec(model, 123, "serving_default"),
		{Name: model, VersionChoice: &pb.ModelSpec_VersionLabel{VersionLabel: "stable"}},
	} {
		resp, err := c.predict.Predict(ctx, &pb.PredictRequest{ModelSpec: ms, Inputs: map[string]*tensorpb.TensorProto{"x": floats([]int64{3, 1}, 1, 2, 5)}})
		require.NoError(t, err)
		require.Equal(t, model, resp.ModelSpec.GetName())
		require.EqualValues(t, 123, resp.ModelSpec.GetVersion().GetValue())
		require.Equal(t, "serving_default", resp.ModelSpec.GetSignatureName())
		require.Len(t, resp.Outputs, 1)
		y := resp.Outputs["y"]
		require.Equal(t, typespb.DataType_DT_FLOAT, y.Dtype)
		require.Equal(t, []int64{3, 1}, shapeOf(y))
		require.Empty(t, y.TensorContent)
		require.Equal(t, []float32{2.5, 3, 4.5}, y.FloatVal)
	}

	// Input in tensor_content, shape [3] (the graph broadcasts).
	in, err := tfserving.FromTensorProto(floats([]int64{3}, 1, 2, 5))
	require.NoError(t, err)
	resp, err := c.predict.Predict(ctx, &pb.PredictRequest{ModelSpec: spec(model, 0, ""),
		Inputs: map[string]*tensorpb.TensorProto{"x": tfserving.ToTensorProto(in, true)}})
	require.NoError(t, err)
	require.Equal(t, []int64{3}, shapeOf(resp.Outputs["y"]))
	require.Equal(t, []float32{2.5, 3, 4.5}, outFloats(t, resp.Outputs["y"]))

	// Another signature, with an output filter.
	resp, err = c.predict.Predict(ctx, &pb.PredictRequest{ModelSpec: spec(model, 0, "classify_x2_to_y3"),
		Inputs: map[string]*tensorpb.TensorProto{"inputs": floats([]int64{2, 1}, 1, 4)}, OutputFilter: []string{"scores"}})
	require.NoError(t, err)
	require.Equal(t, "classify_x2_to_y3", resp.ModelSpec.GetSignatureName())
	require.Equal(t, []float32{3.5, 5}, outFloats(t, resp.Outputs["scores"]))

	t.Run("OutputsAsTensorContent", func(t *testing.T) {
		c := startGRPC(t, tfserving.OutputsAsTensorContent())
		resp, err := c.predict.Predict(callCtx(t), &pb.PredictRequest{ModelSpec: spec(model, 0, ""),
			Inputs: map[string]*tensorpb.TensorProto{"x": floats([]int64{3, 1}, 1, 2, 5)}})
		require.NoError(t, err)
		y := resp.Outputs["y"]
		require.Empty(t, y.FloatVal)
		require.Len(t, y.TensorContent, 12)
		require.Equal(t, []float32{2.5, 3, 4.5}, outFloats(t, y))
		require.Equal(t, []int64{3, 1}, shapeOf(y))
	})
}

// TestGRPCClassifyRegress: tf.Examples x = 1, 2 through classify_x_to_y
// and regress_x_to_y give what TF Serving gives for this model: y = 0.5x
// + 2, i.e. 2.5 and 3; the classification signature has only "scores",
// so each example gets one class with an empty label and the score.
// With a context, the context's bytes precede each example's, so an
// example's own feature wins and one without it takes the context's.
func TestGRPCClassifyRegress(t *testing.T) {
	c := startGRPC(t)
	ctx := callCtx(t)
	input := &pb.Input{Kind: &pb.Input_ExampleList{ExampleList: &pb.ExampleList{Examples: []*expb.Example{
		example(map[string]float32{"x": 1}), example(map[string]float32{"x": 2}),
	}}}}

	cr, err := c.predict.Classify(ctx, &pb.ClassificationRequest{ModelSpec: spec(model, 0, "classify_x_to_y"), Input: input})
	require.NoError(t, err)
	require.Equal(t, "classify_x_to_y", cr.ModelSpec.GetSignatureName())
	require.EqualValues(t, 123, cr.ModelSpec.GetVersion().GetValue())
	require.Len(t, cr.Result.Classifications, 2)
	for i, want := range []float32{2.5, 3} {
		cls := cr.Result.Classifications[i].Classes
		require.Len(t, cls, 1)
		require.Equal(t, "", cls[0].Label)
		require.Equal(t, want, cls[0].Score)
	}

	rr, err := c.predict.Regress(ctx, &pb.RegressionRequest{ModelSpec: spec(model, 123, "regress_x_to_y"), Input: input})
	require.NoError(t, err)
	require.Equal(t, "regress_x_to_y", rr.ModelSpec.GetSignatureName())
	require.EqualValues(t, 123, rr.ModelSpec.GetVersion().GetValue())
	require.Len(t, rr.Result.Regressions, 2)
	require.Equal(t, float32(2.5), rr.Result.Regressions[0].Value)
	require.Equal(t, float32(3), rr.Result.Regressions[1].Value)

	withContext := &pb.Input{Kind: &pb.Input_ExampleListWithContext{ExampleListWithContext: &pb.ExampleListWithContext{
		Context:  example(map[string]float32{"x": 7}),
		Examples: []*expb.Example{example(nil), example(map[string]float32{"x": 2})},
	}}}
	rr, err = c.predict.Regress(ctx, &pb.RegressionRequest{ModelSpec: spec(model, 0, "regress_x_to_y"), Input: withContext})
	require.NoError(t, err)
	require.Equal(t, float32(5.5), rr.Result.Regressions[0].Value)
	require.Equal(t, float32(3), rr.Result.Regressions[1].Value)

	mr, err := c.predict.MultiInference(ctx, &pb.MultiInferenceRequest{Input: input, Tasks: []*pb.InferenceTask{
		{ModelSpec: spec(model, 0, "classify_x_to_y"), MethodName: tfserving.ClassifyMethodName},
		{ModelSpec: spec(model, 0, "regress_x_to_y"), MethodName: tfserving.RegressMethodName},
	}})
	require.NoError(t, err)
	require.Len(t, mr.Results, 2)
	require.Equal(t, float32(3), mr.Results[0].GetClassificationResult().Classifications[1].Classes[0].Score)
	require.Equal(t, float32(2.5), mr.Results[1].GetRegressionResult().Regressions[0].Value)
	require.Equal(t, "regress_x_to_y", mr.Results[1].ModelSpec.GetSignatureName())

	// Refusals, each followed by a request that works.
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  []string
	}{
		{"unknown signature", func() error {
			_, err := c.predict.Classify(ctx, &pb.ClassificationRequest{ModelSpec: spec(model, 0, "nope"), Input: input})
			return err
		}, codes.InvalidArgument, []string{"No signature was found with the name: nope"}},
		{"classify on a regression signature", func() error {
			_, err := c.predict.Classify(ctx, &pb.ClassificationRequest{ModelSpec: spec(model, 0, "regress_x_to_y"), Input: input})
			return err
		}, codes.InvalidArgument, []string{"Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/regress"}},
		{"regress on the predict signature", func() error {
			_, err := c.predict.Regress(ctx, &pb.RegressionRequest{ModelSpec: spec(model, 0, ""), Input: input})
			return err
		}, codes.InvalidArgument, []string{"Expected regression signature method_name"}},
		{"examples fed to a float input", func() error {
			_, err := c.predict.Regress(ctx, &pb.RegressionRequest{ModelSpec: spec(model, 0, "regress_x2_to_y3"), Input: input})
			return err
		}, codes.InvalidArgument, []string{"inputs"}},
		{"no examples", func() error {
			_, err := c.predict.Regress(ctx, &pb.RegressionRequest{ModelSpec: spec(model, 0, "regress_x_to_y"), Input: &pb.Input{}})
			return err
		}, codes.InvalidArgument, []string{"Input is empty."}},
		{"unknown model", func() error {
			_, err := c.predict.Classify(ctx, &pb.ClassificationRequest{ModelSpec: spec("nope", 0, "classify_x_to_y"), Input: input})
			return err
		}, codes.NotFound, nil},
		{"multi-inference across models", func() error {
			_, err := c.predict.MultiInference(ctx, &pb.MultiInferenceRequest{Input: input, Tasks: []*pb.InferenceTask{
				{ModelSpec: spec(model, 0, "classify_x_to_y"), MethodName: tfserving.ClassifyMethodName},
				{ModelSpec: spec("other", 0, "regress_x_to_y"), MethodName: tfserving.RegressMethodName},
			}})
			return err
		}, codes.InvalidArgument, []string{"same model name"}},
		{"multi-inference with a predict task", func() error {
			_, err := c.predict.MultiInference(ctx, &pb.MultiInferenceRequest{Input: input, Tasks: []*pb.InferenceTask{
				{ModelSpec: spec(model, 0, ""), MethodName: tfserving.PredictMethodName},
			}})
			return err
		}, codes.Unimplemented, []string{"Unsupported signature method_name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, tc.call(), tc.code, tc.msg...)
			goodPredict(t, c)
		})
	}
}

// TestGRPCMetadata: the signature_def metadata is an Any holding a
// SignatureDefMap of the model's six signatures; the response names the
// model and version 123. Missing or unknown metadata fields are refused.
func TestGRPCMetadata(t *testing.T) {
	c := startGRPC(t)
	ctx := callCtx(t)
	resp, err := c.predict.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{ModelSpec: spec(model, 0, ""), MetadataField: []string{"signature_def"}})
	require.NoError(t, err)
	require.Equal(t, model, resp.ModelSpec.GetName())
	require.EqualValues(t, 123, resp.ModelSpec.GetVersion().GetValue())
	a := resp.Metadata["signature_def"]
	require.NotNil(t, a)
	require.Equal(t, "type.googleapis.com/tensorflow.serving.SignatureDefMap", a.TypeUrl)
	var sdm pb.SignatureDefMap
	require.NoError(t, a.UnmarshalTo(&sdm))
	require.Len(t, sdm.SignatureDef, 6)
	sd := sdm.SignatureDef["serving_default"]
	require.Equal(t, tfserving.PredictMethodName, sd.MethodName)
	require.Equal(t, "x:0", sd.Inputs["x"].GetName())
	require.Equal(t, typespb.DataType_DT_FLOAT, sd.Inputs["x"].Dtype)
	require.Equal(t, "y:0", sd.Outputs["y"].GetName())
	require.Equal(t, tfserving.ClassifyMethodName, sdm.SignatureDef["classify_x_to_y"].MethodName)
	require.Equal(t, tfserving.RegressMethodName, sdm.SignatureDef["regress_x2_to_y3"].MethodName)

	_, err = c.predict.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{ModelSpec: spec(model, 0, "")})
	requireCode(t, err, codes.InvalidArgument, "must specify at least one metadata_field")
	_, err = c.predict.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{ModelSpec: spec(model, 0, ""), MetadataField: []string{"signature_def", "graph"}})
	requireCode(t, err, codes.InvalidArgument, "Metadata field graph is not supported")
	_, err = c.predict.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{MetadataField: []string{"signature_def"}})
	requireCode(t, err, codes.InvalidArgument, "Missing ModelSpec")
	_, err = c.predict.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{ModelSpec: spec("nope", 0, ""), MetadataField: []string{"signature_def"}})
	requireCode(t, err, codes.NotFound)
	_, err = c.predict.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{ModelSpec: spec(model, 9, ""), MetadataField: []string{"signature_def"}})
	requireCode(t, err, codes.NotFound)
}

// TestGRPCModelStatus: version 123 is AVAILABLE with an OK status, for
// the model and for the version; unknown versions and models are
// NOT_FOUND; config reloads are Unimplemented.
func TestGRPCModelStatus(t *testing.T) {
	c := startGRPC(t)
	ctx := callCtx(t)
	for _, v := range []int64{0, 123} {
		resp, err := c.models.GetModelStatus(ctx, &pb.GetModelStatusRequest{ModelSpec: spec(model, v, "")})
		require.NoError(t, err)
		require.Len(t, resp.ModelVersionStatus, 1)
		st := resp.ModelVersionStatus[0]
		require.EqualValues(t, 123, st.Version)
		require.Equal(t, pb.ModelVersionStatus_AVAILABLE, st.State)
		require.Equal(t, tslpb.Code_OK, st.GetStatus().GetErrorCode())
		require.Empty(t, st.GetStatus().GetErrorMessage())
	}
	_, err := c.models.GetModelStatus(ctx, &pb.GetModelStatusRequest{ModelSpec: spec(model, 7, "")})
	requireCode(t, err, codes.NotFound, "Could not find version 7 of model half_plus_two")
	_, err = c.models.GetModelStatus(ctx, &pb.GetModelStatusRequest{ModelSpec: spec("nope", 0, "")})
	requireCode(t, err, codes.NotFound)
	_, err = c.models.GetModelStatus(ctx, &pb.GetModelStatusRequest{})
	requireCode(t, err, codes.InvalidArgument, "Missing ModelSpec")
	_, err = c.models.HandleReloadConfigRequest(ctx, &pb.ReloadConfigRequest{})
	requireCode(t, err, codes.Unimplemented, "HandleReloadConfigRequest")
	goodPredict(t, c)
}

// TestGRPCPredictErrors: bad requests get TF Serving's codes (NOT_FOUND
// for an unknown model or version, FAILED_PRECONDITION for an unknown
// signature, INVALID_ARGUMENT for the rest) with messages naming what is
// wrong, and the server answers the next request.
func TestGRPCPredictErrors(t *testing.T) {
	c := startGRPC(t)
	x := floats([]int64{1, 1}, 1)
	for _, tc := range []struct {
		name string
		req  *pb.PredictRequest
		code codes.Code
		msg  []string
	}{
		{"unknown model", &pb.PredictRequest{ModelSpec: spec("nope", 0, ""), Inputs: map[string]*tensorpb.TensorProto{"x": x}},
			codes.NotFound, []string{"nope"}},
		{"unknown version", &pb.PredictRequest{ModelSpec: spec(model, 9, ""), Inputs: map[string]*tensorpb.TensorProto{"x": x}},
			codes.NotFound, []string{"Specific(half_plus_two, 9)"}},
		{"version zero", &pb.PredictRequest{ModelSpec: &pb.ModelSpec{Name: model, VersionChoice: &pb.ModelSpec_Version{Version: wrapperspb.Int64(0)}},
			Inputs: map[string]*tensorpb.TensorProto{"x": x}}, codes.NotFound, nil},
		{"unknown label", &pb.PredictRequest{ModelSpec: &pb.ModelSpec{Name: model, VersionChoice: &pb.ModelSpec_VersionLabel{VersionLabel: "canary"}},
			Inputs: map[string]*tensorpb.TensorProto{"x": x}}, codes.InvalidArgument, []string{"canary"}},
		{"unknown signature", &pb.PredictRequest{ModelSpec: spec(model, 0, "nope"), Inputs: map[string]*tensorpb.TensorProto{"x": x}},
			codes.FailedPrecondition, []string{`Serving signature key "nope" not found`}},
		{"wrong dtype", &pb.PredictRequest{ModelSpec: spec(model, 0, ""), Inputs: map[string]*tensorpb.TensorProto{"x": {
			Dtype: typespb.DataType_DT_DOUBLE, TensorShape: &tspb.TensorShapeProto{Dim: []*tspb.TensorShapeProto_Dim{{Size: 1}, {Size: 1}}}, DoubleVal: []float64{1}}}},
			codes.InvalidArgument, []string{"x", "float"}},
		{"missing input", &pb.PredictRequest{ModelSpec: spec(model, 0, "")},
			codes.InvalidArgument, []string{"Missing but required: {x}"}},
		{"unknown input", &pb.PredictRequest{ModelSpec: spec(model, 0, ""), Inputs: map[string]*tensorpb.TensorProto{"x": x, "z": x}},
			codes.InvalidArgument, []string{"input tensor alias not found in signature: z"}},
		{"unknown output", &pb.PredictRequest{ModelSpec: spec(model, 0, ""), Inputs: map[string]*tensorpb.TensorProto{"x": x}, OutputFilter: []string{"w"}},
			codes.InvalidArgument, []string{"output tensor alias not found in signature: w"}},
		{"tensor_content of the wrong size", &pb.PredictRequest{ModelSpec: spec(model, 0, ""), Inputs: map[string]*tensorpb.TensorProto{"x": {
			Dtype: typespb.DataType_DT_FLOAT, TensorShape: &tspb.TensorShapeProto{Dim: []*tspb.TensorShapeProto_Dim{{Size: 2}, {Size: 1}}}, TensorContent: []byte{1, 2, 3, 4}}}},
			codes.InvalidArgument, []string{"tensor parsing error: x"}},
		{"unsupported dtype", &pb.PredictRequest{ModelSpec: spec(model, 0, ""), Inputs: map[string]*tensorpb.TensorProto{"x": {
			Dtype: typespb.DataType_DT_COMPLEX64, TensorShape: &tspb.TensorShapeProto{}, ScomplexVal: []float32{1, 0}}}},
			codes.InvalidArgument, []string{"tensor parsing error: x", "DT_COMPLEX64"}},
		{"no model name", &pb.PredictRequest{Inputs: map[string]*tensorpb.TensorProto{"x": x}},
			codes.InvalidArgument, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.predict.Predict(callCtx(t), tc.req)
			requireCode(t, err, tc.code, tc.msg...)
			goodPredict(t, c)
		})
	}
}

// TestPythonClient runs TF Serving's own Python client
// (tensorflow-serving-api's PredictionServiceStub, tf.make_tensor_proto,
// tf.make_ndarray) against the server: Predict, GetModelMetadata,
// Classify, Regress and an unknown model, with the values the model's
// formulas give.
func TestPythonClient(t *testing.T) {
	python := os.Getenv("GOTFLOW_PYTHON")
	if python == "" {
		t.Skip("GOTFLOW_PYTHON is not set")
	}
	c := startGRPC(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, filepath.Join("testdata", "grpc_client.py"), c.addr, model)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=3", "CUDA_VISIBLE_DEVICES=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "stderr:\n%s", stderr.String())

	type modelSpec struct {
		Name          string `json:"name"`
		Version       int64  `json:"version"`
		SignatureName string `json:"signature_name"`
	}
	type tensorInfo struct {
		Name  string  `json:"name"`
		DType string  `json:"dtype"`
		Shape []int64 `json:"shape"`
	}
	var got struct {
		Predict struct {
			ModelSpec modelSpec `json:"model_spec"`
			Outputs   []string  `json:"outputs"`
			DType     string    `json:"dtype"`
			Shape     []int64   `json:"shape"`
			Y         []float64 `json:"y"`
		} `json:"predict"`
		PredictX2 struct {
			ModelSpec modelSpec `json:"model_spec"`
			Y3        []float64 `json:"y3"`
		} `json:"predict_x2"`
		Metadata struct {
			ModelSpec      modelSpec         `json:"model_spec"`
			TypeURL        string            `json:"type_url"`
			Methods        map[string]string `json:"methods"`
			ServingDefault struct {
				Inputs  map[string]tensorInfo `json:"inputs"`
				Outputs map[string]tensorInfo `json:"outputs"`
			} `json:"serving_default"`
		} `json:"metadata"`
		Classify struct {
			ModelSpec       modelSpec `json:"model_spec"`
			Classifications [][]struct {
				Label string  `json:"label"`
				Score float64 `json:"score"`
			} `json:"classifications"`
		} `json:"classify"`
		Regress struct {
			ModelSpec modelSpec `json:"model_spec"`
			Values    []float64 `json:"values"`
		} `json:"regress"`
		UnknownModel string `json:"unknown_model"`
	}
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&got), "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())

	require.Equal(t, modelSpec{model, 123, "serving_default"}, got.Predict.ModelSpec)
	require.Equal(t, []string{"y"}, got.Predict.Outputs)
	require.Equal(t, "float32", got.Predict.DType)
	require.Equal(t, []int64{3, 1}, got.Predict.Shape)
	require.Equal(t, []float64{2.5, 3, 4.5}, got.Predict.Y)

	require.Equal(t, modelSpec{model, 123, "regress_x2_to_y3"}, got.PredictX2.ModelSpec)
	require.Equal(t, []float64{3.5, 5}, got.PredictX2.Y3)

	require.Equal(t, modelSpec{model, 123, ""}, got.Metadata.ModelSpec)
	require.Equal(t, "type.googleapis.com/tensorflow.serving.SignatureDefMap", got.Metadata.TypeURL)
	require.Equal(t, map[string]string{
		"serving_default":   tfserving.PredictMethodName,
		"classify_x_to_y":   tfserving.ClassifyMethodName,
		"classify_x2_to_y3": tfserving.ClassifyMethodName,
		"regress_x_to_y":    tfserving.RegressMethodName,
		"regress_x_to_y2":   tfserving.RegressMethodName,
		"regress_x2_to_y3":  tfserving.RegressMethodName,
	}, got.Metadata.Methods)
	require.Equal(t, map[string]tensorInfo{"x": {"x:0", "float32", []int64{-1, 1}}}, got.Metadata.ServingDefault.Inputs)
	require.Equal(t, map[string]tensorInfo{"y": {"y:0", "float32", []int64{-1, 1}}}, got.Metadata.ServingDefault.Outputs)

	require.Equal(t, modelSpec{model, 123, "classify_x_to_y"}, got.Classify.ModelSpec)
	require.Len(t, got.Classify.Classifications, 2)
	for i, want := range []float64{2.5, 3} {
		require.Len(t, got.Classify.Classifications[i], 1)
		require.Equal(t, "", got.Classify.Classifications[i][0].Label)
		require.Equal(t, want, got.Classify.Classifications[i][0].Score)
	}
	require.Equal(t, modelSpec{model, 123, "regress_x_to_y"}, got.Regress.ModelSpec)
	require.Equal(t, []float64{2.5, 3}, got.Regress.Values)
	require.Equal(t, "NOT_FOUND", got.UnknownModel)
}
