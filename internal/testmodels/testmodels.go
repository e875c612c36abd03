package testmodels

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Format is the value of the "format" field that LoadExpected accepts.
const Format = "gotflow.fixture/v1"

// Names lists the fixtures scripts/fixtures/generate.py writes.
var Names = []string{
	"mlp_frozen",
	"tf2_savedmodel",
	"tf1_savedmodel",
	"tf1_checkpoint",
	"strings_identity",
	"mlp_savedmodel",
	"cnn_savedmodel",
}

// Root returns the module root: the directory holding go.mod, found from this
// source file's location.
func Root() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	// file is <root>/internal/testmodels/testmodels.go
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FixturesDir returns <root>/scripts/fixtures.
func FixturesDir() string {
	return filepath.Join(Root(), "scripts", "fixtures")
}

// Dir returns the directory of the named fixture, scripts/fixtures/<name>. It
// does not check that the directory exists.
func Dir(name string) string {
	return filepath.Join(FixturesDir(), name)
}

// Expected is a decoded expected.json: what a fixture holds and what Python
// TensorFlow computed for it.
type Expected struct {
	Format string `json:"format"`
	Model  string `json:"model"`
	// Kind is "frozen_graph", "saved_model" or "checkpoint".
	Kind  string `json:"kind"`
	Info  Info   `json:"info"`
	Cases []Case `json:"cases"`
}

// Info describes the model as a loader should see it.
type Info struct {
	// Graph is the graph file inside the fixture directory (frozen graphs and
	// checkpoints), e.g. "model.pb" or "model.meta".
	Graph string `json:"graph,omitempty"`
	// Inputs and Outputs name the graph's tensors (frozen graphs and
	// checkpoints).
	Inputs  []TensorInfo `json:"inputs,omitempty"`
	Outputs []TensorInfo `json:"outputs,omitempty"`
	// MetaGraphs lists a SavedModel's meta graphs in file order.
	MetaGraphs []MetaGraph `json:"meta_graphs,omitempty"`
	// Checkpoint is set for checkpoint-only fixtures.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// MetaGraph is one meta graph of a SavedModel.
type MetaGraph struct {
	Tags       []string    `json:"tags"` // sorted
	Signatures []Signature `json:"signatures"`
}

// Signature is one SignatureDef; inputs and outputs are sorted by alias.
type Signature struct {
	Key        string       `json:"key"`
	MethodName string       `json:"method_name"`
	Inputs     []TensorInfo `json:"inputs"`
	Outputs    []TensorInfo `json:"outputs"`
}

// TensorInfo names one tensor. Shape is nil for an unknown rank and holds -1
// for unknown dimensions.
type TensorInfo struct {
	Alias string  `json:"alias"`
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
}

// Checkpoint describes a TF1 MetaGraph plus checkpoint files.
type Checkpoint struct {
	MetaGraph      string `json:"meta_graph"`      // file name, e.g. "model.meta"
	Prefix         string `json:"prefix"`          // checkpoint prefix relative to the fixture dir
	RestoreOp      string `json:"restore_op"`      // SaverDef.restore_op_name
	FilenameTensor string `json:"filename_tensor"` // SaverDef.filename_tensor_name
}

// Case is one run: feeds given to the model and the fetches Python TF
// computed.
type Case struct {
	Name string `json:"name"`
	// Style is "signature" (keys are signature aliases) or "raw" (keys are
	// tensor names "op:idx").
	Style     string            `json:"style"`
	Tags      []string          `json:"tags,omitempty"`
	Signature string            `json:"signature,omitempty"`
	Feeds     map[string]*Array `json:"feeds"`
	Fetches   map[string]*Array `json:"fetches"`
}

// FeedKeys returns the case's feed keys, sorted.
func (c *Case) FeedKeys() []string { return sortedKeys(c.Feeds) }

// FetchKeys returns the case's fetch keys, sorted.
func (c *Case) FetchKeys() []string { return sortedKeys(c.Fetches) }

func sortedKeys(m map[string]*Array) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Case returns the named case.
func (e *Expected) Case(name string) (*Case, error) {
	for i := range e.Cases {
		if e.Cases[i].Name == name {
			return &e.Cases[i], nil
		}
	}
	have := make([]string, len(e.Cases))
	for i, c := range e.Cases {
		have[i] = c.Name
	}
	return nil, fmt.Errorf("testmodels: %s has no case %q (have: %v)", e.Model, name, have)
}

// Array is a typed, flat, row-major tensor value. Exactly one of the slices
// matching DType is set (a zero-element array has all of them nil).
type Array struct {
	DType   string // "float32", "float64", "int32", "int64", "uint8", "bool", "string", ...
	Shape   []int64
	Float32 []float32
	Float64 []float64
	Int32   []int32
	Int64   []int64
	Uint8   []uint8
	Bool    []bool
	Bytes   [][]byte // string tensors
}

// Len returns the number of elements the shape describes.
func (a *Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		n *= int(d)
	}
	return n
}

// AsFloat64 returns the numeric elements widened to float64 (bools as 0/1).
// It fails for string arrays.
func (a *Array) AsFloat64() ([]float64, error) {
	n := a.Len()
	out := make([]float64, 0, n)
	switch a.DType {
	case "float32":
		for _, v := range a.Float32 {
			out = append(out, float64(v))
		}
	case "float64":
		out = append(out, a.Float64...)
	case "int32":
		for _, v := range a.Int32 {
			out = append(out, float64(v))
		}
	case "int64":
		for _, v := range a.Int64 {
			out = append(out, float64(v))
		}
	case "uint8":
		for _, v := range a.Uint8 {
			out = append(out, float64(v))
		}
	case "bool":
		for _, v := range a.Bool {
			if v {
				out = append(out, 1)
			} else {
				out = append(out, 0)
			}
		}
	default:
		return nil, fmt.Errorf("testmodels: dtype %s is not numeric", a.DType)
	}
	return out, nil
}

type rawArray struct {
	DType string            `json:"dtype"`
	Shape []int64           `json:"shape"`
	Data  []json.RawMessage `json:"data"`
}

// UnmarshalJSON decodes {"dtype", "shape", "data"}.
func (a *Array) UnmarshalJSON(b []byte) error {
	var r rawArray
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	a.DType = r.DType
	a.Shape = r.Shape
	if a.Shape == nil {
		a.Shape = []int64{}
	}
	if n := a.Len(); n != len(r.Data) {
		return fmt.Errorf("testmodels: shape %v holds %d elements, data has %d", r.Shape, n, len(r.Data))
	}
	for i, raw := range r.Data {
		if err := a.appendElem(raw); err != nil {
			return fmt.Errorf("testmodels: %s element %d: %w", r.DType, i, err)
		}
	}
	return nil
}

func (a *Array) appendElem(raw json.RawMessage) error {
	switch a.DType {
	case "float32":
		f, err := decodeFloat(raw)
		if err != nil {
			return err
		}
		a.Float32 = append(a.Float32, float32(f))
	case "float64":
		f, err := decodeFloat(raw)
		if err != nil {
			return err
		}
		a.Float64 = append(a.Float64, f)
	case "int32":
		var v int32
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		a.Int32 = append(a.Int32, v)
	case "int64":
		var v int64
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		a.Int64 = append(a.Int64, v)
	case "uint8":
		var v uint8
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		a.Uint8 = append(a.Uint8, v)
	case "bool":
		var v bool
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		a.Bool = append(a.Bool, v)
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		v, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return err
		}
		if v == nil {
			v = []byte{}
		}
		a.Bytes = append(a.Bytes, v)
	default:
		return fmt.Errorf("unsupported dtype %q", a.DType)
	}
	return nil
}

func decodeFloat(raw json.RawMessage) (float64, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		switch s {
		case "NaN":
			return math.NaN(), nil
		case "Infinity":
			return math.Inf(1), nil
		case "-Infinity":
			return math.Inf(-1), nil
		}
		return 0, fmt.Errorf("float %q is not NaN, Infinity or -Infinity", s)
	}
	var f float64
	err := json.Unmarshal(raw, &f)
	return f, err
}

// LoadExpected reads and decodes scripts/fixtures/<name>/expected.json.
func LoadExpected(name string) (*Expected, error) {
	path := filepath.Join(Dir(name), "expected.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("testmodels: %w (run: .venv/bin/python scripts/fixtures/generate.py)", err)
	}
	var e Expected
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("testmodels: %s: %w", path, err)
	}
	if e.Format != Format {
		return nil, fmt.Errorf("testmodels: %s: format %q, want %q", path, e.Format, Format)
	}
	return &e, nil
}

// MustLoadExpected is LoadExpected for tests: it fails t on error.
func MustLoadExpected(t interface {
	Helper()
	Fatalf(string, ...any)
}, name string) *Expected {
	t.Helper()
	e, err := LoadExpected(name)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return e
}

// Signature returns the signature key of the meta graph whose sorted tags
// equal tags.
func (in *Info) Signature(tags []string, key string) (*Signature, error) {
	want := append([]string(nil), tags...)
	sort.Strings(want)
	for i := range in.MetaGraphs {
		mg := &in.MetaGraphs[i]
		if fmt.Sprint(mg.Tags) != fmt.Sprint(want) {
			continue
		}
		for j := range mg.Signatures {
			if mg.Signatures[j].Key == key {
				return &mg.Signatures[j], nil
			}
		}
	}
	return nil, fmt.Errorf("testmodels: no signature %q under tags %v", key, tags)
}

// HalfPlusTwo copies TensorFlow's half_plus_two SavedModel, which graft's
// module ships in its testdata, into base/<version>: serving_default x → y
// = 0.5x + 2 (float32 [-1,1]); classify_x2_to_y3 and regress_x2_to_y3 on a
// float32 "inputs" giving 0.5x + 3; classify_x_to_y and regress_x_to_y on
// serialized tf.Examples with a float feature "x". It is the model TF
// Serving's own tests and documentation use.
func HalfPlusTwo(t testing.TB, base string, version int) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/wamuir/graft").Output()
	if err != nil {
		t.Fatalf("testmodels: find graft's module: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "tensorflow", "testdata", "saved_model", "half_plus_two", "00000123")
	if err := os.CopyFS(filepath.Join(base, strconv.Itoa(version)), os.DirFS(src)); err != nil {
		t.Fatalf("testmodels: copy half_plus_two: %v", err)
	}
}
