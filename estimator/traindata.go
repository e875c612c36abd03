package estimator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/gotflow/gotflow/feeder"
	"github.com/gotflow/gotflow/tf"
)

// trainColumn holds one converted input or label for every row, so that
// batches in any order are one gather away.
type trainColumn struct {
	name     string // bundle input or label name
	dtype    tf.DataType
	row      []int64 // shape of one row
	rowBytes int
	data     []byte   // fixed-width values, row-major
	strs     [][]byte // string values
}

// trainData is a training set converted once by a feeder.Plan: columns for
// the bundle's inputs, then its labels.
type trainData struct {
	rows    int
	cols    []trainColumn
	nInputs int
}

// loadTrainData reads src to the end and converts every record with plan.
// names are the bundle names of the plan's inputs (inputs then labels).
func loadTrainData(ctx context.Context, src feeder.Source, plan *feeder.Plan, names []string, nInputs int) (*trainData, error) {
	d := &trainData{cols: make([]trainColumn, len(names)), nInputs: nInputs}
	for i := range d.cols {
		d.cols[i].name = names[i]
	}
	for {
		rec, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("estimator: read training data: %w", err)
		}
		if rec.NumRows() == 0 {
			rec.Release()
			continue
		}
		b, err := plan.ConvertRows(rec, 0, int(rec.NumRows()))
		rec.Release()
		if err != nil {
			return nil, fmt.Errorf("estimator: training data row %d on: %w", d.rows, err)
		}
		err = d.append(b)
		b.Close()
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (d *trainData) append(b *feeder.Batch) error {
	for i, t := range b.Tensors {
		c := &d.cols[i]
		shape := t.Shape()
		if len(shape) == 0 {
			return fmt.Errorf("estimator: %s: converted to a scalar, want a batch", c.name)
		}
		if c.dtype == 0 {
			c.dtype, c.row = t.DataType(), shape[1:]
			c.rowBytes = t.DataType().Size()
			for _, dim := range c.row {
				c.rowBytes *= int(dim)
			}
		}
		if t.DataType() == tf.String {
			s, err := t.Strings()
			if err != nil {
				return fmt.Errorf("estimator: %s: %w", c.name, err)
			}
			c.strs = append(c.strs, s...)
			continue
		}
		c.data = append(c.data, t.Bytes()...)
	}
	d.rows += b.NumRows()
	return nil
}

// gather builds one batch of tensors (inputs, then labels) from the given
// rows. The caller closes the tensors.
func (d *trainData) gather(rows []int) (inputs, labels []*tf.Tensor, err error) {
	out := make([]*tf.Tensor, 0, len(d.cols))
	fail := func(err error) ([]*tf.Tensor, []*tf.Tensor, error) {
		closeAll(out)
		return nil, nil, err
	}
	for i := range d.cols {
		c := &d.cols[i]
		shape := append([]int64{int64(len(rows))}, c.row...)
		var t *tf.Tensor
		if c.dtype == tf.String {
			per := len(c.strs) / max(d.rows, 1)
			vals := make([][]byte, 0, len(rows)*per)
			for _, r := range rows {
				vals = append(vals, c.strs[r*per:(r+1)*per]...)
			}
			t, err = tf.NewStringTensor(shape, vals)
		} else {
			rb := c.rowBytes
			t, err = tf.NewTensorFill(c.dtype, shape, func(buf []byte) error {
				for j, r := range rows {
					copy(buf[j*rb:(j+1)*rb], c.data[r*rb:(r+1)*rb])
				}
				return nil
			})
		}
		if err != nil {
			return fail(fmt.Errorf("estimator: batch of %s: %w", c.name, err))
		}
		out = append(out, t)
	}
	return out[:d.nInputs], out[d.nInputs:], nil
}

func closeAll(ts []*tf.Tensor) {
	for _, t := range ts {
		t.Close()
	}
}

// splitRows returns the training rows and the validation rows: the last
// fraction of the data, as Keras' validation_split takes it.
func splitRows(n int, fraction float64) (train, val []int) {
	nVal := int(float64(n) * fraction)
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return all[:n-nVal], all[n-nVal:]
}

// partition deals rows to n workers in contiguous, equal-sized parts
// (differing by at most one row), after a seeded shuffle when shuffle is set.
func partition(rows []int, n int, shuffle bool, seed uint64) [][]int {
	order := append([]int(nil), rows...)
	if shuffle {
		r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	}
	parts := make([][]int, n)
	for i := range parts {
		lo, hi := i*len(order)/n, (i+1)*len(order)/n
		parts[i] = order[lo:hi]
	}
	return parts
}

// epochOrder returns rows in the order of one epoch: shuffled by seed when
// shuffle is set, else as they are.
func epochOrder(rows []int, shuffle bool, seed uint64) []int {
	if !shuffle {
		return rows
	}
	order := append([]int(nil), rows...)
	r := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}
