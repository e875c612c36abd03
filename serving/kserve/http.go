package kserve

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gotflow/gotflow/serving"
)

// HeaderLengthHeader gives the length of the JSON that starts a body
// whose binary tensor data follows it.
const HeaderLengthHeader = "Inference-Header-Content-Length"

func (f *frontend) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v2/health/live", f.httpLive)
	mux.HandleFunc("GET /v2/health/ready", f.httpReady)
	mux.HandleFunc("GET /v2", f.httpServerMetadata)
	mux.HandleFunc("GET /v2/{$}", f.httpServerMetadata)
	mux.HandleFunc("GET /v2/models/{model}", f.httpModelMetadata)
	mux.HandleFunc("GET /v2/models/{model}/versions/{version}", f.httpModelMetadata)
	mux.HandleFunc("GET /v2/models/{model}/ready", f.httpModelReady)
	mux.HandleFunc("GET /v2/models/{model}/versions/{version}/ready", f.httpModelReady)
	mux.HandleFunc("POST /v2/models/{model}/infer", f.httpInfer)
	mux.HandleFunc("POST /v2/models/{model}/versions/{version}/infer", f.httpInfer)
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, serving.NotFound("no endpoint %s %s", r.Method, r.URL.Path))
	})
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// writeError answers {"error": message} with the error's HTTP status.
func writeError(w http.ResponseWriter, err error) {
	status := serving.HTTPStatus(serving.Code(err))
	var tl *tooLargeError
	if errors.As(err, &tl) {
		status = http.StatusRequestEntityTooLarge
	}
	b := append(appendString(append([]byte(nil), `{"error":`...), strings.ToValidUTF8(serving.Message(err), "\uFFFD")), '}')
	writeJSON(w, status, b)
}

// writeBool answers a health request: 200 for true, 400 for false, with
// an empty body.
func writeBool(w http.ResponseWriter, ok bool) {
	w.Header().Set("Content-Length", "0")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusBadRequest)
	}
}

func (f *frontend) httpLive(w http.ResponseWriter, _ *http.Request) { writeBool(w, f.s.Live()) }

func (f *frontend) httpReady(w http.ResponseWriter, _ *http.Request) { writeBool(w, f.s.Ready()) }

func (f *frontend) httpModelReady(w http.ResponseWriter, r *http.Request) {
	ok, err := f.modelReady(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeBool(w, ok)
}

type serverMetadataJSON struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

func (f *frontend) httpServerMetadata(w http.ResponseWriter, _ *http.Request) {
	b, _ := json.Marshal(serverMetadataJSON{Name: ServerName, Version: serving.Version, Extensions: extensions})
	writeJSON(w, http.StatusOK, b)
}

type tensorMetaJSON struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type modelMetadataJSON struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []tensorMetaJSON `json:"inputs"`
	Outputs  []tensorMetaJSON `json:"outputs"`
}

// httpModelMetadata describes serving_default, or the signature the
// signature_name query parameter names.
func (f *frontend) httpModelMetadata(w http.ResponseWriter, r *http.Request) {
	m, err := f.modelMetadata(r.PathValue("model"), r.PathValue("version"), r.URL.Query().Get(SignatureParameter))
	if err != nil {
		writeError(w, err)
		return
	}
	conv := func(ts []tensorMeta) []tensorMetaJSON {
		out := make([]tensorMetaJSON, len(ts))
		for i, t := range ts {
			out[i] = tensorMetaJSON(t)
		}
		return out
	}
	b, err := json.Marshal(modelMetadataJSON{Name: m.Name, Versions: m.Versions, Platform: m.Platform, Inputs: conv(m.Inputs), Outputs: conv(m.Outputs)})
	if err != nil {
		writeError(w, serving.Internal("encoding metadata: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// tooLargeError is a request body over its limit (413).
type tooLargeError struct {
	what  string
	limit int64
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("%s larger than %d bytes", e.what, e.limit)
}

// readBody reads the request body, decompressing it as its
// Content-Encoding says.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 {
		buf.Grow(int(min(n, limit)) + 1)
	}
	if _, err := buf.ReadFrom(r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &tooLargeError{"request body", mbe.Limit}
		}
		return nil, serving.InvalidArgument("reading the request body: %v", err)
	}
	var zr io.ReadCloser
	var err error
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return buf.Bytes(), nil
	case "gzip":
		zr, err = gzip.NewReader(&buf)
	case "deflate":
		zr, err = zlib.NewReader(&buf)
	default:
		return nil, serving.InvalidArgument("unsupported Content-Encoding %q (want gzip, deflate or none)", enc)
	}
	if err != nil {
		return nil, serving.InvalidArgument("decompressing the request body: %v", err)
	}
	defer zr.Close()
	// A compressed body is bounded once decompressed, by the server's
	// request limit.
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, serving.InvalidArgument("decompressing the request body: %v", err)
	}
	if int64(len(out)) > limit {
		return nil, &tooLargeError{"decompressed request body", limit}
	}
	return out, nil
}

// httpRequest is an infer request's JSON as far as the response needs
// it.
type httpRequest struct {
	id string
	// outputs are the requested outputs' names; binary says which are
	// answered as binary data.
	outputs []string
	binary  map[string]bool
	// binaryDefault is the request's binary_data_output.
	binaryDefault bool
}

// decodeInfer reads an infer request: its JSON object, and the binary
// tensor data that follows it when the Inference-Header-Content-Length
// header is set.
func decodeInfer(js, bin []byte, hr *httpRequest, req *serving.Request) (inferOptions, error) {
	var o inferOptions
	type input struct {
		name, datatype string
		shape          []int64
		params         map[string]param
		data           []byte
	}
	var inputs []*input
	var params map[string]param
	type output struct {
		name   string
		params map[string]param
	}
	var outputs []output
	p := &parser{b: js}
	err := p.object(func(k []byte) error {
		var err error
		switch string(k) {
		case "id":
			var id []byte
			if id, err = p.str(); err == nil {
				hr.id = string(id)
			}
		case "parameters":
			params, err = p.params()
		case "inputs":
			err = p.array(func() error {
				in := &input{}
				inputs = append(inputs, in)
				return p.object(func(k []byte) error {
					var err error
					switch string(k) {
					case "name":
						var s []byte
						s, err = p.str()
						in.name = string(s)
					case "datatype":
						var s []byte
						s, err = p.str()
						in.datatype = string(s)
					case "shape":
						in.shape = []int64{}
						err = p.array(func() error {
							v, err := p.scalar()
							if err != nil {
								return err
							}
							d, err := strconv.ParseInt(string(v.text), 10, 64)
							if v.kind != kindNumber || err != nil {
								return serving.InvalidArgument("input %q: shape dimension %q is not an integer", in.name, v.text)
							}
							in.shape = append(in.shape, d)
							return nil
						})
					case "parameters":
						in.params, err = p.params()
					case "data":
						in.data, err = p.skip()
					default:
						_, err = p.skip()
					}
					return err
				})
			})
		case "outputs":
			err = p.array(func() error {
				var out output
				err := p.object(func(k []byte) error {
					var err error
					switch string(k) {
					case "name":
						var s []byte
						s, err = p.str()
						out.name = string(s)
					case "parameters":
						out.params, err = p.params()
					default:
						_, err = p.skip()
					}
					return err
				})
				outputs = append(outputs, out)
				return err
			})
		default:
			_, err = p.skip()
		}
		return err
	})
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return o, err
	}

	for k, v := range params {
		switch k {
		case SignatureParameter:
			o.signature, err = v.asString(k)
		case "binary_data_output":
			hr.binaryDefault, err = v.asBool(k)
		case "timeout":
			var us int64
			if us, err = v.asInt(k); err == nil && us < 0 {
				err = serving.InvalidArgument("parameter %q: negative timeout", k)
			}
			o.timeout = time.Duration(us) * time.Microsecond
		}
		if err != nil {
			return o, err
		}
	}

	req.Inputs = make(map[string]*serving.Tensor, len(inputs))
	for _, in := range inputs {
		t, n, err := newInput(in.name, in.datatype, in.shape, req.Inputs)
		if err != nil {
			return o, err
		}
		size := int64(-1)
		for k, v := range in.params {
			switch k {
			case "binary_data_size":
				if size, err = v.asInt(k); err == nil && size < 0 {
					err = serving.InvalidArgument("input %q: negative binary_data_size", in.name)
				}
			case "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset":
				err = serving.InvalidArgument("input %q: shared memory is not supported", in.name)
			}
			if err != nil {
				return o, err
			}
		}
		switch {
		case size >= 0 && in.data != nil:
			return o, serving.InvalidArgument("input %q has both binary_data_size and data", in.name)
		case size >= 0:
			if size > int64(len(bin)) {
				return o, serving.InvalidArgument("input %q: binary_data_size %d, but only %d bytes of binary data are left", in.name, size, len(bin))
			}
			if err := setRaw(t, in.name, n, bin[:size:size]); err != nil {
				return o, err
			}
			bin = bin[size:]
		case in.data == nil:
			return o, serving.InvalidArgument("input %q has no data", in.name)
		default:
			if err := readData(in.data, t, in.name, n); err != nil {
				return o, err
			}
		}
		req.Inputs[in.name] = t
	}
	if len(bin) > 0 {
		return o, serving.InvalidArgument("%d bytes of binary data follow the inputs' data", len(bin))
	}

	hr.binary = map[string]bool{}
	for _, out := range outputs {
		if out.name == "" {
			return o, serving.InvalidArgument("a requested output has no name")
		}
		hr.outputs = append(hr.outputs, out.name)
		b := hr.binaryDefault
		for k, v := range out.params {
			switch k {
			case "binary_data":
				b, err = v.asBool(k)
			case "classification":
				err = serving.InvalidArgument("output %q: the classification extension is not supported", out.name)
			case "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset":
				err = serving.InvalidArgument("output %q: shared memory is not supported", out.name)
			}
			if err != nil {
				return o, err
			}
		}
		hr.binary[out.name] = b
	}
	req.Outputs = hr.outputs
	return o, nil
}

// encodeInfer writes an infer response: its JSON, then the binary data
// of the outputs asked for as binary; jsonLen is the JSON's length when
// binary data follows, else 0.
func encodeInfer(hr *httpRequest, resp *serving.Response) (body []byte, jsonLen int, err error) {
	order := orderOutputs(resp, hr.outputs)
	b := append(make([]byte, 0, 256), `{"model_name":`...)
	b = appendString(b, resp.Model)
	b = append(b, `,"model_version":"`...)
	b = strconv.AppendInt(b, resp.Version, 10)
	b = append(b, '"')
	if hr.id != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, strings.ToValidUTF8(hr.id, "\uFFFD"))
	}
	b = append(b, `,"outputs":[`...)
	var bin []*serving.Tensor
	for i, name := range order {
		t := resp.Outputs[name]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, name)
		b = append(b, `,"datatype":"`...)
		b = append(b, datatypeName(t.DType)...)
		b = append(b, `","shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, ']')
		binary, ok := hr.binary[name]
		if !ok {
			binary = hr.binaryDefault
		}
		if binary {
			b = append(b, `,"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(rawSize(t)), 10)
			b = append(b, "}}"...)
			bin = append(bin, t)
			continue
		}
		b = append(b, `,"data":`...)
		if b, err = appendData(b, t, name); err != nil {
			return nil, 0, err
		}
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	if len(bin) == 0 {
		return b, 0, nil
	}
	jsonLen = len(b)
	for _, t := range bin {
		b = append(b, rawBytes(t)...)
	}
	return b, jsonLen, nil
}

func (f *frontend) httpInfer(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, f.s.MaxRequestBytes())
	if err != nil {
		writeError(w, err)
		return
	}
	js, bin := body, []byte(nil)
	if h := r.Header.Get(HeaderLengthHeader); h != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(h), 10, 63)
		if err != nil || n > uint64(len(body)) {
			writeError(w, serving.InvalidArgument("%s %q does not fit the %d-byte body", HeaderLengthHeader, h, len(body)))
			return
		}
		js, bin = body[:n], body[n:]
	}
	req := &serving.Request{Model: r.PathValue("model"), API: serving.APIV2HTTP}
	if req.Version, req.Label, err = parseVersion(r.PathValue("version")); err != nil {
		writeError(w, err)
		return
	}
	var hr httpRequest
	opts, err := decodeInfer(js, bin, &hr, req)
	if err != nil {
		writeError(w, err)
		return
	}
	resp, err := f.predict(r.Context(), req, opts)
	if err != nil {
		if serving.HTTPStatus(serving.Code(err)) >= 500 {
			f.s.Logger().Warn("v2 infer failed", "model", req.Model, "err", err)
		}
		writeError(w, err)
		return
	}
	out, jsonLen, err := encodeInfer(&hr, resp)
	if err != nil {
		writeError(w, err)
		return
	}
	h := w.Header()
	if jsonLen > 0 {
		h.Set(HeaderLengthHeader, strconv.Itoa(jsonLen))
		h.Set("Content-Type", "application/octet-stream")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Add("Vary", "Accept-Encoding")
	if enc := responseEncoding(r.Header.Get("Accept-Encoding")); enc != "" {
		var zb bytes.Buffer
		var zw io.WriteCloser
		if enc == "gzip" {
			zw, _ = gzip.NewWriterLevel(&zb, gzip.BestSpeed)
		} else {
			zw, _ = zlib.NewWriterLevel(&zb, zlib.BestSpeed)
		}
		zw.Write(out)
		zw.Close()
		out = zb.Bytes()
		h.Set("Content-Encoding", enc)
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// responseEncoding picks gzip or deflate (zlib, as Triton's clients
// mean it) from an Accept-Encoding header, or "" for none.
func responseEncoding(accept string) string {
	best := ""
	for part := range strings.SplitSeq(accept, ",") {
		name, params, _ := strings.Cut(part, ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				continue
			}
		}
		switch name {
		case "gzip":
			return "gzip"
		case "deflate":
			best = "deflate"
		}
	}
	return best
}
