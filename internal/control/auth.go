package control

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// EnvToken carries the coordinator's bearer token to tasks. A
// distributed.ProcessLauncher sets it to a fresh random token per job;
// under Kubernetes, set it on every replica from a Secret.
const EnvToken = "GOTFLOW_COORDINATOR_TOKEN"

// NewToken returns a random 256-bit token, hex encoded.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// RequireToken is a server option that rejects heartbeats without
// "authorization: Bearer <token>" (codes.Unauthenticated). Without TLS the
// token travels in clear text: use it on loopback or a trusted network.
func RequireToken(token string) grpc.ServerOption {
	want := []byte("Bearer " + token)
	return grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			if subtle.ConstantTimeCompare([]byte(v), want) == 1 {
				return h(ctx, req)
			}
		}
		return nil, status.Error(codes.Unauthenticated, "distributed: heartbeat without the coordinator's bearer token")
	})
}

// SendToken is a dial option that sends token with every heartbeat.
func SendToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearer(token))
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so the token also works on loopback
// without TLS.
func (bearer) RequireTransportSecurity() bool { return false }

// ErrUnauthenticated is wrapped by CoordinatorClient.Beat when the
// coordinator refused the token.
var ErrUnauthenticated = errors.New("distributed: the coordinator refused the heartbeat's token")
