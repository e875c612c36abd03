package ps

import (
	"encoding/binary"
	"strings"
	"unsafe"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/pspb"
)

// wireCodec is the gRPC codec of the parameter server. It produces and
// reads standard protobuf (any protobuf client interoperates), but handles
// the messages that carry tensors itself so that tensor bytes are not
// copied more than needed: outgoing chunk data is referenced rather than
// copied into a marshal buffer, pre-encoded messages (encodedMsg) pass
// through, and pushes (pushMsg, on the shard) and pulls (pullMsg, on the
// client) are decoded by segments.go with chunk data left in the received
// buffers. Every other message, including the generated PushRequest,
// PullResponse and PushPullResponse types, goes to the standard protobuf
// codec.
type wireCodec struct{}

// encodedMsg is a message already in wire format, in pieces.
type encodedMsg struct{ parts [][]byte }

var protoCodec = encoding.GetCodecV2("proto")

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *encodedMsg:
		out := make(mem.BufferSlice, len(m.parts))
		for i, p := range m.parts {
			out[i] = mem.SliceBuffer(p)
		}
		return out, nil
	case *pspb.PushRequest:
		return marshalPushRequest(m)
	}
	return protoCodec.Marshal(v)
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *pullMsg:
		return unmarshalPullMsg(data, m)
	case *pushMsg:
		return unmarshalPushMsg(data, m)
	}
	return protoCodec.Unmarshal(data, v)
}

// makeNoZero returns a byte slice of length 0 and capacity at least n whose
// memory is not cleared first: every byte is about to be overwritten, and
// clearing megabytes costs as much as copying them. strings.Builder.Grow is
// the standard library's way to get such memory; the slice takes over the
// builder's buffer, which nothing else references.
func makeNoZero(n int) []byte {
	if n <= 0 {
		return nil
	}
	var sb strings.Builder
	sb.Grow(n)
	sb.WriteByte(0)
	s := sb.String()
	return unsafe.Slice(unsafe.StringData(s), sb.Cap())[:0]
}

// Field numbers, as in ps.proto.
const (
	fChunkName, fChunkIndex, fChunkDtype, fChunkData = 1, 2, 3, 4
	fPushHeader, fPushChunks                         = 1, 2
	fPullChunks, fPullInfo                           = 1, 2
	fPushPullPush, fPushPullPull                     = 1, 2
)

// chunkFields appends the fields of c other than data.
func chunkFields(b []byte, c *pspb.Chunk) []byte {
	if c.GetName() != "" {
		b = protowire.AppendTag(b, fChunkName, protowire.BytesType)
		b = protowire.AppendString(b, c.GetName())
	}
	if c.GetIndex() != 0 {
		b = protowire.AppendTag(b, fChunkIndex, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.GetIndex()))
	}
	if c.GetDtype() != 0 {
		b = protowire.AppendTag(b, fChunkDtype, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(c.GetDtype()))
	}
	return b
}

const fChunkPad = 15

// grpcMessagePrefix is the length of gRPC's message header (compression
// flag and length) that precedes every message on the wire.
const grpcMessagePrefix = 5

// chunkHead returns the bytes of a chunk field (field num of the enclosing
// message) up to and including the data field's tag and length. With
// offset >= 0 (where the head starts in the message), the n data bytes that
// follow start at a multiple of 4 from the message start: a pad field of
// 0-3 filler bytes is inserted before data as needed.
func chunkHead(num protowire.Number, c *pspb.Chunk, n, offset int) []byte {
	fields := chunkFields(nil, c)
	var head []byte
	for pad := -1; pad < 4; pad++ { // -1: no pad field
		body := append([]byte(nil), fields...)
		if pad >= 0 {
			body = protowire.AppendTag(body, fChunkPad, protowire.BytesType)
			body = protowire.AppendVarint(body, uint64(pad))
			body = append(body, make([]byte, pad)...)
		}
		if n > 0 {
			body = protowire.AppendTag(body, fChunkData, protowire.BytesType)
			body = protowire.AppendVarint(body, uint64(n))
		}
		head = protowire.AppendTag(nil, num, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(len(body)+n))
		head = append(head, body...)
		if n == 0 || offset < 0 || (offset+len(head))%4 == 0 {
			break
		}
	}
	return head
}

func marshalPushRequest(m *pspb.PushRequest) (mem.BufferSlice, error) {
	var head []byte
	if h := m.GetHeader(); h != nil {
		hb, err := proto.Marshal(h)
		if err != nil {
			return nil, err
		}
		head = protowire.AppendTag(head, fPushHeader, protowire.BytesType)
		head = protowire.AppendBytes(head, hb)
	}
	out := mem.BufferSlice{}
	// Bytes before the current position in the receiver's buffers: gRPC's
	// 5-byte message prefix shares the first HTTP/2 frame with the message,
	// and later frames carry 16 KiB each, so a payload that starts at
	// message offset m lies at buffer offset (m+5) mod 16384; aligning m+5
	// to 4 lets the receiving shard use the bytes as float32 in place.
	offset := grpcMessagePrefix
	for _, c := range m.GetChunks() {
		n := len(c.GetData())
		head = append(head, chunkHead(fPushChunks, c, n, offset+len(head))...)
		if n > 0 {
			out = append(out, mem.SliceBuffer(head), mem.SliceBuffer(c.GetData()))
			offset += len(head) + n
			head = nil
		}
	}
	if len(head) > 0 || len(out) == 0 {
		out = append(out, mem.SliceBuffer(head))
	}
	return out, nil
}

// pullPart is one part to send in a pull.
type pullPart struct {
	name   string
	index  uint32
	values []float32
}

// encodePull builds PullResponse bodies in wire format directly from
// variable memory, each about limit bytes (a part is never split), the
// first one carrying info: one copy of the values, no marshal step, every
// buffer allocated at its final size.
func encodePull(parts []pullPart, dtype pspb.DType, limit int, info *pspb.ServerInfo) ([][]byte, uint64, error) {
	ib, err := proto.Marshal(info)
	if err != nil {
		return nil, 0, err
	}
	size := 4
	if dtype == pspb.DType_DTYPE_FLOAT16 {
		size = 2
	}
	type msg struct{ from, to, bytes int }
	var msgs []msg
	cur := msg{bytes: len(ib) + 16}
	heads := make([][]byte, len(parts))
	var payload uint64
	for i, p := range parts {
		n := size * len(p.values)
		payload += uint64(n)
		heads[i] = chunkHead(fPullChunks, &pspb.Chunk{Name: p.name, Index: p.index, Dtype: dtype}, n, -1)
		if cur.to > cur.from && cur.bytes+len(heads[i])+n > limit {
			msgs = append(msgs, cur)
			cur = msg{from: i}
		}
		cur.to = i + 1
		cur.bytes += len(heads[i]) + n
	}
	msgs = append(msgs, cur)
	out := make([][]byte, len(msgs))
	eachPart(len(msgs), int(payload)/size, func(k int) {
		m := msgs[k]
		b := makeNoZero(m.bytes)
		for i := m.from; i < m.to; i++ {
			n := size * len(parts[i].values)
			b = append(b, heads[i]...)
			switch {
			case dtype == pspb.DType_DTYPE_FLOAT16:
				b = b[:len(b)+n]
				dst := b[len(b)-n:]
				for j, x := range parts[i].values {
					binary.LittleEndian.PutUint16(dst[2*j:], floatToHalf(x))
				}
			case littleEndian:
				b = append(b, float32Bytes(parts[i].values)...)
			default:
				b = append(b, encodeFloat32(parts[i].values)...)
			}
		}
		if k == 0 {
			b = protowire.AppendBytes(protowire.AppendTag(b, fPullInfo, protowire.BytesType), ib)
		}
		out[k] = b
	})
	return out, payload, nil
}

// wrapPushPull turns a PullResponse body into a PushPullResponse, with the
// push result if given, without copying the body.
func wrapPushPull(pull []byte, push *pspb.PushResponse) (*encodedMsg, error) {
	var b []byte
	if push != nil {
		pb, err := proto.Marshal(push)
		if err != nil {
			return nil, err
		}
		b = protowire.AppendBytes(protowire.AppendTag(b, fPushPullPush, protowire.BytesType), pb)
	}
	b = protowire.AppendTag(b, fPushPullPull, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(pull)))
	return &encodedMsg{parts: [][]byte{b, pull}}, nil
}
