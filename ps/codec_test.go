package ps

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/optim"
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

// splitSegments cuts b into buffers of the given sizes (cycled), as gRPC
// hands over a received message.
func splitSegments(b []byte, sizes ...int) mem.BufferSlice {
	var out mem.BufferSlice
	for i := 0; len(b) > 0; i++ {
		n := min(len(b), max(1, sizes[i%len(sizes)]))
		out = append(out, mem.SliceBuffer(append([]byte(nil), b[:n]...)))
		b = b[n:]
	}
	return out
}

// checkPullMsg decodes wire (a PullResponse or PushPullResponse) from
// segments and compares with the generated decoder.
func checkPullMsg(t *testing.T, wire []byte, pushPull bool, sizes ...int) {
	t.Helper()
	m := &pullMsg{pushPull: pushPull}
	err := unmarshalPullMsg(splitSegments(wire, sizes...), m)
	want := &pspb.PullResponse{}
	var wantPush *pspb.PushResponse
	var stdErr error
	if pushPull {
		var pp pspb.PushPullResponse
		stdErr = proto.Unmarshal(wire, &pp)
		if pp.GetPull() != nil {
			want = pp.GetPull()
		}
		wantPush = pp.GetPush()
	} else {
		stdErr = proto.Unmarshal(wire, want)
	}
	if err != nil || stdErr != nil {
		return // the segment decoder is stricter about wire types; both must not panic
	}
	require.Len(t, m.chunks, len(want.GetChunks()))
	for i, c := range want.GetChunks() {
		got := m.chunks[i]
		require.Equal(t, c.GetName(), got.name)
		require.Equal(t, c.GetIndex(), got.index)
		require.Equal(t, c.GetDtype(), got.dtype)
		var data []byte
		for _, p := range got.pieces {
			data = append(data, p...)
		}
		require.Equal(t, len(c.GetData()), got.n)
		require.Equal(t, string(c.GetData()), string(data))
	}
	require.True(t, proto.Equal(want.GetInfo(), m.info))
	require.True(t, proto.Equal(wantPush, m.push))
	m.releaseAll()
}

func TestSegmentedPullDecoding(t *testing.T) {
	info := &pspb.ServerInfo{Incarnation: "abc", Version: 7, Cursor: 12}
	parts := []pullPart{{"a", 0, []float32{1, 2, 3}}, {"bb", 300, []float32{-4, 5}}, {"c", 1, make([]float32, 700)}}
	msgs, _, err := encodePull(parts, pspb.DType_DTYPE_FLOAT32, 1<<20, info)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	em, err := wrapPushPull(msgs[0], &pspb.PushResponse{Staleness: 3, Duplicate: true})
	require.NoError(t, err)
	var pp []byte
	for _, p := range em.parts {
		pp = append(pp, p...)
	}
	for _, sizes := range [][]int{{1}, {3, 5}, {7}, {16384}, {1 << 30}} {
		checkPullMsg(t, msgs[0], false, sizes...)
		checkPullMsg(t, pp, true, sizes...)
	}
	// Decoding into float32 across piece boundaries.
	m := &pullMsg{}
	require.NoError(t, unmarshalPullMsg(splitSegments(msgs[0], 3, 5), m))
	v := make([]float32, 2)
	require.NoError(t, m.chunks[1].decode(v))
	require.Equal(t, []float32{-4, 5}, v)
	m.releaseAll()
	// Truncated messages are errors.
	for cut := 1; cut < len(msgs[0]); cut += 97 {
		m := &pullMsg{}
		if err := unmarshalPullMsg(splitSegments(msgs[0][:cut], 11), m); err == nil {
			m.releaseAll()
		}
	}
}

// TestSegmentedGradientApply cuts a gradient's bytes at odd places (so that
// elements straddle pieces and pieces start unaligned) and checks that
// applying it run by run gives bitwise the same Adam state as applying it
// whole.
func TestSegmentedGradientApply(t *testing.T) {
	const n = 1001
	g := make([]float32, n)
	for i := range g {
		g[i] = float32(i%37)/7 - 2
	}
	raw := encodeFloat32(g)
	for _, sizes := range [][]int{{1}, {3}, {4}, {5, 6, 7}, {4099}, {1 << 20}} {
		// Offset by one byte so that the first piece is unaligned.
		segs := splitSegments(append([]byte{0}, raw...), sizes...)
		var r segReader
		r.segs = segs
		_, err := r.copyN(1)
		require.NoError(t, err)
		pieces, bufs, err := r.take(len(raw))
		require.NoError(t, err)
		c := &segChunk{dtype: pspb.DType_DTYPE_FLOAT32, n: len(raw), pieces: pieces, bufs: bufs}

		var back []float32
		c.runs(func(off int, run []float32) {
			require.Equal(t, len(back), off)
			back = append(back, run...)
		})
		require.Equal(t, g, back, "pieces %v", sizes)

		s, err := NewServer(WithOptimizer(optim.Config{Optimizer: "adam", Amsgrad: true, WeightDecay: 0.01}))
		require.NoError(t, err)
		mk := func() *part {
			p := &part{values: make([]float32, n), slots: s.opt.NewSlots(n), iterations: 4}
			for i := range p.values {
				p.values[i] = float32(i) / 100
			}
			return p
		}
		whole, seg := mk(), mk()
		s.opt.Apply(whole.iterations, 1, whole.values, g, whole.slots)
		s.applyUpdate(update{p: seg, seg: c}, 1)
		require.Equal(t, whole.values, seg.values, "pieces %v", sizes)
		require.Equal(t, whole.slots, seg.slots, "pieces %v", sizes)
		c.release()
	}
}
