package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/gotflow/gotflow/tf"
)

// BundleFormat is the manifest "format" value LoadBundle accepts.
const BundleFormat = "gotflow.bundle/v1"

// MaxManifestBytes bounds the size of manifest.json.
const MaxManifestBytes = 64 << 20

// Manifest is the decoded manifest.json of a bundle, field for field as the
// JSON Schema loader/schema/bundle-v1.schema.json describes it; its tensors
// decode into BundleTensor (whose MarshalJSON and UnmarshalJSON keep the
// file's "name", "tensor", "dtype" and "shape" keys).
type Manifest struct {
	Format     string            `json:"format"`
	Producer   map[string]string `json:"producer,omitempty"`
	TrainGraph string            `json:"train_graph"`
	InferGraph string            `json:"infer_graph"`
	// EvalGraph is optional: (weights, inputs, labels) -> (loss, metrics)
	// with training behaviour off, under TrainGraph's tensor names.
	EvalGraph string         `json:"eval_graph,omitempty"`
	Weights   string         `json:"weights"`
	Variables []ManifestVar  `json:"variables"`
	Inputs    []BundleTensor `json:"inputs"`
	Labels    []BundleTensor `json:"labels"`
	Outputs   []BundleTensor `json:"outputs"`
	Loss      BundleTensor   `json:"loss"`
	Metrics   []BundleTensor `json:"metrics"`
}

// bundleTensorJSON is a BundleTensor as manifest.json spells it.
type bundleTensorJSON struct {
	Name   string  `json:"name"`
	Tensor string  `json:"tensor"`
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
}

// MarshalJSON writes the tensor as manifest.json holds it: {"name": Alias,
// "tensor": Name, "dtype": "float32", "shape": [-1, 8]}; a zero DType is "".
func (t BundleTensor) MarshalJSON() ([]byte, error) {
	j := bundleTensorJSON{Name: t.Alias, Tensor: t.Name, Shape: t.Shape}
	if t.DType != 0 {
		j.DType = t.DType.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the form MarshalJSON writes. Unknown keys and a dtype
// that is not one of gotflow's names are errors; a missing dtype decodes
// as zero (Manifest.Validate reports it).
func (t *BundleTensor) UnmarshalJSON(b []byte) error {
	var j bundleTensorJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var dt tf.DataType
	if j.DType != "" {
		var ok bool
		if dt, ok = parseDType(j.DType); !ok {
			return fmt.Errorf("tensor %q has dtype %q, want one of %s", j.Name, j.DType, dtypeNames)
		}
	}
	*t = BundleTensor{Alias: j.Name, TensorSpec: tf.TensorSpec{Name: j.Tensor, DType: dt, Shape: j.Shape}}
	return nil
}

// ManifestVar is a variable of the manifest.
type ManifestVar struct {
	Name             string  `json:"name"`
	DType            string  `json:"dtype"`
	Shape            []int64 `json:"shape"`
	Trainable        bool    `json:"trainable"`
	TrainPlaceholder string  `json:"train_placeholder,omitempty"`
	InferPlaceholder string  `json:"infer_placeholder,omitempty"`
	Gradient         string  `json:"gradient,omitempty"`
	Update           string  `json:"update,omitempty"`
}

// ParseManifest decodes and validates manifest.json bytes: unknown fields,
// a wrong format, duplicate names, bad dtypes, shapes or tensor names, and
// gradients that do not match the trainable variables are errors.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestBytes {
		return nil, fmt.Errorf("loader: manifest is %d bytes, over the %d-byte limit", len(b), MaxManifestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("loader: manifest: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("loader: manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest on its own, without the graphs.
func (m *Manifest) Validate() error {
	if m.Format != BundleFormat {
		if strings.HasPrefix(m.Format, "gotflow.bundle/") {
			return fmt.Errorf("loader: manifest format %q is not supported (want %q)", m.Format, BundleFormat)
		}
		return fmt.Errorf("loader: manifest format is %q, want %q", m.Format, BundleFormat)
	}
	for _, f := range []struct{ key, val string }{
		{"train_graph", m.TrainGraph}, {"infer_graph", m.InferGraph}, {"weights", m.Weights},
	} {
		if err := checkFileName(f.key, f.val); err != nil {
			return err
		}
	}
	if m.EvalGraph != "" {
		if err := checkFileName("eval_graph", m.EvalGraph); err != nil {
			return err
		}
	}
	if len(m.Variables) == 0 {
		return fmt.Errorf("loader: manifest has no variables")
	}
	if len(m.Inputs) == 0 {
		return fmt.Errorf("loader: manifest has no inputs")
	}
	if len(m.Outputs) == 0 {
		return fmt.Errorf("loader: manifest has no outputs")
	}
	seen := map[string]bool{}
	trainable := 0
	for i, v := range m.Variables {
		what := fmt.Sprintf("variable %d (%q)", i, v.Name)
		if v.Name == "" {
			return fmt.Errorf("loader: manifest: variable %d has no name", i)
		}
		if seen[v.Name] {
			return fmt.Errorf("loader: manifest: variable name %q is used twice", v.Name)
		}
		seen[v.Name] = true
		if err := checkDType(what, v.DType); err != nil {
			return err
		}
		if v.DType == "string" {
			return fmt.Errorf("loader: manifest: %s: string variables are not supported", what)
		}
		if v.Shape == nil {
			return fmt.Errorf("loader: manifest: %s has no shape (use [] for a scalar)", what)
		}
		for _, d := range v.Shape {
			if d < 0 {
				return fmt.Errorf("loader: manifest: %s has shape %v; variable shapes must be fully known", what, v.Shape)
			}
		}
		if _, err := elementCount(v.Shape); err != nil {
			return fmt.Errorf("loader: manifest: %s: %v", what, err)
		}
		for _, t := range []struct{ key, val string }{
			{"train_placeholder", v.TrainPlaceholder}, {"infer_placeholder", v.InferPlaceholder},
			{"gradient", v.Gradient}, {"update", v.Update},
		} {
			if t.val == "" {
				continue
			}
			if err := checkTensorName(what+" "+t.key, t.val); err != nil {
				return err
			}
		}
		if v.Trainable {
			trainable++
			if v.Gradient == "" {
				return fmt.Errorf("loader: manifest: %s is trainable but has no gradient tensor", what)
			}
			if v.TrainPlaceholder == "" {
				return fmt.Errorf("loader: manifest: %s is trainable but has no train_placeholder", what)
			}
			if v.Update != "" {
				return fmt.Errorf("loader: manifest: %s is trainable and has an update tensor; updates are for non-trainable state", what)
			}
		} else if v.Gradient != "" {
			return fmt.Errorf("loader: manifest: %s is not trainable but has gradient %q", what, v.Gradient)
		}
		if v.Update != "" && v.TrainPlaceholder == "" {
			return fmt.Errorf("loader: manifest: %s has an update but no train_placeholder", what)
		}
	}
	if trainable == 0 {
		return fmt.Errorf("loader: manifest has no trainable variables")
	}
	groups := []struct {
		kind string
		ts   []BundleTensor
	}{{"input", m.Inputs}, {"label", m.Labels}, {"output", m.Outputs}, {"metric", m.Metrics}}
	for _, g := range groups {
		names := map[string]bool{}
		for i, t := range g.ts {
			if err := checkTensor(fmt.Sprintf("%s %d", g.kind, i), t); err != nil {
				return err
			}
			if names[t.Alias] {
				return fmt.Errorf("loader: manifest: %s name %q is used twice", g.kind, t.Alias)
			}
			names[t.Alias] = true
		}
	}
	// Each graph's feeds and each tensor's role must be distinct.
	trainFeeds, inferFeeds, grads := map[string]string{}, map[string]string{}, map[string]string{}
	claim := func(set map[string]string, tensor, who string) error {
		if tensor == "" {
			return nil
		}
		if prev, dup := set[tensor]; dup {
			return fmt.Errorf("loader: manifest: tensor %q is used by both %s and %s", tensor, prev, who)
		}
		set[tensor] = who
		return nil
	}
	for _, v := range m.Variables {
		who := fmt.Sprintf("variable %q", v.Name)
		if err := errors.Join(claim(trainFeeds, v.TrainPlaceholder, who), claim(inferFeeds, v.InferPlaceholder, who),
			claim(grads, v.Gradient, who+" (gradient)"), claim(grads, v.Update, who+" (update)")); err != nil {
			return err
		}
	}
	for _, t := range m.Inputs {
		who := fmt.Sprintf("input %q", t.Alias)
		if err := errors.Join(claim(trainFeeds, t.Name, who), claim(inferFeeds, t.Name, who)); err != nil {
			return err
		}
	}
	for _, t := range m.Labels {
		if err := claim(trainFeeds, t.Name, fmt.Sprintf("label %q", t.Alias)); err != nil {
			return err
		}
	}
	if err := checkTensor("loss", m.Loss); err != nil {
		return err
	}
	if len(m.Loss.Shape) != 0 {
		return fmt.Errorf("loader: manifest: loss %q has shape %v, want a scalar ([])", m.Loss.Name, m.Loss.Shape)
	}
	if dt := m.Loss.DType; dt != tf.Float && dt != tf.Double && dt != tf.Half && dt != tf.BFloat16 {
		return fmt.Errorf("loader: manifest: loss %q has dtype %s, want a floating-point type", m.Loss.Name, dt)
	}
	return nil
}

func checkFileName(key, name string) error {
	if name == "" {
		return fmt.Errorf("loader: manifest: %s is empty, want a file name", key)
	}
	if name != filepath.Base(name) || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("loader: manifest: %s %q must be a file name inside the bundle directory", key, name)
	}
	return nil
}

// dtypeNames lists the dtype names a manifest may use.
const dtypeNames = "float16, bfloat16, float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, bool, string"

// parseDType parses a manifest dtype: exactly one of dtypeNames.
func parseDType(s string) (tf.DataType, bool) {
	dt, err := tf.ParseDataType(s)
	return dt, err == nil && dt.String() == s
}

func checkDType(what, s string) error {
	if s == "" {
		return fmt.Errorf("loader: manifest: %s has no dtype", what)
	}
	if _, ok := parseDType(s); !ok {
		return fmt.Errorf("loader: manifest: %s has dtype %q, want one of %s", what, s, dtypeNames)
	}
	return nil
}

func checkTensorName(what, name string) error {
	if _, _, err := tf.ParseOutputName(name); err != nil || !strings.Contains(name, ":") {
		return fmt.Errorf("loader: manifest: %s %q is not a tensor name (want \"op:index\")", what, name)
	}
	return nil
}

func checkTensor(what string, t BundleTensor) error {
	if t.Alias == "" {
		return fmt.Errorf("loader: manifest: %s has no name", what)
	}
	what = fmt.Sprintf("%s (%q)", what, t.Alias)
	if err := checkTensorName(what+" tensor", t.Name); err != nil {
		return err
	}
	if t.DType == 0 {
		return fmt.Errorf("loader: manifest: %s has no dtype", what)
	}
	if !t.DType.Valid() {
		return fmt.Errorf("loader: manifest: %s has dtype %q, want one of %s", what, t.DType, dtypeNames)
	}
	if t.Shape == nil {
		return fmt.Errorf("loader: manifest: %s has no shape (use [] for a scalar)", what)
	}
	for _, d := range t.Shape {
		if d < -1 {
			return fmt.Errorf("loader: manifest: %s has shape %v; dimensions are sizes or -1", what, t.Shape)
		}
	}
	return nil
}

// elementCount multiplies out a fully known shape, guarding overflow.
func elementCount(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has an unknown dimension", shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}
