package savedmodel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gotflow/gotflow/tf"
	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	pb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"
)

// LoadFrozenGraph loads a frozen GraphDef (a .pb with constants in place of
// variables), or the one .pb file in the directory path. Inputs and outputs
// are raw tensor names, "op:idx". The file is parsed and validated before
// TensorFlow sees it.
func LoadFrozenGraph(ctx context.Context, path string, opts ...Option) (*Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		file, err := FrozenGraphIn(path)
		if err != nil {
			return nil, err
		}
		path = file
	}
	data, err := readLimited(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("savedmodel: frozen graph: %w", err)
		}
		return nil, err
	}
	return NewFrozenModel(ctx, path, data, nil, opts...)
}

// NewFrozenModel runs a serialized frozen GraphDef held in memory (name is
// used in messages and as the Model's Path). With sig, inputs and outputs
// are named by its aliases (used for model bundles, whose manifest names
// them); without, by raw tensor names. The bytes are validated before
// TensorFlow sees them.
func NewFrozenModel(ctx context.Context, name string, def []byte, sig *Signature, opts ...Option) (*Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	gd := &graphpb.GraphDef{}
	if err := proto.Unmarshal(def, gd); err != nil {
		return nil, fmt.Errorf("savedmodel: %s is not a valid GraphDef protocol buffer: %w", name, err)
	}
	if len(gd.GetNode()) == 0 {
		return nil, fmt.Errorf("savedmodel: %s is not a GraphDef: it has no nodes", name)
	}
	if _, err := ValidateGraphDef(gd); err != nil {
		return nil, fmt.Errorf("savedmodel: %s: %w", name, err)
	}
	if sig != nil {
		if err := checkDense(sig); err != nil {
			return nil, err
		}
	}
	g, err := tf.ImportGraphDef(def)
	if err != nil {
		return nil, fmt.Errorf("savedmodel: import %s: %w", name, err)
	}
	sess, err := tf.NewSession(g, o.sessOpts...)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("savedmodel: %s: %w", name, err)
	}
	m := &Model{kind: KindFrozenGraph, path: name, sig: sig, graph: g, session: sess}
	if err := m.checkSignature(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// FrozenGraphIn returns the one .pb file in dir (saved_model.pb excluded).
func FrozenGraphIn(dir string) (string, error) {
	pbs, _ := filepath.Glob(filepath.Join(dir, "*.pb"))
	var files []string
	for _, p := range pbs {
		if filepath.Base(p) != SavedModelFile {
			files = append(files, p)
		}
	}
	if len(files) != 1 {
		return "", fmt.Errorf("savedmodel: %s holds %d .pb files; want exactly one frozen graph (files: %s)", dir, len(files), listDir(dir))
	}
	return files[0], nil
}

// CheckpointFile is the state file TensorFlow writes next to checkpoints.
const CheckpointFile = "checkpoint"

// LoadCheckpoint loads a TF1 MetaGraph and restores its variables from a
// checkpoint, by running the SaverDef's restore operation with the
// checkpoint prefix fed to its filename tensor (TensorFlowOnSpark's
// "checkpoint only" style). path is one of:
//
//   - a directory holding a "checkpoint" state file (its
//     model_checkpoint_path is used) or exactly one .meta file;
//   - a checkpoint prefix, e.g. dir/model (the MetaGraph is prefix.meta);
//   - a .meta file (the prefix is the name without .meta).
//
// Inputs and outputs are raw tensor names unless WithSignature names a
// signature the MetaGraph carries. Table initializers in the
// "table_initializer" collection are run after the restore.
func LoadCheckpoint(ctx context.Context, path string, opts ...Option) (*Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := buildOptions(opts)
	metaPath, prefix, err := resolveCheckpoint(path)
	if err != nil {
		return nil, err
	}
	data, err := readLimited(metaPath)
	if err != nil {
		return nil, err
	}
	mgd := &pb.MetaGraphDef{}
	if err := proto.Unmarshal(data, mgd); err != nil {
		return nil, fmt.Errorf("savedmodel: %s is not a valid MetaGraphDef protocol buffer: %w", metaPath, err)
	}
	if err := validateMetaGraph(mgd); err != nil {
		return nil, fmt.Errorf("savedmodel: %s: %w", metaPath, err)
	}
	sd := mgd.GetSaverDef()
	if sd.GetRestoreOpName() == "" || sd.GetFilenameTensorName() == "" {
		return nil, fmt.Errorf("savedmodel: %s has no saver_def with a restore op and filename tensor; it was not written by a tf.compat.v1.train.Saver", metaPath)
	}
	if err := checkCheckpointFiles(prefix); err != nil {
		return nil, err
	}
	mg, err := summarize(mgd)
	if err != nil {
		return nil, err
	}
	var sig *Signature
	if o.sigSet {
		if sig, err = mg.Signature(o.sigKey); err != nil {
			return nil, err
		}
		if err := checkDense(sig); err != nil {
			return nil, err
		}
	}
	gdBytes, err := proto.Marshal(mgd.GetGraphDef())
	if err != nil {
		return nil, fmt.Errorf("savedmodel: %s: %w", metaPath, err)
	}
	g, err := tf.ImportGraphDef(gdBytes)
	if err != nil {
		return nil, fmt.Errorf("savedmodel: import %s: %w", metaPath, err)
	}
	sess, err := tf.NewSession(g, o.sessOpts...)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("savedmodel: %s: %w", metaPath, err)
	}
	m := &Model{kind: KindCheckpoint, path: prefix, tags: mg.Tags, meta: &mg, sig: sig, graph: g, session: sess}
	if err := sess.Restore(ctx, sd.GetRestoreOpName(), sd.GetFilenameTensorName(), prefix); err != nil {
		m.Close()
		return nil, fmt.Errorf("savedmodel: restore %s: %w", prefix, err)
	}
	if err := m.runCollection(ctx, mgd, "table_initializer"); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.checkSignature(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Model) runCollection(ctx context.Context, mgd *pb.MetaGraphDef, name string) error {
	col, ok := mgd.GetCollectionDef()[name]
	if !ok {
		return nil
	}
	var targets []*tf.Operation
	for _, n := range col.GetNodeList().GetValue() {
		opName, _, err := tf.ParseOutputName(n)
		if err != nil {
			return fmt.Errorf("savedmodel: collection %s: %w", name, err)
		}
		op, err := m.graph.Operation(opName)
		if err != nil {
			return fmt.Errorf("savedmodel: collection %s: %w", name, err)
		}
		targets = append(targets, op)
	}
	if len(targets) == 0 {
		return nil
	}
	if _, err := m.session.Run(ctx, nil, nil, targets); err != nil {
		return fmt.Errorf("savedmodel: run %s: %w", name, err)
	}
	return nil
}

// resolveCheckpoint finds the MetaGraph file and checkpoint prefix for path.
func resolveCheckpoint(path string) (metaPath, prefix string, err error) {
	if strings.HasSuffix(path, ".meta") {
		if _, err := os.Stat(path); err != nil {
			return "", "", fmt.Errorf("savedmodel: checkpoint: %w", err)
		}
		return path, strings.TrimSuffix(path, ".meta"), nil
	}
	st, err := os.Stat(path)
	if err == nil && st.IsDir() {
		state := filepath.Join(path, CheckpointFile)
		if b, err := os.ReadFile(state); err == nil {
			p, err := parseCheckpointState(b)
			if err != nil {
				return "", "", fmt.Errorf("savedmodel: %s: %w", state, err)
			}
			if !filepath.IsAbs(p) {
				p = filepath.Join(path, p)
			}
			return p + ".meta", p, nil
		}
		metas, _ := filepath.Glob(filepath.Join(path, "*.meta"))
		if len(metas) == 1 {
			return metas[0], strings.TrimSuffix(metas[0], ".meta"), nil
		}
		return "", "", fmt.Errorf("savedmodel: %s is not a checkpoint directory: want a %q state file or exactly one .meta file (found %d .meta; files: %s)",
			path, CheckpointFile, len(metas), listDir(path))
	}
	if _, err := os.Stat(path + ".meta"); err != nil {
		return "", "", fmt.Errorf("savedmodel: checkpoint %s: no MetaGraph %s.meta: %w", path, path, fs.ErrNotExist)
	}
	return path + ".meta", path, nil
}

// parseCheckpointState reads model_checkpoint_path from a CheckpointState
// text proto.
func parseCheckpointState(b []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "model_checkpoint_path:")
		if !ok {
			continue
		}
		p, err := strconv.Unquote(strings.TrimSpace(rest))
		if err != nil {
			return "", fmt.Errorf("model_checkpoint_path %s is not a quoted string", strings.TrimSpace(rest))
		}
		if p == "" {
			return "", errors.New("model_checkpoint_path is empty")
		}
		return p, nil
	}
	return "", errors.New("no model_checkpoint_path line")
}

// checkCheckpointFiles makes sure the V2 checkpoint's index file exists, so
// a wrong prefix is reported by name.
func checkCheckpointFiles(prefix string) error {
	if _, err := os.Stat(prefix + ".index"); err == nil {
		return nil
	}
	if _, err := os.Stat(prefix); err == nil { // V1 checkpoint: one file
		return nil
	}
	return fmt.Errorf("savedmodel: checkpoint %s: no %s.index (files: %s): %w", prefix, prefix, listDir(filepath.Dir(prefix)), fs.ErrNotExist)
}
