// Package tftest converts the arrays of internal/testmodels fixtures to and
// from tf tensors and compares TensorFlow results with the values Python TF
// recorded. It is for tests only.
//
// # Ownership
//
// Tensor returns a tensor the test owns; it is closed by t.Cleanup.
//
// # Concurrency
//
// The functions are safe for concurrent use.
//
// # Errors
//
// Mismatches fail the test with the element index and both values.
package tftest

import (
	"fmt"
	"math"
	"testing"

	"github.com/gotflow/gotflow/internal/testmodels"
	"github.com/gotflow/gotflow/tf"
)

// Tol is the tolerance tests use when comparing with Python TF's outputs:
// |got-want| <= Tol*(1+|want|).
const Tol = 1e-5

// NewTensor builds a tensor holding a's values.
func NewTensor(a *testmodels.Array) (*tf.Tensor, error) {
	switch a.DType {
	case "float32":
		return tf.NewTensor(a.Shape, orEmpty(a.Float32))
	case "float64":
		return tf.NewTensor(a.Shape, orEmpty(a.Float64))
	case "int32":
		return tf.NewTensor(a.Shape, orEmpty(a.Int32))
	case "int64":
		return tf.NewTensor(a.Shape, orEmpty(a.Int64))
	case "uint8":
		return tf.NewTensor(a.Shape, orEmpty(a.Uint8))
	case "bool":
		return tf.NewTensor(a.Shape, orEmpty(a.Bool))
	case "string":
		return tf.NewStringTensor(a.Shape, a.Bytes)
	}
	return nil, fmt.Errorf("tftest: unsupported dtype %q", a.DType)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Tensor is NewTensor for tests: it fails t on error and closes the tensor at
// cleanup.
func Tensor(t testing.TB, a *testmodels.Array) *tf.Tensor {
	t.Helper()
	x, err := NewTensor(a)
	if err != nil {
		t.Fatalf("tftest: %v", err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

// Compare reports how got differs from want (nil when equal within Tol).
func Compare(want *testmodels.Array, got *tf.Tensor) error {
	if got.DataType().String() != want.DType {
		return fmt.Errorf("dtype %s, want %s", got.DataType(), want.DType)
	}
	if fmt.Sprint(got.Shape()) != fmt.Sprint(want.Shape) {
		return fmt.Errorf("shape %v, want %v", got.Shape(), want.Shape)
	}
	if want.DType == "string" {
		s, err := got.Strings()
		if err != nil {
			return err
		}
		for i := range want.Bytes {
			if string(s[i]) != string(want.Bytes[i]) {
				return fmt.Errorf("element %d is %q, want %q", i, s[i], want.Bytes[i])
			}
		}
		return nil
	}
	w, err := want.AsFloat64()
	if err != nil {
		return err
	}
	g, err := Float64s(got)
	if err != nil {
		return err
	}
	return CompareFloats(w, g)
}

// CompareFloats compares element by element within Tol.
func CompareFloats(want, got []float64) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d elements, want %d", len(got), len(want))
	}
	for i := range want {
		if math.IsNaN(want[i]) && math.IsNaN(got[i]) {
			continue
		}
		if math.Abs(got[i]-want[i]) > Tol*(1+math.Abs(want[i])) {
			return fmt.Errorf("element %d is %v, want %v", i, got[i], want[i])
		}
	}
	return nil
}

// Float64s returns a numeric tensor's values widened to float64.
func Float64s(x *tf.Tensor) ([]float64, error) {
	switch x.DataType() {
	case tf.Float:
		return widen[float32](x)
	case tf.Double:
		return widen[float64](x)
	case tf.Int32:
		return widen[int32](x)
	case tf.Int64:
		return widen[int64](x)
	case tf.Uint8:
		return widen[uint8](x)
	case tf.Bool:
		d, err := tf.Data[bool](x)
		if err != nil {
			return nil, err
		}
		out := make([]float64, len(d))
		for i, v := range d {
			if v {
				out[i] = 1
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("tftest: dtype %s is not numeric", x.DataType())
}

func widen[T float32 | float64 | int32 | int64 | uint8](x *tf.Tensor) ([]float64, error) {
	d, err := tf.Data[T](x)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(d))
	for i, v := range d {
		out[i] = float64(v)
	}
	return out, nil
}

// RequireEqual fails t when got differs from want beyond Tol.
func RequireEqual(t testing.TB, want *testmodels.Array, got *tf.Tensor, what string) {
	t.Helper()
	if err := Compare(want, got); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
