// Package estimator holds the Spark-ML shaped entry points of gotflow. This
// file's TFModel runs a trained model over Arrow records the way
// TensorFlowOnSpark's TFModel does: InputMapping names which column feeds
// which model input, OutputMapping which output becomes which appended
// column, and Transform streams the input records back with those columns
// added.
//
// A TFModel refers to a model by Path and Kind: a SavedModel (by signature,
// or with RawTensorNames), a frozen GraphDef, a TF1 checkpoint (MetaGraph
// plus checkpoint files), or — through RegisterKind — other formats such as
// the converter's bundles. Save and Load store the reference and the
// parameters as a small JSON file (tfmodel.json).
//
// Transform is a pipeline: a feeder.Feeder reads the source, re-chunks it
// into batches of BatchSize rows and converts them to tensors (without a
// copy where Arrow's buffers allow); InFlight workers run batches on the
// model's single session at once (TensorFlow runs concurrent Runs in
// parallel) and append the fetched tensors as columns
// (feeder.AppendOutputs); the stream hands batches back in input order. At
// most 2*InFlight batches are held at once, so memory stays flat however
// many rows flow through.
//
// # Ownership
//
// A TFModel owns the model it loads; Close frees it. Transform borrows its
// source until the returned Stream is released. Records returned by
// Stream.RecordBatch are valid until the next call to Next; Retain them to
// keep them. Transform takes ownership of its feeder.Source and closes it
// when the stream is closed.
//
// # Concurrency
//
// Exported fields must not change once the model is used. Open, Transform
// and Close are safe for concurrent use; several Transforms may share one
// TFModel and its session. A Stream is read from one goroutine. Hooks run on
// the goroutine calling Stream.Next.
//
// # Errors
//
// Mapping problems — an unmapped signature input, a missing column, a
// column whose type cannot feed the input without loss, a width that does
// not fit, an unknown output — are returned by Transform before any row is
// read, naming the column, the input and what was expected. Errors while
// streaming (nulls in a column, TensorFlow failures, a failing source) stop
// the stream: Next returns false and Err (or Close) returns the error; the
// batches before it were delivered in order. Use after Close returns
// tf.ErrClosed.
package estimator
