package savedmodel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	shapepb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	pb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// MaxFileSize is the largest saved_model.pb or MetaGraph file read: the 2 GiB
// limit of a serialized protocol buffer.
const MaxFileSize = 1<<31 - 1

// File names inside a SavedModel directory.
const (
	SavedModelFile     = "saved_model.pb"
	SavedModelTextFile = "saved_model.pbtxt"
	VariablesDir       = "variables"
)

// ErrNotSavedModel is returned (wrapped) when a directory holds neither
// saved_model.pb nor saved_model.pbtxt.
var ErrNotSavedModel = errors.New("savedmodel: not a SavedModel directory")

// SignatureTensor is one input or output of a model: the name callers use
// for it and the graph tensor it is.
type SignatureTensor struct {
	// Alias is the signature's name for the tensor; empty when the model is
	// used with raw tensor names (then callers use TensorSpec.Name).
	Alias string
	// TensorSpec is the graph tensor ("op:idx"), its dtype and its static
	// shape (-1 for unknown dimensions, nil for an unknown rank).
	tf.TensorSpec
}

// String formats the tensor like "x: float32[-1,8] (serving_default_x:0)",
// or like tf.TensorSpec's String without an alias.
func (s SignatureTensor) String() string {
	if s.Alias == "" {
		return s.TensorSpec.String()
	}
	spec := s.TensorSpec
	spec.Name = s.Alias
	return spec.String() + " (" + s.Name + ")"
}

// Signature is one SignatureDef, inputs and outputs sorted by alias.
type Signature struct {
	Key        string
	MethodName string
	Inputs     []SignatureTensor
	Outputs    []SignatureTensor
}

// Input returns the input called alias.
func (s *Signature) Input(alias string) (SignatureTensor, bool) { return findAlias(s.Inputs, alias) }

// Output returns the output called alias.
func (s *Signature) Output(alias string) (SignatureTensor, bool) { return findAlias(s.Outputs, alias) }

func findAlias(specs []SignatureTensor, alias string) (SignatureTensor, bool) {
	for _, t := range specs {
		if t.Alias == alias {
			return t, true
		}
	}
	return SignatureTensor{}, false
}

func aliases(specs []SignatureTensor) []string {
	out := make([]string, len(specs))
	for i, t := range specs {
		out[i] = t.Alias
	}
	return out
}

// MetaGraph summarizes one meta graph of a SavedModel.
type MetaGraph struct {
	Tags []string // sorted
	// Signatures sorted by key. Internal signatures whose key starts with
	// "__" (such as __saved_model_init_op) are left out.
	Signatures []Signature

	def *pb.MetaGraphDef
}

// Def returns the meta graph's parsed MetaGraphDef.
func (m *MetaGraph) Def() *pb.MetaGraphDef { return m.def }

// Signature returns the signature called key, or an error listing the keys
// there are.
func (m *MetaGraph) Signature(key string) (*Signature, error) {
	for i := range m.Signatures {
		if m.Signatures[i].Key == key {
			return &m.Signatures[i], nil
		}
	}
	return nil, &NotFoundError{What: "signature", Name: key, Where: "tags " + tagString(m.Tags), Have: m.SignatureKeys()}
}

// SignatureKeys lists the signature keys, sorted.
func (m *MetaGraph) SignatureKeys() []string {
	keys := make([]string, len(m.Signatures))
	for i, s := range m.Signatures {
		keys[i] = s.Key
	}
	return keys
}

// Info is what a SavedModel directory holds, read without TensorFlow.
type Info struct {
	Dir        string
	MetaGraphs []MetaGraph // in file order
}

// MetaGraph returns the meta graph whose tag set equals tags (order does not
// matter), or an error listing the tag sets there are.
func (in *Info) MetaGraph(tags []string) (*MetaGraph, error) {
	want := sortedCopy(tags)
	for i := range in.MetaGraphs {
		if slices.Equal(in.MetaGraphs[i].Tags, want) {
			return &in.MetaGraphs[i], nil
		}
	}
	have := make([]string, len(in.MetaGraphs))
	for i, m := range in.MetaGraphs {
		have[i] = tagString(m.Tags)
	}
	return nil, &NotFoundError{What: "meta graph with tags", Name: tagString(want), Where: in.Dir, Have: have}
}

func tagString(tags []string) string { return "{" + strings.Join(tags, ",") + "}" }

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// NotFoundError reports a tag set, signature key, alias or tensor that does
// not exist, with the names that do.
type NotFoundError struct {
	What  string // "signature", "meta graph with tags", "input", "output"
	Name  string
	Where string
	Have  []string
}

func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("savedmodel: %s %q not found", e.What, e.Name)
	if e.Where != "" {
		msg += " in " + e.Where
	}
	return msg + " (have: " + strings.Join(e.Have, ", ") + ")"
}

// Is makes errors.Is(err, tf.ErrNotFound) hold.
func (e *NotFoundError) Is(target error) bool { return target == tf.ErrNotFound }

// Read parses and validates dir/saved_model.pb (or saved_model.pbtxt)
// without TensorFlow and lists its meta graphs and signatures. Load calls it
// before handing the directory to TensorFlow, so a corrupt file is an error
// rather than a crash.
func Read(dir string) (*Info, error) {
	sm, err := readSavedModelProto(dir)
	if err != nil {
		return nil, err
	}
	info := &Info{Dir: dir}
	for i, mg := range sm.GetMetaGraphs() {
		m, err := summarize(mg)
		if err != nil {
			return nil, fmt.Errorf("savedmodel: %s: meta graph %d: %w", dir, i, err)
		}
		info.MetaGraphs = append(info.MetaGraphs, m)
	}
	return info, nil
}

func readSavedModelProto(dir string) (*pb.SavedModel, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("savedmodel: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is a file, not a directory", ErrNotSavedModel, dir)
	}
	path := filepath.Join(dir, SavedModelFile)
	text := false
	data, err := readLimited(path)
	if errors.Is(err, fs.ErrNotExist) {
		path = filepath.Join(dir, SavedModelTextFile)
		text = true
		data, err = readLimited(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no %s or %s (found: %s)", ErrNotSavedModel, dir,
				SavedModelFile, SavedModelTextFile, listDir(dir))
		}
	}
	if err != nil {
		return nil, err
	}
	sm := &pb.SavedModel{}
	if text {
		err = prototext.Unmarshal(data, sm)
	} else {
		err = proto.Unmarshal(data, sm)
	}
	if err != nil {
		return nil, fmt.Errorf("savedmodel: %s is not a valid SavedModel protocol buffer: %w", path, err)
	}
	if len(sm.GetMetaGraphs()) == 0 {
		return nil, fmt.Errorf("savedmodel: %s holds no meta graph", path)
	}
	for i, mg := range sm.GetMetaGraphs() {
		if err := validateMetaGraph(mg); err != nil {
			return nil, fmt.Errorf("savedmodel: %s: meta graph %d: %w", path, i, err)
		}
	}
	return sm, nil
}

func readLimited(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("savedmodel: %s is %d bytes, more than the %d a protocol buffer may hold", path, st.Size(), int64(MaxFileSize))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("savedmodel: %w", err)
	}
	return data, nil
}

func listDir(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return "nothing"
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		names = append(names, n)
		if len(names) == 10 {
			names = append(names, "…")
			break
		}
	}
	return strings.Join(names, ", ")
}

// validateMetaGraph checks what TensorFlow would otherwise trust: a graph is
// present, node names are unique, every node input names an existing node,
// and every signature tensor names an existing node output.
func validateMetaGraph(mg *pb.MetaGraphDef) error {
	if mg.GetGraphDef() == nil {
		return errors.New("no graph_def")
	}
	nodes, err := ValidateGraphDef(mg.GetGraphDef())
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(mg.GetSignatureDef()))
	for k := range mg.GetSignatureDef() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sd := mg.GetSignatureDef()[k]
		for dir, m := range map[string]map[string]*pb.TensorInfo{"input": sd.GetInputs(), "output": sd.GetOutputs()} {
			for alias, ti := range m {
				name := ti.GetName()
				if name == "" {
					continue // sparse and composite tensors are reported when used
				}
				op, _, err := tf.ParseOutputName(name)
				if err != nil {
					return fmt.Errorf("signature %q %s %q: %w", k, dir, alias, err)
				}
				if _, ok := nodes[op]; !ok {
					return fmt.Errorf("signature %q %s %q names tensor %q, but the graph has no node %q", k, dir, alias, name, op)
				}
			}
		}
	}
	return nil
}

// ValidateGraphDef checks that node names are non-empty and unique and that
// every input refers to a node of the graph. It returns the set of node
// names.
func ValidateGraphDef(g *graphpb.GraphDef) (map[string]struct{}, error) {
	nodes := make(map[string]struct{}, len(g.GetNode()))
	for i, n := range g.GetNode() {
		name := n.GetName()
		if name == "" {
			return nil, fmt.Errorf("graph node %d has no name", i)
		}
		if n.GetOp() == "" {
			return nil, fmt.Errorf("graph node %q has no op", name)
		}
		if _, dup := nodes[name]; dup {
			return nil, fmt.Errorf("graph has two nodes called %q", name)
		}
		nodes[name] = struct{}{}
	}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			src, _, err := loader.ParseInput(in)
			if err != nil {
				return nil, fmt.Errorf("graph node %q: %v", n.GetName(), err)
			}
			if _, ok := nodes[src]; !ok {
				return nil, fmt.Errorf("graph node %q reads input %q, but there is no node %q", n.GetName(), in, src)
			}
		}
	}
	return nodes, nil
}

func summarize(mg *pb.MetaGraphDef) (MetaGraph, error) {
	m := MetaGraph{Tags: sortedCopy(mg.GetMetaInfoDef().GetTags()), def: mg}
	keys := make([]string, 0, len(mg.GetSignatureDef()))
	for k := range mg.GetSignatureDef() {
		if strings.HasPrefix(k, "__") {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sd := mg.GetSignatureDef()[k]
		s := Signature{Key: k, MethodName: sd.GetMethodName()}
		s.Inputs = specs(sd.GetInputs())
		s.Outputs = specs(sd.GetOutputs())
		m.Signatures = append(m.Signatures, s)
	}
	return m, nil
}

func specs(m map[string]*pb.TensorInfo) []SignatureTensor {
	out := make([]SignatureTensor, 0, len(m))
	for alias, ti := range m {
		out = append(out, SignatureTensor{Alias: alias, TensorSpec: tf.TensorSpec{
			Name:  tensorInfoName(ti),
			DType: tf.DataType(ti.GetDtype()),
			Shape: shapeOf(ti.GetTensorShape()),
		}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Alias < out[j].Alias })
	return out
}

// tensorInfoName returns the dense tensor name, or a description of the
// encoding gotflow does not feed (sparse and composite tensors).
func tensorInfoName(ti *pb.TensorInfo) string {
	switch {
	case ti.GetName() != "":
		return ti.GetName()
	case ti.GetCooSparse() != nil:
		return "<sparse " + ti.GetCooSparse().GetValuesTensorName() + ">"
	case ti.GetCompositeTensor() != nil:
		return "<composite>"
	}
	return "<none>"
}

func shapeOf(s *shapepb.TensorShapeProto) []int64 {
	if s == nil || s.GetUnknownRank() {
		return nil
	}
	out := make([]int64, len(s.GetDim()))
	for i, d := range s.GetDim() {
		out[i] = d.GetSize()
	}
	return out
}
