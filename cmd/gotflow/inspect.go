package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/gotflow/gotflow/estimator"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", stderr)
	kind := fs.String("kind", "", "model kind: saved_model, frozen_graph, checkpoint or bundle (default: detect)")
	asJSON := fs.Bool("json", false, "print, as JSON, the inputs and outputs 'gotflow predict' would use with the same --tags, --signature and --raw")
	tags := fs.String("tags", "", "with --json: comma-separated tag set of the meta graph (default serve)")
	signature := fs.String("signature", "", "with --json: signature key (default serving_default)")
	raw := fs.Bool("raw", false, "with --json: name inputs and outputs by graph tensor (op:idx)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: want exactly one MODEL argument, got %d", errUsage, fs.NArg())
	}
	path := fs.Arg(0)
	k := *kind
	if k == "" {
		var err error
		if k, err = estimator.DetectKind(path); err != nil {
			return err
		}
	}
	if *asJSON {
		return inspectJSON(ctx, stdout, &estimator.TFModel{Path: path, Kind: k, TagSet: splitTags(*tags), SignatureDefKey: *signature, RawTensorNames: *raw})
	}
	if *tags != "" || *signature != "" || *raw {
		return fmt.Errorf("%w: --tags, --signature and --raw go with --json", errUsage)
	}
	return inspectModel(ctx, stdout, path, k)
}

// splitTags parses a comma-separated tag set; empty parts are dropped.
func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// jsonSpec is one input or output in `inspect --json`.
type jsonSpec struct {
	Name   string  `json:"name"`   // the name predict's --map and --out-map use
	Tensor string  `json:"tensor"` // the graph tensor, op:idx
	DType  string  `json:"dtype"`  // numpy-style: float32, int64, string, …
	Shape  []int64 `json:"shape"`  // -1 for unknown dimensions; null for an unknown rank
}

// jsonModel is the document `inspect --json` prints.
type jsonModel struct {
	Model     string     `json:"model"`
	Kind      string     `json:"kind"`
	Signature string     `json:"signature,omitempty"` // empty for raw tensor names
	Inputs    []jsonSpec `json:"inputs"`
	Outputs   []jsonSpec `json:"outputs"`
}

// inspectJSON loads m as predict would and prints the inputs it feeds and
// the outputs it appends when no mapping is given.
func inspectJSON(ctx context.Context, w io.Writer, m *estimator.TFModel) error {
	defer m.Close()
	r, err := m.Open(ctx)
	if err != nil {
		return err
	}
	doc := jsonModel{Model: m.Path, Kind: m.Kind, Inputs: []jsonSpec{}, Outputs: []jsonSpec{}}
	ins, outs := r.Inputs(), r.Outputs()
	if s := r.Signature(); s != nil {
		doc.Signature, ins, outs = s.Key, s.Inputs, s.Outputs
	}
	conv := func(specs []savedmodel.SignatureTensor) []jsonSpec {
		out := make([]jsonSpec, 0, len(specs))
		for _, s := range specs {
			name, dt := specNames(s)
			out = append(out, jsonSpec{Name: name, Tensor: s.Name, DType: dt, Shape: s.Shape})
		}
		return out
	}
	doc.Inputs, doc.Outputs = conv(ins), conv(outs)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// inspectModel prints what the model at path holds.
func inspectModel(ctx context.Context, w io.Writer, path, kind string) error {
	fmt.Fprintf(w, "model: %s\nkind:  %s\n", path, kind)
	switch kind {
	case estimator.KindSavedModel:
		info, err := savedmodel.Read(estimator.SavedModelDir(path))
		if err != nil {
			return err
		}
		for _, mg := range info.MetaGraphs {
			fmt.Fprintf(w, "\nmeta graph with tags %s: %d signature(s)\n", strings.Join(mg.Tags, ","), len(mg.Signatures))
			for _, s := range mg.Signatures {
				printSignature(w, &s)
			}
		}
		return nil
	case estimator.KindFrozenGraph:
		m, err := savedmodel.LoadFrozenGraph(ctx, path)
		if err != nil {
			return err
		}
		defer m.Close()
		printRaw(w, m)
		return nil
	case estimator.KindCheckpoint:
		m, err := savedmodel.LoadCheckpoint(ctx, path)
		if err != nil {
			return err
		}
		defer m.Close()
		fmt.Fprintf(w, "checkpoint: %s\n", filepath.Base(m.Path()))
		if mg := m.MetaGraph(); mg != nil && len(mg.Signatures) > 0 {
			for _, s := range mg.Signatures {
				printSignature(w, &s)
			}
		}
		printRaw(w, m)
		return nil
	}
	tm := &estimator.TFModel{Path: path, Kind: kind}
	defer tm.Close()
	r, err := tm.Open(ctx)
	if err != nil {
		return err
	}
	if s := r.Signature(); s != nil {
		printSignature(w, s)
		return nil
	}
	fmt.Fprintln(w)
	printSpecs(w, "inputs", r.Inputs())
	printSpecs(w, "outputs", r.Outputs())
	return nil
}

func printSignature(w io.Writer, s *savedmodel.Signature) {
	fmt.Fprintf(w, "\n  signature %q", s.Key)
	if s.MethodName != "" {
		fmt.Fprintf(w, " (%s)", s.MethodName)
	}
	fmt.Fprintln(w)
	printSpecs(w, "    inputs", s.Inputs)
	printSpecs(w, "    outputs", s.Outputs)
}

func printRaw(w io.Writer, m *savedmodel.Model) {
	fmt.Fprintln(w)
	printSpecs(w, "inputs (placeholders)", m.Inputs())
	printSpecs(w, "outputs (tensors nothing reads)", m.Outputs())
}

func printSpecs(w io.Writer, title string, specs []savedmodel.SignatureTensor) {
	indent := strings.Repeat(" ", len(title)-len(strings.TrimLeft(title, " ")))
	fmt.Fprintf(w, "%s:\n", title)
	if len(specs) == 0 {
		fmt.Fprintf(w, "%s  (none)\n", indent)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range specs {
		name, dt := specNames(s)
		line := fmt.Sprintf("%s  %s\t%s\t%s", indent, name, dt, tf.ShapeString(s.Shape))
		if s.Alias != "" {
			line += "\t" + s.Name
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

// specNames returns what inspect shows of a tensor: its alias (else its
// graph name) and its dtype ("invalid" when the graph does not say).
func specNames(s savedmodel.SignatureTensor) (name, dtype string) {
	name, dtype = s.Alias, "invalid"
	if name == "" {
		name = s.Name
	}
	if s.DType != 0 {
		dtype = s.DType.String()
	}
	return name, dtype
}
