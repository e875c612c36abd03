package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	graphpb "github.com/wamuir/graft/tensorflow/core/framework/graph_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/internal/names"
	"github.com/gotflow/gotflow/tf"
)

// MaxGraphDefBytes is the largest GraphDef ParseGraphDef accepts: protobuf's
// own 2 GiB message limit.
const MaxGraphDefBytes = 2<<30 - 1

// ErrInvalidGraph reports a GraphDef that failed gotflow's validation.
var ErrInvalidGraph = errors.New("loader: invalid GraphDef")

// GraphDef is a parsed and validated TensorFlow GraphDef.
type GraphDef struct {
	// Def is the decoded protocol buffer. Treat it as read-only.
	Def *graphpb.GraphDef
	raw []byte
	// byName indexes Def.Node.
	byName map[string]int
}

// LoadGraphDef reads and validates a binary GraphDef (.pb) file.
func LoadGraphDef(path string) (*GraphDef, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("loader: graph file %s does not exist: %w", path, err)
		}
		return nil, fmt.Errorf("loader: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("loader: %s is a directory, want a GraphDef (.pb) file", path)
	}
	if st.Size() > MaxGraphDefBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, over protobuf's 2 GiB limit", ErrInvalidGraph, path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	g, err := ParseGraphDef(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return g, nil
}

// ParseGraphDef decodes and validates a binary GraphDef: the bytes must be a
// GraphDef protocol buffer with at least one node, unique non-empty node
// names, known data types on placeholders, and every node input must name
// a node of the graph. This runs before TensorFlow sees the bytes, so
// garbage is an error rather than an abort inside TensorFlow.
func ParseGraphDef(b []byte) (*GraphDef, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrInvalidGraph)
	}
	if len(b) > MaxGraphDefBytes {
		return nil, fmt.Errorf("%w: %d bytes, over protobuf's 2 GiB limit", ErrInvalidGraph, len(b))
	}
	def := &graphpb.GraphDef{}
	if err := proto.Unmarshal(b, def); err != nil {
		return nil, fmt.Errorf("%w: not a GraphDef protocol buffer (truncated or another format?): %v", ErrInvalidGraph, err)
	}
	return newGraphDef(def, b)
}

// NewGraphDef validates a GraphDef built in memory (e.g. by GraphDef
// surgery) and serializes it.
func NewGraphDef(def *graphpb.GraphDef) (*GraphDef, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(def)
	if err != nil {
		return nil, fmt.Errorf("loader: encode GraphDef: %w", err)
	}
	return newGraphDef(def, b)
}

func newGraphDef(def *graphpb.GraphDef, raw []byte) (*GraphDef, error) {
	if len(def.Node) == 0 {
		return nil, fmt.Errorf("%w: the graph has no nodes", ErrInvalidGraph)
	}
	g := &GraphDef{Def: def, raw: raw, byName: make(map[string]int, len(def.Node))}
	for i, n := range def.Node {
		if n.GetName() == "" {
			return nil, fmt.Errorf("%w: node %d has no name", ErrInvalidGraph, i)
		}
		if n.GetOp() == "" {
			return nil, fmt.Errorf("%w: node %q has no op", ErrInvalidGraph, n.GetName())
		}
		if _, dup := g.byName[n.GetName()]; dup {
			return nil, fmt.Errorf("%w: node name %q is used twice", ErrInvalidGraph, n.GetName())
		}
		g.byName[n.GetName()] = i
	}
	for _, n := range def.Node {
		for _, in := range n.GetInput() {
			src, _, err := splitInput(in)
			if err != nil {
				return nil, fmt.Errorf("%w: node %q: %v", ErrInvalidGraph, n.GetName(), err)
			}
			if _, ok := g.byName[src]; !ok {
				return nil, fmt.Errorf("%w: node %q reads input %q: %s", ErrInvalidGraph, n.GetName(), in, names.NotFound("node", src, g.nodeNames()))
			}
		}
		if n.GetOp() == "Placeholder" {
			if _, err := placeholderSpec(n); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrInvalidGraph, err)
			}
		}
	}
	return g, nil
}

// ParseInput parses a NodeDef input: "node", "node:2" or "^node" (a
// control input, index -1).
func ParseInput(in string) (node string, index int, err error) { return splitInput(in) }

// splitInput parses a NodeDef input: "node", "node:2" or "^node" (control).
func splitInput(in string) (node string, index int, err error) {
	if strings.HasPrefix(in, "^") {
		if len(in) == 1 {
			return "", 0, fmt.Errorf("empty control input")
		}
		return in[1:], -1, nil
	}
	node = in
	if i := strings.LastIndexByte(in, ':'); i >= 0 {
		node = in[:i]
		index, err = strconv.Atoi(in[i+1:])
		if err != nil || index < 0 {
			return "", 0, fmt.Errorf("input %q: want \"node\" or \"node:index\"", in)
		}
	}
	if node == "" {
		return "", 0, fmt.Errorf("input %q has no node name", in)
	}
	return node, index, nil
}

// Bytes returns the serialized GraphDef.
func (g *GraphDef) Bytes() []byte { return g.raw }

// NumNodes returns the number of nodes.
func (g *GraphDef) NumNodes() int { return len(g.Def.Node) }

func (g *GraphDef) nodeNames() []string {
	out := make([]string, len(g.Def.Node))
	for i, n := range g.Def.Node {
		out[i] = n.GetName()
	}
	return out
}

// Import creates a tf.Graph from the GraphDef; options as tf.ImportGraphDef
// (for example tf.WithPrefix).
func (g *GraphDef) Import(opts ...tf.ImportOption) (*tf.Graph, error) {
	return tf.ImportGraphDef(g.raw, opts...)
}

// Placeholders lists the graph's Placeholder nodes (its inputs), sorted by
// name.
func (g *GraphDef) Placeholders() []tf.TensorSpec {
	var out []tf.TensorSpec
	for _, n := range g.Def.Node {
		if n.GetOp() != "Placeholder" {
			continue
		}
		s, _ := placeholderSpec(n) // validated in newGraphDef
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Resolve checks that name ("op:idx" or "op") is a tensor of the graph and
// returns it as "op:idx". The error lists the closest node names.
func (g *GraphDef) Resolve(name string) (string, error) {
	op, idx, err := tf.ParseOutputName(name)
	if err != nil {
		return "", fmt.Errorf("loader: %w", err)
	}
	if _, ok := g.byName[op]; !ok {
		return "", &tf.Error{Code: tf.NotFound, Op: name, Msg: names.NotFound("tensor", name, g.nodeNames())}
	}
	return op + ":" + strconv.Itoa(idx), nil
}

// Node returns the node called name.
func (g *GraphDef) Node(name string) (int, bool) {
	i, ok := g.byName[name]
	return i, ok
}
