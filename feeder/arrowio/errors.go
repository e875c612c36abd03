package arrowio

import (
	"errors"
	"fmt"
)

// Sentinel errors. feeder wraps the same values in its own errors (its
// ErrMissingColumn, ErrType, ErrSchemaChanged, ErrMalformed and
// ErrMemoryBudget are these), so errors.Is works across both packages.
var (
	// ErrMissingColumn: a column named by a projection or a filter is not in
	// the schema.
	ErrMissingColumn = errors.New("missing column")
	// ErrType: a column's type cannot be used (a filter on a column that
	// has no text form).
	ErrType = errors.New("type mismatch")
	// ErrSchemaChanged: a record's or file's schema differs from the one
	// the source (or sink) was opened with.
	ErrSchemaChanged = errors.New("schema changed mid-stream")
	// ErrMalformed: a reader (arrow-go's IPC, Parquet or CSV reader) failed
	// on corrupt input by panicking; the panic was turned into this error.
	// arrow-go v18.8.0 can leak the message body it was decoding when that
	// happens, so a process reading untrusted files should not rely on its
	// Arrow allocator returning to zero after ErrMalformed.
	ErrMalformed = errors.New("malformed input")
	// ErrMemoryBudget: an allocator refused memory beyond its limit. Such
	// an allocator (feeder.BudgetAllocator) panics with an error wrapping
	// it; readers return that error rather than ErrMalformed.
	ErrMemoryBudget = errors.New("arrowio: memory budget exceeded")
	// ErrClosed: use of a closed source or sink.
	ErrClosed = errors.New("arrowio: closed")
)

// columnError names the column a projection or filter is about.
func columnError(col string, err error, format string, args ...any) error {
	return fmt.Errorf("arrowio: column %q: %w: %s", col, err, fmt.Sprintf(format, args...))
}
