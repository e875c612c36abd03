package ps

import (
	"context"
	"math"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/internal/testcerts"
	"github.com/gotflow/gotflow/ps/pspb"
)

// rawCodec sends bytes as they are, to put malformed protobuf on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func rawPush(ctx context.Context, stub pspb.ParameterServerClient, msgs ...*pspb.PushRequest) (*pspb.PushResponse, error) {
	stream, err := stub.Push(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the server answered early; CloseAndRecv has its status
		}
	}
	return stream.CloseAndRecv()
}

func f32chunk(name string, index uint32, v ...float32) *pspb.Chunk {
	return &pspb.Chunk{Name: name, Index: index, Dtype: pspb.DType_DTYPE_FLOAT32, Data: encodeFloat32(v)}
}

// TestBadInput sends what a broken or hostile client could: each gets a
// clear status code, is counted, and the shard keeps serving.
func TestBadInput(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	lc := newCluster(t, 1, sgd1(), WithToken("s3cret"), WithMaxMessageBytes(1<<20))
	bad := dialCluster(t, ctx, lc, WithToken("wrong"), WithRetry(1, time.Millisecond, time.Millisecond))
	err := bad.Register(ctx, []Variable{{Name: "w", Shape: []int64{4}, Trainable: true}})
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	none := dialCluster(t, ctx, lc)
	_, err = none.Stats(ctx)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)

	c := dialCluster(t, ctx, lc, WithToken("s3cret"), WithMaxMessageBytes(16<<20))
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{4}, Trainable: true, Init: []float32{1, 2, 3, 4}}}))
	stub := c.stubs[0]
	hdr := &pspb.PushHeader{WorkerId: "x", IdempotencyKey: "k"}
	tests := []struct {
		name string
		msgs []*pspb.PushRequest
		code codes.Code
		msg  string
	}{
		{"unknown variable", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{f32chunk("v", 0, 1)}}}, codes.NotFound, `variable "v" chunk 0 is not registered`},
		{"unknown chunk", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{f32chunk("w", 7, 1)}}}, codes.NotFound, `variable "w" chunk 7 is not registered`},
		{"wrong shape", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3)}}}, codes.InvalidArgument, "12 bytes of float32, want 16 (4 elements; variable shape [4]"},
		{"wrong dtype", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{{Name: "w", Dtype: pspb.DType(9), Data: make([]byte, 32)}}}}, codes.InvalidArgument, "dtype 9 not supported"},
		{"missing dtype", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{{Name: "w", Data: make([]byte, 16)}}}}, codes.InvalidArgument, "DTYPE_UNSPECIFIED not supported"},
		{"nan", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, float32(math.NaN()), 3, 4)}}}, codes.InvalidArgument, "element 1 is NaN"},
		{"inf", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{f32chunk("w", 0, float32(math.Inf(1)), 0, 3, 4)}}}, codes.InvalidArgument, "element 0 is +Inf"},
		{"no header", []*pspb.PushRequest{{Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3, 4)}}}, codes.InvalidArgument, "first message has no header"},
		{"empty stream", nil, codes.InvalidArgument, "empty stream"},
		{"chunk twice", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3, 4), f32chunk("w", 0, 1, 2, 3, 4)}}}, codes.InvalidArgument, "sent twice"},
		{"count mismatch", []*pspb.PushRequest{{Header: &pspb.PushHeader{Chunks: 2}, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3, 4)}}}, codes.InvalidArgument, "announces 2 chunks"},
		{"bad kind", []*pspb.PushRequest{{Header: &pspb.PushHeader{Kind: 5}, Chunks: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3, 4)}}}, codes.InvalidArgument, "push kind 5 unknown"},
		{"oversized", []*pspb.PushRequest{{Header: hdr, Chunks: []*pspb.Chunk{{Name: "w", Dtype: pspb.DType_DTYPE_FLOAT32, Data: make([]byte, 2<<20)}}}}, codes.ResourceExhausted, "larger than max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rawPush(ctx, stub, tc.msgs...)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tc.msg)
		})
	}
	t.Run("malformed protobuf", func(t *testing.T) {
		var out []byte
		err := c.conns[0].Invoke(ctx, "/gotflow.ps.v1.ParameterServer/Register", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1}, &out, grpc.ForceCodec(rawCodec{}))
		require.Equal(t, codes.Internal, status.Code(err), "%v", err)
		require.ErrorContains(t, err, "unmarshal")
	})
	t.Run("register bad spec", func(t *testing.T) {
		_, err := stub.Register(ctx, &pspb.RegisterRequest{NumShards: 1, Parts: []*pspb.PartSpec{{Name: "x", Shape: []int64{2}, Offset: 1, Length: 2}}, Values: []*pspb.Chunk{f32chunk("x", 0, 1, 2)}})
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		require.ErrorContains(t, err, "covers elements [1, 3) of 2")
	})
	t.Run("pull bad dtype", func(t *testing.T) {
		s, err := stub.Pull(ctx, &pspb.PullRequest{Dtype: 7})
		require.NoError(t, err)
		_, err = s.Recv()
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	})

	// Nothing was applied, and a valid push still works.
	res, err := c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 1, 1, 1}}})
	require.NoError(t, err)
	require.Zero(t, res.Staleness)
	got := []Tensor{{Name: "w", Values: make([]float32, 4)}}
	require.NoError(t, c.Pull(ctx, got))
	require.Equal(t, []float32{0, 1, 2, 3}, got[0].Values)
	st := lc.Servers()[0].Stats()
	require.Equal(t, uint64(1), st.Updates)
	for reason, n := range map[string]uint64{"unknown_variable": 2, "wrong_shape": 1, "wrong_dtype": 3, "non_finite": 2, "malformed": 6, "unauthenticated": 2} {
		require.Equal(t, n, st.Rejections[reason], reason)
	}
}

// TestTLSWithClientCertsOverLoopback runs a shard on a real loopback port
// with TLS, a required client certificate and a bearer token, all loaded
// from files by Credentials, and checks that each missing piece is refused.
func TestTLSWithClientCertsOverLoopback(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	files := testcerts.Write(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("tok\n"), 0o600))
	creds := Credentials{TokenFile: tokenFile, CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CA}
	sopts, err := creds.ServerOptions()
	require.NoError(t, err)
	srv, err := NewServer(append(sopts, sgd1())...)
	require.NoError(t, err)
	addr := []string{serveLoopback(t, srv)}

	copts, err := creds.ClientOptions()
	require.NoError(t, err)
	c, err := Dial(ctx, addr, copts...)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Register(ctx, []Variable{{Name: "w", Shape: []int64{2}, Trainable: true, Init: []float32{5, 5}}}))
	_, err = c.Push(ctx, []Tensor{{Name: "w", Values: []float32{1, 2}}})
	require.NoError(t, err)
	got := []Tensor{{Name: "w", Values: make([]float32, 2)}}
	require.NoError(t, c.Pull(ctx, got))
	require.Equal(t, []float32{4, 3}, got[0].Values)

	for name, tc := range map[string]struct {
		creds Credentials
		code  codes.Code
	}{
		"no credentials":                 {Credentials{Token: "-"}, codes.Unavailable},                                                                         // the handshake fails: Dial never gets ready
		"token, no TLS":                  {Credentials{Token: "tok"}, codes.Unavailable},                                                                       // the handshake fails: Dial never gets ready
		"TLS without client cert":        {Credentials{Token: "tok", CAFile: files.CA}, codes.Unavailable},                                                     // the handshake fails: Dial never gets ready
		"client cert of another CA":      {Credentials{Token: "tok", CAFile: files.CA, CertFile: files.OtherCert, KeyFile: files.OtherKey}, codes.Unavailable}, // the handshake fails: Dial never gets ready
		"mTLS with the wrong token":      {Credentials{Token: "nope", CAFile: files.CA, CertFile: files.Cert, KeyFile: files.Key}, codes.Unauthenticated},
		"server certificate not trusted": {Credentials{Token: "tok", CAFile: files.OtherCA, CertFile: files.Cert, KeyFile: files.Key}, codes.Unavailable}, // the handshake fails: Dial never gets ready
	} {
		t.Run(name, func(t *testing.T) {
			opts, err := tc.creds.ClientOptions()
			require.NoError(t, err)
			short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			c2, err := Dial(short, addr, append(opts, WithRetry(1, time.Millisecond, time.Millisecond))...)
			if tc.code == codes.Unavailable {
				require.ErrorContains(t, err, "not ready (TRANSIENT_FAILURE)")
				return
			}
			require.NoError(t, err)
			defer c2.Close()
			_, err = c2.Stats(short)
			require.Equal(t, tc.code, status.Code(err), "%v", err)
		})
	}
}

// TestPlainProtobufClient talks to a shard through the generated stubs and
// gRPC's standard protobuf codec, as a client in another language would.
func TestPlainProtobufClient(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	srv, err := NewServer(sgd1())
	require.NoError(t, err)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	stub := pspb.NewParameterServerClient(conn)
	_, err = stub.Register(ctx, &pspb.RegisterRequest{NumShards: 1,
		Parts:  []*pspb.PartSpec{{Name: "w", Shape: []int64{3}, Length: 3, Trainable: true}},
		Values: []*pspb.Chunk{f32chunk("w", 0, 1, 2, 3)}})
	require.NoError(t, err)
	r, err := rawPush(ctx, stub, &pspb.PushRequest{Header: &pspb.PushHeader{IdempotencyKey: "k"}, Chunks: []*pspb.Chunk{f32chunk("w", 0, 0.5, 0.5, 0.5)}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), r.GetInfo().GetVersion())
	stream, err := stub.Pull(ctx, &pspb.PullRequest{})
	require.NoError(t, err)
	m, err := stream.Recv()
	require.NoError(t, err)
	require.Len(t, m.GetChunks(), 1)
	got := make([]float32, 3)
	require.NoError(t, decodeInto(got, m.GetChunks()[0]))
	require.Equal(t, []float32{0.5, 1.5, 2.5}, got)
	require.Equal(t, uint64(1), m.GetInfo().GetVersion())
}
