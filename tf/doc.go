// Package tf is gotflow's boundary to the TensorFlow C API: graphs,
// sessions, tensors, SavedModel loading, devices and in-process TensorFlow
// servers. It is a thin, safe layer: every other gotflow package that talks
// to TensorFlow does so through it, and it is the only package (with one
// deallocator in feeder) that uses cgo. The generated protocol buffers
// (ConfigProto, RunOptions, ServerDef, GraphDef, MetaGraphDef) come from
// github.com/wamuir/graft.
//
// TensorSpec is gotflow's one description of a graph tensor: its name
// ("op:index"), dtype and static shape. Types that also know a tensor by a
// user-facing name (loader.BundleTensor, savedmodel.SignatureTensor,
// feeder.Target) embed it next to a field called Alias.
//
// # Ownership
//
// Tensor, Graph, Session and Server own C memory and have an idempotent
// Close; call it: it is the only way their C memory is freed. Tensors,
// graphs and sessions share one lifetime record and are counted alike:
// Live counts those not yet closed, Leaked those the garbage collector
// found unreachable before Close. The cleanup the collector runs only
// counts; it never calls TensorFlow, so a forgotten object's C memory stays
// allocated (and in Live) until the process ends. LiveTensors and
// LeakedTensors are the tensors' counts; internal/leakcheck checks at the
// end of each package's tests that Live is zero. This package uses only
// graft's generated protocol buffers, not its tensorflow package, whose
// finalizers do call TensorFlow: none of them is linked into gotflow.
// Session.Run borrows its feeds; the caller owns (and closes) the tensors Run
// returns. Slices from Tensor.Bytes and Data alias C memory and are valid
// until the tensor's Close. NewTensorFromBuffer aliases caller memory
// without copying; its release callback runs when TensorFlow drops the last
// reference, which can be after Close.
//
// # Concurrency
//
// Session.Run is safe for concurrent use; Session.Close waits for in-flight
// runs and later calls return ErrClosed. Graph lookups are safe for
// concurrent use. A Tensor must not be closed while another goroutine uses
// it.
//
// # Errors
//
// Failures reported by TensorFlow are *Error values carrying TensorFlow's
// status Code (equal to gRPC's codes), the failing call or tensor in Op, and
// TensorFlow's message. errors.Is matches them against ErrNotFound,
// ErrInvalidArgument and ErrDeadlineExceeded by code. Use after Close returns
// ErrClosed. Feeds are checked against the graph's static dtype and shape
// before TensorFlow sees them. A context deadline becomes the run's
// timeout_in_ms. Loading a malformed or hostile graph can abort the process
// inside TensorFlow (several TensorFlow CVEs are CHECK failures): validate
// untrusted files first (package loader does) and load only models you trust.
package tf
