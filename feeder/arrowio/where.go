package arrowio

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// Where returns a source with the rows of src whose column equals value,
// compared as text (strings, dictionary-encoded strings, integers, bools).
// Matching rows are passed on as zero-copy slices of src's records. It
// takes ownership of src: closing the result closes src.
func Where(src Source, column, value string) (Source, error) {
	idx := src.Schema().FieldIndices(column)
	if len(idx) == 0 {
		src.Close()
		return nil, columnError(column, ErrMissingColumn, "not in the schema; Where cannot filter on it")
	}
	f := src.Schema().Field(idx[0])
	if _, err := textOf(f.Type); err != nil {
		src.Close()
		return nil, columnError(column, ErrType, "%s", err)
	}
	return &Filtered{Column: column, Value: value, src: src, col: idx[0]}, nil
}

// Filtered is the source Where returns.
type Filtered struct {
	// Column and Value are the filter: rows whose Column equals Value.
	Column, Value string

	src     Source
	col     int
	pending []arrow.RecordBatch
}

// Unfiltered returns the source Where filters.
func (w *Filtered) Unfiltered() Source { return w.src }

func (w *Filtered) Schema() *arrow.Schema { return w.src.Schema() }

func (w *Filtered) Next(ctx context.Context) (arrow.RecordBatch, error) {
	for len(w.pending) == 0 {
		rec, err := w.src.Next(ctx)
		if err != nil {
			return nil, err
		}
		w.pending, err = w.filter(rec)
		rec.Release()
		if err != nil {
			return nil, err
		}
	}
	r := w.pending[0]
	w.pending = w.pending[1:]
	return r, nil
}

// filter slices rec into its runs of matching rows.
func (w *Filtered) filter(rec arrow.RecordBatch) ([]arrow.RecordBatch, error) {
	text, _ := textOf(rec.Column(w.col).DataType())
	col := rec.Column(w.col)
	var out []arrow.RecordBatch
	start := -1
	n := int(rec.NumRows())
	for i := 0; i <= n; i++ {
		match := i < n && col.IsValid(i) && text(col, i) == w.Value
		switch {
		case match && start < 0:
			start = i
		case !match && start >= 0:
			out = append(out, rec.NewSlice(int64(start), int64(i)))
			start = -1
		}
	}
	return out, nil
}

// textOf returns how to read a value of type dt as text.
func textOf(dt arrow.DataType) (func(arrow.Array, int) string, error) {
	switch dt.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		return func(a arrow.Array, i int) string { return a.ValueStr(i) }, nil
	case arrow.DICTIONARY:
		return func(a arrow.Array, i int) string {
			d := a.(*array.Dictionary)
			return d.Dictionary().ValueStr(d.GetValueIndex(i))
		}, nil
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64, arrow.BOOL:
		return func(a arrow.Array, i int) string { return a.ValueStr(i) }, nil
	}
	return nil, fmt.Errorf("has type %s; Where compares strings, integers and bools", dt)
}

func (w *Filtered) Close() error {
	for _, r := range w.pending {
		r.Release()
	}
	w.pending = nil
	return w.src.Close()
}
