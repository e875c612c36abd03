// Package ps is gotflow's parameter server: float32 variables sharded over
// one or more gRPC servers, updated by gradients that workers push and read
// by workers that pull, with Keras-exact optimizers (package ps/optim)
// applied on the server.
//
// # Servers
//
// A shard is a Server, built with NewServer and served with Serve on a
// listener the caller opens (127.0.0.1 unless told otherwise; the
// gotflow ps command does this). Options pick the update mode, the
// optimizer (an optim.Config, also parsed from SparkFlow-style JSON with
// optim.ParseConfig), the shard index, a snapshot directory, TLS and a
// bearer token (Credentials loads both from files, with ServerOptions for
// a shard and ClientOptions for its clients):
//
//	srv, err := ps.NewServer(ps.WithShard(0, 2), ps.WithMode(ps.AsyncLock),
//		ps.WithOptimizer(optim.Config{Optimizer: "adam", LearningRate: 1e-3}),
//		ps.WithSnapshotDir(dir, 1000, time.Minute))
//	go srv.Serve(lis)
//	defer srv.GracefulStop()
//
// Modes: Hogwild (pushes share the shard's lock and take one lock per
// chunk, so pushes to different chunks run in parallel; no push excludes
// the others), AsyncLock (each push atomic per shard), Sync (exactly WithWorkers pushes averaged per step,
// with a straggler timeout that fails or drops), BoundedStaleness (pushes
// more than WithMaxStaleness versions old are rejected, or with
// WithStalenessScaling applied with the learning rate divided by their
// staleness).
//
// A shard keeps each variable chunk's optimizer slots and step count
// (Keras' iterations, used by bias correction and learning-rate schedules)
// and hands them to optim's update: the count equals Keras' when every
// push carries every variable, as workers' pushes of a model's gradients
// do. The client applies gradient clipping (optim.Config.ClipGradients)
// to whole variables before it pushes.
//
// NewLocalCluster runs n shards inside the process on in-memory listeners
// (no ports) for single-process training; its Dial returns an ordinary
// Client whose pushes and pulls call the shards directly: the same
// validation, idempotency keys, optimizer, write-ahead log and snapshots,
// without serialising tensors (bench/results/ps.json compares it with
// gRPC). Its other calls go through gRPC over the in-memory listeners.
//
// # Clients
//
// Dial connects to all shards (shard i at addrs[i]). Register declares the
// variables (first initialiser wins; non-trainable ones are set with
// Assign, not by gradients), Pull copies the current values out (only what
// changed since the last pull travels), Push sends gradients, PushPull does
// both in one round trip, Barrier waits for n workers, Snapshot/Restore act
// on every shard, Stats reads their counters. Variables larger than
// DefaultChunkElements are split into chunks placed on shards by size; the
// placement is computed identically by every client from the registration
// order, so no coordinator is needed. Tensors travel as little-endian bytes
// (float32, or float16 with WithFP16), in messages of about 4 MiB so that a
// 100M-parameter model streams through without large messages.
//
// # Wire format
//
// The service and messages are defined in pspb/ps.proto (regenerate with
// scripts/generate-proto.sh). Server and client install a gRPC codec that
// writes and reads that same protobuf but keeps tensor bytes where they
// are: pushed gradients are sent from the caller's slices and applied by
// the shard from the received buffers, pulled values are encoded once from
// the shard's memory and decoded by the client straight into the caller's
// slices. Any other protobuf gRPC client can still talk to a shard.
//
// gRPC cuts messages into 16 KiB HTTP/2 frames and copies each through its
// read and write buffers, which costs more than the transfer itself for
// large tensors. So a client's pushes, pulls and push-pulls travel over a
// bulk connection instead: its own TCP connection to the shard's same
// port (Serve tells the protocols apart by a connection's first bytes, or
// with TLS by the protocol the client names in the handshake, ALPN
// "gotflow-ps-bulk/1"; the same certificates and client certificates
// apply), a bearer token checked at its start, tensor bytes written from
// the caller's slices and read into pooled buffers, each pushed chunk
// validated while the next arrives. The push goes through the same
// validation, idempotency keys, optimizer, write-ahead log and snapshots
// as one over gRPC, and errors come back as the same gRPC statuses. A
// shard that answers the bulk greeting in another protocol (one behind an
// HTTP/2 proxy, say) is reached through gRPC from then on; ViaGRPC asks
// for gRPC from the start. bench/results/ps.json compares the three
// transports (bulk, gRPC, in process) with a TCP echo.
//
// # Exactly once
//
// Every push carries an idempotency key. A shard remembers the keys it
// applied (also in its snapshots) and answers a repeated key with the first
// result, so the client's retries on transient errors (codes.Unavailable,
// per-attempt deadline) never apply a push twice. Pushing the same tensors
// again right after a failed Push reuses the keys too, which resolves a push
// that some shards applied and others rejected.
//
// With a snapshot directory a shard also keeps a write-ahead log there:
// every change (registration, assignment, applied push, completed Sync
// step) is appended under the lock that applies it, and the push is
// answered only once its record is fsynced (one fsync for all the pushes
// waiting at that moment). A restarted shard loads its snapshot and replays
// the later records through the same optimizer code, so it holds every
// update it acknowledged, bit for bit, with their idempotency keys. After
// each snapshot the log moves to a new segment and the old ones are
// deleted. WithoutWAL trades that guarantee for speed: updates acknowledged
// after the last snapshot then die with the process (bench/results/ps.json
// measures the difference). A shard that comes back with no state at all
// answers pushes with NotFound; the client then registers its last pulled
// values there (optimizer state starts afresh) and pushes again.
//
// # Input positions
//
// A push may carry the worker's position in its input once the push is
// applied (AtPosition: opaque bytes, at most 4 KiB). A shard keeps the last
// applied position of each worker ID with the update it came with, under
// the same lock, in its snapshots and its write-ahead log, and a Sync step
// keeps those of all its pushes when it applies. Whatever state a shard
// comes back with, Client.Positions therefore tells each worker where the
// input behind that state ends, the way a stream processor commits its
// consumer offsets with its output: TFEstimator's processes and TF_CONFIG
// jobs resume within an epoch from it.
//
// A snapshot directory belongs to one shard at a time: NewServer takes an
// exclusive lock on ps-shard-i-of-n.snapshot.lock (released by Stop, or by
// the kernel when the process dies) and fails with ErrSnapshotDirInUse,
// naming the holder's pid, while another server holds it. Each owner gets
// the next incarnation number, recorded in its snapshots, and a snapshot is
// never replaced by one of an older incarnation or a lower version.
//
// WithIdleTimeout closes Idle once no request has come for a while, so a
// shard whose job died can exit (gotflow ps --idle-timeout). SetWorkers
// changes the pushes per Sync step, e.g. when a worker died.
//
// # Ownership
//
// Push, PushPull and Assign borrow the caller's slices until they return
// and never keep them. Pull and PushPull write into the caller's
// destination slices. Register copies what it needs. The Client owns its
// connections and cache until Close; a Server owns its variables and
// optimizer state, which nothing outside the package can reach.
//
// # Concurrency
//
// A Server is safe for any number of concurrent RPCs. Hogwild pushes hold
// the shard's lock shared and each chunk's lock exclusively; AsyncLock,
// BoundedStaleness and Sync apply holding the shard's lock exclusively;
// pulls copy under the shared lock, so an AsyncLock pull never sees half a
// push. Snapshots copy the state under the exclusive lock and write it
// without. Serve blocks; GracefulStop fails waiting Sync steps and barriers
// with codes.Unavailable, drains in-flight RPCs, in-process calls and
// bulk requests (refusing new ones with codes.Unavailable), closes bulk
// connections, stops the snapshot goroutine and writes a final snapshot.
// A bulk request whose client hangs up is cancelled like a gRPC call. A Client serialises its calls
// (Barrier excepted): give each worker its own. It talks to the shards of
// one call concurrently and waits for all of them before returning.
//
// # Errors
//
// Server errors are gRPC statuses, over every transport, whose messages
// name the shard, variable and chunk: NotFound for an unknown variable,
// InvalidArgument for a wrong shape, dtype, NaN/Inf gradient (unless
// WithAllowNonFinite) or malformed request, FailedPrecondition for routing
// or registration conflicts, Aborted for stale pushes and discarded Sync
// steps, Unauthenticated for a wrong token, ResourceExhausted for
// oversized messages. A broken bulk connection is codes.Unavailable (the
// call is retried on a new one). Rejections are counted in Stats by reason
// and never change state. Client errors wrap the status (status.Code and
// errors.As work) with the shard and address; Aborted ones also wrap
// ErrStale. Validation done locally returns plain errors naming the
// variable. NewServer returns optim's error ("optim: …") unwrapped for an
// invalid optimizer configuration.
package ps
