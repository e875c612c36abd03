package control

import (
	"fmt"
	"slices"
)

// Range is the half-open interval [Start, End) of row indices.
type Range struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// Len returns the number of rows in r.
func (r Range) Len() int64 { return r.End - r.Start }

// Split divides rows 0..n into k disjoint contiguous ranges whose lengths
// differ by at most one, the longer ones first. Every row is in exactly one
// range; when k > n some ranges are empty.
func Split(n int64, k int) ([]Range, error) {
	if n < 0 {
		return nil, fmt.Errorf("distributed: cannot split %d rows, expected a count >= 0", n)
	}
	if k < 1 {
		return nil, fmt.Errorf("distributed: cannot split rows into %d partitions, expected at least 1", k)
	}
	return splitRange(Range{0, n}, k), nil
}

func splitRange(r Range, k int) []Range {
	out := make([]Range, k)
	n := r.Len()
	q, rem := n/int64(k), n%int64(k)
	start := r.Start
	for i := range out {
		l := q
		if int64(i) < rem {
			l++
		}
		out[i] = Range{start, start + l}
		start += l
	}
	return out
}

// WorkPlan assigns row ranges to training ranks and moves the unfinished
// work of a dead rank to the survivors. The zero value is not usable; build
// one with NewWorkPlan. A WorkPlan is not safe for concurrent use; the
// Monitor guards its own.
type WorkPlan struct {
	work    [][]Range // rank -> ranges, in processing order
	alive   []bool
	version uint64 // incremented on every reassignment
}

// NewWorkPlan splits rows 0..rows into one contiguous partition per rank.
func NewWorkPlan(rows int64, ranks int) (*WorkPlan, error) {
	parts, err := Split(rows, ranks)
	if err != nil {
		return nil, err
	}
	p := &WorkPlan{work: make([][]Range, ranks), alive: make([]bool, ranks)}
	for i, r := range parts {
		if r.Len() > 0 {
			p.work[i] = []Range{r}
		}
		p.alive[i] = true
	}
	return p, nil
}

// Ranks returns the number of ranks the plan was made for.
func (p *WorkPlan) Ranks() int { return len(p.work) }

// Version returns the number of reassignments made so far.
func (p *WorkPlan) Version() uint64 { return p.version }

// Ranges returns a copy of rank's ranges in processing order.
func (p *WorkPlan) Ranges(rank int) []Range {
	if rank < 0 || rank >= len(p.work) {
		return nil
	}
	return slices.Clone(p.work[rank])
}

// Alive reports whether rank has not been declared dead.
func (p *WorkPlan) Alive(rank int) bool {
	return rank >= 0 && rank < len(p.alive) && p.alive[rank]
}

// Survivors returns the ranks not declared dead, in order.
func (p *WorkPlan) Survivors() []int {
	var out []int
	for i, a := range p.alive {
		if a {
			out = append(out, i)
		}
	}
	return out
}

// Reassign declares rank dead after it consumed done rows of its work (in
// processing order) and splits the rest evenly over the survivors, each
// getting one contiguous share appended to its ranges. It returns the ranks
// that received work. Reassigning the last survivor is an error: nobody is
// left to take the work.
func (p *WorkPlan) Reassign(rank int, done int64) ([]int, error) {
	if rank < 0 || rank >= len(p.work) {
		return nil, fmt.Errorf("distributed: rank %d out of range, plan has %d ranks", rank, len(p.work))
	}
	if !p.alive[rank] {
		return nil, fmt.Errorf("distributed: rank %d is already dead", rank)
	}
	if done < 0 {
		return nil, fmt.Errorf("distributed: rank %d reported %d rows done, expected >= 0", rank, done)
	}
	p.alive[rank] = false
	survivors := p.Survivors()
	if len(survivors) == 0 {
		p.alive[rank] = true
		return nil, fmt.Errorf("distributed: rank %d cannot be reassigned: it is the last rank alive", rank)
	}
	rest := skipRows(p.work[rank], done)
	p.work[rank] = nil
	p.version++
	var total int64
	for _, r := range rest {
		total += r.Len()
	}
	if total == 0 {
		return nil, nil
	}
	// Hand out `total` rows over the survivors: share i gets the rows
	// [offset_i, offset_i+len_i) of the flattened rest.
	var received []int
	shares := splitRange(Range{0, total}, len(survivors))
	for i, s := range shares {
		if s.Len() == 0 {
			continue
		}
		p.work[survivors[i]] = append(p.work[survivors[i]], sliceRows(rest, s)...)
		received = append(received, survivors[i])
	}
	return received, nil
}

// skipRows drops the first n rows of rs.
func skipRows(rs []Range, n int64) []Range {
	var out []Range
	for _, r := range rs {
		if n >= r.Len() {
			n -= r.Len()
			continue
		}
		out = append(out, Range{r.Start + n, r.End})
		n = 0
	}
	return out
}

// sliceRows returns the rows at flattened positions s of rs as ranges.
func sliceRows(rs []Range, s Range) []Range {
	var out []Range
	var pos int64
	for _, r := range rs {
		lo, hi := max(s.Start, pos), min(s.End, pos+r.Len())
		if lo < hi {
			out = append(out, Range{r.Start + lo - pos, r.Start + hi - pos})
		}
		pos += r.Len()
	}
	return out
}

// newWorkPlanAlive splits rows over the ranks marked alive; the others are
// dead from the start and get nothing.
func newWorkPlanAlive(rows int64, alive []bool) *WorkPlan {
	p := &WorkPlan{work: make([][]Range, len(alive)), alive: slices.Clone(alive)}
	var live []int
	for i, a := range alive {
		if a {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		return p
	}
	for i, r := range splitRange(Range{0, rows}, len(live)) {
		if r.Len() > 0 {
			p.work[live[i]] = []Range{r}
		}
	}
	return p
}

// newWorkPlanOwn gives each live rank i its own rows [sum(rows[:i]),
// sum(rows[:i+1])); dead ranks get nothing.
func newWorkPlanOwn(rows []int64, alive []bool) *WorkPlan {
	p := &WorkPlan{work: make([][]Range, len(alive)), alive: slices.Clone(alive)}
	var at int64
	for i, n := range rows {
		if alive[i] && n > 0 {
			p.work[i] = []Range{{at, at + n}}
		}
		at += n
	}
	return p
}
