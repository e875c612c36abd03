package tfserving

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	expb "github.com/wamuir/graft/tensorflow/core/example/example_protos_go_proto"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/tf"
)

// RegisterREST mounts TF Serving's REST API (v1) on the server's HTTP
// port:
//
//	GET  /v1/models/{m}[/versions/{v}|/labels/{l}]            model status
//	GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata   signatures
//	POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict    row or columnar
//	POST /v1/models/{m}[/versions/{v}|/labels/{l}]:classify   tf.Examples
//	POST /v1/models/{m}[/versions/{v}|/labels/{l}]:regress
//
// with TF Serving's JSON (NaN and Infinity allowed, {"b64": ...} for
// bytes) and its errors: {"error": "..."} with its HTTP status codes.
func RegisterREST(s *serving.Server) {
	h := &restHandler{s: s}
	s.Mux().Handle("/v1/models/", h)
}

type restHandler struct{ s *serving.Server }

// restPath is a parsed /v1/models/... path.
type restPath struct {
	model   string
	version int64
	label   string
	verb    string // "", "metadata", "predict", "classify", "regress"
}

func parseRESTPath(p string) (restPath, error) {
	rest, _ := strings.CutPrefix(p, "/v1/models/")
	var r restPath
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i:], "/") {
		r.verb, rest = rest[i+1:], rest[:i]
		switch r.verb {
		case "predict", "classify", "regress":
		default:
			return r, serving.InvalidArgument("Malformed request: unknown method :%s (want :predict, :classify or :regress)", r.verb)
		}
	} else if m, ok := strings.CutSuffix(rest, "/metadata"); ok {
		r.verb, rest = "metadata", m
	}
	parts := strings.Split(rest, "/")
	r.model = parts[0]
	if r.model == "" {
		return r, serving.InvalidArgument("Malformed request: missing model name")
	}
	switch {
	case len(parts) == 1:
	case len(parts) == 3 && parts[1] == "versions":
		v, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil || v <= 0 {
			return r, serving.InvalidArgument("Malformed request: version %q is not a positive integer", parts[2])
		}
		r.version = v
	case len(parts) == 3 && parts[1] == "labels" && parts[2] != "":
		r.label = parts[2]
	default:
		return r, serving.NotFound("Malformed request: %s", p)
	}
	return r, nil
}

func (h *restHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, err := parseRESTPath(r.URL.Path)
	if err != nil {
		writeError(w, err)
		return
	}
	switch {
	case r.Method == http.MethodGet && p.verb == "":
		h.status(w, p)
	case r.Method == http.MethodGet && p.verb == "metadata":
		h.metadata(w, p)
	case r.Method == http.MethodPost && (p.verb == "predict" || p.verb == "classify" || p.verb == "regress"):
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusRequestEntityTooLarge)
				var b jsonWriter
				b.raw(`{ "error": `)
				b.str("request body is larger than the limit of " + strconv.FormatInt(tooBig.Limit, 10) + " bytes")
				b.raw(" }\n")
				w.Write(b.buf)
				return
			}
			writeError(w, serving.InvalidArgument("reading the request body: %v", err))
			return
		}
		var out []byte
		if p.verb == "predict" {
			out, err = h.predict(r.Context(), p, string(body))
		} else {
			out, err = h.classifyRegress(r.Context(), p, string(body))
		}
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, serving.Errorf(codes.Unimplemented, "Malformed request: %s %s", r.Method, r.URL.Path))
	}
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(serving.HTTPStatus(serving.Code(err)))
	var b jsonWriter
	b.raw(`{ "error": `)
	b.str(serving.Message(err))
	b.raw(" }\n")
	w.Write(b.buf)
}

func (h *restHandler) status(w http.ResponseWriter, p restPath) {
	st, err := h.s.ModelStatus(p.model, p.version, p.label)
	if err != nil {
		writeError(w, err)
		return
	}
	var b jsonWriter
	b.raw("{\n \"model_version_status\": [")
	for i, v := range st {
		if i > 0 {
			b.raw(",")
		}
		code, msg := "OK", ""
		if v.Err != nil {
			code, msg = serving.Code(v.Err).String(), serving.Message(v.Err)
			if serving.Code(v.Err) == codes.Unknown {
				code = "UNKNOWN"
			}
		}
		b.raw("\n  {\n   \"version\": \"" + strconv.FormatInt(v.Version, 10) + "\",\n   \"state\": \"" + v.State + "\",\n   \"status\": {\n    \"error_code\": ")
		b.str(grpcCodeName(code))
		b.raw(",\n    \"error_message\": ")
		b.str(msg)
		b.raw("\n   }\n  }")
	}
	b.raw("\n ]\n}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.buf)
}

// grpcCodeName turns Go's code names (InvalidArgument) into the proto
// enum's (INVALID_ARGUMENT).
func grpcCodeName(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' && s[i-1] >= 'a' && s[i-1] <= 'z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func (h *restHandler) metadata(w http.ResponseWriter, p restPath) {
	md, err := h.s.Metadata(p.model, p.version, p.label)
	if err != nil {
		writeError(w, err)
		return
	}
	mo := protojson.MarshalOptions{UseProtoNames: true, Indent: " "}
	var b jsonWriter
	b.raw("{\n\"model_spec\":{\n \"name\": ")
	b.str(md.Model)
	b.raw(",\n \"signature_name\": \"\",\n \"version\": \"" + strconv.FormatInt(md.Version, 10) + "\"\n}\n,\n\"metadata\": {\"signature_def\": {\n \"signature_def\": {")
	for i, k := range sortedSigKeys(md) {
		if i > 0 {
			b.raw(",")
		}
		js, err := mo.Marshal(md.SignatureDefs[k])
		if err != nil {
			writeError(w, serving.Internal("signature %q: %v", k, err))
			return
		}
		b.raw("\n  ")
		b.str(k)
		b.raw(": ")
		b.raw(string(js))
	}
	b.raw("\n }\n}\n}\n}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.buf)
}

func sortedSigKeys(md *serving.Metadata) []string {
	keys := make([]string, 0, len(md.SignatureDefs))
	for k := range md.SignatureDefs {
		keys = append(keys, k)
	}
	sortStrings(keys)
	return keys
}

// parseRequest parses a request body: a JSON object, with the signature
// it names (default serving_default).
func parseRequest(body string) (*jsonObject, string, error) {
	v, err := parseJSON(body)
	if err != nil {
		return nil, "", serving.InvalidArgument("%v", err)
	}
	obj, ok := v.(*jsonObject)
	if !ok {
		return nil, "", serving.InvalidArgument("JSON Value: %s Is not an object", abbrev(body))
	}
	sigKey := serving.DefaultSignature
	if sv, ok := obj.get("signature_name"); ok {
		s, ok := sv.(string)
		if !ok {
			return nil, "", serving.InvalidArgument("'signature_name' key must be a string value.")
		}
		sigKey = s
	}
	return obj, sigKey, nil
}

// predict decodes a predict body, runs it and encodes the response.
func (h *restHandler) predict(ctx context.Context, p restPath, body string) ([]byte, error) {
	obj, sigKey, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	instances, hasRows := obj.get("instances")
	inputs, hasCols := obj.get("inputs")
	switch {
	case hasRows && hasCols:
		return nil, serving.InvalidArgument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exclusively")
	case !hasRows && !hasCols:
		return nil, serving.InvalidArgument("Missing 'inputs' or 'instances' key")
	}
	for _, k := range obj.keys {
		switch k {
		case "signature_name", "instances", "inputs":
		default:
			return nil, serving.InvalidArgument("unknown key %q in the request (want signature_name and one of instances or inputs)", k)
		}
	}
	md, err := h.s.Metadata(p.model, p.version, p.label)
	if err != nil {
		return nil, err
	}
	sig, ok := md.Signatures[sigKey]
	if !ok {
		return nil, serving.Errorf(codes.FailedPrecondition, "Serving signature key %q not found.", sigKey)
	}
	var in map[string]*serving.Tensor
	if hasRows {
		in, err = decodeRows(sig, instances)
	} else {
		in, err = decodeColumns(sig, inputs)
	}
	if err != nil {
		return nil, err
	}
	resp, err := h.s.Predict(ctx, &serving.Request{Model: p.model, Version: md.Version, Signature: sigKey, Inputs: in, API: serving.APIREST})
	if err != nil {
		return nil, err
	}
	var b jsonWriter
	if hasRows {
		err = encodeRows(&b, resp)
	} else {
		err = encodeColumns(&b, resp)
	}
	return b.buf, err
}

func abbrev(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// isB64 reports whether v is a {"b64": "..."} binary value.
func isB64(v jsonValue) bool {
	o, ok := v.(*jsonObject)
	if !ok || len(o.keys) != 1 || o.keys[0] != "b64" {
		return false
	}
	_, ok = o.vals["b64"].(string)
	return ok
}

// decodeRows reads the row format: a list of values of the one input, or
// a list of objects with every input.
func decodeRows(sig serving.Signature, v jsonValue) (map[string]*serving.Tensor, error) {
	rows, ok := v.([]jsonValue)
	if nums, isNums := v.(numArray); isNums {
		ok, rows = len(nums) > 0, []jsonValue{nums[0]}
	}
	if !ok {
		return nil, serving.InvalidArgument("Expecting 'instances' to be an list/array")
	}
	if len(rows) == 0 {
		return nil, serving.InvalidArgument("'instances' is empty")
	}
	named := false
	if o, ok := rows[0].(*jsonObject); ok && !isB64(o) {
		named = true
	}
	if !named {
		if len(sig.Inputs) != 1 {
			return nil, serving.InvalidArgument("The signature has %d inputs (%s): each instance must be an object with every input", len(sig.Inputs), inputNames(sig))
		}
		t, err := decodeTensor(sig.Inputs[0].Name, v, sig.Inputs[0].DType)
		if err != nil {
			return nil, err
		}
		return map[string]*serving.Tensor{sig.Inputs[0].Name: t}, nil
	}
	out := map[string]*serving.Tensor{}
	cols := make(map[string][]jsonValue, len(sig.Inputs))
	for i, r := range rows {
		o, ok := r.(*jsonObject)
		if !ok || isB64(r) {
			return nil, serving.InvalidArgument("Failed to process element: %d of 'instances' list. Error: expected an object like the first element", i)
		}
		if len(o.keys) != len(sig.Inputs) {
			for _, k := range o.keys {
				if !hasInput(sig, k) {
					return nil, serving.InvalidArgument("Failed to process element: %d of 'instances' list. Error: unknown input %q (the signature has %s)", i, k, inputNames(sig))
				}
			}
		}
		for _, in := range sig.Inputs {
			x, ok := o.get(in.Name)
			if !ok {
				return nil, serving.InvalidArgument("Failed to process element: %d key: %s of 'instances' list. Error: missing (every instance needs every input: %s)", i, in.Name, inputNames(sig))
			}
			cols[in.Name] = append(cols[in.Name], x)
		}
	}
	for _, in := range sig.Inputs {
		t, err := decodeTensor(in.Name, cols[in.Name], in.DType)
		if err != nil {
			return nil, err
		}
		out[in.Name] = t
	}
	return out, nil
}

// decodeColumns reads the columnar format: one value for the one input,
// or an object of inputs.
func decodeColumns(sig serving.Signature, v jsonValue) (map[string]*serving.Tensor, error) {
	if o, ok := v.(*jsonObject); ok && !isB64(o) {
		out := map[string]*serving.Tensor{}
		for _, k := range o.keys {
			in, ok := findInput(sig, k)
			if !ok {
				return nil, serving.InvalidArgument("input tensor alias not found in signature: %s. Inputs expected to be in the set {%s}.", k, inputNames(sig))
			}
			t, err := decodeTensor(k, o.vals[k], in.DType)
			if err != nil {
				return nil, err
			}
			out[k] = t
		}
		return out, nil
	}
	if len(sig.Inputs) != 1 {
		return nil, serving.InvalidArgument("The signature has %d inputs (%s): 'inputs' must be an object with every input", len(sig.Inputs), inputNames(sig))
	}
	t, err := decodeTensor(sig.Inputs[0].Name, v, sig.Inputs[0].DType)
	if err != nil {
		return nil, err
	}
	return map[string]*serving.Tensor{sig.Inputs[0].Name: t}, nil
}

func hasInput(sig serving.Signature, name string) bool {
	_, ok := findInput(sig, name)
	return ok
}

func findInput(sig serving.Signature, name string) (serving.TensorInfo, bool) {
	for _, in := range sig.Inputs {
		if in.Name == name {
			return in, true
		}
	}
	return serving.TensorInfo{}, false
}

func inputNames(sig serving.Signature) string {
	var n []string
	for _, in := range sig.Inputs {
		n = append(n, in.Name)
	}
	return strings.Join(n, ",")
}

// decodeTensor turns a nested JSON list into a tensor of type dt; the
// nesting gives the shape and must be rectangular.
func decodeTensor(name string, v jsonValue, dt tf.DataType) (*serving.Tensor, error) {
	var shape []int64
	for cur := v; ; {
		if nums, ok := cur.(numArray); ok {
			shape = append(shape, int64(len(nums)))
			break
		}
		l, ok := cur.([]jsonValue)
		if !ok {
			break
		}
		shape = append(shape, int64(len(l)))
		if len(l) == 0 {
			break
		}
		cur = l[0]
	}
	t := &serving.Tensor{DType: dt, Shape: shape}
	n := int(t.NumElements())
	if dt == tf.String {
		t.Strings = make([][]byte, 0, n)
	} else {
		if !dt.Valid() || dt.Size() == 0 {
			return nil, serving.InvalidArgument("input %q: type %s cannot be given in JSON", name, dt)
		}
		t.Data = make([]byte, n*dt.Size())
	}
	idx := 0
	var walk func(v jsonValue, depth int, at []int) error
	walk = func(v jsonValue, depth int, at []int) error {
		if nums, ok := v.(numArray); ok && depth == len(shape)-1 {
			// The innermost rows: numbers straight into the tensor.
			if int64(len(nums)) != shape[depth] {
				return serving.InvalidArgument("input %q: ragged list: the element at %v has %d elements where the first has %d (a tensor's rows must all have the same shape)", name, at, len(nums), shape[depth])
			}
			for i, n := range nums {
				if err := setNum(t, idx, n, dt); err != nil {
					return serving.InvalidArgument("input %q at %v: %v", name, append(at, i), err)
				}
				idx++
			}
			return nil
		}
		if depth < len(shape) {
			l, ok := asList(v)
			if !ok || int64(len(l)) != shape[depth] {
				got := "a value"
				if ok {
					got = strconv.Itoa(len(l)) + " elements"
				}
				return serving.InvalidArgument("input %q: ragged list: the element at %v has %s where the first has %d (a tensor's rows must all have the same shape)", name, at, got, shape[depth])
			}
			for i, x := range l {
				if err := walk(x, depth+1, append(at, i)); err != nil {
					return err
				}
			}
			return nil
		}
		if _, isList := asList(v); isList {
			return serving.InvalidArgument("input %q: ragged list: the element at %v is a list where the first is a value", name, at)
		}
		if err := setLeaf(t, idx, v, dt); err != nil {
			return serving.InvalidArgument("input %q at %v: %v", name, at, err)
		}
		idx++
		return nil
	}
	if err := walk(v, 0, nil); err != nil {
		return nil, err
	}
	return t, nil
}

func setLeaf(t *serving.Tensor, i int, v jsonValue, dt tf.DataType) error {
	switch dt {
	case tf.String:
		switch x := v.(type) {
		case string:
			t.Strings = append(t.Strings, []byte(x))
			return nil
		case *jsonObject:
			if isB64(x) {
				b, err := base64.StdEncoding.DecodeString(x.vals["b64"].(string))
				if err != nil {
					return errors.New("'b64' value is not valid base64")
				}
				t.Strings = append(t.Strings, b)
				return nil
			}
		}
		return errors.New("expected a string or {\"b64\": ...} for a string tensor")
	case tf.Bool:
		b, ok := v.(bool)
		if !ok {
			return errors.New("expected true or false for a bool tensor")
		}
		if b {
			t.SetFloat64(i, 1)
		}
		return nil
	}
	n, ok := v.(jsonNum)
	if !ok {
		return errors.New("expected a number for a " + dt.String() + " tensor")
	}
	return setNum(t, i, n, dt)
}

// setNum stores a number as element i of a numeric tensor.
func setNum(t *serving.Tensor, i int, n jsonNum, dt tf.DataType) error {
	switch dt {
	case tf.String:
		return errors.New("expected a string or {\"b64\": ...} for a string tensor")
	case tf.Bool:
		return errors.New("expected true or false for a bool tensor")
	}
	switch dt {
	case tf.Float, tf.Double, tf.Half, tf.BFloat16:
		f, err := n.float()
		if err != nil {
			return errors.New("invalid number " + string(n))
		}
		t.SetFloat64(i, f)
	case tf.Int64, tf.Int32, tf.Int16, tf.Int8:
		x, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return errors.New("expected an integer for a " + dt.String() + " tensor, got " + string(n))
		}
		bits := map[tf.DataType]uint{tf.Int64: 64, tf.Int32: 32, tf.Int16: 16, tf.Int8: 8}[dt]
		if bits < 64 && (x < -(1<<(bits-1)) || x >= 1<<(bits-1)) {
			return errors.New(string(n) + " is out of range for " + dt.String())
		}
		t.SetInt64(i, x)
	case tf.Uint64, tf.Uint32, tf.Uint16, tf.Uint8:
		x, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil {
			return errors.New("expected a non-negative integer for a " + dt.String() + " tensor, got " + string(n))
		}
		bits := map[tf.DataType]uint{tf.Uint64: 64, tf.Uint32: 32, tf.Uint16: 16, tf.Uint8: 8}[dt]
		if bits < 64 && x >= 1<<bits {
			return errors.New(string(n) + " is out of range for " + dt.String())
		}
		t.SetInt64(i, int64(x))
	default:
		return errors.New("type " + dt.String() + " cannot be given in JSON")
	}
	return nil
}

// encodeRows writes {"predictions": ...}: a list of the one output's rows,
// or a list of objects with every output's row.
func encodeRows(b *jsonWriter, resp *serving.Response) error {
	b.raw("{\n    \"predictions\": ")
	if len(resp.Order) == 1 {
		writeTensor(b, resp.Order[0], resp.Outputs[resp.Order[0]])
	} else {
		rows := int64(-1)
		for _, k := range resp.Order {
			t := resp.Outputs[k]
			if len(t.Shape) == 0 {
				return serving.InvalidArgument("output %q is a scalar; the row format needs every output to have a batch dimension (use the columnar format: 'inputs')", k)
			}
			if rows >= 0 && t.Shape[0] != rows {
				return serving.InvalidArgument("outputs have different batch sizes (%q has %d, another %d); use the columnar format ('inputs')", k, t.Shape[0], rows)
			}
			rows = t.Shape[0]
		}
		b.raw("[")
		for r := range rows {
			if r > 0 {
				b.raw(", ")
			}
			b.raw("{")
			for i, k := range resp.Order {
				if i > 0 {
					b.raw(", ")
				}
				t := resp.Outputs[k]
				b.str(k)
				b.raw(": ")
				w := 1
				for _, d := range t.Shape[1:] {
					w *= int(d)
				}
				writeNested(b, k, t, t.Shape[1:], int(r)*w)
			}
			b.raw("}")
		}
		b.raw("]")
	}
	b.raw("\n}\n")
	return nil
}

// encodeColumns writes {"outputs": ...}: the one output, or an object.
func encodeColumns(b *jsonWriter, resp *serving.Response) error {
	b.raw("{\n    \"outputs\": ")
	if len(resp.Order) == 1 {
		writeTensor(b, resp.Order[0], resp.Outputs[resp.Order[0]])
	} else {
		b.raw("{")
		for i, k := range resp.Order {
			if i > 0 {
				b.raw(",")
			}
			b.raw("\n        ")
			b.str(k)
			b.raw(": ")
			writeTensor(b, k, resp.Outputs[k])
		}
		b.raw("\n    }")
	}
	b.raw("\n}\n")
	return nil
}

func writeTensor(b *jsonWriter, name string, t *serving.Tensor) {
	writeNested(b, name, t, t.Shape, 0)
}

// writeNested writes the elements of t from flat index off with the
// given shape as nested lists.
func writeNested(b *jsonWriter, name string, t *serving.Tensor, shape []int64, off int) int {
	if len(shape) == 0 {
		writeLeaf(b, name, t, off)
		return 1
	}
	b.raw("[")
	n := 0
	for i := range shape[0] {
		if i > 0 {
			b.raw(", ")
		}
		n += writeNested(b, name, t, shape[1:], off+n)
	}
	b.raw("]")
	return n
}

func writeLeaf(b *jsonWriter, name string, t *serving.Tensor, i int) {
	switch t.DType {
	case tf.String:
		s := t.Strings[i]
		if strings.HasSuffix(name, "_bytes") || !isUTF8(s) {
			b.raw(`{"b64": "`)
			b.raw(base64.StdEncoding.EncodeToString(s))
			b.raw(`"}`)
		} else {
			b.str(string(s))
		}
	case tf.Bool:
		if t.Data[i] != 0 {
			b.raw("true")
		} else {
			b.raw("false")
		}
	case tf.Float, tf.Half, tf.BFloat16:
		b.float(t.Float64At(i), 32)
	case tf.Double:
		b.float(t.Float64At(i), 64)
	case tf.Uint64:
		b.raw(strconv.FormatUint(uint64(t.Int64At(i)), 10))
	default:
		b.raw(strconv.FormatInt(t.Int64At(i), 10))
	}
}

// jsonWriter builds TF Serving's JSON.
type jsonWriter struct{ buf []byte }

func (w *jsonWriter) raw(s string) { w.buf = append(w.buf, s...) }

func (w *jsonWriter) str(s string) { w.buf = strconv.AppendQuote(w.buf, s) }

// float writes a float as TF Serving does: the shortest text that reads
// back to the same value, with ".0" on whole numbers, and NaN, Infinity,
// -Infinity.
func (w *jsonWriter) float(f float64, bits int) {
	switch {
	case math.IsNaN(f):
		w.raw("NaN")
	case math.IsInf(f, 1):
		w.raw("Infinity")
	case math.IsInf(f, -1):
		w.raw("-Infinity")
	default:
		start := len(w.buf)
		w.buf = strconv.AppendFloat(w.buf, f, 'g', -1, bits)
		if !strings.ContainsAny(string(w.buf[start:]), ".e") {
			w.buf = append(w.buf, ".0"...)
		}
	}
}

func isUTF8(b []byte) bool { return utf8Valid(b) }

// classifyRegress serves :classify and :regress: the examples become
// serialized tf.Example protos fed to the signature's "inputs".
func (h *restHandler) classifyRegress(ctx context.Context, p restPath, body string) ([]byte, error) {
	obj, sigKey, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	exv, ok := obj.get("examples")
	exs, isList := asList(exv)
	if !ok || !isList {
		return nil, serving.InvalidArgument("'examples' key must be a list of objects (one per tf.Example)")
	}
	var ctxFeatures map[string]*expb.Feature
	if cv, ok := obj.get("context"); ok {
		co, ok := cv.(*jsonObject)
		if !ok {
			return nil, serving.InvalidArgument("'context' must be an object of features")
		}
		if ctxFeatures, err = features(co); err != nil {
			return nil, serving.InvalidArgument("context: %v", err)
		}
	}
	serialized := make([][]byte, len(exs))
	for i, e := range exs {
		eo, ok := e.(*jsonObject)
		if !ok {
			return nil, serving.InvalidArgument("examples[%d] is not an object of features", i)
		}
		f, err := features(eo)
		if err != nil {
			return nil, serving.InvalidArgument("examples[%d]: %v", i, err)
		}
		for k, cf := range ctxFeatures {
			if _, dup := f[k]; dup {
				return nil, serving.InvalidArgument("examples[%d]: feature %q is also in the context; features in the context must not appear in examples", i, k)
			}
			f[k] = cf
		}
		mo := proto.MarshalOptions{Deterministic: true}
		if serialized[i], err = mo.Marshal(&expb.Example{Features: &expb.Features{Feature: f}}); err != nil {
			return nil, serving.Internal("examples[%d]: %v", i, err)
		}
	}
	in := &serving.Tensor{DType: tf.String, Shape: []int64{int64(len(serialized))}, Strings: serialized}
	resp, err := h.s.Predict(ctx, &serving.Request{Model: p.model, Version: p.version, Label: p.label, Signature: sigKey,
		Inputs: map[string]*serving.Tensor{"inputs": in}, API: serving.APIREST})
	if err != nil {
		return nil, err
	}
	var b jsonWriter
	switch p.verb {
	case "classify":
		if resp.Method != "tensorflow/serving/classify" {
			return nil, serving.InvalidArgument("Expected classification signature method_name to be tensorflow/serving/classify. Was: %s", resp.Method)
		}
		err = writeClassification(&b, resp, len(exs))
	default:
		if resp.Method != "tensorflow/serving/regress" {
			return nil, serving.InvalidArgument("Expected regression signature method_name to be tensorflow/serving/regress. Was: %s", resp.Method)
		}
		err = writeRegression(&b, resp, len(exs))
	}
	if err != nil {
		return nil, err
	}
	return b.buf, nil
}

func writeClassification(b *jsonWriter, resp *serving.Response, n int) error {
	classes, scores := resp.Outputs["classes"], resp.Outputs["scores"]
	if classes == nil && scores == nil {
		return serving.InvalidArgument("Expected classification signature outputs to contain classes and/or scores")
	}
	k := -1
	for _, t := range []*serving.Tensor{classes, scores} {
		if t == nil {
			continue
		}
		if len(t.Shape) != 2 || int(t.Shape[0]) != n {
			return serving.InvalidArgument("Expected output tensor of shape [%d, num_classes], got %v", n, t.Shape)
		}
		if k >= 0 && int(t.Shape[1]) != k {
			return serving.InvalidArgument("Tensors class and score should match in shape[1]: %d vs %d", k, t.Shape[1])
		}
		k = int(t.Shape[1])
	}
	if classes != nil && classes.DType != tf.String {
		return serving.InvalidArgument("Expected classes tensor of type string, got %s", classes.DType)
	}
	if scores != nil && scores.DType != tf.Float {
		return serving.InvalidArgument("Expected scores tensor of type float, got %s", scores.DType)
	}
	b.raw("{\n    \"result\": [")
	for i := range n {
		if i > 0 {
			b.raw(", ")
		}
		b.raw("[")
		for j := range k {
			if j > 0 {
				b.raw(", ")
			}
			b.raw("[")
			label := ""
			if classes != nil {
				label = string(classes.Strings[i*k+j])
			}
			b.str(label)
			b.raw(", ")
			score := 0.0
			if scores != nil {
				score = scores.Float64At(i*k + j)
			}
			b.float(score, 32)
			b.raw("]")
		}
		b.raw("]")
	}
	b.raw("]\n}\n")
	return nil
}

func writeRegression(b *jsonWriter, resp *serving.Response, n int) error {
	out := resp.Outputs["outputs"]
	if out == nil {
		return serving.InvalidArgument("Expected regression signature outputs to contain outputs")
	}
	if out.DType != tf.Float {
		return serving.InvalidArgument("Expected output Tensor of DT_FLOAT. Got: %s", out.DType)
	}
	if int(out.NumElements()) != n || len(out.Shape) == 0 || int(out.Shape[0]) != n || len(out.Shape) > 2 {
		return serving.InvalidArgument("Expected output Tensor shape to be [%d] or [%d, 1], got %v", n, n, out.Shape)
	}
	b.raw("{\n    \"result\": [")
	for i := range n {
		if i > 0 {
			b.raw(", ")
		}
		b.float(out.Float64At(i), 32)
	}
	b.raw("]\n}\n")
	return nil
}

// features builds a tf.Example feature map: whole numbers make an
// int64_list, decimals (any in the list) a float_list, strings and
// {"b64": ...} a bytes_list.
func features(o *jsonObject) (map[string]*expb.Feature, error) {
	out := make(map[string]*expb.Feature, len(o.keys))
	for _, k := range o.keys {
		vals, ok := asList(o.vals[k])
		if !ok {
			vals = []jsonValue{o.vals[k]}
		}
		var kind string
		for _, v := range vals {
			var k2 string
			switch x := v.(type) {
			case jsonNum:
				k2 = "int"
				if x.isFloat() {
					k2 = "float"
				}
			case string:
				k2 = "bytes"
			default:
				if !isB64(x) {
					return nil, errors.New("feature " + strconv.Quote(k) + ": values must be numbers, strings or {\"b64\": ...}")
				}
				k2 = "bytes"
			}
			switch {
			case kind == "" || kind == k2:
				kind = k2
			case kind != "bytes" && k2 != "bytes":
				kind = "float"
			default:
				return nil, errors.New("feature " + strconv.Quote(k) + " mixes strings and numbers")
			}
		}
		f := &expb.Feature{}
		switch kind {
		case "float":
			l := &expb.FloatList{}
			for _, v := range vals {
				x, _ := v.(jsonNum).float()
				l.Value = append(l.Value, float32(x))
			}
			f.Kind = &expb.Feature_FloatList{FloatList: l}
		case "int":
			l := &expb.Int64List{}
			for _, v := range vals {
				x, err := strconv.ParseInt(string(v.(jsonNum)), 10, 64)
				if err != nil {
					return nil, errors.New("feature " + strconv.Quote(k) + ": " + string(v.(jsonNum)) + " is out of the int64 range")
				}
				l.Value = append(l.Value, x)
			}
			f.Kind = &expb.Feature_Int64List{Int64List: l}
		default:
			l := &expb.BytesList{}
			for _, v := range vals {
				switch x := v.(type) {
				case string:
					l.Value = append(l.Value, []byte(x))
				default:
					bs, err := base64.StdEncoding.DecodeString(x.(*jsonObject).vals["b64"].(string))
					if err != nil {
						return nil, errors.New("feature " + strconv.Quote(k) + ": 'b64' value is not valid base64")
					}
					l.Value = append(l.Value, bs)
				}
			}
			f.Kind = &expb.Feature_BytesList{BytesList: l}
		}
		out[k] = f
	}
	return out, nil
}
