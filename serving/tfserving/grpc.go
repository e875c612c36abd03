package tfserving

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	expb "github.com/wamuir/graft/tensorflow/core/example/example_protos_go_proto"
	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	tslpb "github.com/wamuir/graft/tensorflow/tsl/protobuf/for_core_protos_go_proto"

	"github.com/gotflow/gotflow/serving"
	pb "github.com/gotflow/gotflow/serving/tfserving/tfservingpb"
	"github.com/gotflow/gotflow/tf"
)

// The method names of TF Serving's signatures and the aliases its
// Classify and Regress APIs use.
const (
	PredictMethodName  = "tensorflow/serving/predict"
	ClassifyMethodName = "tensorflow/serving/classify"
	RegressMethodName  = "tensorflow/serving/regress"

	classifyInputs  = "inputs"
	classifyClasses = "classes"
	classifyScores  = "scores"
	regressInputs   = "inputs"
	regressOutputs  = "outputs"

	// signatureDefField is the one metadata field GetModelMetadata serves.
	signatureDefField = "signature_def"
)

// Option changes how Register's services answer.
type Option func(*grpcOptions)

type grpcOptions struct {
	tensorContent bool
}

// OutputsAsTensorContent makes Predict return numeric outputs as raw
// bytes in the TensorProto's tensor_content, as TF Serving does when
// started with --enable_serialization_as_tensor_content: faster for large
// outputs. Without it they are in the typed fields (float_val,
// int64_val, ...), TF Serving's default. Strings are in string_val either
// way. Clients that decode with tf.make_ndarray read both.
func OutputsAsTensorContent() Option { return func(o *grpcOptions) { o.tensorContent = true } }

// Register registers TF Serving's gRPC services on s.GRPC():
// tensorflow.serving.PredictionService (Predict, GetModelMetadata,
// Classify, Regress, MultiInference) and tensorflow.serving.ModelService
// (GetModelStatus; HandleReloadConfigRequest answers Unimplemented). Call
// it before s.Serve.
func Register(s *serving.Server, opts ...Option) {
	g := &grpcService{s: s}
	for _, o := range opts {
		o(&g.opts)
	}
	pb.RegisterPredictionServiceServer(s.GRPC(), &predictionService{g: g})
	pb.RegisterModelServiceServer(s.GRPC(), &modelService{g: g})
}

type grpcService struct {
	s    *serving.Server
	opts grpcOptions
}

type predictionService struct {
	pb.UnimplementedPredictionServiceServer
	g *grpcService
}

type modelService struct {
	pb.UnimplementedModelServiceServer
	g *grpcService
}

// target is the version a ModelSpec asks for.
type target struct {
	name    string
	version int64 // 0: newest, or the label's
	label   string
}

// targetOf reads a ModelSpec's name and version choice. An explicit
// version that is not positive names no servable, as in TF Serving.
func targetOf(ms *pb.ModelSpec) (target, error) {
	t := target{name: ms.GetName(), label: ms.GetVersionLabel()}
	if v := ms.GetVersion(); v != nil {
		if v.GetValue() <= 0 {
			return t, serving.NotFound("Servable not found for request: Specific(%s, %d)", t.name, v.GetValue())
		}
		t.version = v.GetValue()
	}
	return t, nil
}

// signatureKey is the signature a ModelSpec names, serving_default when
// it names none.
func signatureKey(ms *pb.ModelSpec) string {
	if k := ms.GetSignatureName(); k != "" {
		return k
	}
	return serving.DefaultSignature
}

// responseSpec is the model_spec of a response: the request's name, the
// version that answered and, when sig is not empty, the signature.
func responseSpec(name string, version int64, sig string) *pb.ModelSpec {
	return &pb.ModelSpec{Name: name, SignatureName: sig, VersionChoice: &pb.ModelSpec_Version{Version: wrapperspb.Int64(version)}}
}

// Predict runs a signature on the request's input tensors.
func (p *predictionService) Predict(ctx context.Context, req *pb.PredictRequest) (*pb.PredictResponse, error) {
	resp, err := p.g.predict(ctx, req)
	return resp, serving.AsStatus(err)
}

func (g *grpcService) predict(ctx context.Context, req *pb.PredictRequest) (*pb.PredictResponse, error) {
	tg, err := targetOf(req.GetModelSpec())
	if err != nil {
		return nil, err
	}
	aliases := make([]string, 0, len(req.GetInputs()))
	for alias := range req.GetInputs() {
		aliases = append(aliases, alias)
	}
	sort.Strings(aliases)
	inputs := make(map[string]*serving.Tensor, len(aliases))
	for _, alias := range aliases {
		t, err := FromTensorProto(req.GetInputs()[alias])
		if err != nil {
			return nil, serving.InvalidArgument("tensor parsing error: %s (%v)", alias, err)
		}
		inputs[alias] = t
	}
	key := signatureKey(req.GetModelSpec())
	res, err := g.s.Predict(ctx, &serving.Request{
		Model: tg.name, Version: tg.version, Label: tg.label, Signature: key,
		Inputs: inputs, Outputs: req.GetOutputFilter(), API: serving.APIGRPC,
	})
	if err != nil {
		return nil, err
	}
	out := &pb.PredictResponse{ModelSpec: responseSpec(tg.name, res.Version, key), Outputs: make(map[string]*tensorpb.TensorProto, len(res.Order))}
	for _, alias := range res.Order {
		if t := res.Outputs[alias]; t != nil {
			out.Outputs[alias] = ToTensorProto(t, g.opts.tensorContent)
		}
	}
	return out, nil
}

// GetModelMetadata returns a version's signatures.
func (p *predictionService) GetModelMetadata(ctx context.Context, req *pb.GetModelMetadataRequest) (*pb.GetModelMetadataResponse, error) {
	resp, err := p.g.metadata(req)
	return resp, serving.AsStatus(err)
}

func (g *grpcService) metadata(req *pb.GetModelMetadataRequest) (*pb.GetModelMetadataResponse, error) {
	if req.GetModelSpec() == nil {
		return nil, serving.InvalidArgument("Missing ModelSpec")
	}
	if len(req.GetMetadataField()) == 0 {
		return nil, serving.InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
	}
	for _, f := range req.GetMetadataField() {
		if f != signatureDefField {
			return nil, serving.InvalidArgument("Metadata field %s is not supported", f)
		}
	}
	tg, err := targetOf(req.GetModelSpec())
	if err != nil {
		return nil, err
	}
	md, err := g.s.Metadata(tg.name, tg.version, tg.label)
	if err != nil {
		return nil, err
	}
	sdm := &pb.SignatureDefMap{SignatureDef: md.SignatureDefs}
	anyMap, err := anypb.New(sdm)
	if err != nil {
		return nil, serving.Internal("packing the signature defs: %v", err)
	}
	return &pb.GetModelMetadataResponse{
		ModelSpec: responseSpec(tg.name, md.Version, ""),
		Metadata:  map[string]*anypb.Any{signatureDefField: anyMap},
	}, nil
}

// Classify runs a classification signature on tf.Examples.
func (p *predictionService) Classify(ctx context.Context, req *pb.ClassificationRequest) (*pb.ClassificationResponse, error) {
	resp, err := p.g.classify(ctx, req)
	return resp, serving.AsStatus(err)
}

func (g *grpcService) classify(ctx context.Context, req *pb.ClassificationRequest) (*pb.ClassificationResponse, error) {
	tg, key, res, n, err := g.runExamples(ctx, req.GetModelSpec(), req.GetInput(), checkClassifySignature, classifyOutputs)
	if err != nil {
		return nil, err
	}
	result, err := classificationResult(res, n)
	if err != nil {
		return nil, err
	}
	return &pb.ClassificationResponse{ModelSpec: responseSpec(tg.name, res.Version, key), Result: result}, nil
}

// runExamples runs the signature a Classify or Regress request names on
// its serialized tf.Examples, once check accepts the signature; n is the
// number of examples.
func (g *grpcService) runExamples(ctx context.Context, spec *pb.ModelSpec, input *pb.Input,
	check func(*serving.Metadata, serving.Signature) error, outputs func(serving.Signature) []string,
) (tg target, key string, res *serving.Response, n int, err error) {
	if tg, err = targetOf(spec); err != nil {
		return
	}
	md, err := g.s.Metadata(tg.name, tg.version, tg.label)
	if err != nil {
		return
	}
	key = signatureKey(spec)
	sig, ok := md.Signatures[key]
	if !ok {
		err = serving.InvalidArgument("No signature was found with the name: %s", key)
		return
	}
	if err = check(md, sig); err != nil {
		return
	}
	examples, err := serializeInput(input)
	if err != nil {
		return
	}
	res, err = g.run(ctx, tg, key, examples, outputs(sig))
	return tg, key, res, len(examples.Strings), err
}

// Regress runs a regression signature on tf.Examples.
func (p *predictionService) Regress(ctx context.Context, req *pb.RegressionRequest) (*pb.RegressionResponse, error) {
	resp, err := p.g.regress(ctx, req)
	return resp, serving.AsStatus(err)
}

func (g *grpcService) regress(ctx context.Context, req *pb.RegressionRequest) (*pb.RegressionResponse, error) {
	tg, key, res, n, err := g.runExamples(ctx, req.GetModelSpec(), req.GetInput(), checkRegressSignature,
		func(serving.Signature) []string { return []string{regressOutputs} })
	if err != nil {
		return nil, err
	}
	result, err := regressionResult(res, n)
	if err != nil {
		return nil, err
	}
	return &pb.RegressionResponse{ModelSpec: responseSpec(tg.name, res.Version, key), Result: result}, nil
}

// MultiInference runs several classification and regression signatures
// of one version on the same tf.Examples.
func (p *predictionService) MultiInference(ctx context.Context, req *pb.MultiInferenceRequest) (*pb.MultiInferenceResponse, error) {
	resp, err := p.g.multiInference(ctx, req)
	return resp, serving.AsStatus(err)
}

func (g *grpcService) multiInference(ctx context.Context, req *pb.MultiInferenceRequest) (*pb.MultiInferenceResponse, error) {
	var first *pb.ModelSpec
	if len(req.GetTasks()) > 0 {
		first = req.GetTasks()[0].GetModelSpec()
	}
	tg, err := targetOf(first)
	if err != nil {
		return nil, err
	}
	md, err := g.s.Metadata(tg.name, tg.version, tg.label)
	if err != nil {
		return nil, err
	}
	// Every task runs on the version the first one resolved to.
	pinned := target{name: tg.name, version: md.Version}
	seen := map[string]bool{}
	outputs := make([][]string, len(req.GetTasks()))
	for i, task := range req.GetTasks() {
		name := task.GetModelSpec().GetName()
		if name == "" {
			return nil, serving.InvalidArgument("Found ModelSpec with an empty model name.")
		}
		if name != tg.name {
			return nil, serving.InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
		}
		key := signatureKey(task.GetModelSpec())
		if seen[key] {
			return nil, serving.InvalidArgument("Duplicate evaluation of signature: %s", key)
		}
		seen[key] = true
		sig, ok := md.Signatures[key]
		if !ok {
			return nil, serving.InvalidArgument("Requested signature not found in model graph: %s", key)
		}
		switch task.GetMethodName() {
		case ClassifyMethodName:
			err = checkClassifySignature(md, sig)
			outputs[i] = classifyOutputs(sig)
		case RegressMethodName:
			err = checkRegressSignature(md, sig)
			outputs[i] = []string{regressOutputs}
		default:
			err = serving.Errorf(codes.Unimplemented, "Unsupported signature method_name: %s", task.GetMethodName())
		}
		if err != nil {
			return nil, err
		}
	}
	examples, err := serializeInput(req.GetInput())
	if err != nil {
		return nil, err
	}
	out := &pb.MultiInferenceResponse{}
	for i, task := range req.GetTasks() {
		key := signatureKey(task.GetModelSpec())
		res, err := g.run(ctx, pinned, key, examples, outputs[i])
		if err != nil {
			return nil, err
		}
		r := &pb.InferenceResult{ModelSpec: responseSpec(tg.name, res.Version, key)}
		if task.GetMethodName() == ClassifyMethodName {
			cr, err := classificationResult(res, len(examples.Strings))
			if err != nil {
				return nil, err
			}
			r.Result = &pb.InferenceResult_ClassificationResult{ClassificationResult: cr}
		} else {
			rr, err := regressionResult(res, len(examples.Strings))
			if err != nil {
				return nil, err
			}
			r.Result = &pb.InferenceResult_RegressionResult{RegressionResult: rr}
		}
		out.Results = append(out.Results, r)
	}
	return out, nil
}

// run feeds the serialized examples to a signature's "inputs".
func (g *grpcService) run(ctx context.Context, tg target, key string, examples *serving.Tensor, outputs []string) (*serving.Response, error) {
	return g.s.Predict(ctx, &serving.Request{
		Model: tg.name, Version: tg.version, Label: tg.label, Signature: key,
		Inputs: map[string]*serving.Tensor{classifyInputs: examples}, Outputs: outputs, API: serving.APIGRPC,
	})
}

// serializeInput makes the string tensor of serialized tf.Examples that
// Classify and Regress feed: one per example, each preceded by the
// context's bytes (so the example's features win over the context's when
// the two are parsed as one message).
func serializeInput(in *pb.Input) (*serving.Tensor, error) {
	var (
		examples []*expb.Example
		prefix   []byte
	)
	switch k := in.GetKind().(type) {
	case *pb.Input_ExampleList:
		examples = k.ExampleList.GetExamples()
	case *pb.Input_ExampleListWithContext:
		examples = k.ExampleListWithContext.GetExamples()
		if c := k.ExampleListWithContext.GetContext(); c != nil {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
			if err != nil {
				return nil, serving.InvalidArgument("the context example cannot be serialized: %v", err)
			}
			prefix = b
		}
	}
	if len(examples) == 0 {
		return nil, serving.InvalidArgument("Input is empty.")
	}
	t := &serving.Tensor{DType: tf.String, Shape: []int64{int64(len(examples))}, Strings: make([][]byte, len(examples))}
	mo := proto.MarshalOptions{Deterministic: true}
	for i, e := range examples {
		b := append([]byte(nil), prefix...)
		b, err := mo.MarshalAppend(b, e)
		if err != nil {
			return nil, serving.InvalidArgument("example %d cannot be serialized: %v", i, err)
		}
		t.Strings[i] = b
	}
	return t, nil
}

// describe is a signature's SignatureDef on one line, for errors.
func describe(md *serving.Metadata, key string) string {
	if sd := md.SignatureDefs[key]; sd != nil {
		return prototext.MarshalOptions{}.Format(sd)
	}
	return key
}

func hasAlias(list []serving.TensorInfo, alias string) bool {
	for _, t := range list {
		if t.Name == alias {
			return true
		}
	}
	return false
}

// checkClassifySignature requires a classification signature: its
// method name, one input "inputs", and one or two outputs among
// "classes" and "scores".
func checkClassifySignature(md *serving.Metadata, sig serving.Signature) error {
	if sig.Method != ClassifyMethodName {
		return serving.InvalidArgument("Expected classification signature method_name to be %s. Was: %s", ClassifyMethodName, sig.Method)
	}
	if len(sig.Inputs) != 1 {
		return serving.InvalidArgument("Expected one input Tensor.")
	}
	if n := len(sig.Outputs); n != 1 && n != 2 {
		return serving.InvalidArgument("Expected one or two output Tensors, found %d", n)
	}
	if !hasAlias(sig.Inputs, classifyInputs) {
		return serving.InvalidArgument("No classification inputs found in SignatureDef: %s", describe(md, sig.Key))
	}
	if !hasAlias(sig.Outputs, classifyClasses) && !hasAlias(sig.Outputs, classifyScores) {
		return serving.InvalidArgument(`Expected classification signature outputs to contain at least one of "%s" or "%s". Signature was: %s`, classifyClasses, classifyScores, describe(md, sig.Key))
	}
	return nil
}

// classifyOutputs are the outputs Classify fetches.
func classifyOutputs(sig serving.Signature) []string {
	var out []string
	for _, a := range []string{classifyClasses, classifyScores} {
		if hasAlias(sig.Outputs, a) {
			out = append(out, a)
		}
	}
	return out
}

// checkRegressSignature requires a regression signature: its method
// name, one input "inputs" and one output "outputs".
func checkRegressSignature(md *serving.Metadata, sig serving.Signature) error {
	if sig.Method != RegressMethodName {
		return serving.InvalidArgument("Expected regression signature method_name to be %s. Was: %s", RegressMethodName, sig.Method)
	}
	if len(sig.Inputs) != 1 {
		return serving.InvalidArgument("Expected one input Tensor.")
	}
	if len(sig.Outputs) != 1 {
		return serving.InvalidArgument("Expected one output Tensor.")
	}
	if !hasAlias(sig.Inputs, regressInputs) {
		return serving.InvalidArgument("No regression inputs found in SignatureDef: %s", describe(md, sig.Key))
	}
	if !hasAlias(sig.Outputs, regressOutputs) {
		return serving.InvalidArgument("No regression outputs found in SignatureDef: %s", describe(md, sig.Key))
	}
	return nil
}

func shapeString(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// classificationResult turns the classes ([n, k] strings) and scores
// ([n, k] float32) outputs into one Classifications per example; a
// missing output leaves its field empty in every class.
func classificationResult(res *serving.Response, n int) (*pb.ClassificationResult, error) {
	classes, scores := res.Outputs[classifyClasses], res.Outputs[classifyScores]
	if classes == nil && scores == nil {
		return nil, serving.InvalidArgument(`Expected classification signature outputs to contain at least one of "%s" or "%s".`, classifyClasses, classifyScores)
	}
	if classes != nil {
		if len(classes.Shape) != 2 {
			return nil, serving.InvalidArgument("Expected Tensor shape: [batch_size num_classes] but got %s", shapeString(classes.Shape))
		}
		if classes.DType != tf.String {
			return nil, serving.InvalidArgument("Expected classes Tensor of DT_STRING. Got: %s", dtypeName(classes.DType))
		}
		if classes.Shape[0] != int64(n) {
			return nil, serving.InvalidArgument("Expected classes output batch size of %d. Got: %d", n, classes.Shape[0])
		}
	}
	if scores != nil {
		if len(scores.Shape) != 2 {
			return nil, serving.InvalidArgument("Expected Tensor shape: [batch_size num_classes] but got %s", shapeString(scores.Shape))
		}
		if scores.DType != tf.Float {
			return nil, serving.InvalidArgument("Expected scores Tensor of DT_FLOAT. Got: %s", dtypeName(scores.DType))
		}
		if scores.Shape[0] != int64(n) {
			return nil, serving.InvalidArgument("Expected scores output batch size of %d. Got: %d", n, scores.Shape[0])
		}
	}
	var k int64
	switch {
	case classes != nil && scores != nil:
		if classes.Shape[1] != scores.Shape[1] {
			return nil, serving.InvalidArgument("Tensors class and score should match in dim_size(1). Got %d vs. %d", classes.Shape[1], scores.Shape[1])
		}
		k = classes.Shape[1]
	case classes != nil:
		k = classes.Shape[1]
	default:
		k = scores.Shape[1]
	}
	var sv []float32
	if scores != nil {
		var err error
		if sv, err = serving.Values[float32](scores); err != nil {
			return nil, serving.Internal("scores: %v", err)
		}
	}
	result := &pb.ClassificationResult{Classifications: make([]*pb.Classifications, n)}
	for i := range n {
		c := &pb.Classifications{Classes: make([]*pb.Class, k)}
		for j := range k {
			cl := &pb.Class{}
			idx := int64(i)*k + j
			if classes != nil {
				cl.Label = string(classes.Strings[idx])
			}
			if scores != nil {
				cl.Score = sv[idx]
			}
			c.Classes[j] = cl
		}
		result.Classifications[i] = c
	}
	return result, nil
}

// regressionResult turns the outputs output ([n] or [n, 1] float32) into
// one Regression per example.
func regressionResult(res *serving.Response, n int) (*pb.RegressionResult, error) {
	t := res.Outputs[regressOutputs]
	if t == nil {
		return nil, serving.InvalidArgument("Could not find output tensor '%s'", regressOutputs)
	}
	if !(len(t.Shape) == 1 || len(t.Shape) == 2 && t.Shape[1] == 1) {
		return nil, serving.InvalidArgument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got %s", shapeString(t.Shape))
	}
	if t.Shape[0] != int64(n) {
		return nil, serving.InvalidArgument("Input batch size did not match output batch size: %d vs. %d", n, t.Shape[0])
	}
	if t.DType != tf.Float {
		return nil, serving.InvalidArgument("Expected output Tensor of DT_FLOAT.  Got: %s", dtypeName(t.DType))
	}
	v, err := serving.Values[float32](t)
	if err != nil {
		return nil, serving.Internal("outputs: %v", err)
	}
	if len(v) != n {
		return nil, serving.InvalidArgument("Expected output batch size to be %d.  Got: %d", n, len(v))
	}
	result := &pb.RegressionResult{Regressions: make([]*pb.Regression, n)}
	for i, x := range v {
		result.Regressions[i] = &pb.Regression{Value: x}
	}
	return result, nil
}

// dtypeName is TensorFlow's enum name of a type (DT_FLOAT, ...).
func dtypeName(dt tf.DataType) string { return typespb.DataType(dt).String() }

// GetModelStatus returns the states of a model's versions: the one the
// ModelSpec's version names, or all of them (newest first). Like TF
// Serving it ignores a version label.
func (m *modelService) GetModelStatus(ctx context.Context, req *pb.GetModelStatusRequest) (*pb.GetModelStatusResponse, error) {
	resp, err := m.g.modelStatus(req)
	return resp, serving.AsStatus(err)
}

func (g *grpcService) modelStatus(req *pb.GetModelStatusRequest) (*pb.GetModelStatusResponse, error) {
	ms := req.GetModelSpec()
	if ms == nil {
		return nil, serving.InvalidArgument("Missing ModelSpec")
	}
	var version int64
	if v := ms.GetVersion(); v != nil {
		if v.GetValue() <= 0 {
			return nil, serving.NotFound("Could not find version %d of model %s", v.GetValue(), ms.GetName())
		}
		version = v.GetValue()
	}
	sts, err := g.s.ModelStatus(ms.GetName(), version, "")
	if err != nil {
		return nil, err
	}
	out := &pb.GetModelStatusResponse{}
	for _, st := range sts {
		vs := &pb.ModelVersionStatus{Version: st.Version, State: stateOf(st.State), Status: &pb.StatusProto{}}
		if st.Err != nil {
			vs.Status.ErrorCode = tslpb.Code(serving.Code(st.Err))
			vs.Status.ErrorMessage = serving.Message(st.Err)
		}
		out.ModelVersionStatus = append(out.ModelVersionStatus, vs)
	}
	return out, nil
}

// stateOf maps the server's state names onto the proto's enum.
func stateOf(s string) pb.ModelVersionStatus_State {
	switch s {
	case serving.StateStart:
		return pb.ModelVersionStatus_START
	case serving.StateLoading:
		return pb.ModelVersionStatus_LOADING
	case serving.StateAvailable:
		return pb.ModelVersionStatus_AVAILABLE
	case serving.StateUnloading:
		return pb.ModelVersionStatus_UNLOADING
	case serving.StateEnd:
		return pb.ModelVersionStatus_END
	}
	return pb.ModelVersionStatus_UNKNOWN
}

// HandleReloadConfigRequest is not served: the models are those the
// server was started with.
func (m *modelService) HandleReloadConfigRequest(ctx context.Context, req *pb.ReloadConfigRequest) (*pb.ReloadConfigResponse, error) {
	return nil, serving.Errorf(codes.Unimplemented, "HandleReloadConfigRequest is not supported: this server serves the models it was started with; restart it with a new model config")
}
