// Package feeder moves data between Apache Arrow and TensorFlow: record
// batches in, tensors through a session, Arrow columns out.
//
// A Mapping says which column feeds which tensor (with dtype, row shape,
// null fill, cast and padding options; ParseMapping reads a text form).
// NewPlan checks it against a schema and, optionally, against the graph's
// inputs (Targets, TargetOf: a tf.TensorSpec, under the Alias the mapping
// uses when that is not the graph tensor's name) before anything runs. A
// Plan converts records
// directly (Plan.Convert; Plan.ConvertInto refills existing tensors without
// allocating, for training loops that reuse them), or a
// Feeder runs the whole pipeline over a Source: parallel readers, exact
// re-chunking to BatchSize, a seeded shuffle buffer and conversion, all
// overlapping with the caller's Session.Run. AppendOutputs turns fetched
// tensors back into columns appended to the input record.
//
// Reading and writing files is package arrowio (feeder/arrowio, no cgo):
// Parquet, IPC and CSV sources and sinks, datasets, Where, OpenOrdered.
// Source is arrowio.Source.
//
// For training, arrowio.ScanDataset lists a dataset into units from file
// footers alone, and arrowio.EpochOrder, Deal, EqualSteps and BatchLayout
// make each epoch's plan a pure function of (seed, epoch, workers).
// NewStream reads one worker's share of an arrowio.StreamDataset in
// bounded memory: ordered parallel readers, a row permutation inside each
// unit, a shuffle window that is an index permutation gathered by index,
// and a prefetch queue. Bound computes the memory it holds from the
// footers; a BudgetAllocator enforces it. UnitCache keeps converted units
// for in-memory training with the same batches.
//
// Supported columns: every integer and floating-point type, float16, bool;
// string, large_string, binary, large_binary, string/binary views,
// fixed-size binary and dictionary-encoded strings (to string tensors);
// fixed-size lists, nested fixed-size lists and the arrow.fixed_shape_tensor
// extension type (to rank ≥ 2 tensors); variable-length lists of numbers
// (equal lengths per batch, or padded/truncated to Input.Length).
//
// # Zero-copy
//
// A fixed-width column is handed to TensorFlow without a copy when its
// element type equals the tensor's dtype, the batch's rows hold no nulls,
// come from one record, live in memory from a C allocator (NewCAllocator or
// TrackCMemory; every arrowio source uses one by default) and start 64-byte
// aligned. Otherwise the column is copied exactly once, straight into the
// TensorFlow-allocated tensor. Plan.Stats reports bytes aliased and copied;
// RequireZeroCopy turns a would-be copy into ErrNotZeroCopy.
//
// # Ownership
//
// Arrow objects follow Retain/Release (arrowio's rules for sources and
// sinks). A Feeder owns its Source and closes it in Close; when New fails,
// the Source stays the caller's. A Batch owns its tensors and a reference
// on its source records; Batch.Close frees both.
// An aliased tensor holds a reference on its Arrow column that TensorFlow
// drops when it no longer uses the memory, possibly after Batch.Close and
// from another goroutine. AppendOutputs returns a new record the caller
// releases; it copies the tensors, which the caller still owns. Feeder and
// Batch have idempotent Close methods.
//
// A Stream owns its goroutines and the converted rows it holds until
// Close; its batches are the caller's (StreamBatch.Close). It reads the
// arrowio.StreamDataset it was made from, which must stay open (a memory
// dataset keeps its records until its Close) until the Stream is closed.
// A UnitCache owns its units until Close, which must come after the
// streams using it are closed.
//
// # Concurrency
//
// A Plan is immutable and safe for concurrent use. A Feeder starts its
// goroutines in New and stops and waits for them in Close; Next and Close
// may be called from different goroutines, but Next calls are serialized.
// Canceling the context passed to Next only abandons that wait; Close
// cancels the pipeline, frees every batch and record in flight and leaks no
// goroutine. Bound, CheckBudget and NewStream only read the
// arrowio.StreamDataset, which several streams may share; a UnitCache is
// safe for concurrent use.
//
// # Errors
//
// Mapping and data problems return a *ColumnError naming the column and,
// where it applies, the row (its index in the feeder's stream, or in the
// record given to Convert), wrapping one of ErrMissingColumn, ErrType,
// ErrShape, ErrNull, ErrRagged, ErrNotZeroCopy or ErrSchemaChanged.
// ErrMissingColumn, ErrType, ErrSchemaChanged, ErrMalformed and
// ErrMemoryBudget are the values arrowio wraps too, so errors.Is matches
// reading and conversion errors alike. A stream that exceeds its Limit
// fails with ErrMemoryBudget; a unit that changed since it was listed is
// an error naming it. Use of a closed Feeder or Batch returns ErrClosed
// (closed sources and sinks return arrowio.ErrClosed). Reading malformed
// files is arrowio's: its errors name the file, and nothing in either
// package panics on bad input.
package feeder
