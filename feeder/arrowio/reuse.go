package arrowio

import (
	"math/bits"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// reuseAllocator keeps freed buffers and hands them out again, so that a
// steady stream of same-sized allocations (the direct Parquet decoder's
// column buffers, the page reader's page buffers) neither zeroes fresh
// memory nor faults its pages in each time, nor, for Go memory, makes
// garbage. At most maxHeld bytes are kept; the rest is freed.
//
// Buffers come back with their old contents: only for users that overwrite
// what they allocate.
type reuseAllocator struct {
	mem     memory.Allocator // nil: Go memory
	pow2    bool             // round sizes up to powers of two (reuse across sizes)
	maxHeld int

	mu   sync.Mutex
	free map[int][][]byte // by capacity
	held int
}

// minClass is the smallest power-of-two class: page-aligned Go allocations.
const minClass = 64 << 10

func (a *reuseAllocator) class(size int) int {
	if !a.pow2 {
		return size
	}
	if size <= minClass {
		return minClass
	}
	return 1 << bits.Len(uint(size-1))
}

func (a *reuseAllocator) Allocate(size int) []byte {
	if size == 0 && a.mem != nil {
		return a.mem.Allocate(0)
	}
	c := a.class(size)
	a.mu.Lock()
	if l := a.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.held -= cap(b)
		a.mu.Unlock()
		return b[:size]
	}
	a.mu.Unlock()
	if a.mem == nil {
		return make([]byte, size, c)
	}
	return a.mem.Allocate(c)[:size]
}

func (a *reuseAllocator) Reallocate(size int, b []byte) []byte {
	if cap(b) >= size {
		return b[:size]
	}
	nb := a.Allocate(size)
	copy(nb, b)
	a.Free(b)
	return nb
}

func (a *reuseAllocator) Free(b []byte) {
	if cap(b) == 0 {
		if a.mem != nil {
			a.mem.Free(b)
		}
		return
	}
	b = b[:cap(b)]
	a.mu.Lock()
	if a.held+len(b) <= a.maxHeld {
		if a.free == nil {
			a.free = map[int][][]byte{}
		}
		a.free[len(b)] = append(a.free[len(b)], b)
		a.held += len(b)
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	if a.mem != nil {
		a.mem.Free(b)
	}
}
