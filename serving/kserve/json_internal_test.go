package kserve

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/gotflow/gotflow/serving"
	pb "github.com/gotflow/gotflow/serving/kserve/inferencepb"
	"github.com/gotflow/gotflow/tf"
)

func read(t *testing.T, datatype string, shape []int64, data string) (*serving.Tensor, error) {
	t.Helper()
	tt, n, err := newInput("in", datatype, shape, nil)
	require.NoError(t, err)
	return tt, readData([]byte(data), tt, "in", n)
}

// TestReadData: JSON tensor data of every datatype, flat and nested,
// integers exact to the last digit, floats with NaN and infinities,
// strings with escapes.
func TestReadData(t *testing.T) {
	for _, tc := range []struct {
		datatype string
		shape    []int64
		data     string
		want     *serving.Tensor
	}{
		{"FP32", []int64{2, 2}, `[[1, -2.5], [3e2, 0.1]]`, serving.NewTensor([]int64{2, 2}, []float32{1, -2.5, 300, 0.1})},
		{"FP32", []int64{3}, `[NaN, Infinity, -Infinity]`, serving.NewTensor([]int64{3}, []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))})},
		{"FP64", []int64{2}, ` [ 0.1 , 1e-300 ] `, serving.NewTensor([]int64{2}, []float64{0.1, 1e-300})},
		{"INT8", []int64{3}, `[-128, 127, 3.0]`, serving.NewTensor([]int64{3}, []int8{-128, 127, 3})},
		{"INT16", []int64{2}, `[-32768, 1e3]`, serving.NewTensor([]int64{2}, []int16{-32768, 1000})},
		{"INT32", []int64{1, 1, 2}, `[[[2147483647, -2147483648]]]`, serving.NewTensor([]int64{1, 1, 2}, []int32{math.MaxInt32, math.MinInt32})},
		{"INT64", []int64{2}, `[9223372036854775807, -9223372036854775808]`, serving.NewTensor([]int64{2}, []int64{math.MaxInt64, math.MinInt64})},
		{"UINT8", []int64{2}, `[0, 255]`, serving.NewTensor([]int64{2}, []uint8{0, 255})},
		{"UINT16", []int64{1}, `[65535]`, serving.NewTensor([]int64{1}, []uint16{65535})},
		{"UINT32", []int64{1}, `[4294967295]`, serving.NewTensor([]int64{1}, []uint32{math.MaxUint32})},
		{"UINT64", []int64{2}, `[18446744073709551615, 9007199254740993]`, serving.NewTensor([]int64{2}, []uint64{math.MaxUint64, 1<<53 + 1})},
		{"BOOL", []int64{4}, `[true, false, 1, 0]`, serving.NewTensor([]int64{4}, []bool{true, false, true, false})},
		{"INT32", []int64{}, `[7]`, serving.NewTensor([]int64{}, []int32{7})},
		{"INT32", []int64{}, `7`, serving.NewTensor([]int64{}, []int32{7})},
		{"FP32", []int64{0, 3}, `[]`, serving.NewTensor([]int64{0, 3}, []float32{})},
		{"BYTES", []int64{5}, `["a", "", "tab\there \"q\" \\ \/", "\u00e9\ud83d\ude00", "\ud800x"]`,
			&serving.Tensor{DType: tf.String, Shape: []int64{5}, Strings: [][]byte{[]byte("a"), {}, []byte("tab\there \"q\" \\ /"), []byte("é😀"), []byte("\uFFFDx")}}},
	} {
		got, err := read(t, tc.datatype, tc.shape, tc.data)
		require.NoError(t, err, "%s %s", tc.datatype, tc.data)
		require.Equal(t, tc.want.DType, got.DType)
		require.Equal(t, fmt.Sprint(tc.want.Shape), fmt.Sprint(got.Shape))
		if tc.want.DType == tf.String {
			require.Equal(t, tc.want.Strings, got.Strings)
		} else {
			require.Equal(t, tc.want.Data, got.Data, "%s %s", tc.datatype, tc.data)
		}
	}

	half, err := read(t, "FP16", []int64{2}, `[1.5, -2]`)
	require.NoError(t, err)
	require.Equal(t, []byte{0x00, 0x3e, 0x00, 0xc0}, half.Data)
	bf, err := read(t, "BF16", []int64{1}, `[1.5]`)
	require.NoError(t, err)
	require.Equal(t, []byte{0xc0, 0x3f}, bf.Data)

	for _, tc := range []struct {
		datatype, data, msg string
	}{
		{"INT8", `[128]`, "128 is not an INT8: value out of range"},
		{"UINT8", `[-1]`, "-1 is not a UINT8"},
		{"INT32", `[1.5]`, "1.5 is not an INT32: not a whole number"},
		{"INT64", `[9223372036854775808]`, "value out of range"},
		{"UINT64", `[18446744073709551616]`, "value out of range"},
		{"FP32", `[1e39]`, "out of range for FP32"},
		{"FP32", `[true]`, "want a number for FP32, not a boolean"},
		{"FP32", `[null]`, "not null"},
		{"FP32", `[01]`, "malformed JSON"},
		{"FP32", `[1.]`, "malformed JSON"},
		{"FP32", `[1,]`, "malformed JSON"},
		{"FP32", `[1] [2]`, "malformed JSON"},
		{"FP32", `[nan]`, "malformed JSON"},
		{"BOOL", `[2]`, "want true or false for BOOL, not a number"},
		{"BYTES", `[1]`, "want a string for BYTES, not a number"},
		{"BYTES", "[\"a\x01\"]", "control character"},
		{"BYTES", `["\q"]`, `invalid escape \q`},
		{"BYTES", `["abc`, "unterminated string"},
		{"BYTES", `["\u12"]`, "invalid \\u escape"},
		{"BYTES", `["\u12`, "short \\u escape"},
	} {
		_, err := read(t, tc.datatype, []int64{1}, tc.data)
		require.Error(t, err, "%s %s", tc.datatype, tc.data)
		require.Equal(t, codes.InvalidArgument, serving.Code(err))
		require.Contains(t, serving.Message(err), tc.msg, "%s %s", tc.datatype, tc.data)
	}

	deep := strings.Repeat("[", 10000) + "1" + strings.Repeat("]", 10000)
	_, err = read(t, "FP32", []int64{1}, deep)
	require.ErrorContains(t, err, "nested deeper than")

	_, err = read(t, "FP32", []int64{1 << 20}, `[1]`)
	require.ErrorContains(t, err, "data holds fewer than the 1048576 elements")
	_, _, err = newInput("in", "FP32", []int64{1 << 30, 1 << 30, 1 << 30}, nil)
	require.ErrorContains(t, err, "too large")
}

// TestAppendData: every datatype written as JSON reads back to the same
// bytes; floats print in their shortest form.
func TestAppendData(t *testing.T) {
	for _, tt := range []*serving.Tensor{
		serving.NewTensor([]int64{4}, []float32{2.5, 3, 0.1, -1e-7}),
		serving.NewTensor([]int64{3}, []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}),
		serving.NewTensor([]int64{2}, []float64{0.1, 1e300}),
		serving.NewTensor([]int64{2}, []int8{-128, 127}),
		serving.NewTensor([]int64{2}, []int16{-32768, 32767}),
		serving.NewTensor([]int64{2}, []int32{math.MinInt32, math.MaxInt32}),
		serving.NewTensor([]int64{2}, []int64{math.MinInt64, math.MaxInt64}),
		serving.NewTensor([]int64{2}, []uint8{0, 255}),
		serving.NewTensor([]int64{1}, []uint16{65535}),
		serving.NewTensor([]int64{1}, []uint32{math.MaxUint32}),
		serving.NewTensor([]int64{2}, []uint64{math.MaxUint64, 1<<53 + 1}),
		serving.NewTensor([]int64{2, 1}, []bool{true, false}),
		{DType: tf.Half, Shape: []int64{2}, Data: []byte{0x00, 0x3e, 0x00, 0xc0}},
		{DType: tf.BFloat16, Shape: []int64{1}, Data: []byte{0xc0, 0x3f}},
		{DType: tf.String, Shape: []int64{3}, Strings: [][]byte{[]byte("x"), {}, []byte("\"q\"\\\n\x01é😀")}},
	} {
		b, err := appendData(nil, tt, "out")
		require.NoError(t, err)
		back, n, err := newInput("out", datatypeName(tt.DType), tt.Shape, nil)
		require.NoError(t, err)
		require.NoError(t, readData(b, back, "out", n), "%s", b)
		require.Equal(t, tt.Data, back.Data, "%s", b)
		require.Equal(t, tt.Strings, back.Strings, "%s", b)
		if tt.DType == tf.String {
			var s []string
			require.NoError(t, json.Unmarshal(b, &s), "%s", b)
			require.Equal(t, "\"q\"\\\n\x01é😀", s[2])
		}
	}
	b, err := appendData(nil, serving.NewTensor([]int64{4}, []float32{2.5, 3, 0.1, -1e-7}), "out")
	require.NoError(t, err)
	require.Equal(t, `[2.5,3,0.1,-1e-07]`, string(b))
	_, err = appendData(nil, &serving.Tensor{DType: tf.String, Shape: []int64{1}, Strings: [][]byte{{0xff}}}, "out")
	require.ErrorContains(t, err, "not UTF-8")
}

func TestSplitBytes(t *testing.T) {
	s, err := splitBytes([]byte("\x01\x00\x00\x00a\x00\x00\x00\x00\x02\x00\x00\x00bc"), 3)
	require.NoError(t, err)
	require.Equal(t, [][]byte{[]byte("a"), {}, []byte("bc")}, s)
	require.Equal(t, []byte("\x01\x00\x00\x00a\x00\x00\x00\x00\x02\x00\x00\x00bc"), rawBytes(&serving.Tensor{DType: tf.String, Strings: s}))
	for raw, msg := range map[string]string{
		"\x01\x00\x00":        "ends inside an element's length",
		"\x05\x00\x00\x00abc": "has length 5, but only 3 bytes follow",
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00": "more than the 3 elements",
		"\x00\x00\x00\x00": "holds 1 elements, the shape 3",
	} {
		_, err := splitBytes([]byte(raw), 3)
		require.ErrorContains(t, err, msg, "%q", raw)
	}
}

func TestResponseEncoding(t *testing.T) {
	for accept, want := range map[string]string{
		"": "", "identity": "", "gzip": "gzip", "deflate": "deflate", "gzip, deflate, br": "gzip",
		"deflate, gzip": "gzip", "gzip;q=0, deflate": "deflate", "GZIP ; q=0.5": "gzip", "br": "",
	} {
		require.Equal(t, want, responseEncoding(accept), accept)
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]struct {
		n     int64
		label string
	}{"": {}, "1": {1, ""}, "123": {123, ""}, "stable": {0, "stable"}} {
		n, label, err := parseVersion(in)
		require.NoError(t, err, in)
		require.Equal(t, want.n, n, in)
		require.Equal(t, want.label, label, in)
	}
	for _, in := range []string{"0", "-1", "1x", "99999999999999999999"} {
		_, _, err := parseVersion(in)
		require.Equal(t, codes.InvalidArgument, serving.Code(err), in)
	}
}

// TestProtoRegistration: the service has the full name Triton's clients
// call, and the inference proto package holds this file alone (nothing
// linked in, graft's TensorFlow protos included, registers it too).
func TestProtoRegistration(t *testing.T) {
	require.Equal(t, "/inference.GRPCInferenceService/ModelInfer", pb.GRPCInferenceService_ModelInfer_FullMethodName)
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("inference.GRPCInferenceService")
	require.NoError(t, err)
	require.Equal(t, "grpc_predict_v2.proto", d.ParentFile().Path())
	var files []string
	protoregistry.GlobalFiles.RangeFilesByPackage("inference", func(f protoreflect.FileDescriptor) bool {
		files = append(files, f.Path())
		return true
	})
	require.Equal(t, []string{"grpc_predict_v2.proto"}, files)
}

// FuzzDecodeInfer: no request body makes the decoder panic, and what it
// accepts is consistent.
func FuzzDecodeInfer(f *testing.F) {
	f.Add([]byte(`{"id":"a","inputs":[{"name":"x","datatype":"FP32","shape":[3,1],"data":[[1],[2],[5]]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`), []byte{})
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":9}}]}`), []byte("\x01\x00\x00\x00a\x00\x00\x00\x00"))
	f.Add([]byte(`{"parameters":{"signature_name":"s","timeout":5,"binary_data_output":true},"inputs":[]}`), []byte{})
	f.Add([]byte(`{"inputs":[{"name":"x","datatype":"INT64","shape":[],"data":"\u00e9"}]}`), []byte{})
	f.Fuzz(func(t *testing.T, js, bin []byte) {
		var hr httpRequest
		req := &serving.Request{}
		if _, err := decodeInfer(js, bin, &hr, req); err != nil {
			require.Equal(t, codes.InvalidArgument, serving.Code(err), "%v", err)
			return
		}
		for name, tt := range req.Inputs {
			require.NoError(t, tt.Check(name))
		}
	})
}
