package ps

import (
	"fmt"
	"slices"
	"sort"

	"github.com/gotflow/gotflow/ps/pspb"
)

// DefaultChunkElements is the largest part a variable is stored as: bigger
// variables are split into chunks of this many elements (4 MiB of float32),
// which may live on different shards.
const DefaultChunkElements = 1 << 20

// partRef locates one chunk of a variable.
type partRef struct {
	v      int // index of the variable in the layout
	index  uint32
	offset int
	length int
	shard  int
}

// layout is the deterministic client-side routing of variables to shards:
// every client that registers the same variables in the same order with the
// same chunk size and number of shards computes the same layout.
type layout struct {
	vars    []Variable // Init dropped
	sizes   []int
	byName  map[string]int
	parts   [][]partRef // per variable
	byShard [][]partRef // per shard, in placement order
	load    []int       // elements per shard
}

// newLayout splits variables into chunks of at most chunk elements and
// places them on numShards shards: largest part first, each on the shard
// with the fewest elements so far (lowest index on ties).
func newLayout(vars []Variable, chunk, numShards int) (*layout, error) {
	if numShards <= 0 {
		return nil, fmt.Errorf("ps: %d shards, want at least 1", numShards)
	}
	if chunk <= 0 {
		return nil, fmt.Errorf("ps: chunk size %d, want > 0", chunk)
	}
	if len(vars) == 0 {
		return nil, fmt.Errorf("ps: no variables to register")
	}
	l := &layout{byName: make(map[string]int, len(vars)), parts: make([][]partRef, len(vars)),
		byShard: make([][]partRef, numShards), load: make([]int, numShards)}
	var all []partRef
	for i, v := range vars {
		if v.Name == "" {
			return nil, fmt.Errorf("ps: variable %d has an empty name", i)
		}
		if _, dup := l.byName[v.Name]; dup {
			return nil, fmt.Errorf("ps: variable %q registered twice", v.Name)
		}
		n, err := numElements(v.Name, v.Shape)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("ps: variable %q: shape %v has no elements", v.Name, v.Shape)
		}
		if v.Init != nil && len(v.Init) != n {
			return nil, fmt.Errorf("ps: variable %q: %d initial values, want %d for shape %v", v.Name, len(v.Init), n, v.Shape)
		}
		l.byName[v.Name] = i
		l.vars = append(l.vars, Variable{Name: v.Name, Shape: slices.Clone(v.Shape), Trainable: v.Trainable})
		l.sizes = append(l.sizes, n)
		for off, idx := 0, uint32(0); off < n; off, idx = off+chunk, idx+1 {
			p := partRef{v: i, index: idx, offset: off, length: min(chunk, n-off)}
			l.parts[i] = append(l.parts[i], p)
			all = append(all, p)
		}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].length > all[b].length })
	for _, p := range all {
		best := 0
		for s := 1; s < numShards; s++ {
			if l.load[s] < l.load[best] {
				best = s
			}
		}
		p.shard = best
		l.load[best] += p.length
		l.parts[p.v][p.index].shard = best
		l.byShard[best] = append(l.byShard[best], p)
	}
	return l, nil
}

// spec returns the wire declaration of p.
func (l *layout) spec(p partRef) *pspb.PartSpec {
	v := l.vars[p.v]
	return &pspb.PartSpec{Name: v.Name, Index: p.index, Shape: v.Shape,
		Offset: uint64(p.offset), Length: uint64(p.length), Trainable: v.Trainable}
}

// lookup returns the part a chunk refers to.
func (l *layout) lookup(c *pspb.Chunk) (partRef, error) {
	i, ok := l.byName[c.GetName()]
	if !ok || int(c.GetIndex()) >= len(l.parts[i]) {
		return partRef{}, fmt.Errorf("ps: server sent %s, which this client did not register", chunkName(c))
	}
	return l.parts[i][c.GetIndex()], nil
}
