package ps

import (
	"fmt"
	"testing"
	"time"
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

// segChunkProto turns a decoded chunk back into its message, data joined.
func segChunkProto(c *segChunk) *pspb.Chunk {
	var data []byte
	for _, p := range c.pieces {
		data = append(data, p...)
	}
	if len(data) != c.n {
		panic(fmt.Sprintf("chunk %q: %d bytes in pieces, n = %d", c.name, len(data), c.n))
	}
	return &pspb.Chunk{Name: c.name, Index: c.index, Dtype: c.dtype, Data: data}
}

// requirePushMsg checks that the shard's decoder read want.
func requirePushMsg(t *testing.T, want *pspb.PushRequest, got *pushMsg) {
	t.Helper()
	back := &pspb.PushRequest{Header: got.header}
	for _, c := range got.chunks {
		back.Chunks = append(back.Chunks, segChunkProto(c))
	}
	require.True(t, proto.Equal(want, back), "decoded %v, want %v", back, want)
}

// requirePullMsg checks that the client's decoder read want (and push,
// for a push-pull response).
func requirePullMsg(t *testing.T, want *pspb.PullResponse, push *pspb.PushResponse, got *pullMsg) {
	t.Helper()
	back := &pspb.PullResponse{Info: got.info}
	for _, c := range got.chunks {
		back.Chunks = append(back.Chunks, segChunkProto(c))
	}
	require.True(t, proto.Equal(want, back), "decoded %v, want %v", back, want)
	require.True(t, proto.Equal(push, got.push), "decoded push %v, want %v", got.push, push)
}

// TestCodecPushRequest checks that the hand-written push encoding is
// protobuf that the generated code reads back equal, that the shard's
// decoder (through the codec, from buffers laid out as gRPC hands them
// over) reads it with every data field 4-byte aligned, and that it also
// reads what the generated code writes.
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

		// gRPC's 5-byte message prefix precedes the message in the first
		// received buffer: data must be aligned counting it.
		buf := make([]byte, grpcMessagePrefix+len(wire))
		copy(buf[grpcMessagePrefix:], wire)
		var ours pushMsg
		require.NoError(t, wireCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(buf[grpcMessagePrefix:])}, &ours))
		requirePushMsg(t, req, &ours)
		for i, c := range ours.chunks {
			if c.n > 0 {
				require.Len(t, c.pieces, 1, "chunk %d lies in one buffer, so it is not copied", i)
				off := uintptr(unsafe.Pointer(&c.pieces[0][0])) - uintptr(unsafe.Pointer(&buf[0]))
				require.Zero(t, off%4, "chunk %d data at offset %d from the prefix", i, off)
			}
			c.release()
		}

		std, err := proto.Marshal(req)
		require.NoError(t, err)
		for _, sizes := range [][]int{{1}, {3, 7}, {1 << 20}} {
			var fromStd pushMsg
			require.NoError(t, wireCodec{}.Unmarshal(splitSegments(std, sizes...), &fromStd))
			requirePushMsg(t, req, &fromStd)
			for _, c := range fromStd.chunks {
				c.release()
			}
		}
	}
}

func TestCodecPull(t *testing.T) {
	info := &pspb.ServerInfo{Incarnation: "x", Version: 4, Cursor: 9, Mode: "sync"}
	parts := []pullPart{{"a", 0, []float32{1, 2, 3}}, {"b", 2, []float32{4}}, {"c", 0, make([]float32, 1000)}}
	for i := range parts[2].values {
		parts[2].values[i] = float32(i%64) - 0.5
	}
	for _, dtype := range []pspb.DType{pspb.DType_DTYPE_FLOAT32, pspb.DType_DTYPE_FLOAT16} {
		msgs, n, err := encodePull(parts, dtype, 100, info)
		require.NoError(t, err)
		require.Len(t, msgs, 2, "the 1000-element part does not fit with the others in 100 bytes")
		size := uint64(4)
		if dtype == pspb.DType_DTYPE_FLOAT16 {
			size = 2
		}
		require.Equal(t, size*1004, n)
		var got []*segChunk
		for i, m := range msgs {
			var std pspb.PullResponse
			require.NoError(t, proto.Unmarshal(m, &std))
			if i == 0 {
				require.True(t, proto.Equal(info, std.GetInfo()))
			} else {
				require.Nil(t, std.GetInfo())
			}
			for _, c := range std.GetChunks() {
				c.Pad = nil // alignment filler, which the client skips
			}
			ours := &pullMsg{}
			require.NoError(t, wireCodec{}.Unmarshal(splitSegments(m, 7, 16384), ours))
			requirePullMsg(t, &std, nil, ours)
			got = append(got, ours.chunks...)
			// Wrapped into a PushPullResponse without copying.
			em, err := wrapPushPull(m, &pspb.PushResponse{Staleness: uint64(i)})
			require.NoError(t, err)
			bs, err := wireCodec{}.Marshal(em)
			require.NoError(t, err)
			pp := &pullMsg{pushPull: true}
			require.NoError(t, wireCodec{}.Unmarshal(bs, pp))
			requirePullMsg(t, &std, &pspb.PushResponse{Staleness: uint64(i)}, pp)
			pp.releaseAll()
		}
		require.Len(t, got, 3)
		for i, p := range parts {
			require.Equal(t, p.name, got[i].name)
			require.Equal(t, p.index, got[i].index)
			require.Equal(t, dtype, got[i].dtype)
			v := make([]float32, len(p.values))
			require.NoError(t, got[i].decode(v))
			require.Equal(t, p.values, v)
			got[i].release()
		}
	}
}

// TestCodecRejectsMalformed feeds broken messages through the codec to
// both decoders; a rejected message keeps no chunk (and no buffer).
func TestCodecRejectsMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		into func() any
		b    []byte
		err  string
	}{
		{"push truncated tag", func() any { return &pushMsg{} }, []byte{0x80}, "message truncated"},
		{"push truncated length", func() any { return &pushMsg{} }, []byte{0x12, 0x05, 0x0a}, "message truncated"},
		{"push chunk wrong type", func() any { return &pushMsg{} }, []byte{0x10, 0x01}, "field 2 has wire type 0"},
		{"push data wrong type", func() any { return &pushMsg{} }, []byte{0x12, 0x02, 0x20, 0x01}, "chunk: field 4 has wire type 0"},
		{"push header wrong type", func() any { return &pushMsg{} }, []byte{0x08, 0x01}, "field 1 has wire type 0"},
		{"push data after a good chunk cut short", func() any { return &pushMsg{} }, []byte{0x12, 0x03, 0x22, 0x01, 0x07, 0x12, 0x03, 0x22, 0x05, 0x07}, "chunk: message truncated"},
		{"pull chunk wrong type", func() any { return &pullMsg{} }, []byte{0x08, 0x01}, "field 1 has wire type 0"},
		{"pull info truncated", func() any { return &pullMsg{} }, []byte{0x12, 0x04, 0x08}, "message truncated"},
		{"pull data wrong type", func() any { return &pullMsg{} }, []byte{0x0a, 0x02, 0x20, 0x01}, "chunk: field 4 has wire type 0"},
		{"push-pull pull wrong type", func() any { return &pullMsg{pushPull: true} }, []byte{0x10, 0x01}, "field 2 has wire type 0"},
		{"push-pull chunk cut short", func() any { return &pullMsg{pushPull: true} }, []byte{0x12, 0x05, 0x0a, 0x03, 0x22, 0x05, 0x07}, "chunk: message truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.into()
			require.EqualError(t, wireCodec{}.Unmarshal(splitSegments(tc.b, 2), m), tc.err)
			switch m := m.(type) {
			case *pushMsg:
				require.Nil(t, m.chunks)
			case *pullMsg:
				require.Nil(t, m.chunks)
			}
		})
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
	err := wireCodec{}.Unmarshal(splitSegments(wire, sizes...), m)
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
	require.NoError(t, wireCodec{}.Unmarshal(splitSegments(msgs[0], 3, 5), m))
	v := make([]float32, 2)
	require.NoError(t, m.chunks[1].decode(v))
	require.Equal(t, []float32{-4, 5}, v)
	m.releaseAll()
	// A message cut inside a field is an error and keeps no chunk.
	for cut := 1; cut < len(msgs[0]); cut += 97 {
		m := &pullMsg{}
		if err := (wireCodec{}).Unmarshal(splitSegments(msgs[0][:cut], 11), m); err != nil {
			require.Nil(t, m.chunks, "cut at %d: %v", cut, err)
		} else {
			m.releaseAll() // cut at a field boundary: a shorter valid message
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

// TestWireCodecOverLoopback runs the production path end to end on a real
// TCP port: the client's codec encodes pushes, the shard's decoder reads
// them from gRPC's 16 KiB receive buffers (chunks straddle them), the
// shard encodes pulls and the client's decoder writes them into the
// caller's slices; in float32 and in float16, with values exact in both.
func TestWireCodecOverLoopback(t *testing.T) {
	const n = 100_003 // 3 chunks of 30,000 elements and one of 10,003
	init := make([]float32, n)
	grad := make([]float32, n)
	for i := range init {
		init[i] = float32(i%1000) - 500
		grad[i] = float32(i%7) - 3
	}
	vars := []Variable{
		{Name: "dense/kernel", Shape: []int64{n}, Trainable: true, Init: init},
		{Name: "dense/bias", Shape: []int64{3}, Trainable: true, Init: []float32{0.5, -0.25, 2}},
	}
	for _, fp16 := range []bool{false, true} {
		t.Run(fmt.Sprintf("fp16=%v", fp16), func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			srv, err := NewServer(sgd1())
			require.NoError(t, err)
			addr := serveLoopback(t, srv)
			opts := []ClientOption{WithChunkElements(30_000)}
			elem := uint64(4)
			if fp16 {
				opts = append(opts, WithFP16())
				elem = 2
			}
			c, err := Dial(ctx, []string{addr}, opts...)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, c.Close()) })
			require.NoError(t, c.Register(ctx, vars))
			require.Equal(t, 5, srv.Stats().Parts)
			before := srv.Stats()

			got := tensorsLike(vars, false)
			require.NoError(t, c.Pull(ctx, got))
			require.Equal(t, init, got[0].Values)
			require.Equal(t, []float32{0.5, -0.25, 2}, got[1].Values)

			grads := []Tensor{{Name: "dense/kernel", Values: grad}, {Name: "dense/bias", Values: []float32{1, 1, -1}}}
			_, err = c.Push(ctx, grads)
			require.NoError(t, err)
			st := srv.Stats()
			require.Equal(t, uint64(1), st.Updates)
			require.Equal(t, elem*(n+3), st.BytesIn-before.BytesIn)

			_, err = c.PushPull(ctx, grads, got)
			require.NoError(t, err)
			for i := range init {
				if want := init[i] - 2*grad[i]; got[0].Values[i] != want {
					t.Fatalf("dense/kernel[%d] = %v, want %v", i, got[0].Values[i], want)
				}
			}
			require.Equal(t, []float32{-1.5, -2.25, 4}, got[1].Values)
			st = srv.Stats()
			require.Equal(t, uint64(2), st.Updates)
			require.Equal(t, 2*elem*(n+3), st.BytesIn-before.BytesIn)
		})
	}
}
