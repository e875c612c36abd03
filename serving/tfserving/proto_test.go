package tfserving_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	tensorpb "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	corepb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"

	pb "github.com/gotflow/gotflow/serving/tfserving/tfservingpb"
)

// TestGeneratedDescriptors: the generated files registered at init with
// every import resolved to graft's TensorFlow descriptors (none is a
// placeholder), they rebuild from their FileDescriptorProtos against the
// global registry, and the services have TF Serving's methods.
func TestGeneratedDescriptors(t *testing.T) {
	files := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("tensorflow.serving", func(fd protoreflect.FileDescriptor) bool {
		files++
		imps := fd.Imports()
		for i := 0; i < imps.Len(); i++ {
			require.False(t, imps.Get(i).IsPlaceholder(), "%s imports %s, which is not registered", fd.Path(), imps.Get(i).Path())
		}
		_, err := protodesc.NewFile(protodesc.ToFileDescriptorProto(fd), protoregistry.GlobalFiles)
		require.NoError(t, err, fd.Path())
		return true
	})
	require.Equal(t, 17, files, "the files under serving/tfserving/proto")

	for name, methods := range map[protoreflect.FullName][]protoreflect.Name{
		"tensorflow.serving.PredictionService": {"Classify", "Regress", "Predict", "MultiInference", "GetModelMetadata"},
		"tensorflow.serving.ModelService":      {"GetModelStatus", "HandleReloadConfigRequest"},
	} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		require.NoError(t, err, name)
		sd, ok := d.(protoreflect.ServiceDescriptor)
		require.True(t, ok, name)
		var got []protoreflect.Name
		for i := 0; i < sd.Methods().Len(); i++ {
			got = append(got, sd.Methods().Get(i).Name())
		}
		require.Equal(t, methods, got)
	}

	// Message fields of TensorFlow types resolve to graft's descriptors.
	inputs := (&pb.PredictRequest{}).ProtoReflect().Descriptor().Fields().ByName("inputs")
	require.Equal(t, protoreflect.FullName("tensorflow.TensorProto"), inputs.MapValue().Message().FullName())
	require.Equal(t, (&tensorpb.TensorProto{}).ProtoReflect().Descriptor(), inputs.MapValue().Message())
	code := (&pb.StatusProto{}).ProtoReflect().Descriptor().Fields().ByName("error_code")
	require.Equal(t, protoreflect.FullName("tensorflow.error.Code"), code.Enum().FullName())
}

// TestGeneratedRoundTrip marshals a PredictRequest carrying a
// TensorProto and reads it back; a SignatureDefMap goes through an Any
// resolved by type URL; BatchingParameters parse from text format.
func TestGeneratedRoundTrip(t *testing.T) {
	req := &pb.PredictRequest{
		ModelSpec:    spec("m", 3, "serving_default"),
		Inputs:       map[string]*tensorpb.TensorProto{"x": floats([]int64{2}, 1.5, -2)},
		OutputFilter: []string{"y"},
	}
	b, err := proto.Marshal(req)
	require.NoError(t, err)
	var back pb.PredictRequest
	require.NoError(t, proto.Unmarshal(b, &back))
	require.True(t, proto.Equal(req, &back))
	require.Equal(t, typespb.DataType_DT_FLOAT, back.Inputs["x"].Dtype)
	require.Equal(t, []float32{1.5, -2}, back.Inputs["x"].FloatVal)
	require.EqualValues(t, 3, back.ModelSpec.GetVersion().GetValue())

	sdm := &pb.SignatureDefMap{SignatureDef: map[string]*corepb.SignatureDef{"serving_default": {MethodName: "tensorflow/serving/predict"}}}
	a, err := anypb.New(sdm)
	require.NoError(t, err)
	m, err := a.UnmarshalNew()
	require.NoError(t, err)
	require.True(t, proto.Equal(sdm, m))

	var bp pb.BatchingParameters
	require.NoError(t, prototext.Unmarshal([]byte(`max_batch_size { value: 128 } batch_timeout_micros { value: 500 } allowed_batch_sizes: 32 allowed_batch_sizes: 128`), &bp))
	require.EqualValues(t, 128, bp.GetMaxBatchSize().GetValue())
	require.Equal(t, []int64{32, 128}, bp.GetAllowedBatchSizes())

	// The field graft's TensorFlow protos cannot type is reserved: text
	// configs that set it still parse.
	var sbc pb.SessionBundleConfig
	require.NoError(t, prototext.Unmarshal([]byte(`session_target: "" in_graph_batching_parameters { }`), &sbc))
}
