package arrowio

import "math/rand/v2"

// Piece is rows [Start, End) of unit Unit of a StreamDataset (rows counted
// after the dataset's filter).
type Piece struct {
	Unit       int
	Start, End int64
}

// Rows returns the number of rows in p.
func (p Piece) Rows() int64 { return p.End - p.Start }

// Pieces returns every unit whole, in file and row-group order.
func (d *StreamDataset) Pieces() []Piece {
	out := make([]Piece, len(d.units))
	for i, u := range d.units {
		out[i] = Piece{Unit: i, End: u.Rows}
	}
	return out
}

// SplitTail divides the dataset in file order into the first rows and the
// last fraction of them (rounded down, as Keras' validation_split takes
// them): training and validation pieces. A unit on the border is cut.
func (d *StreamDataset) SplitTail(fraction float64) (train, val []Piece) {
	nVal := int64(float64(d.rows) * fraction)
	all := d.Pieces()
	return RangePieces(all, 0, d.rows-nVal), RangePieces(all, d.rows-nVal, d.rows)
}

// RowsOf sums the rows of pieces.
func RowsOf(pieces []Piece) int64 {
	var n int64
	for _, p := range pieces {
		n += p.Rows()
	}
	return n
}

// RangePieces returns rows [lo, hi) of the row sequence that pieces make
// in order, as pieces (the first and last possibly cut).
func RangePieces(pieces []Piece, lo, hi int64) []Piece {
	var out []Piece
	var at int64
	for _, p := range pieces {
		n := p.Rows()
		if at+n <= lo {
			at += n
			continue
		}
		if at >= hi {
			break
		}
		s, e := p.Start+max(lo-at, 0), p.Start+min(hi-at, n)
		if e > s {
			out = append(out, Piece{Unit: p.Unit, Start: s, End: e})
		}
		at += n
	}
	return out
}

// EpochOrder returns pieces in the order of one epoch: permuted by a
// generator seeded with (seed, epoch) when shuffle is set, else as given.
// It is a pure function: the same arguments give the same order on every
// machine, and every epoch gets another one.
func EpochOrder(pieces []Piece, seed uint64, epoch int, shuffle bool) []Piece {
	out := append([]Piece(nil), pieces...)
	if shuffle {
		r := rand.New(rand.NewPCG(seed^0x6a09e667f3bcc908, uint64(epoch)*0x9e3779b97f4a7c15+1))
		r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	return out
}

// Deal splits the row sequence of an epoch's pieces into world contiguous
// shares whose row counts differ by at most one, for ranks 0..world-1: the
// assignment follows the epoch's order, so it changes with every epoch.
func Deal(order []Piece, world int) [][]Piece {
	n := RowsOf(order)
	out := make([][]Piece, world)
	q, rem := n/int64(world), n%int64(world)
	var lo int64
	for i := range out {
		l := q
		if int64(i) < rem {
			l++
		}
		out[i] = RangePieces(order, lo, lo+l)
		lo += l
	}
	return out
}

// Steps is how the workers of an epoch run the same number of steps.
type Steps struct {
	// Steps is the number of batches every worker runs.
	Steps int
	// Dropped is the rows of each share left out to equalise the step
	// counts (only when a batch of one row cannot be split further: with
	// BatchSize 1 and shares of unequal size). Zero everywhere otherwise:
	// no row is dropped or repeated.
	Dropped []int64
}

// EqualSteps finds the step count that lets shares of the given row counts
// run the same number of steps with batches of at most batch rows, and
// which rows (if any) must be dropped for it. A share then runs
// BatchLayout(rows, steps, batch).
func EqualSteps(shares []int64, batch int) Steps {
	b := int64(batch)
	var lo, hi int64 = -1, 0
	for _, r := range shares {
		if lo < 0 || r < lo {
			lo = r
		}
		hi = max(hi, r)
	}
	s := (hi + b - 1) / b
	dropped := make([]int64, len(shares))
	if lo < s { // a share cannot fill s steps with one row each
		s = (lo + b - 1) / b
		for i, r := range shares {
			dropped[i] = max(r-s*b, 0)
		}
	}
	return Steps{Steps: int(s), Dropped: dropped}
}

// BatchLayout returns the sizes of steps batches of at most batch rows
// that cover rows (less the rows beyond steps*batch): full batches first,
// and the rest spread so that each later batch keeps at least one row.
// steps 0 means as many full batches as fit, then the remainder.
func BatchLayout(rows int64, steps, batch int) []int {
	b := int64(batch)
	if steps <= 0 {
		steps = int((rows + b - 1) / b)
	}
	rows = min(rows, int64(steps)*b)
	out := make([]int, 0, steps)
	left := rows
	for i := range steps {
		n := min(b, left-int64(steps-1-i))
		if n < 1 {
			n = 1
		}
		if n > left {
			n = left
		}
		out = append(out, int(n))
		left -= n
	}
	return out
}
