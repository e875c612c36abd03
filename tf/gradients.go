package tf

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// AddGradients adds operations computing the partial derivatives of the sum
// of ys with respect to each of xs (TF_AddGradientsWithPrefix), optionally
// weighted by dxs (one per y; nil means ones), under the name scope prefix
// ("" lets TensorFlow pick "gradients", "gradients_1", ...). It returns one
// output per x. TensorFlow builds them from its C++ gradient registry: an op
// without a registered C++ gradient on the path from xs to ys is an error
// naming it.
func (g *Graph) AddGradients(prefix string, ys, xs, dxs []Output) ([]Output, error) {
	if len(ys) == 0 || len(xs) == 0 {
		return nil, errorf(InvalidArgument, "AddGradients", "need at least one y and one x (got %d and %d)", len(ys), len(xs))
	}
	if dxs != nil && len(dxs) != len(ys) {
		return nil, errorf(InvalidArgument, "AddGradients", "got %d dx for %d y", len(dxs), len(ys))
	}
	for _, set := range [][]Output{ys, xs, dxs} {
		for _, o := range set {
			if o.Op == nil || o.Op.g != g {
				return nil, errorf(InvalidArgument, "AddGradients", "output %v does not belong to this graph", o)
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil, ErrClosed
	}
	cy := (*C.TF_Output)(C.malloc(C.size_t(len(ys)) * C.size_t(unsafe.Sizeof(C.TF_Output{}))))
	defer C.free(unsafe.Pointer(cy))
	cx := (*C.TF_Output)(C.malloc(C.size_t(len(xs)) * C.size_t(unsafe.Sizeof(C.TF_Output{}))))
	defer C.free(unsafe.Pointer(cx))
	cdy := (*C.TF_Output)(C.malloc(C.size_t(len(xs)) * C.size_t(unsafe.Sizeof(C.TF_Output{}))))
	defer C.free(unsafe.Pointer(cdy))
	ys_ := unsafe.Slice(cy, len(ys))
	xs_ := unsafe.Slice(cx, len(xs))
	for i, o := range ys {
		ys_[i] = o.c()
	}
	for i, o := range xs {
		xs_[i] = o.c()
	}
	var cdx *C.TF_Output
	if dxs != nil {
		cdx = (*C.TF_Output)(C.malloc(C.size_t(len(dxs)) * C.size_t(unsafe.Sizeof(C.TF_Output{}))))
		defer C.free(unsafe.Pointer(cdx))
		d := unsafe.Slice(cdx, len(dxs))
		for i, o := range dxs {
			d[i] = o.c()
		}
	}
	var cprefix *C.char
	if prefix != "" {
		cprefix = C.CString(prefix)
		defer C.free(unsafe.Pointer(cprefix))
	}
	st := newStatus()
	defer st.delete()
	C.TF_AddGradientsWithPrefix(g.c, cprefix, cy, C.int(len(ys)), cx, C.int(len(xs)), cdx, st.c, cdy)
	runtime.KeepAlive(ys)
	runtime.KeepAlive(xs)
	runtime.KeepAlive(dxs)
	if err := st.err("AddGradients"); err != nil {
		return nil, err
	}
	out := make([]Output, len(xs))
	for i, o := range unsafe.Slice(cdy, len(xs)) {
		if o.oper == nil {
			return nil, errorf(Internal, "AddGradients", "TensorFlow returned no gradient for x %d", i)
		}
		out[i] = Output{Op: &Operation{c: o.oper, g: g}, Index: int(o.index)}
	}
	return out, nil
}

// Input returns the output that feeds the operation's i-th data input.
func (op *Operation) Input(i int) (Output, error) {
	if i < 0 || i >= op.NumInputs() {
		return Output{}, errorf(InvalidArgument, op.Name(), "operation has %d inputs, no input %d", op.NumInputs(), i)
	}
	o := C.TF_OperationInput(C.TF_Input{oper: op.c, index: C.int(i)})
	runtime.KeepAlive(op.g)
	return Output{Op: &Operation{c: o.oper, g: op.g}, Index: int(o.index)}, nil
}
