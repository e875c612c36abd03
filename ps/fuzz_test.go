package ps

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/optim"
	"github.com/gotflow/gotflow/ps/pspb"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite the seed corpus under testdata/fuzz")

var (
	fuzzOnce   sync.Once
	fuzzShards map[Mode]*Server
)

// fuzzServer returns a shard (not serving) with "w" [2,3] in one chunk and
// "big" [10] in two chunks of 5, plus non-trainable "s" [2].
func fuzzServer(t testing.TB, mode Mode) *Server {
	fuzzOnce.Do(func() {
		fuzzShards = map[Mode]*Server{}
		for _, m := range []Mode{Hogwild, AsyncLock, Sync, BoundedStaleness} {
			s, err := NewServer(WithMode(m), WithMaxMessageBytes(1<<20), WithMaxStaleness(2),
				WithOptimizer(optim.Config{Optimizer: "adam", Amsgrad: true}))
			if err != nil {
				panic(err)
			}
			_, err = s.register(context.Background(), seedRegister())
			if err != nil {
				panic(err)
			}
			fuzzShards[m] = s
		}
	})
	return fuzzShards[mode]
}

func seedRegister() *pspb.RegisterRequest {
	return &pspb.RegisterRequest{NumShards: 1,
		Parts: []*pspb.PartSpec{
			{Name: "w", Shape: []int64{2, 3}, Length: 6, Trainable: true},
			{Name: "big", Index: 0, Shape: []int64{10}, Length: 5, Trainable: true},
			{Name: "big", Index: 1, Shape: []int64{10}, Offset: 5, Length: 5, Trainable: true},
			{Name: "s", Shape: []int64{2}, Length: 2},
		},
		Values: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3, 4, 5, 6), f32chunk("big", 0, 1, 1, 1, 1, 1), f32chunk("big", 1, 2, 2, 2, 2, 2), f32chunk("s", 0, 0, 0)},
	}
}

func seedPushes() map[string]*pspb.PushRequest {
	h := func(kind pspb.PushKind) *pspb.PushHeader {
		return &pspb.PushHeader{WorkerId: "w0", IdempotencyKey: "k", BaseVersion: 0, Kind: kind}
	}
	return map[string]*pspb.PushRequest{
		"gradient":    {Header: h(0), Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 1, 1, 1, 1, 1), f32chunk("big", 1, 1, 2, 3, 4, 5)}},
		"assign":      {Header: h(1), Chunks: []*pspb.Chunk{f32chunk("s", 0, 3, 4)}},
		"fp16":        {Header: h(0), Chunks: []*pspb.Chunk{encodeChunk("big", 0, []float32{1, 2, 3, 4, 5}, pspb.DType_DTYPE_FLOAT16)}},
		"wrong_shape": {Header: h(0), Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 2)}},
		"unknown":     {Header: h(0), Chunks: []*pspb.Chunk{f32chunk("zz", 3, 1)}},
		"no_header":   {Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 1, 1, 1, 1, 1)}},
		"sync_step":   {Header: &pspb.PushHeader{WorkerId: "w1", Step: 5, Chunks: 1}, Chunks: []*pspb.Chunk{f32chunk("big", 0, 1, 1, 1, 1, 1)}},
	}
}

func addSeeds(f *testing.F, msgs map[string]proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		require.NoError(f, err)
		f.Add(b)
	}
}

// requireStatus checks that a rejection is a gRPC status with a client-side
// code, never an internal failure.
func requireStatus(t *testing.T, err error) {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status: %v", err)
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.Aborted, codes.DeadlineExceeded:
	default:
		t.Fatalf("unexpected code %v: %v", st.Code(), err)
	}
}

// FuzzDecodePush feeds arbitrary bytes as a push message to the decoding
// and applying path of each mode: it must reject with a status or apply,
// never panic.
func FuzzDecodePush(f *testing.F) {
	seeds := map[string]proto.Message{}
	for k, v := range seedPushes() {
		seeds[k] = v
	}
	addSeeds(f, seeds)
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		// The server decodes from the received buffers (here cut into
		// uneven pieces); where the generated decoder also accepts the
		// bytes, both must read the same header and chunks.
		var std pspb.PushRequest
		stdErr := proto.Unmarshal(data, &std)
		for _, mode := range []Mode{Hogwild, AsyncLock, Sync, BoundedStaleness} {
			var msg pushMsg
			if err := (wireCodec{}).Unmarshal(splitSegments(data, 7, 5, 16384), &msg); err != nil {
				return
			}
			if stdErr == nil && mode == Hogwild {
				require.Len(t, msg.chunks, len(std.GetChunks()))
				for i, c := range std.GetChunks() {
					o := msg.chunks[i]
					require.Equal(t, c.GetName(), o.name)
					require.Equal(t, c.GetIndex(), o.index)
					require.Equal(t, c.GetDtype(), o.dtype)
					require.Equal(t, len(c.GetData()), o.n)
				}
				require.True(t, proto.Equal(std.GetHeader(), msg.header))
			}
			s := fuzzServer(t, mode)
			sent := false
			hdr, ups, err := s.receivePush(func(m *pushMsg) error {
				if sent {
					return io.EOF
				}
				sent = true
				*m = msg
				return nil
			})
			if err != nil {
				requireStatus(t, err)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 0) // a Sync push must not wait
			_, err = s.push(ctx, hdr, ups)
			cancel()
			releaseUpdates(ups)
			if err != nil {
				requireStatus(t, err)
			}
		}
	})
}

// FuzzRegister feeds arbitrary register requests.
func FuzzRegister(f *testing.F) {
	addSeeds(f, map[string]proto.Message{"seed": seedRegister(),
		"bad_range": &pspb.RegisterRequest{NumShards: 1, Parts: []*pspb.PartSpec{{Name: "x", Shape: []int64{1 << 40, 1 << 40}, Length: 1}}, Values: []*pspb.Chunk{f32chunk("x", 0, 1)}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req pspb.RegisterRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		s, err := NewServer(WithMaxMessageBytes(1 << 20))
		require.NoError(t, err)
		if _, err := s.register(context.Background(), &req); err != nil {
			requireStatus(t, err)
		}
	})
}

// FuzzReadSnapshot feeds arbitrary files to the snapshot reader.
func FuzzReadSnapshot(f *testing.F) {
	dir := f.TempDir()
	s, err := NewServer(WithSnapshotDir(dir, 0, 0), WithOptimizer(optim.Config{Optimizer: "adam"}))
	require.NoError(f, err)
	_, err = s.register(context.Background(), seedRegister())
	require.NoError(f, err)
	r, err := s.writeSnapshot()
	require.NoError(f, err)
	data, err := os.ReadFile(r.GetPath())
	require.NoError(f, err)
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "snap")
		require.NoError(t, os.WriteFile(p, data, 0o644))
		_, _ = readSnapshot(p)
	})
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/<Target>/seed-* from the seeds
// above when run with -update-fuzz-seeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateFuzzSeeds {
		t.Skip("run with -update-fuzz-seeds to rewrite the corpus")
	}
	write := func(target, name string, m proto.Message) {
		b, err := proto.Marshal(m)
		require.NoError(t, err)
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(content), 0o644))
	}
	for name, m := range seedPushes() {
		write("FuzzDecodePush", name, m)
	}
	write("FuzzRegister", "valid", seedRegister())
}

// FuzzPullMsg feeds arbitrary pull responses, split into arbitrary
// buffers, to the client's decoder through the codec.
func FuzzPullMsg(f *testing.F) {
	msgs, _, err := encodePull([]pullPart{{"w", 0, []float32{1, 2, 3}}, {"big", 1, []float32{4, 5}}}, pspb.DType_DTYPE_FLOAT32, 1<<20, &pspb.ServerInfo{Version: 3})
	require.NoError(f, err)
	f.Add(msgs[0], false, uint8(5))
	em, err := wrapPushPull(msgs[0], &pspb.PushResponse{Staleness: 2})
	require.NoError(f, err)
	f.Add(append(append([]byte(nil), em.parts[0]...), em.parts[1]...), true, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, pushPull bool, seg uint8) {
		checkPullMsg(t, data, pushPull, int(seg%64)+1, int(seg/3)+1)
	})
}
