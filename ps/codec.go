package ps

import (
	"errors"
	"fmt"

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
// copied into a marshal buffer, incoming chunk data aliases the received
// message buffer, and pre-encoded messages (encodedMsg) pass through.
// Every other message goes to the standard protobuf codec.
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
	case *pspb.PushRequest:
		return unmarshalPushRequest(data.Materialize(), m)
	case *pspb.PullResponse:
		return unmarshalPullResponse(data.Materialize(), m)
	case *pspb.PushPullResponse:
		return unmarshalPushPullResponse(data.Materialize(), m)
	}
	return protoCodec.Unmarshal(data, v)
}

// Field numbers, as in ps.proto.
const (
	fChunkName, fChunkIndex, fChunkDtype, fChunkData = 1, 2, 3, 4
	fPushHeader, fPushChunks                         = 1, 2
	fPullChunks, fPullInfo                           = 1, 2
	fPushPullPush, fPushPullPull                     = 1, 2
)

// chunkPrefix is the encoding of c without its data bytes, ending with the
// data field's tag and length; the data follows it on the wire.
func chunkPrefix(b []byte, c *pspb.Chunk) []byte {
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
	if len(c.GetData()) > 0 {
		b = protowire.AppendTag(b, fChunkData, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(c.GetData())))
	}
	return b
}

// appendChunkField appends c as field num, copying its data.
func appendChunkField(b []byte, num protowire.Number, c *pspb.Chunk) []byte {
	var tmp [64]byte
	prefix := chunkPrefix(tmp[:0], c)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(prefix)+len(c.GetData())))
	b = append(b, prefix...)
	return append(b, c.GetData()...)
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
	for _, c := range m.GetChunks() {
		prefix := chunkPrefix(nil, c)
		head = protowire.AppendTag(head, fPushChunks, protowire.BytesType)
		head = protowire.AppendVarint(head, uint64(len(prefix)+len(c.GetData())))
		head = append(head, prefix...)
		if len(c.GetData()) > 0 {
			out = append(out, mem.SliceBuffer(head), mem.SliceBuffer(c.GetData()))
			head = nil
		}
	}
	if len(head) > 0 || len(out) == 0 {
		out = append(out, mem.SliceBuffer(head))
	}
	return out, nil
}

var errTruncated = errors.New("truncated field")

// fields calls f for each field of a message; bytes fields get their
// content (aliasing b), varints their value.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var data []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			data, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, data); err != nil {
			return err
		}
	}
	return nil
}

func wrongType(num protowire.Number, typ protowire.Type) error {
	return fmt.Errorf("field %d has wire type %d", num, typ)
}

// parseChunk decodes a Chunk; its Data aliases b.
func parseChunk(b []byte) (*pspb.Chunk, error) {
	c := &pspb.Chunk{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, data []byte) error {
		switch num {
		case fChunkName:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			c.Name = string(data)
		case fChunkIndex:
			if typ != protowire.VarintType {
				return wrongType(num, typ)
			}
			c.Index = uint32(v)
		case fChunkDtype:
			if typ != protowire.VarintType {
				return wrongType(num, typ)
			}
			c.Dtype = pspb.DType(int32(v))
		case fChunkData:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			c.Data = data
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chunk: %w", err)
	}
	return c, nil
}

func mergeMsg(data []byte, m proto.Message) error {
	return proto.UnmarshalOptions{Merge: true}.Unmarshal(data, m)
}

func unmarshalPushRequest(b []byte, m *pspb.PushRequest) error {
	m.Reset()
	return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
		switch num {
		case fPushHeader:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			if m.Header == nil {
				m.Header = &pspb.PushHeader{}
			}
			return mergeMsg(data, m.Header)
		case fPushChunks:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			c, err := parseChunk(data)
			if err != nil {
				return err
			}
			m.Chunks = append(m.Chunks, c)
		}
		return nil
	})
}

func parsePullResponse(b []byte, m *pspb.PullResponse) error {
	return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
		switch num {
		case fPullChunks:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			c, err := parseChunk(data)
			if err != nil {
				return err
			}
			m.Chunks = append(m.Chunks, c)
		case fPullInfo:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			if m.Info == nil {
				m.Info = &pspb.ServerInfo{}
			}
			return mergeMsg(data, m.Info)
		}
		return nil
	})
}

func unmarshalPullResponse(b []byte, m *pspb.PullResponse) error {
	m.Reset()
	return parsePullResponse(b, m)
}

func unmarshalPushPullResponse(b []byte, m *pspb.PushPullResponse) error {
	m.Reset()
	return fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, data []byte) error {
		switch num {
		case fPushPullPush:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			if m.Push == nil {
				m.Push = &pspb.PushResponse{}
			}
			return mergeMsg(data, m.Push)
		case fPushPullPull:
			if typ != protowire.BytesType {
				return wrongType(num, typ)
			}
			if m.Pull == nil {
				m.Pull = &pspb.PullResponse{}
			}
			return parsePullResponse(data, m.Pull)
		}
		return nil
	})
}

// pullWriter builds pull messages in wire format directly from variable
// memory: one copy of the values, no marshal step.
type pullWriter struct {
	limit int
	bytes uint64   // tensor payload bytes
	msgs  [][]byte // PullResponse bodies without info
	cur   []byte
}

// add appends part values as a chunk, starting a new message when the
// current one would exceed the limit.
func (w *pullWriter) add(name string, index uint32, v []float32, dtype pspb.DType) {
	n := 4 * len(v)
	if dtype == pspb.DType_DTYPE_FLOAT16 {
		n = 2 * len(v)
	}
	if len(w.cur) > 0 && len(w.cur)+n > w.limit {
		w.msgs = append(w.msgs, w.cur)
		w.cur = nil
	}
	if w.cur == nil {
		w.cur = make([]byte, 0, min(w.limit, n+256))
	}
	w.bytes += uint64(n)
	c := &pspb.Chunk{Name: name, Index: index, Dtype: dtype}
	var tmp [64]byte
	// The data field is always written, even when empty, so that prefix
	// and payload lengths are computed the same way.
	prefix := chunkPrefix(tmp[:0], c)
	prefix = protowire.AppendTag(prefix, fChunkData, protowire.BytesType)
	prefix = protowire.AppendVarint(prefix, uint64(n))
	w.cur = protowire.AppendTag(w.cur, fPullChunks, protowire.BytesType)
	w.cur = protowire.AppendVarint(w.cur, uint64(len(prefix)+n))
	w.cur = append(w.cur, prefix...)
	if dtype == pspb.DType_DTYPE_FLOAT16 {
		w.cur = append(w.cur, encodeChunk(name, index, v, dtype).Data...)
	} else {
		w.cur = append(w.cur, float32Bytes(v)...)
		if !littleEndian {
			copy(w.cur[len(w.cur)-n:], encodeFloat32(v))
		}
	}
}

// messages returns the PullResponse bodies; the first carries info. There
// is always at least one.
func (w *pullWriter) messages(info *pspb.ServerInfo) ([][]byte, error) {
	msgs := append(w.msgs, w.cur)
	ib, err := proto.Marshal(info)
	if err != nil {
		return nil, err
	}
	msgs[0] = protowire.AppendBytes(protowire.AppendTag(msgs[0], fPullInfo, protowire.BytesType), ib)
	return msgs, nil
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
