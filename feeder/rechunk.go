package feeder

import (
	"math/rand/v2"

	"github.com/apache/arrow-go/v18/arrow"
)

// rechunker cuts a stream of records into batches of exactly batch rows.
// Every segment it returns holds its own reference on its record.
type rechunker struct {
	batch    int
	dropLast bool
	pending  []segment
	rows     int
}

// add takes over the caller's reference on rec.
func (r *rechunker) add(rec arrow.RecordBatch, base int64) [][]segment {
	n := int(rec.NumRows())
	if n == 0 {
		rec.Release()
		return nil
	}
	if r.batch == 0 {
		return [][]segment{{{rec: rec, off: 0, n: n, base: base}}}
	}
	var out [][]segment
	for off := 0; off < n; {
		take := min(r.batch-r.rows, n-off)
		rec.Retain()
		r.pending = append(r.pending, segment{rec: rec, off: off, n: take, base: base})
		r.rows += take
		off += take
		if r.rows == r.batch {
			out = append(out, r.pending)
			r.pending, r.rows = nil, 0
		}
	}
	rec.Release()
	return out
}

// flush returns the last partial batch unless dropLast.
func (r *rechunker) flush() [][]segment {
	if r.rows == 0 {
		return nil
	}
	if r.dropLast {
		r.release()
		return nil
	}
	out := [][]segment{r.pending}
	r.pending, r.rows = nil, 0
	return out
}

func (r *rechunker) release() {
	releaseSegs(r.pending)
	r.pending, r.rows = nil, 0
}

// held is a record in the shuffle buffer and how many of its rows remain.
type held struct {
	rec       arrow.RecordBatch
	remaining int
	base      int64
}

type rowRef struct {
	h   *held
	row int
}

// shuffler is a seeded shuffle buffer over rows, like tf.data's shuffle:
// records are added whole, and once the buffer holds at least size+batch rows
// a batch is drawn, every row uniformly from the buffer. Batches are exactly
// batch rows except the last.
type shuffler struct {
	size, batch int
	dropLast    bool
	rng         *rand.Rand
	buf         []rowRef
}

// add takes over the caller's reference on rec.
func (s *shuffler) add(rec arrow.RecordBatch, base int64) [][]segment {
	n := int(rec.NumRows())
	if n == 0 {
		rec.Release()
		return nil
	}
	h := &held{rec: rec, remaining: n, base: base}
	for i := 0; i < n; i++ {
		s.buf = append(s.buf, rowRef{h, i})
	}
	var out [][]segment
	for len(s.buf) >= s.size+s.batch {
		out = append(out, s.draw(s.batch))
	}
	return out
}

// draw removes k random rows from the buffer.
func (s *shuffler) draw(k int) []segment {
	segs := make([]segment, 0, k)
	for range k {
		j := s.rng.IntN(len(s.buf))
		ref := s.buf[j]
		last := len(s.buf) - 1
		s.buf[j] = s.buf[last]
		s.buf[last] = rowRef{}
		s.buf = s.buf[:last]
		if m := len(segs) - 1; m >= 0 && segs[m].rec == ref.h.rec && segs[m].off+segs[m].n == ref.row {
			segs[m].n++
		} else {
			ref.h.rec.Retain()
			segs = append(segs, segment{rec: ref.h.rec, off: ref.row, n: 1, base: ref.h.base})
		}
		ref.h.remaining--
		if ref.h.remaining == 0 {
			ref.h.rec.Release()
		}
	}
	return segs
}

// flush drains the buffer at the end of the stream.
func (s *shuffler) flush() [][]segment {
	var out [][]segment
	for len(s.buf) >= s.batch {
		out = append(out, s.draw(s.batch))
	}
	if len(s.buf) > 0 {
		if s.dropLast {
			s.release()
		} else {
			out = append(out, s.draw(len(s.buf)))
		}
	}
	return out
}

func (s *shuffler) release() {
	for _, ref := range s.buf {
		ref.h.remaining--
		if ref.h.remaining == 0 {
			ref.h.rec.Release()
		}
	}
	s.buf = nil
}
