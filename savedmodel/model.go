package savedmodel

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/gotflow/gotflow/tf"
)

// Kind says how a Model was loaded.
type Kind string

// The kinds of model Load, LoadFrozenGraph and LoadCheckpoint produce.
const (
	KindSavedModel  Kind = "saved_model"
	KindFrozenGraph Kind = "frozen_graph"
	KindCheckpoint  Kind = "checkpoint"
)

// Defaults for Load.
const (
	DefaultTag          = "serve"
	DefaultSignatureKey = "serving_default"
)

// Option configures Load, LoadFrozenGraph and LoadCheckpoint.
type Option interface{ apply(*options) }

type options struct {
	tags     []string
	sigKey   string
	sigSet   bool
	raw      bool
	sessOpts []tf.SessionOption
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithTags selects the meta graph by its tag set (default {serve}).
func WithTags(tags ...string) Option {
	return optionFunc(func(o *options) { o.tags = append([]string(nil), tags...) })
}

// WithSignature selects the signature whose aliases name inputs and outputs
// (default serving_default for SavedModels; checkpoints and frozen graphs
// have none unless their MetaGraph carries one).
func WithSignature(key string) Option {
	return optionFunc(func(o *options) { o.sigKey, o.sigSet, o.raw = key, true, false })
}

// WithRawTensorNames ignores signatures: inputs and outputs are named by
// graph tensor, "op:idx" (the TensorFlowOnSpark style without
// signature_def_key).
func WithRawTensorNames() Option {
	return optionFunc(func(o *options) { o.raw, o.sigSet = true, false })
}

// WithSessionOptions passes options (threads, config) to the session.
func WithSessionOptions(opts ...tf.SessionOption) Option {
	return optionFunc(func(o *options) { o.sessOpts = append(o.sessOpts, opts...) })
}

func buildOptions(opts []Option) options {
	o := options{tags: []string{DefaultTag}, sigKey: DefaultSignatureKey}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// Endpoint is a resolved input or output: its description and the graph
// tensor to feed or fetch.
type Endpoint struct {
	SignatureTensor
	Output tf.Output
}

// Model is a loaded model: a session over its graph plus the names callers
// use for its inputs and outputs (signature aliases, or raw tensor names).
type Model struct {
	kind    Kind
	path    string
	tags    []string
	meta    *MetaGraph // nil for frozen graphs
	sig     *Signature // nil when tensors are named raw
	graph   *tf.Graph
	session *tf.Session

	mu     sync.Mutex
	closed bool
}

// Load loads the SavedModel in dir: the meta graph with the chosen tag set
// (default {serve}) with its variables restored, and the chosen signature
// (default serving_default) unless WithRawTensorNames is given.
//
// saved_model.pb is parsed and validated first; a wrong tag set or signature
// key returns a *NotFoundError listing what the model has, before TensorFlow
// is involved. TensorFlow cannot be interrupted while loading: ctx is checked
// before and after.
func Load(ctx context.Context, dir string, opts ...Option) (*Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	if len(o.tags) == 0 {
		return nil, errors.New("savedmodel: at least one tag is required")
	}
	info, err := Read(dir)
	if err != nil {
		return nil, err
	}
	mg, err := info.MetaGraph(o.tags)
	if err != nil {
		return nil, err
	}
	var sig *Signature
	if !o.raw {
		if sig, err = mg.Signature(o.sigKey); err != nil {
			return nil, err
		}
		if err := checkDense(sig); err != nil {
			return nil, err
		}
	}
	sess, g, _, err := tf.LoadSavedModel(dir, mg.Tags, o.sessOpts...)
	if err != nil {
		return nil, fmt.Errorf("savedmodel: load %s with tags %s: %w", dir, tagString(mg.Tags), err)
	}
	m := &Model{kind: KindSavedModel, path: dir, tags: mg.Tags, meta: mg, sig: sig, graph: g, session: sess}
	if err := m.checkSignature(); err != nil {
		m.Close()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func checkDense(sig *Signature) error {
	for _, list := range [][]SignatureTensor{sig.Inputs, sig.Outputs} {
		for _, t := range list {
			if t.Name == "" || t.Name[0] == '<' {
				return fmt.Errorf("savedmodel: signature %q tensor %q is %s; only dense tensors are supported", sig.Key, t.Alias, t.Name)
			}
		}
	}
	return nil
}

// checkSignature resolves every signature tensor in the loaded graph so a
// signature that names missing tensors fails at load time.
func (m *Model) checkSignature() error {
	if m.sig == nil {
		return nil
	}
	for _, list := range [][]SignatureTensor{m.sig.Inputs, m.sig.Outputs} {
		for _, t := range list {
			if _, err := m.graph.Output(t.Name); err != nil {
				return fmt.Errorf("savedmodel: signature %q alias %q: %w", m.sig.Key, t.Alias, err)
			}
		}
	}
	return nil
}

// Kind says how the model was loaded.
func (m *Model) Kind() Kind { return m.kind }

// Path is the directory or file the model was loaded from.
func (m *Model) Path() string { return m.path }

// Tags is the loaded meta graph's tag set (nil for frozen graphs).
func (m *Model) Tags() []string { return append([]string(nil), m.tags...) }

// MetaGraph describes the loaded meta graph and all its signatures (nil for
// frozen graphs).
func (m *Model) MetaGraph() *MetaGraph { return m.meta }

// Signature is the signature inputs and outputs are named by, or nil when
// they are raw tensor names.
func (m *Model) Signature() *Signature { return m.sig }

// Session is the model's session. It stays owned by the Model: do not close
// it.
func (m *Model) Session() *tf.Session { return m.session }

// Graph is the model's graph, owned by the Model.
func (m *Model) Graph() *tf.Graph { return m.graph }

// Inputs lists what must be fed: the signature's inputs, or with raw tensor
// names the graph's placeholders (those without a default).
func (m *Model) Inputs() []SignatureTensor {
	if m.sig != nil {
		return append([]SignatureTensor(nil), m.sig.Inputs...)
	}
	var out []SignatureTensor
	for _, op := range m.graph.Operations() {
		if op.Type() == "Placeholder" {
			out = append(out, specOf(op.Output(0)))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Outputs lists the signature's outputs, or with raw tensor names the graph's
// tensors that no operation reads (the likely results).
func (m *Model) Outputs() []SignatureTensor {
	if m.sig != nil {
		return append([]SignatureTensor(nil), m.sig.Outputs...)
	}
	var out []SignatureTensor
	for _, op := range m.graph.Operations() {
		switch op.Type() {
		case "NoOp", "Const", "Placeholder", "PlaceholderWithDefault", "SaveV2", "RestoreV2", "Assign", "AssignVariableOp",
			"VarHandleOp", "VariableV2", "ReadVariableOp", "VarIsInitializedOp", "IsVariableInitialized":
			continue
		}
		if strings.HasPrefix(op.Name(), "save/") { // the Saver's own graph
			continue
		}
		for i := range op.NumOutputs() {
			o := op.Output(i)
			if o.NumConsumers() == 0 {
				out = append(out, specOf(o))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// specOf describes a graph tensor named raw (no alias); a shape the graph
// cannot report is unknown.
func specOf(o tf.Output) SignatureTensor {
	spec, _ := o.Spec()
	return SignatureTensor{TensorSpec: spec}
}

// Input resolves an input name: a signature alias, or with raw tensor names
// "op:idx" (or "op" for index 0).
func (m *Model) Input(name string) (Endpoint, error) {
	return m.endpoint("input", name)
}

// Output resolves an output name like Input.
func (m *Model) Output(name string) (Endpoint, error) {
	return m.endpoint("output", name)
}

func (m *Model) endpoint(kind, name string) (Endpoint, error) {
	if m.isClosed() {
		return Endpoint{}, tf.ErrClosed
	}
	if m.sig != nil {
		list := m.sig.Inputs
		if kind == "output" {
			list = m.sig.Outputs
		}
		spec, ok := findAlias(list, name)
		if !ok {
			return Endpoint{}, &NotFoundError{What: kind, Name: name, Where: "signature " + fmt.Sprintf("%q", m.sig.Key), Have: aliases(list)}
		}
		o, err := m.graph.Output(spec.Name)
		if err != nil {
			return Endpoint{}, fmt.Errorf("savedmodel: %s %q: %w", kind, name, err)
		}
		return Endpoint{SignatureTensor: spec, Output: o}, nil
	}
	o, err := m.graph.Output(name)
	if err != nil {
		return Endpoint{}, fmt.Errorf("savedmodel: %s %q: %w", kind, name, err)
	}
	return Endpoint{SignatureTensor: specOf(o), Output: o}, nil
}

// Run feeds the named tensors (borrowed) and returns the named fetches in
// order; the caller closes them. Names are resolved as by Input and Output.
// Feeds are passed to TensorFlow sorted by name.
func (m *Model) Run(ctx context.Context, feeds map[string]*tf.Tensor, fetches ...string) ([]*tf.Tensor, error) {
	names := make([]string, 0, len(feeds))
	for k := range feeds {
		names = append(names, k)
	}
	sort.Strings(names)
	fs := make([]tf.Feed, len(names))
	for i, k := range names {
		ep, err := m.Input(k)
		if err != nil {
			return nil, err
		}
		fs[i] = tf.Feed{Output: ep.Output, Tensor: feeds[k]}
	}
	outs := make([]tf.Output, len(fetches))
	for i, k := range fetches {
		ep, err := m.Output(k)
		if err != nil {
			return nil, err
		}
		outs[i] = ep.Output
	}
	res, err := m.session.Run(ctx, fs, outs, nil)
	if err != nil {
		return nil, fmt.Errorf("savedmodel: run %s: %w", m.path, err)
	}
	return res, nil
}

func (m *Model) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// Close waits for in-flight runs and frees the session and graph. It is
// idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	err := m.session.Close()
	if gerr := m.graph.Close(); err == nil {
		err = gerr
	}
	return err
}
