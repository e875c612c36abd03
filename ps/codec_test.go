package ps

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/pspb"
)

func testChunks() []*pspb.Chunk {
	return []*pspb.Chunk{
		f32chunk("a", 0, 1, 2, 3),
		f32chunk("bb", 7, 4),
		{Name: "empty", Index: 1, Dtype: pspb.DType_DTYPE_FLOAT32},
		encodeChunk("half", 300, []float32{0.5, -2, 65504}, pspb.DType_DTYPE_FLOAT16),
		f32chunk("a-much-longer-variable-name/with/scopes", 1<<20, 9, 8, 7, 6, 5),
	}
}

// TestCodecPushRequest checks that the hand-written push encoding is
// protobuf that the generated code reads back equal, that it places every
// data field 4-byte aligned, and that the hand-written decoder reads what
// the generated code writes.
func TestCodecPushRequest(t *testing.T) {
	for _, hdr := range []*pspb.PushHeader{nil, {WorkerId: "w", Step: 3, BaseVersion: 9, IdempotencyKey: "w/1/0", Kind: pspb.PushKind_PUSH_KIND_ASSIGN, Chunks: 5}} {
		req := &pspb.PushRequest{Header: hdr, Chunks: testChunks()}
		bs, err := wireCodec{}.Marshal(req)
		require.NoError(t, err)
		wire := bs.Materialize()
		var back pspb.PushRequest
		require.NoError(t, proto.Unmarshal(wire, &back))
		require.Len(t, back.Chunks, len(req.Chunks))
		for i, c := range back.Chunks {
			require.Equal(t, req.Chunks[i].GetData(), c.GetData(), "chunk %d", i)
			require.Equal(t, req.Chunks[i].GetName(), c.GetName())
			require.Equal(t, req.Chunks[i].GetIndex(), c.GetIndex())
			require.Equal(t, req.Chunks[i].GetDtype(), c.GetDtype())
		}
		require.True(t, proto.Equal(req.GetHeader(), back.GetHeader()))

		// Decoding with our codec aliases the buffer at aligned offsets.
		var ours pspb.PushRequest
		require.NoError(t, wireCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &ours))
		for i, c := range ours.Chunks {
			require.Equal(t, req.Chunks[i].GetData(), c.GetData(), "chunk %d", i)
			if len(c.GetData()) > 0 {
				off := uintptr(unsafe.Pointer(&c.GetData()[0])) - uintptr(unsafe.Pointer(&ours.Chunks[0].GetData()[0]))
				require.Zero(t, off%4, "chunk %d data at offset %d from the first", i, off)
			}
		}
		require.True(t, proto.Equal(req.GetHeader(), ours.GetHeader()))

		std, err := proto.Marshal(req)
		require.NoError(t, err)
		var fromStd pspb.PushRequest
		require.NoError(t, unmarshalPushRequest(std, &fromStd))
		require.True(t, proto.Equal(req, &fromStd))
	}
}

func TestCodecPull(t *testing.T) {
	info := &pspb.ServerInfo{Incarnation: "x", Version: 4, Cursor: 9, Mode: "sync"}
	parts := []pullPart{{"a", 0, []float32{1, 2, 3}}, {"b", 2, []float32{4}}, {"c", 0, make([]float32, 1000)}}
	for _, dtype := range []pspb.DType{pspb.DType_DTYPE_FLOAT32, pspb.DType_DTYPE_FLOAT16} {
		msgs, n, err := encodePull(parts, dtype, 100, info)
		require.NoError(t, err)
		require.Len(t, msgs, 2, "the 1000-element part does not fit with the others in 100 bytes")
		size := uint64(4)
		if dtype == pspb.DType_DTYPE_FLOAT16 {
			size = 2
		}
		require.Equal(t, size*1004, n)
		var got []*pspb.Chunk
		for i, m := range msgs {
			var std pspb.PullResponse
			require.NoError(t, proto.Unmarshal(m, &std))
			var ours pspb.PullResponse
			require.NoError(t, unmarshalPullResponse(m, &ours))
			require.True(t, proto.Equal(&std, &ours))
			if i == 0 {
				require.True(t, proto.Equal(info, std.GetInfo()))
			} else {
				require.Nil(t, std.GetInfo())
			}
			got = append(got, std.GetChunks()...)
			// Wrapped into a PushPullResponse without copying.
			em, err := wrapPushPull(m, &pspb.PushResponse{Staleness: uint64(i)})
			require.NoError(t, err)
			bs, err := wireCodec{}.Marshal(em)
			require.NoError(t, err)
			var pp pspb.PushPullResponse
			require.NoError(t, wireCodec{}.Unmarshal(bs, &pp))
			require.True(t, proto.Equal(&std, pp.GetPull()))
			require.Equal(t, uint64(i), pp.GetPush().GetStaleness())
		}
		require.Len(t, got, 3)
		for i, p := range parts {
			require.Equal(t, p.name, got[i].GetName())
			require.Equal(t, p.index, got[i].GetIndex())
			v := make([]float32, len(p.values))
			require.NoError(t, decodeInto(v, got[i]))
			require.Equal(t, p.values, v)
		}
	}
}

func TestCodecRejectsMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"truncated tag":     {0x80},
		"truncated length":  {0x12, 0x05, 0x0a},
		"chunk wrong type":  {0x10, 0x01},
		"data wrong type":   {0x12, 0x02, 0x20, 0x01},
		"header wrong type": {0x08, 0x01},
	} {
		var m pspb.PushRequest
		require.Error(t, unmarshalPushRequest(b, &m), name)
	}
}
