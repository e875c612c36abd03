// Package loader reads models from disk: frozen GraphDefs (LoadGraphDef,
// ParseGraphDef) with tensor-name resolution, and gotflow model bundles
// (LoadBundle): a manifest, a training graph, an inference graph, an
// optional evaluation graph and weights, as written by `gotflow convert`.
// A bundle's inputs, labels, outputs, loss and metrics are BundleTensors:
// the manifest's name for the tensor (Alias) and its tf.TensorSpec.
//
// # Ownership
//
// A GraphDef or Bundle is plain Go memory; the tf.Graph that Import returns
// owns C memory and must be closed by the caller, and so do the TrainStep,
// EvalStep and Predictor a Bundle opens (a graph and a session each) and
// the tensors their Run returns (StepResult.Close, EvalResult.Close).
//
// # Concurrency
//
// Loaded values are read-only and safe for concurrent use.
//
// # Errors
//
// Everything loader parses is validated before TensorFlow sees it: a missing
// or truncated file, bytes that are not a GraphDef, a node that reads a node
// that does not exist, or a malformed manifest is an error naming the file
// and the problem (matching ErrInvalidGraph for graphs). Tensor lookups
// that fail match tf.ErrNotFound and list the closest names. Validation
// catches malformed files, not hostile ones: load only models you trust.
package loader
