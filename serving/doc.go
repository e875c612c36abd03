// Package serving is gotflow's online model server: it keeps the versions
// of one or more SavedModels loaded, runs inference requests on them,
// through a dynamic batcher when asked, and hosts the front ends that
// speak the wire protocols: TF Serving's REST and gRPC APIs
// (serving/tfserving), the Open Inference Protocol of KServe and Triton
// (serving/kserve) and Arrow Flight (serving/flight). `gotflow serve`
// wires them together with TF Serving's flag names.
//
// # Models and versions
//
// A model is a name and a base path whose numbered subdirectories are its
// versions (BasePath/1, BasePath/2, ... each a SavedModel), as TF
// Serving lays them out. NewServer scans every base path, loads the
// versions the model's VersionPolicy picks (by default the newest one),
// and rescans every PollInterval:
//
//   - a new version is loaded beside the old one and, once it is
//     AVAILABLE, takes the new requests; the old version stops taking
//     requests (UNLOADING), waits for those it holds to finish, and is
//     closed (END), freeing its C memory;
//   - a version that fails to load is logged and reported by ModelStatus
//     with its error; the versions serving before stay up, and the
//     directory is tried again only once its files change (a copy that
//     was still being written);
//   - Labels name versions ("stable" → 3); a request picks a version by
//     number, by label, or gets the newest.
//
// Versions should appear atomically: written beside the base path and
// renamed into it, as TF Serving's documentation also asks.
//
// # Requests
//
// Every front end decodes its wire format into a Request of Tensors (Go
// memory, TensorFlow's layout) and calls Server.Predict, which checks the
// inputs against the signature (every input given, with the signature's
// dtype, and its shape when the ranks agree) and runs the session. With
// Config.Batching (TF Serving's batching parameters, names and defaults),
// concurrent requests with the same signature and inner shapes are merged
// into batches of up to MaxBatchSize rows, padded to AllowedBatchSizes,
// split when larger than a batch; a request that would overfill the queue
// of MaxEnqueuedBatches fails at once with UNAVAILABLE (HTTP 503).
//
// # Ownership
//
// The Server owns every loaded version's session and graph: Close (or
// Shutdown, after draining) frees them, once the requests holding them
// return. Request tensors belong to the caller and are only read;
// Response tensors belong to the caller. Metadata values are shared and
// must not be modified.
//
// # Concurrency
//
// All methods are safe for concurrent use. NewServer starts one polling
// goroutine, each batcher NumBatchThreads goroutines, each unloading
// version one goroutine, the HTTP port one per connection; Close waits for
// all of them. Serve blocks until Shutdown or Close. Front ends register
// their gRPC services (GRPC) and HTTP routes (Mux) before Serve.
//
// # Errors
//
// Errors are gRPC status errors with TF Serving's codes and, where TF
// Serving has one, its message (NotFound "Servable not found for request:
// Latest(m)", InvalidArgument for bad inputs, FailedPrecondition for an
// unknown signature, Unavailable for a full batch queue or a server
// shutting down). TensorFlow's own errors keep their code. HTTPStatus
// maps a code to TF Serving's HTTP status. Loading a SavedModel from an
// untrusted source can abort the process inside TensorFlow: serve models
// you trust.
//
// # Operations
//
// The HTTP port serves /metrics (Prometheus, through client_golang:
// requests by model, version, API and code; latency histograms; batch
// sizes; queue depth; versions available; TensorFlow objects live and
// leaked, by kind: a leaked one is never freed), /healthz and /readyz; the gRPC
// port serves grpc.health.v1. Config.TLS and Config.Token secure both
// ports (health stays open); MaxRequestBytes bounds bodies and messages,
// RequestTimeout bounds requests that bring no deadline.
package serving
