package tf_test

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/gotflow/gotflow/tf"
)

func roundTrip[T tf.Numeric](t *testing.T, shape []int64, data []T) {
	t.Helper()
	tt, err := tf.NewTensor(shape, data)
	require.NoError(t, err)
	defer tt.Close()
	require.Equal(t, tf.DataTypeOf[T](), tt.DataType())
	require.Equal(t, shape, tt.Shape())
	got, err := tf.Data[T](tt)
	require.NoError(t, err)
	require.Equal(t, data, got)
}

func TestTensorRoundTripEveryNumericType(t *testing.T) {
	before := tf.LiveTensors()
	t.Run("float32", func(t *testing.T) { roundTrip(t, []int64{2, 3}, []float32{1, -2, 3.5, 0, 1e-30, 3e38}) })
	t.Run("float64", func(t *testing.T) { roundTrip(t, []int64{3}, []float64{1, -2, 1e-300}) })
	t.Run("int8", func(t *testing.T) { roundTrip(t, []int64{2}, []int8{-128, 127}) })
	t.Run("int16", func(t *testing.T) { roundTrip(t, []int64{2}, []int16{-32768, 32767}) })
	t.Run("int32", func(t *testing.T) { roundTrip(t, []int64{1, 2}, []int32{-1 << 31, 1<<31 - 1}) })
	t.Run("int64", func(t *testing.T) { roundTrip(t, []int64{2}, []int64{-1 << 63, 1<<63 - 1}) })
	t.Run("uint8", func(t *testing.T) { roundTrip(t, []int64{2, 1}, []uint8{0, 255}) })
	t.Run("uint16", func(t *testing.T) { roundTrip(t, []int64{1}, []uint16{65535}) })
	t.Run("uint32", func(t *testing.T) { roundTrip(t, []int64{1}, []uint32{1<<32 - 1}) })
	t.Run("uint64", func(t *testing.T) { roundTrip(t, []int64{1}, []uint64{1<<64 - 1}) })
	t.Run("bool", func(t *testing.T) { roundTrip(t, []int64{3}, []bool{true, false, true}) })
	t.Run("scalar", func(t *testing.T) { roundTrip(t, nil, []float32{42}) })
	t.Run("empty", func(t *testing.T) { roundTrip(t, []int64{0, 784}, []float32{}) })
	require.Equal(t, before, tf.LiveTensors(), "every tensor must be freed by Close")
}

func TestTensorBadInput(t *testing.T) {
	_, err := tf.NewTensor([]int64{2, 2}, []float32{1, 2, 3})
	require.ErrorIs(t, err, tf.ErrInvalidArgument)
	require.ErrorContains(t, err, "needs 4 float32 values, got 3")

	_, err = tf.NewTensor([]int64{-1}, []float32{})
	require.ErrorContains(t, err, "negative")

	_, err = tf.AllocateTensor(tf.Double, []int64{1 << 61})
	require.ErrorContains(t, err, "would need more than", "element count times element size must not wrap")
	_, err = tf.NewTensorFill(tf.Double, []int64{1 << 30, 1 << 31}, nil)
	require.ErrorContains(t, err, "would need more than")

	_, err = tf.AllocateTensor(tf.String, []int64{1})
	require.ErrorContains(t, err, "not a fixed-width type")

	tt, err := tf.NewTensor([]int64{1}, []int32{7})
	require.NoError(t, err)
	_, err = tf.Data[float32](tt)
	require.ErrorContains(t, err, "tensor holds int32, not float32")
	_, err = tt.Strings()
	require.ErrorContains(t, err, "not string")
	require.NoError(t, tt.Close())
	require.NoError(t, tt.Close(), "Close is idempotent")
	_, err = tf.Data[int32](tt)
	require.ErrorIs(t, err, tf.ErrClosed)
	require.Nil(t, tt.Bytes())
}

func TestStringTensorRoundTrip(t *testing.T) {
	vals := [][]byte{[]byte("hello"), {}, []byte("a\x00b\x00"), []byte("żółw 🐢 東京"), bytes.Repeat([]byte("x"), 1000)}
	tt, err := tf.NewStringTensor([]int64{5}, vals)
	require.NoError(t, err)
	defer tt.Close()
	require.Equal(t, tf.String, tt.DataType())
	got, err := tt.Strings()
	require.NoError(t, err)
	require.Equal(t, vals, got)

	_, err = tf.NewStringTensor([]int64{2}, vals)
	require.ErrorContains(t, err, "needs 2 strings, got 5")

	empty, err := tf.NewStringTensor([]int64{0}, nil)
	require.NoError(t, err)
	defer empty.Close()
	got, err = empty.Strings()
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestNewTensorFromBufferAliasesAndReleases(t *testing.T) {
	mem, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	require.NoError(t, err)
	f := unsafe.Slice((*float32)(unsafe.Pointer(&mem[0])), 6)
	copy(f, []float32{1, 2, 3, 4, 5, 6})
	released := make(chan struct{}, 1)
	tt, err := tf.NewTensorFromBuffer(tf.Float, []int64{2, 3}, unsafe.Pointer(&mem[0]), 24, func() {
		released <- struct{}{}
	})
	require.NoError(t, err)
	got, err := tf.Data[float32](tt)
	require.NoError(t, err)
	require.Equal(t, unsafe.Pointer(&mem[0]), unsafe.Pointer(&got[0]), "the tensor must alias the buffer, not copy it")
	require.Equal(t, []float32{1, 2, 3, 4, 5, 6}, got)
	require.NoError(t, tt.Close())
	<-released
	require.NoError(t, syscall.Munmap(mem))

	_, err = tf.NewTensorFromBuffer(tf.Float, []int64{2}, unsafe.Pointer(&mem[4]), 8, nil)
	require.ErrorContains(t, err, "not 64-byte aligned")
	_, err = tf.NewTensorFromBuffer(tf.Float, []int64{3}, unsafe.Pointer(&mem[0]), 8, nil)
	require.ErrorContains(t, err, "needs 12 bytes, buffer has 8")
}

func TestParseDataType(t *testing.T) {
	for in, want := range map[string]tf.DataType{"float32": tf.Float, "DT_FLOAT": tf.Float, "float": tf.Float,
		"half": tf.Half, "int64": tf.Int64, "DT_STRING": tf.String, "bool": tf.Bool} {
		got, err := tf.ParseDataType(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	_, err := tf.ParseDataType("complex64")
	require.ErrorContains(t, err, `unknown data type "complex64"`)
	require.Equal(t, "float32", tf.Float.String())
	require.Equal(t, 8, tf.Int64.Size())
	require.True(t, errors.Is(&tf.Error{Code: tf.NotFound}, tf.ErrNotFound))
}
