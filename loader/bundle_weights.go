package loader

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/gotflow/gotflow/tf"
)

// MaxWeightsHeaderBytes bounds the JSON header of a weights file.
const MaxWeightsHeaderBytes = 100 << 20

// Weight is one variable's value: raw little-endian bytes in row-major
// order, as stored in the weights file and sent over the wire.
type Weight struct {
	Name  string
	DType tf.DataType
	Shape []int64
	Data  []byte
}

// safetensors dtype codes.
var stCodes = map[string]tf.DataType{
	"F16": tf.Half, "BF16": tf.BFloat16, "F32": tf.Float, "F64": tf.Double,
	"I8": tf.Int8, "I16": tf.Int16, "I32": tf.Int32, "I64": tf.Int64,
	"U8": tf.Uint8, "U16": tf.Uint16, "U32": tf.Uint32, "U64": tf.Uint64, "BOOL": tf.Bool,
}

func stCode(dt tf.DataType) (string, bool) {
	for k, v := range stCodes {
		if v == dt {
			return k, true
		}
	}
	return "", false
}

type stEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// ReadWeights reads a weights file in the safetensors layout.
func ReadWeights(path string) ([]Weight, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loader: weights: %w", err)
	}
	w, err := ParseWeights(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// ParseWeights decodes the safetensors layout: an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}, then
// the data. Weights come back sorted by data offset; their Data alias b.
func ParseWeights(b []byte) ([]Weight, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("loader: weights file is %d bytes, shorter than its 8-byte header length (truncated?)", len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > MaxWeightsHeaderBytes {
		return nil, fmt.Errorf("loader: weights header length %d is over the %d-byte limit (not a safetensors file?)", n, MaxWeightsHeaderBytes)
	}
	if uint64(len(b)-8) < n {
		return nil, fmt.Errorf("loader: weights header length %d exceeds the %d bytes after it (truncated?)", n, len(b)-8)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("loader: weights header is not a JSON object: %v", err)
	}
	body := b[8+n:]
	type span struct {
		w          Weight
		begin, end int64
	}
	spans := make([]span, 0, len(raw))
	for name, msg := range raw {
		if name == "__metadata__" {
			var md map[string]string
			if err := json.Unmarshal(msg, &md); err != nil {
				return nil, fmt.Errorf("loader: weights __metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		var e stEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("loader: weights entry %q: %v", name, err)
		}
		dt, ok := stCodes[e.DType]
		if !ok {
			return nil, fmt.Errorf("loader: weights entry %q has dtype %q (want one of F16 BF16 F32 F64 I8 I16 I32 I64 U8 U16 U32 U64 BOOL)", name, e.DType)
		}
		if e.Shape == nil {
			e.Shape = []int64{}
		}
		count, err := elementCount(e.Shape)
		if err != nil {
			return nil, fmt.Errorf("loader: weights entry %q: %v", name, err)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin {
			return nil, fmt.Errorf("loader: weights entry %q has data offsets [%d, %d)", name, begin, end)
		}
		if end > int64(len(body)) {
			return nil, fmt.Errorf("loader: weights entry %q data [%d, %d) lies beyond the %d data bytes (truncated file?)", name, begin, end, len(body))
		}
		want, err := byteCount(count, dt)
		if err != nil {
			return nil, fmt.Errorf("loader: weights entry %q: %v", name, err)
		}
		if end-begin != want {
			return nil, fmt.Errorf("loader: weights entry %q has %d data bytes, want %d for %s%v", name, end-begin, want, dt, e.Shape)
		}
		spans = append(spans, span{Weight{Name: name, DType: dt, Shape: e.Shape, Data: body[begin:end:end]}, begin, end})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].w.Name < spans[j].w.Name
	})
	out := make([]Weight, len(spans))
	var maxEnd int64 // the furthest end of the non-empty spans so far
	last := ""       // the span that reaches maxEnd
	for i, s := range spans {
		if s.end > s.begin {
			if s.begin < maxEnd {
				return nil, fmt.Errorf("loader: weights entries %q and %q overlap", last, s.w.Name)
			}
			maxEnd, last = s.end, s.w.Name
		}
		out[i] = s.w
	}
	return out, nil
}

// byteCount is count elements of dt in bytes, or an error when that does
// not fit in an int64.
func byteCount(count int64, dt tf.DataType) (int64, error) {
	size := int64(dt.Size())
	if size > 0 && count > math.MaxInt64/size {
		return 0, fmt.Errorf("%d %s elements are more bytes than a file can hold", count, dt)
	}
	return count * size, nil
}

// EncodeWeights serializes weights in the safetensors layout, in the order
// given, with the header padded so the data starts 8-byte aligned.
func EncodeWeights(ws []Weight, metadata map[string]string) ([]byte, error) {
	var sb strings.Builder
	sb.WriteByte('{')
	first := true
	writeKey := func(k string) {
		if !first {
			sb.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(k)
		sb.Write(kb)
		sb.WriteByte(':')
	}
	if len(metadata) > 0 {
		writeKey("__metadata__")
		mb, err := json.Marshal(metadata)
		if err != nil {
			return nil, err
		}
		sb.Write(mb)
	}
	var off int64
	seen := map[string]bool{}
	for _, w := range ws {
		if w.Name == "" || w.Name == "__metadata__" || seen[w.Name] {
			return nil, fmt.Errorf("loader: weight name %q is empty, reserved or used twice", w.Name)
		}
		seen[w.Name] = true
		code, ok := stCode(w.DType)
		if !ok {
			return nil, fmt.Errorf("loader: weight %q has dtype %s, which the weights file cannot store", w.Name, w.DType)
		}
		if err := w.check(); err != nil {
			return nil, err
		}
		shape := w.Shape
		if shape == nil {
			shape = []int64{}
		}
		eb, err := json.Marshal(stEntry{DType: code, Shape: shape, DataOffsets: [2]int64{off, off + int64(len(w.Data))}})
		if err != nil {
			return nil, err
		}
		writeKey(w.Name)
		sb.Write(eb)
		off += int64(len(w.Data))
	}
	sb.WriteByte('}')
	header := sb.String()
	if pad := (8 - (8+len(header))%8) % 8; pad > 0 {
		header += strings.Repeat(" ", pad)
	}
	out := make([]byte, 8, 8+len(header)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	for _, w := range ws {
		out = append(out, w.Data...)
	}
	return out, nil
}

// check verifies that Data holds exactly the bytes DType and Shape call for.
func (w Weight) check() error {
	if w.DType.Size() == 0 {
		return fmt.Errorf("loader: weight %q has dtype %s; only fixed-width types are supported", w.Name, w.DType)
	}
	n, err := elementCount(w.Shape)
	if err != nil {
		return fmt.Errorf("loader: weight %q: %v", w.Name, err)
	}
	want, err := byteCount(n, w.DType)
	if err != nil {
		return fmt.Errorf("loader: weight %q: %v", w.Name, err)
	}
	if int64(len(w.Data)) != want {
		return fmt.Errorf("loader: weight %q has %d bytes, want %d for %s%v", w.Name, len(w.Data), want, w.DType, w.Shape)
	}
	return nil
}

// Tensor copies the weight into a new tensor the caller owns.
func (w Weight) Tensor() (*tf.Tensor, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	return tf.NewTensorFill(w.DType, w.Shape, func(buf []byte) error {
		copy(buf, w.Data)
		return nil
	})
}

// WeightOf copies a tensor's value into a Weight called name.
func WeightOf(name string, t *tf.Tensor) (Weight, error) {
	if t.DataType().Size() == 0 {
		return Weight{}, fmt.Errorf("loader: weight %q: tensor has dtype %s; only fixed-width types are supported", name, t.DataType())
	}
	return Weight{Name: name, DType: t.DataType(), Shape: t.Shape(), Data: append([]byte(nil), t.Bytes()...)}, nil
}
