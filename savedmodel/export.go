package savedmodel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	tspb "github.com/wamuir/graft/tensorflow/core/framework/tensor_shape_go_proto"
	typespb "github.com/wamuir/graft/tensorflow/core/framework/types_go_proto"
	pb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/tf"
)

// PredictMethodName is the method name Export gives a signature without
// one: TF Serving's Predict API.
const PredictMethodName = "tensorflow/serving/predict"

// SignatureFromBundle returns the serving signature of a bundle: its inputs
// and outputs under their bundle names, as graph tensors of the inference
// graph (and so of b.Freeze's result). The tensors share their shapes with
// the bundle's.
func SignatureFromBundle(b *loader.Bundle) Signature {
	sig := Signature{Key: DefaultSignatureKey, MethodName: PredictMethodName}
	for _, t := range b.Inputs {
		sig.Inputs = append(sig.Inputs, SignatureTensor(t))
	}
	for _, t := range b.Outputs {
		sig.Outputs = append(sig.Outputs, SignatureTensor(t))
	}
	return sig
}

// Export writes a SavedModel to dir holding the frozen graph and one
// signature (Key defaults to serving_default, MethodName to
// tensorflow/serving/predict) under the tag set {serve}: the layout
// tf.saved_model.load, Load and TF Serving read. The graph must not read
// variables (freeze it first, e.g. with loader.Bundle.Freeze), so the
// variables directory stays empty.
//
// Every signature tensor must exist in the graph; the inputs must be
// Placeholders. dir must not exist or be empty. The model is written to a
// temporary sibling directory, fsynced and renamed to dir at the end
// (internal/atomicfile), so a failed export leaves nothing behind and a
// finished one survives a crash.
func Export(dir string, frozen *loader.GraphDef, sig Signature) error {
	if frozen == nil {
		return errors.New("savedmodel: export: no graph")
	}
	if sig.Key == "" {
		sig.Key = DefaultSignatureKey
	}
	if sig.MethodName == "" {
		sig.MethodName = PredictMethodName
	}
	if len(sig.Inputs) == 0 || len(sig.Outputs) == 0 {
		return fmt.Errorf("savedmodel: export: signature %q needs inputs and outputs (has %d and %d)", sig.Key, len(sig.Inputs), len(sig.Outputs))
	}
	for _, n := range frozen.Def.GetNode() {
		switch n.GetOp() {
		case "VarHandleOp", "VariableV2", "Variable", "ReadVariableOp":
			return fmt.Errorf("savedmodel: export: node %q is a %s: the graph must be frozen (no variables)", n.GetName(), n.GetOp())
		}
	}
	sd := &pb.SignatureDef{
		Inputs:     map[string]*pb.TensorInfo{},
		Outputs:    map[string]*pb.TensorInfo{},
		MethodName: sig.MethodName,
	}
	add := func(kind string, m map[string]*pb.TensorInfo, ts []SignatureTensor, placeholder bool) error {
		for _, t := range ts {
			if t.Alias == "" {
				return fmt.Errorf("savedmodel: export: signature %q: %s %q has no alias", sig.Key, kind, t.Name)
			}
			if _, dup := m[t.Alias]; dup {
				return fmt.Errorf("savedmodel: export: signature %q: %s alias %q used twice", sig.Key, kind, t.Alias)
			}
			name, err := frozen.Resolve(t.Name)
			if err != nil {
				return fmt.Errorf("savedmodel: export: signature %q %s %q: %w", sig.Key, kind, t.Alias, err)
			}
			if !t.DType.Valid() {
				return fmt.Errorf("savedmodel: export: signature %q %s %q has no valid dtype", sig.Key, kind, t.Alias)
			}
			if placeholder {
				op, _, _ := tf.ParseOutputName(name)
				i, _ := frozen.Node(op)
				node := frozen.Def.Node[i]
				if typ := node.GetOp(); typ != "Placeholder" {
					return fmt.Errorf("savedmodel: export: signature %q input %q: %s is a %s op, want Placeholder (is the graph frozen?)", sig.Key, t.Alias, name, typ)
				}
				if got := tf.DataType(node.GetAttr()["dtype"].GetType()); got != t.DType {
					return fmt.Errorf("savedmodel: export: signature %q input %q declares %s, but placeholder %s is %s", sig.Key, t.Alias, t.DType, name, got)
				}
			}
			m[t.Alias] = &pb.TensorInfo{
				Encoding:    &pb.TensorInfo_Name{Name: name},
				Dtype:       typespb.DataType(t.DType),
				TensorShape: shapeProto(t.Shape),
			}
		}
		return nil
	}
	if err := add("input", sd.Inputs, sig.Inputs, true); err != nil {
		return err
	}
	if err := add("output", sd.Outputs, sig.Outputs, false); err != nil {
		return err
	}
	for _, n := range frozen.Def.GetNode() {
		if n.GetOp() != "Placeholder" {
			continue
		}
		fed := false
		for _, in := range sd.Inputs {
			if op, _, _ := tf.ParseOutputName(in.GetName()); op == n.GetName() {
				fed = true
			}
		}
		if !fed {
			return fmt.Errorf("savedmodel: export: placeholder %q is not a signature input (is the graph frozen?)", n.GetName())
		}
	}
	sm := &pb.SavedModel{
		SavedModelSchemaVersion: 1,
		MetaGraphs: []*pb.MetaGraphDef{{
			MetaInfoDef: &pb.MetaGraphDef_MetaInfoDef{
				Tags:              []string{DefaultTag},
				TensorflowVersion: tf.Version(),
			},
			GraphDef:     frozen.Def,
			SignatureDef: map[string]*pb.SignatureDef{sig.Key: sd},
		}},
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(sm)
	if err != nil {
		return fmt.Errorf("savedmodel: export: encode: %w", err)
	}
	return writeAtomically(dir, data)
}

func shapeProto(shape []int64) *tspb.TensorShapeProto {
	if shape == nil {
		return &tspb.TensorShapeProto{UnknownRank: true}
	}
	s := &tspb.TensorShapeProto{}
	for _, d := range shape {
		s.Dim = append(s.Dim, &tspb.TensorShapeProto_Dim{Size: d})
	}
	return s
}

// writeAtomically publishes dir holding saved_model.pb and an empty
// variables directory (atomicfile.CreateDir: staged beside dir, synced,
// renamed into place). An existing non-empty dir is an error; an empty
// one is replaced.
func writeAtomically(dir string, savedModel []byte) error {
	dir = filepath.Clean(dir)
	if entries, err := os.ReadDir(dir); err == nil {
		if len(entries) > 0 {
			return fmt.Errorf("savedmodel: export: %s exists and is not empty", dir)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("savedmodel: export: %w", err)
	}
	d, err := atomicfile.CreateDir(dir)
	if err != nil {
		return fmt.Errorf("savedmodel: export: %w", err)
	}
	defer d.Abort()
	if err := os.Mkdir(filepath.Join(d.Path(), VariablesDir), atomicfile.DirMode); err != nil {
		return fmt.Errorf("savedmodel: export: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.Path(), SavedModelFile), savedModel, atomicfile.FileMode); err != nil {
		return fmt.Errorf("savedmodel: export: %w", err)
	}
	if err := d.CommitNoReplace(); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("savedmodel: export: %s exists and is not empty", dir)
		}
		return fmt.Errorf("savedmodel: export: %w", err)
	}
	return nil
}
