package tf

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/gotflow/gotflow/internal/names"
)

// Graph is a TensorFlow computation graph in C memory. Close frees it once
// no Session uses it any more (TensorFlow keeps it alive for open sessions).
type Graph struct {
	mu   sync.Mutex
	c    *C.TF_Graph
	life lifetime
}

func newGraph() *Graph {
	g := &Graph{c: C.TF_NewGraph()}
	g.life = track(g, kindGraph)
	return g
}

// ImportOption configures ImportGraphDef.
type ImportOption interface{ apply(*importOptions) }

type importOptions struct {
	prefix string
	device string
}

type importOptionFunc func(*importOptions)

func (f importOptionFunc) apply(o *importOptions) { f(o) }

// WithPrefix prefixes every imported operation's name with prefix + "/".
func WithPrefix(prefix string) ImportOption {
	return importOptionFunc(func(o *importOptions) { o.prefix = prefix })
}

// WithDefaultDevice places imported operations without a device on device.
func WithDefaultDevice(device string) ImportOption {
	return importOptionFunc(func(o *importOptions) { o.device = device })
}

// ImportGraphDef parses a serialized GraphDef into a new Graph. TensorFlow
// itself parses the bytes: callers that load untrusted files should validate
// them first (loader.ParseGraphDef does), since some malformed graphs abort
// the process inside TensorFlow.
func ImportGraphDef(def []byte, opts ...ImportOption) (*Graph, error) {
	g := newGraph()
	if err := g.Import(def, opts...); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// Import adds the operations of a serialized GraphDef to g.
func (g *Graph) Import(def []byte, opts ...ImportOption) error {
	var o importOptions
	for _, opt := range opts {
		opt.apply(&o)
	}
	if len(def) == 0 {
		return errorf(InvalidArgument, "ImportGraphDef", "empty GraphDef")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return ErrClosed
	}
	copts := C.TF_NewImportGraphDefOptions()
	defer C.TF_DeleteImportGraphDefOptions(copts)
	if o.prefix != "" {
		cs := C.CString(o.prefix)
		defer C.free(unsafe.Pointer(cs))
		C.TF_ImportGraphDefOptionsSetPrefix(copts, cs)
	}
	if o.device != "" {
		cs := C.CString(o.device)
		defer C.free(unsafe.Pointer(cs))
		C.TF_ImportGraphDefOptionsSetDefaultDevice(copts, cs)
	}
	buf := C.TF_NewBufferFromString(unsafe.Pointer(&def[0]), C.size_t(len(def)))
	defer C.TF_DeleteBuffer(buf)
	st := newStatus()
	defer st.delete()
	C.TF_GraphImportGraphDef(g.c, buf, copts, st.c)
	return st.err("ImportGraphDef")
}

// GraphDef serializes the graph.
func (g *Graph) GraphDef() ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil, ErrClosed
	}
	buf := C.TF_NewBuffer()
	defer C.TF_DeleteBuffer(buf)
	st := newStatus()
	defer st.delete()
	C.TF_GraphToGraphDef(g.c, buf, st.c)
	if err := st.err("GraphToGraphDef"); err != nil {
		return nil, err
	}
	return C.GoBytes(buf.data, C.int(buf.length)), nil
}

// Close releases the graph. It is idempotent. Operations and Outputs of a
// closed graph must not be used.
func (g *Graph) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil
	}
	g.life.release()
	C.TF_DeleteGraph(g.c)
	g.c = nil
	return nil
}

// Operation is a node of a Graph.
type Operation struct {
	c *C.TF_Operation
	g *Graph
}

// Operation returns the operation called name. The error wraps ErrNotFound
// and lists the closest names when there is none.
func (g *Graph) Operation(name string) (*Operation, error) {
	g.mu.Lock()
	if g.c == nil {
		g.mu.Unlock()
		return nil, ErrClosed
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	c := C.TF_GraphOperationByName(g.c, cs)
	g.mu.Unlock()
	if c == nil {
		return nil, &Error{Code: NotFound, Op: name, Msg: names.NotFound("operation", name, g.opNames())}
	}
	return &Operation{c: c, g: g}, nil
}

// Operations lists the graph's operations in the graph's order.
func (g *Graph) Operations() []*Operation {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil
	}
	var ops []*Operation
	var pos C.size_t
	for {
		c := C.TF_GraphNextOperation(g.c, &pos)
		if c == nil {
			return ops
		}
		ops = append(ops, &Operation{c: c, g: g})
	}
}

func (g *Graph) opNames() []string {
	ops := g.Operations()
	out := make([]string, len(ops))
	for i, op := range ops {
		out[i] = op.Name()
	}
	return out
}

// ParseOutputName splits "op:idx" (or "op", meaning index 0) into its parts.
func ParseOutputName(name string) (op string, index int, err error) {
	op = name
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		op = name[:i]
		index, err = strconv.Atoi(name[i+1:])
		if err != nil || index < 0 {
			return "", 0, errorf(InvalidArgument, name, "tensor name must be \"op\" or \"op:index\" with index >= 0")
		}
	}
	if op == "" {
		return "", 0, errorf(InvalidArgument, name, "tensor name has no operation name")
	}
	return op, index, nil
}

// Output returns the tensor called name ("op:idx", or "op" for index 0).
func (g *Graph) Output(name string) (Output, error) {
	opName, idx, err := ParseOutputName(name)
	if err != nil {
		return Output{}, err
	}
	op, err := g.Operation(opName)
	if err != nil {
		var e *Error
		if asError(err, &e) && e.Code == NotFound {
			e.Op = name
		}
		return Output{}, err
	}
	if n := op.NumOutputs(); idx >= n {
		return Output{}, &Error{Code: NotFound, Op: name, Msg: fmt.Sprintf("operation %q (%s) has %d outputs, no output %d", opName, op.Type(), n, idx)}
	}
	return Output{Op: op, Index: idx}, nil
}

// Name returns the operation's name.
func (op *Operation) Name() string {
	s := C.GoString(C.TF_OperationName(op.c))
	runtime.KeepAlive(op.g)
	return s
}

// Type returns the operation's type, e.g. "Placeholder" or "MatMul".
func (op *Operation) Type() string {
	s := C.GoString(C.TF_OperationOpType(op.c))
	runtime.KeepAlive(op.g)
	return s
}

// Device returns the device the operation was placed on, if any.
func (op *Operation) Device() string {
	s := C.GoString(C.TF_OperationDevice(op.c))
	runtime.KeepAlive(op.g)
	return s
}

// NumOutputs returns the number of outputs.
func (op *Operation) NumOutputs() int {
	n := int(C.TF_OperationNumOutputs(op.c))
	runtime.KeepAlive(op.g)
	return n
}

// NumInputs returns the number of inputs.
func (op *Operation) NumInputs() int {
	n := int(C.TF_OperationNumInputs(op.c))
	runtime.KeepAlive(op.g)
	return n
}

// Output returns the operation's i-th output.
func (op *Operation) Output(i int) Output { return Output{Op: op, Index: i} }

// Output is one tensor produced by an Operation.
type Output struct {
	Op    *Operation
	Index int
}

func (o Output) c() C.TF_Output { return C.TF_Output{oper: o.Op.c, index: C.int(o.Index)} }

// Name returns "op:idx".
func (o Output) Name() string { return o.Op.Name() + ":" + strconv.Itoa(o.Index) }

// DataType returns the output's element type.
func (o Output) DataType() DataType {
	dt := DataType(C.TF_OperationOutputType(o.c()))
	runtime.KeepAlive(o.Op.g)
	return dt
}

// Shape returns the output's static shape as far as the graph knows it:
// -1 for unknown dimensions, nil (and ok=false) for an unknown rank.
func (o Output) Shape() (shape []int64, ok bool, err error) {
	g := o.Op.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil, false, ErrClosed
	}
	st := newStatus()
	defer st.delete()
	nd := int(C.TF_GraphGetTensorNumDims(g.c, o.c(), st.c))
	if err := st.err("GraphGetTensorNumDims"); err != nil {
		return nil, false, err
	}
	if nd < 0 {
		return nil, false, nil
	}
	dims := make([]int64, nd)
	if nd > 0 {
		C.TF_GraphGetTensorShape(g.c, o.c(), (*C.int64_t)(unsafe.Pointer(&dims[0])), C.int(nd), st.c)
		if err := st.err("GraphGetTensorShape"); err != nil {
			return nil, false, err
		}
	}
	return dims, true, nil
}

// NumConsumers returns how many operation inputs read this output.
func (o Output) NumConsumers() int {
	n := int(C.TF_OperationOutputNumConsumers(o.c()))
	runtime.KeepAlive(o.Op.g)
	return n
}
