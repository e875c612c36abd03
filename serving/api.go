package serving

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"

	"github.com/gotflow/gotflow/tf"
)

// The API labels of the front ends, as they appear in metrics.
const (
	APIREST   = "rest"
	APIGRPC   = "grpc"
	APIV2HTTP = "v2_http"
	APIV2GRPC = "v2_grpc"
	APIFlight = "flight"
)

// Request is one inference call, as every front end hands it to the
// Server.
type Request struct {
	// Model is the model's name; Version (> 0) or Label picks a version,
	// and neither means the newest available one.
	Model   string
	Version int64
	Label   string
	// Signature is the signature key; empty means serving_default.
	Signature string
	// Inputs are the signature's input aliases and their values; every
	// input of the signature must be given.
	Inputs map[string]*Tensor
	// Outputs filters the signature's outputs by alias; empty means all.
	Outputs []string
	// API labels the request in metrics (APIREST, ...).
	API string
	// NoBatch runs the request alone even when batching is on (Flight
	// sends batches that are already large).
	NoBatch bool
}

// Response is a Request's result. Its tensors belong to the caller: the
// server never reuses or pools them.
type Response struct {
	Model     string
	Version   int64
	Signature string
	// Method is the signature's method name (tensorflow/serving/predict,
	// .../classify or .../regress).
	Method string
	// Outputs holds the requested outputs by alias; Order lists them in
	// the signature's order.
	Outputs map[string]*Tensor
	Order   []string
}

// VersionStatus is the state of one version of a model, with TF
// Serving's state names: START, LOADING, AVAILABLE, UNLOADING, END.
type VersionStatus struct {
	Version int64
	State   string
	// Err is why the version failed to load (nil when it did not fail).
	Err error
}

// Metadata describes a served version: its signatures as their protos
// (what TF Serving's metadata endpoints return) and parsed.
type Metadata struct {
	Model         string
	Version       int64
	SignatureDefs map[string]*pb.SignatureDef
	Signatures    map[string]Signature
}

// Signature is one signature of a served version.
type Signature struct {
	Key    string
	Method string
	// Servable is false for a signature with sparse or composite
	// tensors, which Predict refuses.
	Servable bool
	Inputs   []TensorInfo
	Outputs  []TensorInfo
}

// TensorInfo is a signature tensor: its alias, type and shape (-1 for an
// unknown dimension, nil for an unknown rank).
type TensorInfo struct {
	Name  string
	DType tf.DataType
	Shape []int64
}

// Errorf returns an error with a gRPC status code; front ends answer
// with it (HTTPStatus maps it for HTTP).
func Errorf(c codes.Code, format string, args ...any) error {
	return status.Error(c, fmt.Sprintf(format, args...))
}

// InvalidArgument is Errorf(codes.InvalidArgument, ...).
func InvalidArgument(format string, args ...any) error {
	return Errorf(codes.InvalidArgument, format, args...)
}

// NotFound is Errorf(codes.NotFound, ...).
func NotFound(format string, args ...any) error { return Errorf(codes.NotFound, format, args...) }

// Internal is Errorf(codes.Internal, ...).
func Internal(format string, args ...any) error { return Errorf(codes.Internal, format, args...) }

// Code returns an error's status code: its gRPC status, TensorFlow's
// status for a *tf.Error (the codes are the same), Canceled or
// DeadlineExceeded for context errors, and Unknown otherwise.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var te *tf.Error
	if errors.As(err, &te) {
		return codes.Code(te.Code)
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, errDeadline):
		return codes.DeadlineExceeded
	}
	return status.FromContextError(err).Code()
}

var errDeadline = errors.New("deadline exceeded")

// Message is an error's text without a gRPC status prefix.
func Message(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// AsStatus converts any error into a gRPC status error with Code's code.
func AsStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(Code(err), err.Error())
}

// HTTPStatus maps a status code to TF Serving's HTTP status.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}
