package ps

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc/test/bufconn"
)

// LocalCluster runs n shards inside the current process, each serving on
// an in-memory listener (no ports, no network), for single-process training
// and tests. Clients from Dial push and pull by calling the shards
// directly: the same validation, idempotency keys, optimizer, write-ahead
// log and snapshots as over the network, without serialising tensors.
// Their other calls (Register, Barrier, Snapshot, Stats, ...) use the full
// gRPC stack over the in-memory listeners, as every call does with
// ViaGRPC.
type LocalCluster struct {
	servers   []*Server
	listeners []*bufconn.Listener
	wg        sync.WaitGroup
	closeOnce sync.Once
	errs      []error
}

const localBufferBytes = 4 << 20

// NewLocalCluster starts n shards configured by opts (WithShard is set per
// shard and must not be given). Close stops them.
func NewLocalCluster(n int, opts ...ServerOption) (*LocalCluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("ps: local cluster of %d shards, want at least 1", n)
	}
	lc := &LocalCluster{errs: make([]error, n)}
	for i := range n {
		s, err := NewServer(append(append([]ServerOption(nil), opts...), WithShard(i, n))...)
		if err != nil {
			lc.Close()
			return nil, fmt.Errorf("ps: local shard %d: %w", i, err)
		}
		lis := bufconn.Listen(localBufferBytes)
		lc.servers = append(lc.servers, s)
		lc.listeners = append(lc.listeners, lis)
		lc.wg.Add(1)
		go func() {
			defer lc.wg.Done()
			lc.errs[i] = s.Serve(lis)
		}()
	}
	return lc, nil
}

// Servers returns the shards, shard i at index i.
func (lc *LocalCluster) Servers() []*Server { return lc.servers }

// Addrs returns the names the shards are dialled by (not network
// addresses; only this cluster's Dial can reach them).
func (lc *LocalCluster) Addrs() []string {
	a := make([]string, len(lc.servers))
	for i := range a {
		a[i] = fmt.Sprintf("local-ps-%d", i)
	}
	return a
}

// Dial returns a client connected to every shard of the cluster.
func (lc *LocalCluster) Dial(ctx context.Context, opts ...ClientOption) (*Client, error) {
	byName := map[string]*bufconn.Listener{}
	for i, a := range lc.Addrs() {
		byName[a] = lc.listeners[i]
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		lis, ok := byName[addr]
		if !ok {
			return nil, fmt.Errorf("ps: no local shard %q", addr)
		}
		return lis.DialContext(ctx)
	}
	opts = append(append([]ClientOption(nil), opts...), clientOptionFunc(func(o *clientOptions) {
		o.dialer = dial
		if !o.viaGRPC {
			o.local = lc.servers
		}
	}))
	return Dial(ctx, lc.Addrs(), opts...)
}

// Close stops every shard gracefully (writing final snapshots where
// configured) and waits for them. It is idempotent.
func (lc *LocalCluster) Close() error {
	var errs []error
	lc.closeOnce.Do(func() {
		for _, s := range lc.servers {
			errs = append(errs, s.GracefulStop())
		}
		lc.wg.Wait()
		errs = append(errs, lc.errs...)
	})
	return errors.Join(errs...)
}
