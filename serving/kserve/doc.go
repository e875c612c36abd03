// Package kserve serves the Open Inference Protocol (KServe's V2
// inference protocol, which Triton's clients speak) on a serving.Server:
// Register mounts its HTTP routes on the server's mux and its gRPC service,
// inference.GRPCInferenceService, on the server's gRPC server.
//
//	srv, err := serving.NewServer(ctx, cfg)
//	kserve.Register(srv)
//	go srv.Serve(grpcLis, httpLis)
//
// # HTTP
//
//	GET  /v2/health/live                                liveness
//	GET  /v2/health/ready                               readiness: every model has a version available
//	GET  /v2                                            server metadata
//	GET  /v2/models/{m}[/versions/{v}]                  model metadata
//	GET  /v2/models/{m}[/versions/{v}]/ready            model readiness
//	POST /v2/models/{m}[/versions/{v}]/infer            inference
//
// Health endpoints answer 200 for true and 400 for false with an empty
// body; model readiness of an unknown model or version is an error (404).
// Without a version, requests go to the newest available version;
// a version that is not a number is one of the model's version labels.
// Model metadata describes the inputs and outputs of serving_default (or
// of the signature the signature_name query parameter names) with the
// protocol's datatype names (FP32, INT64, BYTES, ...) and -1 for unknown
// dimensions; a tensor of unknown rank has the empty shape. The platform
// is tensorflow_savedmodel; versions lists the available versions.
//
// An infer request carries each input's data as a JSON array of its
// elements in row-major order, flat or nested (BYTES as strings, BOOL as
// true/false, floats may be NaN, Infinity or -Infinity), or as binary
// data after the JSON (Triton's binary tensor data extension, which
// tritonclient uses by default): the Inference-Header-Content-Length
// header gives the JSON's length, each binary input has a
// binary_data_size parameter, and the inputs' bytes follow the JSON in
// their order, little-endian, BOOL one byte per element, BYTES elements
// each a 4-byte little-endian length and the bytes. An output is answered
// in binary the same way when its binary_data parameter is true, or
// without one when the request's binary_data_output parameter is; the
// response then carries the header too. Request bodies compressed with
// gzip or deflate (Content-Encoding) are read, up to 64 MiB once
// decompressed, and infer responses are compressed when Accept-Encoding
// asks for gzip or deflate. The request's outputs filter the signature's
// outputs, and its id is echoed.
//
// Request parameters the server acts on: signature_name (a string) runs
// that signature instead of serving_default, timeout (an integer, in
// microseconds, as Triton's clients send it) bounds the request, and
// binary_data_output as above. Other parameters are ignored; the
// classification and shared memory extensions are refused.
//
// # gRPC
//
// The service is KServe's grpc_predict_v2.proto (a copy of KServe's
// docs/predict-api/v2/grpc_predict_v2.proto in proto/, generated into
// inferencepb by scripts/generate-proto.sh), whose messages are a subset
// of Triton's, so tritonclient.grpc talks to it. ModelReady for an
// unknown model or version fails with NOT_FOUND. Inputs come in
// raw_input_contents (one per input, in order, laid out as the HTTP
// binary data) or in the typed contents fields; FP16 and BF16 only raw.
// The outputs are answered in raw_output_contents, as Triton does,
// except that a request whose inputs came typed gets typed outputs (raw
// again when an output is FP16 or BF16). The parameters are those of
// HTTP, as string_param and int64_param.
//
// The generated package registers the proto package inference under the
// names every copy of this protocol's proto uses (Triton's
// grpc_service.proto included): a program links only one of them, as
// protobuf refuses a name registered twice.
//
// # Ownership
//
// Decoded input tensors refer to the request's body or message, which
// the server copies into TensorFlow memory before running; nothing is
// kept after a request returns. Responses are built from the tensors the
// server returns and own them.
//
// # Concurrency
//
// The handlers keep no state of their own: any number of requests run at
// once, as many as the server's HTTP and gRPC servers accept, and each
// waits for its prediction (through the server's batcher when batching
// is on) under the request's context, bounded by the timeout parameter
// and the server's request timeout.
//
// # Errors
//
// Errors are the server's status codes. Over HTTP they are answered as
// {"error": "..."} with serving.HTTPStatus of the code: 404 for an
// unknown model, version or endpoint (and for metadata while no version
// is available yet); 400 for a malformed request (bad JSON, an unknown
// datatype, a datatype or shape the signature does not take, data that
// does not fill the shape, binary data that does not add up, an unknown
// signature or version label); 413 for a body over the server's limit;
// 504 when the timeout parameter or the server's request timeout runs
// out; 503 once the server shuts down. Over gRPC they are status errors
// with the same codes.
package kserve
