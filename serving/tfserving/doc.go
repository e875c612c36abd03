// Package tfserving serves TensorFlow Serving's APIs on a serving.Server,
// so that TF Serving's clients (tensorflow-serving-api's
// PredictionServiceStub, its REST clients, generated stubs in any
// language) talk to a gotflow server unchanged.
//
//	srv, err := serving.NewServer(ctx, cfg)
//	tfserving.Register(srv)     // gRPC, on srv.GRPC()
//	tfserving.RegisterREST(srv) // REST v1, on srv.Mux()
//	err = srv.Serve(grpcLis, httpLis)
//
// ReadModelConfig and ReadBatchingParameters read TF Serving's
// --model_config_file and --batching_parameters_file. RegisterREST's
// comment describes the REST API; the rest of this comment is about gRPC.
//
// # Protos
//
// tfservingpb is Go code generated from TF Serving's own .proto files,
// kept under proto/tensorflow_serving with their paths, so the
// descriptors registered are TF Serving's: tensorflow.serving.* messages
// and services, in files named tensorflow_serving/apis/*.proto. The
// TensorFlow types they use (TensorProto, SignatureDef, Example,
// ConfigProto, error codes) are graft's generated packages, compiled
// against the descriptors graft registers; scripts/generate-proto.sh
// regenerates the package (--check verifies it). One field is missing:
// SessionBundleConfig.in_graph_batching_parameters is reserved, as its
// type, tensorflow.BatchingOptions, is newer than graft's TensorFlow
// protos.
//
// # Services
//
// Register adds tensorflow.serving.PredictionService and
// tensorflow.serving.ModelService to the server's gRPC server, with TF
// Serving's semantics:
//
//   - ModelSpec: name; version (an Int64Value: the number, which must be
//     served; not set means the newest) or version_label (one of the
//     model's labels); signature_name, serving_default when empty.
//     Responses carry the request's name, the version that answered and,
//     for Predict, Classify and Regress, the signature's key.
//   - Predict: every input of the signature, by alias, as a TensorProto
//     (FromTensorProto's rules, which are Tensor::FromProto's); the
//     outputs are the signature's, or those output_filter names. Numeric
//     outputs are in tensor_content, as TF Serving gives them with
//     --enable_serialization_as_tensor_content; OutputsAsProtoFields puts
//     them in the typed fields (float_val, ...), TF Serving's default.
//     Strings are in string_val.
//   - GetModelMetadata: metadata_field must be exactly "signature_def";
//     metadata["signature_def"] is an Any holding a SignatureDefMap of
//     every signature of the version.
//   - Classify and Regress: the examples of the Input (example_list, or
//     example_list_with_context, where each example is serialized after
//     the context so that its own features win) are fed as a string
//     tensor of serialized tf.Examples to the signature's "inputs". A
//     classification signature has method tensorflow/serving/classify,
//     that one input, and "classes" ([n, k] strings) and/or "scores"
//     ([n, k] float32): the result holds k classes per example, the
//     label empty without "classes" and the score 0 without "scores". A
//     regression signature has method tensorflow/serving/regress and one
//     output "outputs" ([n] or [n, 1] float32). TF Serving checks the
//     method names only with --enable_signature_method_name_check; this
//     package always does.
//   - MultiInference: classification and regression tasks of one model
//     on the same examples, each task's signature run in turn on the
//     version the first task names.
//   - GetModelStatus: the state (START, LOADING, AVAILABLE, UNLOADING,
//     END) and status (error code and message of a failed load) of the
//     version the ModelSpec names, or of every version, newest first. As
//     in TF Serving a version label is not looked at.
//   - HandleReloadConfigRequest: Unimplemented; the models are those the
//     server started with.
//
// Requests go through Server.Predict, so the batcher, the metrics (API
// label "grpc"), the request timeout and the bearer token apply to them
// as to every front end.
//
// # Ownership
//
// FromTensorProto returns a tensor sharing the proto's tensor_content
// and string_val memory, and ToTensorProto a proto sharing the tensor's
// Data and Strings: neither copies, so neither value may be changed while
// the other is in use. The services keep nothing of a request once they
// have answered it. Register keeps the Server, which must outlive the
// gRPC server it registered on (it does: Close stops both).
//
// # Concurrency
//
// The services are safe for any number of concurrent calls; they hold
// no state of their own and each call runs on its gRPC goroutine until
// Server.Predict answers. Register must be called before Serve, and only
// once per server (gRPC stops the process when a service is registered
// twice).
//
// # Errors
//
// Every error is a gRPC status with TF Serving's code and, where
// practical, its wording: NOT_FOUND for an unknown model or version (an
// explicit version that is not positive included), FAILED_PRECONDITION
// for a Predict signature the version does not have, INVALID_ARGUMENT
// for a Classify, Regress or MultiInference signature it does not have,
// for a malformed tensor ("tensor parsing error: <alias>", with the
// reason), missing, extra or mistyped inputs, unknown output filters,
// unsupported metadata fields and signatures of the wrong kind,
// UNIMPLEMENTED for a MultiInference task that is neither classification
// nor regression and for config reloads, and the codes TensorFlow gives
// when a run fails. Errors from the core keep their code through
// serving.AsStatus.
package tfserving
