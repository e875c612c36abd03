package estimator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/internal/atomicfile"
	"github.com/gotflow/gotflow/loader"
	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// Model kinds a TFModel can refer to.
const (
	KindSavedModel  = string(savedmodel.KindSavedModel)  // a SavedModel directory
	KindFrozenGraph = string(savedmodel.KindFrozenGraph) // a frozen GraphDef file
	KindCheckpoint  = string(savedmodel.KindCheckpoint)  // a TF1 MetaGraph plus checkpoint
	KindBundle      = "bundle"                           // a gotflow model bundle (loader.LoadBundle), frozen with its weights
)

// DefaultBatchSize is the batch size used when TFModel.BatchSize is zero.
const DefaultBatchSize = 1024

// Runnable is a loaded model TFModel can run. *savedmodel.Model implements it
// (bundles are frozen into one); other formats plug in through RegisterKind.
type Runnable interface {
	Session() *tf.Session
	// Input and Output resolve the names used in InputMapping and
	// OutputMapping.
	Input(name string) (savedmodel.Endpoint, error)
	Output(name string) (savedmodel.Endpoint, error)
	// Inputs lists inputs that must be mapped (none when unknown); Outputs
	// lists the outputs fetched when OutputMapping is empty.
	Inputs() []savedmodel.SignatureTensor
	Outputs() []savedmodel.SignatureTensor
	// Signature is the signature names refer to, nil for raw tensor names.
	Signature() *savedmodel.Signature
	Close() error
}

// Opener loads the model m refers to; m.Path is already resolved.
type Opener func(ctx context.Context, m *TFModel, sessOpts []tf.SessionOption) (Runnable, error)

var (
	kindsMu sync.RWMutex
	kinds   = map[string]Opener{
		KindSavedModel: func(ctx context.Context, m *TFModel, so []tf.SessionOption) (Runnable, error) {
			opts := []savedmodel.Option{savedmodel.WithSessionOptions(so...), savedmodel.WithTags(m.tags()...)}
			if m.RawTensorNames {
				opts = append(opts, savedmodel.WithRawTensorNames())
			} else {
				opts = append(opts, savedmodel.WithSignature(m.signature()))
			}
			return savedmodel.Load(ctx, SavedModelDir(m.Path), opts...)
		},
		KindFrozenGraph: func(ctx context.Context, m *TFModel, so []tf.SessionOption) (Runnable, error) {
			return savedmodel.LoadFrozenGraph(ctx, m.Path, savedmodel.WithSessionOptions(so...))
		},
		KindCheckpoint: func(ctx context.Context, m *TFModel, so []tf.SessionOption) (Runnable, error) {
			opts := []savedmodel.Option{savedmodel.WithSessionOptions(so...)}
			if m.SignatureDefKey != "" && !m.RawTensorNames {
				opts = append(opts, savedmodel.WithSignature(m.SignatureDefKey))
			}
			return savedmodel.LoadCheckpoint(ctx, m.Path, opts...)
		},
		KindBundle: openBundle,
	}
)

// openBundle freezes a model bundle's inference graph with its weights (or
// m.Weights) and runs it; the manifest's input and output names are the
// aliases of a "bundle" signature.
func openBundle(ctx context.Context, m *TFModel, so []tf.SessionOption) (Runnable, error) {
	b, err := loader.LoadBundle(m.Path)
	if err != nil {
		return nil, err
	}
	var weights []loader.Weight
	if m.Weights != "" {
		if weights, err = loader.ReadWeights(m.Weights); err != nil {
			return nil, err
		}
	}
	gd, err := b.Freeze(weights)
	if err != nil {
		return nil, err
	}
	sig := savedmodel.SignatureFromBundle(b)
	sig.Key, sig.MethodName = KindBundle, ""
	return savedmodel.NewFrozenModel(ctx, m.Path, gd.Bytes(), &sig, savedmodel.WithSessionOptions(so...))
}

// RegisterKind makes TFModel able to load models of another kind (the model
// converter registers "bundle": a bundle's frozen inference graph). It
// replaces an earlier registration of the same kind.
func RegisterKind(kind string, open Opener) {
	kindsMu.Lock()
	defer kindsMu.Unlock()
	kinds[kind] = open
}

func opener(kind string) (Opener, error) {
	kindsMu.RLock()
	defer kindsMu.RUnlock()
	if o, ok := kinds[kind]; ok {
		return o, nil
	}
	have := make([]string, 0, len(kinds))
	for k := range kinds {
		have = append(have, k)
	}
	sort.Strings(have)
	return nil, fmt.Errorf("estimator: unknown model kind %q (have: %s)", kind, strings.Join(have, ", "))
}

// DetectKind guesses the kind of the model at path: a directory with
// saved_model.pb(txt) is a SavedModel, and so is a training export (Fit's
// ExportDir, whose SavedModel is in saved_model/: see SavedModelDir), one
// with manifest.json a bundle, one
// with a "checkpoint" state file or a .meta file a checkpoint; a .meta file
// or checkpoint prefix is a checkpoint, any other file a frozen graph.
func DetectKind(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		if _, merr := os.Stat(path + ".meta"); merr == nil {
			return KindCheckpoint, nil
		}
		return "", fmt.Errorf("estimator: model: %w", err)
	}
	if !st.IsDir() {
		if strings.HasSuffix(path, ".meta") {
			return KindCheckpoint, nil
		}
		return KindFrozenGraph, nil
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(path, name))
		return err == nil
	}
	switch {
	case exists(savedmodel.SavedModelFile), exists(savedmodel.SavedModelTextFile),
		exists(filepath.Join(exportSavedModel, savedmodel.SavedModelFile)):
		return KindSavedModel, nil
	case exists("manifest.json"):
		return KindBundle, nil
	case exists(savedmodel.CheckpointFile):
		return KindCheckpoint, nil
	}
	if metas, _ := filepath.Glob(filepath.Join(path, "*.meta")); len(metas) > 0 {
		return KindCheckpoint, nil
	}
	if _, err := savedmodel.FrozenGraphIn(path); err == nil {
		return KindFrozenGraph, nil
	}
	return "", fmt.Errorf("estimator: %s is not a model: no saved_model.pb, manifest.json, checkpoint, .meta or single .pb file in it (files: %s): %w", path, listFiles(path), savedmodel.ErrNotSavedModel)
}

// exportSavedModel is the directory of a training export (Fit's ExportDir)
// that holds its SavedModel, beside frozen.pb.
const exportSavedModel = "saved_model"

// SavedModelDir returns the SavedModel directory at path: path itself, or,
// for a training export (Fit's ExportDir) that holds no saved_model.pb of
// its own, its saved_model/ subdirectory.
func SavedModelDir(path string) string {
	for _, f := range []string{savedmodel.SavedModelFile, savedmodel.SavedModelTextFile} {
		if _, err := os.Stat(filepath.Join(path, f)); err == nil {
			return path
		}
	}
	if _, err := os.Stat(filepath.Join(path, exportSavedModel, savedmodel.SavedModelFile)); err == nil {
		return filepath.Join(path, exportSavedModel)
	}
	return path
}

func listFiles(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		return "none"
	}
	var names []string
	for _, e := range ents {
		if len(names) == 10 {
			names = append(names, "…")
			break
		}
		names = append(names, e.Name())
	}
	return strings.Join(names, ", ")
}

// TFModel runs a trained model over Arrow records: TensorFlowOnSpark's
// TFModel in Go. The exported fields are its parameters (a meaningful zero
// value apart from Path); Save and Load store them as JSON.
type TFModel struct {
	// Path locates the model: a SavedModel directory, a frozen GraphDef
	// file, a checkpoint directory/prefix/.meta file, or a bundle.
	Path string `json:"model"`
	// Kind is one of the Kind constants; empty detects it from Path.
	Kind string `json:"kind,omitempty"`
	// TagSet selects a SavedModel's meta graph (default ["serve"]).
	TagSet []string `json:"tags,omitempty"`
	// Weights, for bundles, is a weights file (the safetensors layout the
	// bundle uses) to freeze into the inference graph instead of the
	// bundle's initial weights, e.g. the result of training.
	Weights string `json:"weights,omitempty"`
	// SignatureDefKey selects the signature (default "serving_default"
	// for SavedModels). Ignored when RawTensorNames is set.
	SignatureDefKey string `json:"signature,omitempty"`
	// RawTensorNames makes the mappings name graph tensors ("op:idx")
	// instead of signature aliases.
	RawTensorNames bool `json:"raw_tensor_names,omitempty"`
	// InputMapping maps a column to the input it feeds. Inputs it does not
	// mention are fed from the column of the same name, if there is one.
	InputMapping map[string]string `json:"input_mapping,omitempty"`
	// Inputs are full input mappings: for a column, the input it feeds and
	// how (dtype, row shape, Fill for nulls, Cast, Length and Pad for
	// variable-length lists), in feeder.ParseMapping's syntax on the
	// command line (`--map 'pixels=x shape=28,28,1 fill=0 len=784 cast'`).
	// InputMapping is the short form; an input may be named in only one.
	Inputs feeder.Mapping `json:"inputs,omitempty"`
	// OutputMapping maps an output to the column it is appended as. Empty
	// appends every signature output under its own name. Columns are
	// appended in the order of the output names.
	OutputMapping map[string]string `json:"output_mapping,omitempty"`
	// Bundle is the model bundle a trained model came from (Fit sets it,
	// and Weights to the trained weights). With LabelMapping (column →
	// bundle label; empty: same names) it lets Evaluate compute the
	// bundle's loss and metrics.
	Bundle       string            `json:"bundle,omitempty"`
	LabelMapping map[string]string `json:"label_mapping,omitempty"`
	// Labels are the labels' full mappings (as Inputs are the inputs'),
	// for Evaluate.
	Labels feeder.Mapping `json:"labels,omitempty"`
	// Cast allows lossy conversions from columns to inputs (float64 →
	// float32, int64 → int32, …), e.g. for CSV data, whose numbers are read
	// as float64 and int64. Lossless widening is always allowed.
	Cast bool `json:"cast,omitempty"`
	// BinaryStrings appends string outputs as binary columns instead of
	// utf8 (needed when they may hold invalid UTF-8).
	BinaryStrings bool `json:"binary_strings,omitempty"`
	// BatchSize is the rows per Run (default DefaultBatchSize).
	BatchSize int `json:"batch_size,omitempty"`
	// IntraOpThreads and InterOpThreads size TensorFlow's thread pools (0:
	// TensorFlow's default, one per core).
	IntraOpThreads int `json:"intra_op_threads,omitempty"`
	InterOpThreads int `json:"inter_op_threads,omitempty"`
	// InFlight is how many batches are converted and run at once on the one
	// session (default 2), so that reading, converting, running and writing
	// overlap.
	InFlight int `json:"in_flight,omitempty"`

	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger `json:"-"`
	// Hooks observe progress.
	Hooks Hooks `json:"-"`

	mu     sync.Mutex
	model  Runnable
	closed bool
}

// Hooks are callbacks a caller sets to follow a Transform.
type Hooks struct {
	// OnBatch is called once per output batch, from the goroutine that
	// reads the stream, in order.
	OnBatch func(BatchInfo)
}

// BatchInfo describes one transformed batch.
type BatchInfo struct {
	Rows      int64 // rows in this batch
	TotalRows int64 // rows so far in this Transform
	Batches   int64 // batches so far
}

// Validate checks the parameters without loading the model.
func (m *TFModel) Validate() error {
	if m.Path == "" {
		return errors.New("estimator: TFModel.Path is empty; it must locate the model")
	}
	if m.BatchSize < 0 {
		return fmt.Errorf("estimator: BatchSize %d; want > 0 (or 0 for %d)", m.BatchSize, DefaultBatchSize)
	}
	if m.IntraOpThreads < 0 || m.InterOpThreads < 0 {
		return fmt.Errorf("estimator: thread counts must be >= 0 (intra %d, inter %d)", m.IntraOpThreads, m.InterOpThreads)
	}
	if m.InFlight < 0 {
		return fmt.Errorf("estimator: InFlight %d; want > 0 (or 0 for 2)", m.InFlight)
	}
	cols := map[string]string{}
	for out, col := range m.OutputMapping {
		if out == "" || col == "" {
			return fmt.Errorf("estimator: OutputMapping has an empty name (%q → %q)", out, col)
		}
		if prev, dup := cols[col]; dup {
			return fmt.Errorf("estimator: outputs %q and %q are both mapped to column %q", prev, out, col)
		}
		cols[col] = out
	}
	for col, in := range m.InputMapping {
		if in == "" || col == "" {
			return fmt.Errorf("estimator: InputMapping has an empty name (%q → %q)", col, in)
		}
	}
	for _, in := range m.Inputs {
		if in.Tensor == "" || in.Column == "" {
			return fmt.Errorf("estimator: Inputs has an empty name (%q → %q)", in.Column, in.Tensor)
		}
	}
	if _, err := byTensor(m.Inputs, m.InputMapping); err != nil {
		return fmt.Errorf("estimator: %w (InputMapping and Inputs may each name an input once)", err)
	}
	return nil
}

func (m *TFModel) tags() []string {
	if len(m.TagSet) == 0 {
		return []string{savedmodel.DefaultTag}
	}
	return m.TagSet
}

func (m *TFModel) signature() string {
	if m.SignatureDefKey == "" {
		return savedmodel.DefaultSignatureKey
	}
	return m.SignatureDefKey
}

func (m *TFModel) batchSize() int {
	if m.BatchSize == 0 {
		return DefaultBatchSize
	}
	return m.BatchSize
}

func (m *TFModel) inFlight() int {
	if m.InFlight == 0 {
		return 2
	}
	return m.InFlight
}

func (m *TFModel) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// Open loads the model now (Transform loads it on first use) and returns it.
// The TFModel keeps ownership: Close frees it.
func (m *TFModel) Open(ctx context.Context) (Runnable, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, tf.ErrClosed
	}
	if m.model != nil {
		return m.model, nil
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	kind := m.Kind
	if kind == "" {
		var err error
		if kind, err = DetectKind(m.Path); err != nil {
			return nil, err
		}
	}
	open, err := opener(kind)
	if err != nil {
		return nil, err
	}
	var so []tf.SessionOption
	if m.IntraOpThreads > 0 {
		so = append(so, tf.WithIntraOpThreads(m.IntraOpThreads))
	}
	if m.InterOpThreads > 0 {
		so = append(so, tf.WithInterOpThreads(m.InterOpThreads))
	}
	r, err := open(ctx, m, so)
	if err != nil {
		return nil, err
	}
	m.logger().Debug("model loaded", "path", m.Path, "kind", kind)
	m.model = r
	return r, nil
}

// Close frees the loaded model, waiting for in-flight runs. It is
// idempotent; Transform after Close returns tf.ErrClosed.
func (m *TFModel) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.model == nil {
		return nil
	}
	err := m.model.Close()
	m.model = nil
	return err
}

// ModelFile is the file Save writes and Load reads.
const ModelFile = "tfmodel.json"

// savedFormat marks files written by Save.
const savedFormat = "gotflow.tfmodel/v1"

type savedModelFile struct {
	Format string `json:"format"`
	*TFModel
}

// Save writes the model reference and parameters to dir/tfmodel.json (made
// atomically: a temporary file renamed into place). A Path inside dir is
// stored relative to dir, so the directory can be moved with the model.
func (m *TFModel) Save(dir string) error {
	data, err := m.encode(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("estimator: save: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, ModelFile), data)
}

// encode returns the tfmodel.json Save writes to dir.
func (m *TFModel) encode(dir string) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	cp := m.params()
	if abs, err := filepath.Abs(m.Path); err == nil {
		cp.Path = abs
		if absDir, err := filepath.Abs(dir); err == nil {
			if rel, err := filepath.Rel(absDir, abs); err == nil && !strings.HasPrefix(rel, "..") {
				cp.Path = rel
			}
		}
	}
	data, err := json.MarshalIndent(savedModelFile{Format: savedFormat, TFModel: cp}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("estimator: save: %w", err)
	}
	return append(data, '\n'), nil
}

// params copies the exported parameters.
func (m *TFModel) params() *TFModel {
	return &TFModel{Path: m.Path, Kind: m.Kind, Weights: m.Weights, TagSet: m.TagSet, SignatureDefKey: m.SignatureDefKey,
		RawTensorNames: m.RawTensorNames, BinaryStrings: m.BinaryStrings, Cast: m.Cast, InputMapping: m.InputMapping, OutputMapping: m.OutputMapping,
		BatchSize: m.BatchSize, IntraOpThreads: m.IntraOpThreads, InterOpThreads: m.InterOpThreads,
		InFlight: m.InFlight, Bundle: m.Bundle, LabelMapping: m.LabelMapping}
}

// Load reads dir/tfmodel.json written by Save. The model itself is loaded
// on first use.
func Load(dir string) (*TFModel, error) {
	path := filepath.Join(dir, ModelFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("estimator: load: %w", err)
	}
	return parseSaved(data, path, dir)
}

func parseSaved(data []byte, path, dir string) (*TFModel, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("estimator: %s is not valid JSON: %w", path, err)
	}
	var format string
	if err := json.Unmarshal(raw["format"], &format); err != nil || format != savedFormat {
		return nil, fmt.Errorf("estimator: %s has format %s; want %q", path, raw["format"], savedFormat)
	}
	m := &TFModel{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&savedModelFile{TFModel: m}); err != nil {
		return nil, fmt.Errorf("estimator: %s: %w", path, err)
	}
	if m.Path != "" && !filepath.IsAbs(m.Path) {
		m.Path = filepath.Join(dir, m.Path)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("estimator: %s: %w", path, err)
	}
	return m, nil
}

// writeFileAtomic replaces path with data whole (internal/atomicfile).
func writeFileAtomic(path string, data []byte) error {
	if err := atomicfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("estimator: %w", err)
	}
	return nil
}
