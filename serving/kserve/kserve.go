package kserve

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/kserve/inferencepb"
	"github.com/gotflow/gotflow/tf"
)

// ServerName is the name the server metadata endpoints report.
const ServerName = "gotflow"

// Platform is the platform the model metadata endpoints report.
const Platform = "tensorflow_savedmodel"

// SignatureParameter is the request parameter (a string) that picks the
// signature a request runs; without it a request runs serving_default.
const SignatureParameter = "signature_name"

// extensions are the protocol extensions the server metadata reports.
var extensions = []string{"binary_tensor_data"}

// Register mounts the protocol on s: the HTTP routes under /v2 on s.Mux()
// and the inference.GRPCInferenceService on s.GRPC(). Call it once, before
// s.Serve.
func Register(s *serving.Server) {
	f := &frontend{s: s}
	f.routes(s.Mux())
	inferencepb.RegisterGRPCInferenceServiceServer(s.GRPC(), &grpcService{f: f})
}

// frontend is what the HTTP and gRPC sides share.
type frontend struct {
	s *serving.Server
}

// parseVersion reads a version as the protocol carries it: "" is the
// newest version, a positive integer that version, and anything else a
// version label of the model's configuration.
func parseVersion(v string) (int64, string, error) {
	if v == "" {
		return 0, "", nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if v[0] == '-' || v[0] >= '0' && v[0] <= '9' {
			return 0, "", serving.InvalidArgument("model version %q: versions are positive integers", v)
		}
		return 0, v, nil
	}
	if n <= 0 {
		return 0, "", serving.InvalidArgument("model version %q: versions are positive integers", v)
	}
	return n, "", nil
}

// modelReady reports whether the model's version (the newest, for "")
// serves; an unknown model or version is NotFound.
func (f *frontend) modelReady(name, version string) (bool, error) {
	n, label, err := parseVersion(version)
	if err != nil {
		return false, err
	}
	if !slices.Contains(f.s.Models(), name) {
		if name == "" {
			return false, serving.InvalidArgument("missing model name")
		}
		return false, serving.NotFound("model %q is not served", name)
	}
	st, err := f.s.ModelStatus(name, n, label)
	if err != nil {
		if n == 0 && label == "" && serving.Code(err) == codes.NotFound { // a model with no version yet
			return false, nil
		}
		return false, err
	}
	for _, v := range st {
		if v.State == serving.StateAvailable {
			return true, nil
		}
	}
	return false, nil
}

// tensorMeta is a signature tensor as the protocol describes it.
type tensorMeta struct {
	Name     string
	Datatype string
	Shape    []int64
}

// modelMeta is a model's metadata as the protocol describes it.
type modelMeta struct {
	Name     string
	Versions []string
	Platform string
	Inputs   []tensorMeta
	Outputs  []tensorMeta
}

// modelMetadata describes the version a request names by the inputs and
// outputs of the signature sigKey ("": serving_default, or the first
// signature when the model has none of that name).
func (f *frontend) modelMetadata(name, version, sigKey string) (*modelMeta, error) {
	n, label, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	md, err := f.s.Metadata(name, n, label)
	if err != nil {
		return nil, err
	}
	sig, ok := md.Signatures[sigKey]
	if sigKey == "" {
		sig, ok = md.Signatures[serving.DefaultSignature]
		if !ok {
			keys := make([]string, 0, len(md.Signatures))
			for k := range md.Signatures {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if len(keys) > 0 {
				sig, ok = md.Signatures[keys[0]], true
			}
		}
	}
	if !ok {
		return nil, serving.NotFound("model %q version %d has no signature %q", name, md.Version, sigKey)
	}
	m := &modelMeta{Name: name, Platform: Platform}
	if st, err := f.s.ModelStatus(name, 0, ""); err == nil {
		var vs []int64
		for _, v := range st {
			if v.State == serving.StateAvailable {
				vs = append(vs, v.Version)
			}
		}
		slices.Sort(vs)
		for _, v := range vs {
			m.Versions = append(m.Versions, strconv.FormatInt(v, 10))
		}
	}
	conv := func(ts []serving.TensorInfo) []tensorMeta {
		out := make([]tensorMeta, len(ts))
		for i, t := range ts {
			shape := t.Shape
			if shape == nil {
				shape = []int64{}
			}
			out[i] = tensorMeta{Name: t.Name, Datatype: datatypeName(t.DType), Shape: shape}
		}
		return out
	}
	m.Inputs, m.Outputs = conv(sig.Inputs), conv(sig.Outputs)
	return m, nil
}

// inferOptions are the request parameters the server acts on.
type inferOptions struct {
	signature string
	// timeout bounds the request (Triton's "timeout" parameter, in
	// microseconds); 0: the server's request timeout.
	timeout time.Duration
}

// predict runs the request with the options' deadline.
func (f *frontend) predict(ctx context.Context, req *serving.Request, o inferOptions) (*serving.Response, error) {
	req.Signature = o.signature
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	return f.s.Predict(ctx, req)
}

// orderOutputs lists the response's outputs in the order the request
// asked for them (the signature's order when it asked for none).
func orderOutputs(resp *serving.Response, requested []string) []string {
	if len(requested) == 0 {
		return resp.Order
	}
	out := make([]string, 0, len(requested))
	for _, n := range requested {
		if resp.Outputs[n] != nil {
			out = append(out, n)
		}
	}
	return out
}

// datatypeName is the protocol's name of a TensorFlow type.
func datatypeName(dt tf.DataType) string {
	switch dt {
	case tf.Bool:
		return "BOOL"
	case tf.Uint8:
		return "UINT8"
	case tf.Uint16:
		return "UINT16"
	case tf.Uint32:
		return "UINT32"
	case tf.Uint64:
		return "UINT64"
	case tf.Int8:
		return "INT8"
	case tf.Int16:
		return "INT16"
	case tf.Int32:
		return "INT32"
	case tf.Int64:
		return "INT64"
	case tf.Half:
		return "FP16"
	case tf.Float:
		return "FP32"
	case tf.Double:
		return "FP64"
	case tf.String:
		return "BYTES"
	case tf.BFloat16:
		return "BF16"
	}
	return "INVALID"
}

// parseDatatype is the TensorFlow type of a protocol type name.
func parseDatatype(s string) (tf.DataType, error) {
	switch s {
	case "BOOL":
		return tf.Bool, nil
	case "UINT8":
		return tf.Uint8, nil
	case "UINT16":
		return tf.Uint16, nil
	case "UINT32":
		return tf.Uint32, nil
	case "UINT64":
		return tf.Uint64, nil
	case "INT8":
		return tf.Int8, nil
	case "INT16":
		return tf.Int16, nil
	case "INT32":
		return tf.Int32, nil
	case "INT64":
		return tf.Int64, nil
	case "FP16":
		return tf.Half, nil
	case "FP32":
		return tf.Float, nil
	case "FP64":
		return tf.Double, nil
	case "BYTES":
		return tf.String, nil
	case "BF16":
		return tf.BFloat16, nil
	}
	return 0, fmt.Errorf("unknown datatype %q (want BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES or BF16)", s)
}

// newInput checks an input's name, datatype and shape and returns the
// tensor its contents go into, with the element count.
func newInput(name, datatype string, shape []int64, seen map[string]*serving.Tensor) (*serving.Tensor, int64, error) {
	if name == "" {
		return nil, 0, serving.InvalidArgument("an input has no name")
	}
	if seen[name] != nil {
		return nil, 0, serving.InvalidArgument("input %q is given twice", name)
	}
	dt, err := parseDatatype(datatype)
	if err != nil {
		return nil, 0, serving.InvalidArgument("input %q: %v", name, err)
	}
	if shape == nil {
		return nil, 0, serving.InvalidArgument("input %q has no shape", name)
	}
	n, err := numElements(shape)
	if err != nil {
		return nil, 0, serving.InvalidArgument("input %q: %v", name, err)
	}
	return &serving.Tensor{DType: dt, Shape: shape}, n, nil
}

// maxElements bounds a tensor's element count so that sizes in bytes
// never overflow.
const maxElements = 1 << 40

// numElements is the element count of a shape with no negative
// dimension.
func numElements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d > 0 && n > maxElements/d {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= d
	}
	return n, nil
}

// setRaw fills t from its binary form: fixed-width elements little-endian
// and row-major, BYTES elements each a 4-byte little-endian length and
// the bytes. The tensor keeps references to raw.
func setRaw(t *serving.Tensor, name string, n int64, raw []byte) error {
	if t.DType != tf.String {
		if want := n * int64(t.DType.Size()); int64(len(raw)) != want {
			return serving.InvalidArgument("input %q: %d bytes of %s data for shape %v, want %d", name, len(raw), datatypeName(t.DType), t.Shape, want)
		}
		t.Data = raw
		return nil
	}
	if n > int64(len(raw))/4 {
		return serving.InvalidArgument("input %q: %d bytes of BYTES data cannot hold the %d elements of shape %v", name, len(raw), n, t.Shape)
	}
	s, err := splitBytes(raw, int(n))
	if err != nil {
		return serving.InvalidArgument("input %q: %v", name, err)
	}
	t.Strings = s
	return nil
}

// splitBytes parses n length-prefixed elements that fill raw exactly.
func splitBytes(raw []byte, n int) ([][]byte, error) {
	out := make([][]byte, 0, n)
	for len(raw) > 0 {
		if len(raw) < 4 {
			return nil, fmt.Errorf("BYTES data ends inside an element's length")
		}
		l := uint64(raw[0]) | uint64(raw[1])<<8 | uint64(raw[2])<<16 | uint64(raw[3])<<24
		raw = raw[4:]
		if l > uint64(len(raw)) {
			return nil, fmt.Errorf("BYTES element %d has length %d, but only %d bytes follow", len(out), l, len(raw))
		}
		if len(out) == n {
			return nil, fmt.Errorf("BYTES data holds more than the %d elements of the shape", n)
		}
		out = append(out, raw[:l:l])
		raw = raw[l:]
	}
	if len(out) != n {
		return nil, fmt.Errorf("BYTES data holds %d elements, the shape %d", len(out), n)
	}
	return out, nil
}

// rawBytes is a tensor's binary form (see setRaw).
func rawBytes(t *serving.Tensor) []byte {
	if t.DType != tf.String {
		return t.Data
	}
	size := 0
	for _, s := range t.Strings {
		size += 4 + len(s)
	}
	out := make([]byte, 0, size)
	for _, s := range t.Strings {
		l := uint32(len(s))
		out = append(out, byte(l), byte(l>>8), byte(l>>16), byte(l>>24))
		out = append(out, s...)
	}
	return out
}

// rawSize is len(rawBytes(t)) without building it.
func rawSize(t *serving.Tensor) int {
	if t.DType != tf.String {
		return len(t.Data)
	}
	size := 0
	for _, s := range t.Strings {
		size += 4 + len(s)
	}
	return size
}
