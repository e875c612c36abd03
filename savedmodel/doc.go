// Package savedmodel loads TensorFlow models for inference in the styles
// TensorFlowOnSpark's TFModel serves:
//
//   - a SavedModel through a signature (Load; TF1 SavedModelBuilder output
//     with custom tags and several meta graphs, and TF2 tf.saved_model.save /
//     Keras model.export output alike): inputs and outputs are named by the
//     signature's aliases;
//   - a SavedModel ignoring signatures (Load with WithRawTensorNames): names
//     are graph tensors, "op:idx";
//   - checkpoint only (LoadCheckpoint): a TF1 MetaGraph plus checkpoint files,
//     restored by running the SaverDef's restore op;
//   - a frozen GraphDef (LoadFrozenGraph).
//
// Read lists a SavedModel's tag sets and signatures without TensorFlow, which
// is what `gotflow inspect` prints. A signature's inputs and outputs are
// SignatureTensors: the alias and the graph tensor's tf.TensorSpec.
//
// Loading a model makes TensorFlow trust its graph, and several TensorFlow
// bugs abort the process on malformed graphs. savedmodel therefore parses and
// validates saved_model.pb, MetaGraph and GraphDef files itself first (size,
// protocol buffer syntax, unique node names, every node input and signature
// tensor naming an existing node), so a corrupt or truncated file returns an
// error. This does not make untrusted models safe: load only models you
// trust.
//
// # Ownership
//
// A Model owns its session and graph; Close frees both. Session and Graph
// return borrowed handles. Tensors passed to Run are borrowed; tensors Run
// returns belong to the caller, who must Close them.
//
// # Concurrency
//
// A Model may be used from many goroutines; Run calls execute concurrently on
// the one session. Close waits for in-flight runs.
//
// # Errors
//
// A missing tag set, signature key, alias or tensor returns a *NotFoundError
// listing what exists (errors.Is(err, tf.ErrNotFound) holds). A directory
// without saved_model.pb wraps ErrNotSavedModel; a missing file wraps
// fs.ErrNotExist; TensorFlow failures wrap *tf.Error. Use after Close returns
// tf.ErrClosed.
package savedmodel
