// Package arrowiotest holds the Arrow test data shared by the tests of
// package arrowio and of package feeder, which reads through it: the "id"
// records (IDSchema, IDRecords), in which row i holds id i and
// x = [i, i+0.25, i+0.5, i+0.75]; WriteIDs, which writes them to a file,
// and ReadIDs, which reads the ids back from a source; Seq, the ids
// expected; and CheckedMem, an allocator whose every byte must be freed by
// the end of the test. It is for tests only; like arrowio, it has no cgo.
//
// # Ownership
//
// The records IDRecords returns are the caller's to Release. ReadIDs
// releases the records it reads and closes the source.
//
// # Concurrency
//
// The functions are safe for concurrent use; a source passed to ReadIDs
// must not be used by anyone else meanwhile.
//
// # Errors
//
// Errors fail the test, as do bytes left allocated on CheckedMem.
package arrowiotest
