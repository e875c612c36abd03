// Package optim holds the optimizers that gotflow's parameter server
// applies to pushed gradients: SGD (with momentum and Nesterov), Adam,
// AdamW (with AMSGrad), Adagrad and RMSProp, with decoupled weight decay,
// gradient clipping and learning-rate schedules, reproducing
// keras.optimizers in float32 operation by operation
// (testdata/optimizer_parity.json holds what Keras computed, written by
// testdata/record_optimizers.py).
//
// A Config names the optimizer and its settings; ParseConfig reads it from
// JSON, in Keras' key names or SparkFlow's optimizerOptions spellings, and
// JSON writes it back:
//
//	cfg, err := optim.ParseConfig([]byte(`{"optimizer": "adam", "learning_rate": 1e-3}`))
//	opt, err := optim.New(cfg)
//	slots := opt.NewSlots(len(w))
//	cfg.ClipGradients(grads)             // on all of a step's gradients
//	opt.Apply(iter, 1, w, grads[0], slots) // iter: updates w has had so far
//
// The package has no cgo, no I/O and no goroutines.
//
// # Ownership
//
// Apply updates w and slots in place and only reads g; it keeps none of
// them. ClipGradients rewrites the slices it is given. The caller owns the
// slots NewSlots returns and keeps them with the variable they belong to
// (the step count too: Apply takes it as an argument).
//
// # Concurrency
//
// A Config is a value and an Optimizer never changes after New: both may be
// used from any number of goroutines. Concurrent Apply calls must not
// share a w or a slot slice; that locking is the caller's.
//
// # Errors
//
// ParseConfig, Validate and New return errors prefixed "optim:" that name
// the offending key or field and the range it expects. Apply and
// ClipGradients do not fail: non-finite gradients propagate into the
// result as they do in Keras.
package optim
