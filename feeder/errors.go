package feeder

import (
	"errors"
	"fmt"

	"github.com/gotflow/gotflow/feeder/arrowio"
)

// Sentinel errors; a ColumnError wraps one of them.
var (
	// ErrMissingColumn: a mapped column is not in the schema.
	ErrMissingColumn = arrowio.ErrMissingColumn
	// ErrType: a column's type cannot feed the target (or only lossily, without Cast).
	ErrType = arrowio.ErrType
	// ErrShape: a column's row shape does not fit the target shape.
	ErrShape = errors.New("shape mismatch")
	// ErrNull: a null value and no Fill configured.
	ErrNull = errors.New("null value")
	// ErrRagged: a variable-length list row differs in length from the first row.
	ErrRagged = errors.New("ragged list")
	// ErrNotZeroCopy: RequireZeroCopy was set and a column would be copied.
	ErrNotZeroCopy = errors.New("not zero-copy")
	// ErrSchemaChanged: a record's schema differs from the one the plan was
	// made for (arrowio's sources wrap the same value).
	ErrSchemaChanged = arrowio.ErrSchemaChanged
	// ErrMalformed: a reader (arrow-go's IPC, Parquet or CSV reader) failed
	// on corrupt input by panicking; the panic was turned into this error
	// (arrowio.ErrMalformed, which explains what may leak).
	ErrMalformed = arrowio.ErrMalformed
	// ErrClosed: use of a closed Feeder or Batch (closed sources and sinks
	// return arrowio.ErrClosed).
	ErrClosed = errors.New("feeder: closed")
)

// ColumnError names the column (and, when known, the row) a failure is about.
// Row is the row index in the stream (or in the record given to Convert); -1
// when the failure is not about one row.
type ColumnError struct {
	Column string
	Row    int64
	Err    error  // one of the sentinels above
	Detail string // what was found and what was expected
}

func (e *ColumnError) Error() string {
	if e.Row >= 0 {
		return fmt.Sprintf("feeder: column %q row %d: %v: %s", e.Column, e.Row, e.Err, e.Detail)
	}
	return fmt.Sprintf("feeder: column %q: %v: %s", e.Column, e.Err, e.Detail)
}

func (e *ColumnError) Unwrap() error { return e.Err }

func colErr(col string, row int64, err error, format string, args ...any) error {
	return &ColumnError{Column: col, Row: row, Err: err, Detail: fmt.Sprintf(format, args...)}
}
