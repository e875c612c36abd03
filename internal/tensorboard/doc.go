// Package tensorboard writes TensorFlow event files that TensorBoard reads:
// TFRecord framing (little-endian length, masked CRC32C of the length, the
// payload, masked CRC32C of the payload) around serialized tensorflow.Event
// protos, the first of which carries the file version "brain.Event:2".
// Scalars are written as Summary values with simple_value set, the form
// tf.compat.v1.summary and Keras' TensorBoard callback produce and that
// TensorBoard's scalar dashboard and tf.compat.v1.train.summary_iterator read.
//
// No TensorFlow library is involved: the package uses graft's generated
// Event and Summary messages and builds with CGO_ENABLED=0.
//
// # Ownership
//
// A Writer owns its open file. Close flushes, syncs and closes it; Close is
// idempotent and every method after Close returns ErrClosed. The file is
// created in the directory given to NewWriter under a name matching
// TensorBoard's "*tfevents*" pattern and is never renamed.
//
// # Concurrency
//
// A Writer is safe for concurrent use; records from concurrent calls are
// written whole, one after another. Events are buffered: call Flush to make
// them visible to a reader that is watching the file (TensorBoard polls).
//
// # Errors
//
// Bad arguments (an empty tag, a nil event) return errors prefixed
// "tensorboard:". I/O errors are wrapped with the file name. After a write
// error the Writer keeps returning that error. ReadEvents reports a
// truncated record or a CRC mismatch with the record's byte offset.
package tensorboard
