package ps

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gotflow/gotflow/ps/optim"
)

// Mode is how a shard applies concurrent pushes.
type Mode int

const (
	// Hogwild applies pushes without a model-wide lock: each chunk of a
	// variable has its own lock, so pushes touching different chunks run in
	// parallel and a push is atomic per chunk, not as a whole.
	Hogwild Mode = iota
	// AsyncLock applies each push atomically under one shard lock
	// (SparkFlow's acquireLock).
	AsyncLock
	// Sync aggregates exactly WithWorkers(n) pushes per step, averages them
	// and applies the average once; a push returns when its step is applied.
	Sync
	// BoundedStaleness is AsyncLock that rejects (or, with
	// WithStalenessScaling, slows down) pushes computed on weights more than
	// WithMaxStaleness versions old.
	BoundedStaleness
)

var modeNames = []string{"hogwild", "async-lock", "sync", "bounded-staleness"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode reads a mode name as printed by Mode.String ("hogwild",
// "async-lock", "sync", "bounded-staleness"); case and '_' are ignored.
func ParseMode(s string) (Mode, error) {
	n := strings.ReplaceAll(strings.ToLower(s), "_", "-")
	for i, name := range modeNames {
		if n == name || n == strings.ReplaceAll(name, "-", "") {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("ps: mode %q unknown (want %s)", s, strings.Join(modeNames, ", "))
}

// StragglerPolicy is what a Sync shard does when a step has not received
// all its pushes within the sync timeout.
type StragglerPolicy int

const (
	// StragglerFail fails the step: every push waiting in it gets
	// codes.Aborted, nothing is applied, and the workers retry the step.
	StragglerFail StragglerPolicy = iota
	// StragglerDrop applies the average of the pushes that arrived and moves
	// to the next step; the late pushes are rejected as stale.
	StragglerDrop
)

// ServerOption configures NewServer.
type ServerOption interface{ applyServer(*serverOptions) }

// ClientOption configures Dial.
type ClientOption interface{ applyClient(*clientOptions) }

// Option configures both sides (the bearer token, TLS).
type Option interface {
	ServerOption
	ClientOption
}

type serverOptionFunc func(*serverOptions)

func (f serverOptionFunc) applyServer(o *serverOptions) { f(o) }

type clientOptionFunc func(*clientOptions)

func (f clientOptionFunc) applyClient(o *clientOptions) { f(o) }

type bothOption struct {
	s serverOptionFunc
	c clientOptionFunc
}

func (b bothOption) applyServer(o *serverOptions) { b.s(o) }
func (b bothOption) applyClient(o *clientOptions) { b.c(o) }

type serverOptions struct {
	mode             Mode
	maxStaleness     uint64
	scaleStale       bool
	workers          int
	syncTimeout      time.Duration
	straggler        StragglerPolicy
	optimizer        optim.Config
	shard, numShards int
	snapshotDir      string
	snapshotEvery    uint64
	snapshotInterval time.Duration
	allowNonFinite   bool
	token            string
	tls              *tls.Config
	maxMessageBytes  int
	keyCacheSize     int
	idleTimeout      time.Duration
	noWAL            bool
	noFinalSnapshot  bool
	logger           *slog.Logger
}

func defaultServerOptions() serverOptions {
	return serverOptions{
		mode:            AsyncLock,
		workers:         1,
		syncTimeout:     time.Minute,
		numShards:       1,
		optimizer:       optim.Config{Optimizer: "sgd"},
		maxMessageBytes: 64 << 20,
		keyCacheSize:    1 << 16,
		logger:          slog.New(slog.DiscardHandler),
	}
}

// WithMode sets the update mode (default AsyncLock).
func WithMode(m Mode) ServerOption { return serverOptionFunc(func(o *serverOptions) { o.mode = m }) }

// WithMaxStaleness sets the bound of BoundedStaleness: a push whose base
// version is more than s updates behind the shard is rejected with
// codes.Aborted (the worker pulls and recomputes).
func WithMaxStaleness(s uint64) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.maxStaleness = s })
}

// WithStalenessScaling makes BoundedStaleness apply pushes beyond the bound
// with the learning rate divided by their staleness (ElasticDL's
// lr_staleness_modulation) instead of rejecting them.
func WithStalenessScaling() ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.scaleStale = true })
}

// WithWorkers sets how many pushes make a Sync step (default 1).
func WithWorkers(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.workers = n })
}

// WithSyncTimeout sets how long a Sync step waits for its last push after
// its first (default one minute), and the policy when it runs out.
func WithSyncTimeout(d time.Duration, p StragglerPolicy) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.syncTimeout, o.straggler = d, p })
}

// WithOptimizer sets the optimizer (default SGD with Keras' learning rate
// 0.01).
func WithOptimizer(c optim.Config) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.optimizer = c })
}

// WithShard tells the server it is shard i of n (default 0 of 1). Clients
// routing with a different count are refused.
func WithShard(i, n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.shard, o.numShards = i, n })
}

// WithSnapshotDir makes the server restore its state from the latest
// snapshot in dir at start, write a snapshot there on Snapshot requests and
// on shutdown, and every n updates or every interval (0 disables each).
func WithSnapshotDir(dir string, every uint64, interval time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		o.snapshotDir, o.snapshotEvery, o.snapshotInterval = dir, every, interval
	})
}

// WithoutWAL turns the write-ahead log off. With a snapshot directory the
// shard normally logs every change there and answers a push only once its
// record is on disk (one fsync shared by all the pushes waiting), so that
// a shard killed at any moment restarts with every update it acknowledged.
// Without the log, the updates acknowledged after the last snapshot are
// lost with the process. A shard in the same process as its workers, which
// die with it, has nothing to gain from the log.
func WithoutWAL() ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.noWAL = true })
}

// WithoutFinalSnapshot keeps Stop and GracefulStop from writing a last
// snapshot: the snapshot directory then holds only the snapshots asked for
// (Snapshot, or the periodic ones), which lets a caller pair each of them
// with its own record of progress, as TFEstimator does to resume within an
// epoch.
func WithoutFinalSnapshot() ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.noFinalSnapshot = true })
}

// WithAllowNonFinite lets NaN and Inf gradients through; by default they
// are rejected with codes.InvalidArgument and counted.
func WithAllowNonFinite() ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.allowNonFinite = true })
}

// WithMaxMessageBytes sets the largest gRPC message accepted and sent
// (default 64 MiB); larger requests fail with codes.ResourceExhausted.
// Clients pack chunks into messages of at most half this size.
func WithMaxMessageBytes(n int) Option {
	return bothOption{
		s: func(o *serverOptions) { o.maxMessageBytes = n },
		c: func(o *clientOptions) { o.maxMessageBytes = n },
	}
}

// WithIdleTimeout makes the server's Idle channel close once no request
// has been in flight or arrived for d: a shard whose job is gone (its
// launcher and workers dead) can then exit by itself instead of serving
// forever. 0 (the default) never closes Idle.
func WithIdleTimeout(d time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.idleTimeout = d })
}

// WithLogger sets where the server logs (default: nowhere).
func WithLogger(l *slog.Logger) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.logger = l })
}

// WithToken sets a shared bearer token: a server rejects requests without it
// (codes.Unauthenticated); a client sends it with every request. Without
// TLS the token crosses the network in clear text.
func WithToken(token string) Option {
	return bothOption{
		s: func(o *serverOptions) { o.token = token },
		c: func(o *clientOptions) { o.token = token },
	}
}

// WithTLS secures the connection. On a server, cfg holds the certificate
// (and ClientAuth/ClientCAs to require client certificates); on a client,
// RootCAs and, for client certificates, Certificates.
func WithTLS(cfg *tls.Config) Option {
	return bothOption{
		s: func(o *serverOptions) { o.tls = cfg },
		c: func(o *clientOptions) { o.tls = cfg },
	}
}

type clientOptions struct {
	chunk           int
	fp16            bool
	workerID        string
	token           string
	tls             *tls.Config
	rpcTimeout      time.Duration
	maxAttempts     int
	backoff         time.Duration
	maxBackoff      time.Duration
	maxMessageBytes int
	dialer          func(context.Context, string) (net.Conn, error)
	// local holds the shards of a LocalCluster, which pushes and pulls
	// call directly (direct.go); nil for a networked cluster.
	local []*Server
	// viaGRPC keeps pushes and pulls on gRPC (ViaGRPC).
	viaGRPC bool
}

func defaultClientOptions() clientOptions {
	return clientOptions{
		chunk:           DefaultChunkElements,
		rpcTimeout:      2 * time.Minute,
		maxAttempts:     8,
		backoff:         50 * time.Millisecond,
		maxBackoff:      2 * time.Second,
		maxMessageBytes: 64 << 20,
	}
}

// WithFP16 sends gradients and receives weights as IEEE half floats,
// halving the bytes on the wire at the cost of precision (the shard keeps
// and updates float32).
func WithFP16() ClientOption { return clientOptionFunc(func(o *clientOptions) { o.fp16 = true }) }

// ViaGRPC makes the client push and pull through gRPC, like its other
// calls: a LocalCluster's client over the cluster's in-memory listeners
// instead of calling the shards directly, a networked client instead of
// the bulk transport (plain TCP to the same port; see the package
// documentation). Slower; for tests of the gRPC path and for networks
// that pass only HTTP/2.
func ViaGRPC() ClientOption { return clientOptionFunc(func(o *clientOptions) { o.viaGRPC = true }) }

// WithChunkElements sets the largest part a variable is split into
// (default DefaultChunkElements). All clients of a cluster must agree.
func WithChunkElements(n int) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.chunk = n })
}

// WithWorkerID names the worker in pushes, barriers and idempotency keys
// (default: random).
func WithWorkerID(id string) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.workerID = id })
}

// WithRPCTimeout bounds each attempt of each RPC (default two minutes);
// the caller's context bounds the whole call including retries.
func WithRPCTimeout(d time.Duration) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.rpcTimeout = d })
}

// WithRetry sets how often an RPC that failed with codes.Unavailable (or
// ran out of its per-attempt timeout) is tried, and the exponential backoff
// between attempts, which doubles from initial up to max with jitter.
// Pushes carry an idempotency key, so a retried push is applied once.
func WithRetry(attempts int, initial, max time.Duration) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.maxAttempts, o.backoff, o.maxBackoff = attempts, initial, max })
}
