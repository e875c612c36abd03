package tf

// #include <stdlib.h>
// #include <string.h>
// #include "tensorflow/c/c_api.h"
//
// extern void gotflowReleaseBuffer(void* data, size_t len, void* arg);
//
// static TF_Tensor* gotflow_new_tensor(TF_DataType dt, const int64_t* dims, int nd,
//                                      void* data, size_t len, uintptr_t handle) {
//   return TF_NewTensor(dt, dims, nd, data, len, gotflowReleaseBuffer, (void*)handle);
// }
//
// // Fills n TF_TStrings from one buffer and n+1 offsets.
// static void gotflow_fill_strings(TF_TString* dst, const char* buf, const int64_t* offs, int64_t n) {
//   for (int64_t i = 0; i < n; i++) {
//     TF_StringInit(&dst[i]);
//     TF_StringCopy(&dst[i], buf + offs[i], (size_t)(offs[i+1] - offs[i]));
//   }
// }
//
// // Reads the data pointers and sizes of n TF_TStrings.
// static void gotflow_read_strings(const TF_TString* src, const char** ptrs, int64_t* sizes, int64_t n) {
//   for (int64_t i = 0; i < n; i++) {
//     ptrs[i] = TF_StringGetDataPointer(&src[i]);
//     sizes[i] = (int64_t)TF_StringGetSize(&src[i]);
//   }
// }
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// Alignment is the byte alignment TensorFlow requires of tensor memory it
// does not allocate itself (EIGEN_MAX_ALIGN_BYTES); NewTensorFromBuffer
// rejects buffers that are not aligned to it instead of letting TensorFlow
// copy them silently.
const Alignment = 64

// LiveTensors returns the number of tensors created by this package and not
// yet freed. Tests use it to check that every tensor is closed.
func LiveTensors() int64 { return live[kindTensor].Load() }

// LeakedTensors returns the number of tensors that the garbage collector
// found unreachable before their Close (see Leaked). A correct program
// keeps it at zero.
func LeakedTensors() int64 { return leaked[kindTensor].Load() }

// Tensor is a TensorFlow tensor in C memory. It must be freed with Close; a
// forgotten tensor is never freed, only counted in LeakedTensors once the
// garbage collector finds it.
//
// A Tensor is not safe for concurrent use with its own Close. Slices returned
// by Bytes and Data alias the C memory and are valid until Close.
type Tensor struct {
	c      *C.TF_Tensor
	dtype  DataType
	shape  []int64
	closed atomic.Bool
	life   lifetime
}

// wrapTensor takes ownership of c.
func wrapTensor(c *C.TF_Tensor) *Tensor {
	nd := int(C.TF_NumDims(c))
	shape := make([]int64, nd)
	for i := range shape {
		shape[i] = int64(C.TF_Dim(c, C.int(i)))
	}
	t := &Tensor{c: c, dtype: DataType(C.TF_TensorType(c)), shape: shape}
	t.life = track(t, kindTensor)
	return t
}

// MaxRank is the most dimensions a TensorFlow tensor may have
// (TensorShape's limit; a larger rank aborts TensorFlow).
const MaxRank = 254

// numElements checks a shape and returns its element count.
func numElements(shape []int64) (int64, error) {
	if len(shape) > MaxRank {
		// TensorFlow aborts the process on such a shape.
		return 0, errorf(InvalidArgument, "shape", "rank %d is more than TensorFlow's maximum of %d dimensions", len(shape), MaxRank)
	}
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, errorf(InvalidArgument, "shape", "dimension %d of %v is negative", i, shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, errorf(InvalidArgument, "shape", "%v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// byteSize returns the bytes a fixed-width tensor of shape needs, or an
// error when that does not fit in an int64.
func byteSize(dt DataType, shape []int64) (int64, error) {
	n, err := numElements(shape)
	if err != nil {
		return 0, err
	}
	if size := int64(dt.Size()); size > 0 && n > math.MaxInt64/size {
		return 0, errorf(InvalidArgument, "shape", "a %s tensor of shape %v would need more than %d bytes", dt, shape, int64(math.MaxInt64))
	}
	return n * int64(dt.Size()), nil
}

func dimsPtr(shape []int64) *C.int64_t {
	if len(shape) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0]))
}

func allocate(dt DataType, shape []int64, nbytes uintptr) (*Tensor, error) {
	c := C.TF_AllocateTensor(C.TF_DataType(dt), dimsPtr(shape), C.int(len(shape)), C.size_t(nbytes))
	if c == nil {
		return nil, errorf(ResourceExhausted, "TF_AllocateTensor", "cannot allocate a %s tensor of shape %v (%d bytes)", dt, shape, nbytes)
	}
	return wrapTensor(c), nil
}

func fixedWidth(dt DataType, op string) error {
	if dt.Size() == 0 {
		return errorf(InvalidArgument, op, "data type %s is not a fixed-width type gotflow handles", dt)
	}
	return nil
}

// NewTensorFill allocates a tensor of a fixed-width type in TensorFlow's
// memory and calls fill with its bytes, which fill must overwrite entirely
// (they are not zeroed). This is the one-copy path: the caller writes
// straight into the tensor. If fill returns an error the tensor is freed.
func NewTensorFill(dt DataType, shape []int64, fill func(buf []byte) error) (*Tensor, error) {
	if err := fixedWidth(dt, "NewTensor"); err != nil {
		return nil, err
	}
	n, err := byteSize(dt, shape)
	if err != nil {
		return nil, err
	}
	t, err := allocate(dt, shape, uintptr(n))
	if err != nil {
		return nil, err
	}
	if fill != nil {
		if err := fill(t.Bytes()); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// AllocateTensor allocates a zeroed tensor of a fixed-width type.
func AllocateTensor(dt DataType, shape []int64) (*Tensor, error) {
	return NewTensorFill(dt, shape, func(b []byte) error { clear(b); return nil })
}

// NewTensor copies data into a new tensor of the given shape; len(data) must
// equal the shape's element count.
func NewTensor[T Numeric](shape []int64, data []T) (*Tensor, error) {
	dt := DataTypeOf[T]()
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != n {
		return nil, errorf(InvalidArgument, "NewTensor", "shape %v needs %d %s values, got %d", shape, n, dt, len(data))
	}
	return NewTensorFill(dt, shape, func(b []byte) error {
		copy(b, bytesOf(data))
		return nil
	})
}

// Scalar returns a rank-0 tensor holding v.
func Scalar[T Numeric](v T) (*Tensor, error) { return NewTensor(nil, []T{v}) }

func bytesOf[T Numeric](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(z)))
}

// NewTensorFromBuffer makes a tensor that aliases nbytes of memory at data
// without copying. The memory must not be managed by Go's garbage collector
// (C or mmap memory) and must be aligned to Alignment bytes. TensorFlow may
// keep the memory after Close (for example when a Run still uses it or an
// output aliases it); release is called exactly once, from any goroutine,
// when TensorFlow drops its last reference. If NewTensorFromBuffer returns an
// error, release is not called and the caller keeps ownership.
func NewTensorFromBuffer(dt DataType, shape []int64, data unsafe.Pointer, nbytes int, release func()) (*Tensor, error) {
	if err := fixedWidth(dt, "NewTensorFromBuffer"); err != nil {
		return nil, err
	}
	want, err := byteSize(dt, shape)
	if err != nil {
		return nil, err
	}
	if int64(nbytes) != want {
		return nil, errorf(InvalidArgument, "NewTensorFromBuffer", "%s tensor of shape %v needs %d bytes, buffer has %d", dt, shape, want, nbytes)
	}
	if nbytes > 0 && (data == nil || uintptr(data)%Alignment != 0) {
		return nil, errorf(InvalidArgument, "NewTensorFromBuffer", "buffer at %p is not %d-byte aligned", data, Alignment)
	}
	h := cgo.NewHandle(release)
	c := C.gotflow_new_tensor(C.TF_DataType(dt), dimsPtr(shape), C.int(len(shape)), data, C.size_t(nbytes), C.uintptr_t(h))
	if c == nil {
		h.Delete()
		return nil, errorf(Internal, "TF_NewTensor", "TensorFlow refused a %s buffer of %d bytes for shape %v", dt, nbytes, shape)
	}
	return wrapTensor(c), nil
}

// NewStringTensor makes a string tensor of the given shape; len(values)
// must equal the shape's element count. Values are byte strings: embedded
// NULs and any encoding are kept as they are.
func NewStringTensor(shape []int64, values [][]byte) (*Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return nil, err
	}
	if int64(len(values)) != n {
		return nil, errorf(InvalidArgument, "NewStringTensor", "shape %v needs %d strings, got %d", shape, n, len(values))
	}
	total := 0
	for _, v := range values {
		total += len(v)
	}
	buf := make([]byte, 0, total+1)
	offs := make([]int64, len(values)+1)
	for i, v := range values {
		buf = append(buf, v...)
		offs[i+1] = int64(len(buf))
	}
	buf = append(buf, 0) // so &buf[0] exists even when every string is empty
	t, err := allocate(String, shape, uintptr(n)*C.sizeof_TF_TString)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		C.gotflow_fill_strings((*C.TF_TString)(C.TF_TensorData(t.c)), (*C.char)(unsafe.Pointer(&buf[0])), (*C.int64_t)(unsafe.Pointer(&offs[0])), C.int64_t(n))
	}
	runtime.KeepAlive(buf)
	return t, nil
}

// DataType returns the element type.
func (t *Tensor) DataType() DataType { return t.dtype }

// Shape returns a copy of the tensor's shape.
func (t *Tensor) Shape() []int64 { return append([]int64(nil), t.shape...) }

// NumElements returns the number of elements.
func (t *Tensor) NumElements() int64 {
	n, _ := numElements(t.shape)
	return n
}

// Bytes returns the tensor's memory (fixed-width types) without copying; it
// is valid until Close. It returns nil for string tensors and after Close.
func (t *Tensor) Bytes() []byte {
	if t.closed.Load() || t.dtype == String {
		return nil
	}
	p := C.TF_TensorData(t.c)
	size := int(C.TF_TensorByteSize(t.c))
	runtime.KeepAlive(t)
	if p == nil || size == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(p), size)
}

// Data returns the tensor's elements as a []T that aliases its memory; it is
// valid until Close. T must match the tensor's data type.
func Data[T Numeric](t *Tensor) ([]T, error) {
	if t.closed.Load() {
		return nil, ErrClosed
	}
	if dt := DataTypeOf[T](); dt != t.dtype {
		return nil, errorf(InvalidArgument, "Data", "tensor holds %s, not %s", t.dtype, dt)
	}
	b := t.Bytes()
	var z T
	if len(b) == 0 {
		return []T{}, nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), len(b)/int(unsafe.Sizeof(z))), nil
}

// Strings copies the elements of a string tensor out, in row-major order.
func (t *Tensor) Strings() ([][]byte, error) {
	if t.closed.Load() {
		return nil, ErrClosed
	}
	if t.dtype != String {
		return nil, errorf(InvalidArgument, "Strings", "tensor holds %s, not string", t.dtype)
	}
	n := t.NumElements()
	if n == 0 {
		return [][]byte{}, nil
	}
	ptrs := make([]*C.char, n)
	sizes := make([]int64, n)
	C.gotflow_read_strings((*C.TF_TString)(C.TF_TensorData(t.c)), &ptrs[0], (*C.int64_t)(unsafe.Pointer(&sizes[0])), C.int64_t(n))
	total := int64(0)
	for _, s := range sizes {
		total += s
	}
	buf := make([]byte, total)
	out := make([][]byte, n)
	off := int64(0)
	for i := range out {
		src := unsafe.Slice((*byte)(unsafe.Pointer(ptrs[i])), sizes[i])
		copy(buf[off:], src)
		out[i] = buf[off : off+sizes[i] : off+sizes[i]]
		off += sizes[i]
	}
	runtime.KeepAlive(t)
	return out, nil
}

// Close frees the tensor. It is idempotent; TensorFlow may keep the memory
// alive while a Run or another tensor still references it.
func (t *Tensor) Close() error {
	if t == nil || t.closed.Swap(true) {
		return nil
	}
	t.life.release()
	C.TF_DeleteTensor(t.c)
	return nil
}

// String describes the tensor's type and shape.
func (t *Tensor) String() string { return fmt.Sprintf("Tensor<%s%v>", t.dtype, t.shape) }
