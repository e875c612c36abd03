// Package arrowio reads and writes Apache Arrow data: files in, record
// batches out, and back. It builds with CGO_ENABLED=0 (with cgo it links
// only arrow-go's C allocator, through internal/cmem); it knows nothing of TensorFlow (package feeder turns its records into
// tensors), so programs that only read or write files need not link
// libtensorflow.
//
// Sources hand out records of one schema: OpenParquet, OpenIPC (an IPC file
// or stream), NewIPCStream, OpenCSV and NewCSV read files and readers,
// FromRecords and FromTable serve records held in memory. Options project
// columns (Columns), size records (ReadRows), pick row groups (RowGroups)
// and describe CSV (CSVSchema, CSVHeader, CSVDelimiter, CSVNulls). A
// Splitter divides itself into parts read in parallel. OpenDataset reads
// many files as one Source — a directory (recursively), a glob — and
// Partition deals them to workers; Where keeps the rows whose column
// equals a value. OpenOrdered reads files with several goroutines (by
// default DefaultReaders, one per four cores, for the Parquet it decodes
// directly; one per core otherwise) but hands the records out in file and
// row-group order, decoding Parquet columns of fixed-width numbers
// without nulls straight into Arrow buffers, at most DecodeAhead records
// ahead of the consumer; RowsPerRecord sizes its records to whole batches.
//
// For streaming training data, ScanDataset (or Dataset.Scan, ScanFiles)
// lists a dataset into units from file footers alone — Parquet row groups,
// IPC record batches, CSV byte ranges — with Hive partition directories
// (`year=2024/part-0.parquet`) as columns and a filter pushed down to
// row-group statistics; NewMemoryDataset does the same for records in
// memory. A StreamDataset reads one unit at a time (ReadUnit); Pieces,
// SplitTail, EpochOrder, Deal, EqualSteps and BatchLayout make each epoch's
// plan a pure function of (seed, epoch, workers). feeder.NewStream reads a
// share of it as tensors.
//
// CreateParquet and CreateIPC write records to a file that appears under
// its name only when Close succeeds (internal/atomicfile).
//
// # Memory
//
// A source allocates with the allocator given by WithAllocator, or else
// with one process-wide default; a sink's default is arrow-go's
// memory.DefaultAllocator (Go memory). Built with cgo, the sources' default is
// arrow-go's C allocator (mallocator), 64-byte aligned, whose allocations
// are recorded so that feeder can hand the buffers to TensorFlow without a
// copy (feeder.NewCAllocator and feeder.TrackCMemory make more of them);
// built without cgo, it is Go memory. OpenOrdered's direct Parquet decoder
// always uses such an allocator of its own, and keeps the column buffers
// its records' users release (up to 64 MiB, and up to 16 MiB of page
// buffers in Go memory) for the records it decodes next: that memory stays
// with the process.
//
// # Ownership
//
// Arrow objects follow Retain/Release. Next returns a record the caller
// owns and must Release. FromRecords retains the records it is given and
// Close releases those not yet handed out. Where takes ownership of the
// source it filters (closing the result closes it); its records are
// zero-copy slices of the source's. ReadUnit's records are
// valid during the call; fn must Retain one it keeps. A sink's Write does
// not keep the record, which stays the caller's.
//
// Sources, sinks and OpenOrdered have idempotent Close methods. Close on a
// source frees what it holds (open files, decoded records in flight);
// OpenOrdered's Close stops its goroutines and waits for them. A sink's
// output appears only after a successful Close; Abort, or a failed Close,
// removes the temporary file. A StreamDataset holds no open file; one made
// by NewMemoryDataset owns its records until Close, and shares them with
// the datasets Project returns from it: close exactly one of them.
//
// # Concurrency
//
// Sources and sinks are not safe for concurrent use, except that the parts
// returned by Split are independent of each other. OpenOrdered's source
// serializes its calls; its readers wait while DecodeAhead records are
// waiting for the consumer, and yield to other goroutines between pages,
// so that decoding does not hold Go's Ps from the goroutines consuming it. A StreamDataset is immutable once built and safe
// for concurrent use (ReadUnit opens the unit's file anew each time); the
// epoch-plan functions are pure. The default allocator is shared and safe
// for concurrent use.
//
// # Errors
//
// Errors are prefixed "arrowio:" and name the file (and, where it
// applies, the row group, record batch or byte range). Records read from
// IPC are validated (array.ValidateRecordFull) before use, IPC schemas are
// checked before arrow-go sizes slices from their vector lengths, and a
// panic inside arrow-go's readers becomes an error wrapping ErrMalformed;
// nothing in this package panics on bad input. arrow-go itself may still
// allocate a record body of the size a corrupt IPC message claims, so cap
// untrusted input with an allocator that refuses huge allocations: one that
// panics with an error wrapping ErrMemoryBudget (feeder.BudgetAllocator)
// has that error returned as is. Files of one dataset, or records written
// to a sink, whose schema differs wrap ErrSchemaChanged; a projection or
// filter on a column that is not there wraps ErrMissingColumn, a filter on
// a column without a text form ErrType, and a ScanConfig filter that
// matches no row ErrNoRows. Use after Close returns ErrClosed.
package arrowio
