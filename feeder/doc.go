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
// tensors back into columns appended to the input record, and the Parquet
// and IPC sinks write the result atomically.
//
// For training, ScanDataset (or Dataset.Scan) lists a dataset into units
// from file footers alone — Parquet row groups, IPC record batches, whole
// CSV files — with Hive partition directories as columns and a filter
// pushed down to row-group statistics. EpochOrder, Deal, EqualSteps and
// BatchLayout make each epoch's plan a pure function of (seed, epoch,
// workers), and StreamDataset.Stream reads one worker's share in bounded
// memory: ordered parallel readers, a row permutation inside each unit, a
// shuffle window that is an index permutation gathered by index, and a
// prefetch queue. Bound computes the memory it holds from the footers; a
// BudgetAllocator enforces it. UnitCache keeps converted units for
// in-memory training with the same batches.
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
// TrackCMemory, which every source uses by default) and start 64-byte
// aligned. Otherwise the column is copied exactly once, straight into the
// TensorFlow-allocated tensor. Plan.Stats reports bytes aliased and copied;
// RequireZeroCopy turns a would-be copy into ErrNotZeroCopy.
//
// # Ownership
//
// Arrow objects follow Retain/Release. A Source hands out records the
// caller releases. A Batch owns its tensors and a reference on its source
// records; Batch.Close frees both. An aliased tensor holds a reference on
// its Arrow column that TensorFlow drops when it no longer uses the memory,
// possibly after Batch.Close and from another goroutine. AppendOutputs
// returns a new record the caller releases; it copies the tensors, which the
// caller still owns. Feeder, sources and sinks have idempotent Close
// methods; a sink's output file appears only after a successful Close.
//
// A Stream owns its goroutines and the converted rows it holds until
// Close; its batches are the caller's (StreamBatch.Close). A
// StreamDataset holds no open file; one made by NewMemoryDataset owns its
// records until Close. A UnitCache owns its units until Close, which must
// come after the streams using it are closed.
//
// # Concurrency
//
// A Plan is immutable and safe for concurrent use. A Feeder starts its
// goroutines in New and stops and waits for them in Close; Next and Close
// may be called from different goroutines, but Next calls are serialized.
// Canceling the context passed to Next only abandons that wait; Close
// cancels the pipeline, frees every batch and record in flight and leaks no
// goroutine. Sources and sinks are not safe for concurrent use, except that
// the parts returned by Split are independent.
//
// # Errors
//
// Mapping and data problems return a *ColumnError naming the column and,
// where it applies, the row (its index in the feeder's stream, or in the
// record given to Convert), wrapping one of ErrMissingColumn, ErrType,
// ErrShape, ErrNull, ErrRagged, ErrNotZeroCopy or ErrSchemaChanged. Reading
// a truncated or malformed file returns an error naming the file; records
// read from IPC are validated (array.ValidateRecordFull) before use, panics
// inside arrow-go's readers are turned into errors, and IPC schemas are
// checked before arrow-go sizes slices from their vector lengths. Nothing in
// this package panics on bad input; arrow-go itself may still allocate a
// record body of the size a corrupt IPC message claims, so cap untrusted
// input with an allocator that refuses huge allocations.
package feeder
