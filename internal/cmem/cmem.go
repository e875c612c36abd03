// Package cmem records which Arrow buffers live in C memory, so that
// feeder can prove a buffer is outside the Go heap before handing it to
// TensorFlow without a copy, and gives the process-wide allocator that
// readers use by default (arrow-go's mallocator when built with cgo, Go
// memory otherwise). It has no cgo of its own.
package cmem

import (
	"slices"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Track wraps mem, which must return memory outside the Go heap (a
// mallocator, or a memory.CheckedAllocator over one), and records the
// address range of every live allocation; Contains looks them up.
func Track(mem memory.Allocator) memory.Allocator {
	return &cAllocator{mem: mem}
}

var (
	defaultOnce sync.Once
	defaultMem  memory.Allocator
)

// Default returns the process-wide allocator of readers given none: one
// New allocator, shared.
func Default() memory.Allocator {
	defaultOnce.Do(func() { defaultMem = New() })
	return defaultMem
}

type cAllocator struct {
	mem memory.Allocator
}

// liveRange is one live C allocation [start, end).
type liveRange struct{ start, end uintptr }

// cRanges holds the live allocations of every tracking allocator, sorted by
// start. The set is small (one entry per live Arrow buffer) and a lookup is a
// binary search under a read lock.
var cRanges struct {
	sync.RWMutex
	r []liveRange
}

func sliceRange(b []byte) (liveRange, bool) {
	if cap(b) == 0 {
		return liveRange{}, false
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return liveRange{p, p + uintptr(cap(b))}, true
}

func cmpStart(e liveRange, t uintptr) int {
	switch {
	case e.start < t:
		return -1
	case e.start > t:
		return 1
	}
	return 0
}

func addRange(b []byte) {
	lr, ok := sliceRange(b)
	if !ok {
		return
	}
	cRanges.Lock()
	i, _ := slices.BinarySearchFunc(cRanges.r, lr.start, cmpStart)
	cRanges.r = slices.Insert(cRanges.r, i, lr)
	cRanges.Unlock()
}

func removeRange(b []byte) {
	lr, ok := sliceRange(b)
	if !ok {
		return
	}
	cRanges.Lock()
	i, found := slices.BinarySearchFunc(cRanges.r, lr.start, cmpStart)
	if found {
		cRanges.r = slices.Delete(cRanges.r, i, i+1)
	}
	cRanges.Unlock()
}

// Contains reports whether [p, p+n) lies inside one live tracked allocation.
func Contains(p unsafe.Pointer, n int) bool {
	a := uintptr(p)
	cRanges.RLock()
	defer cRanges.RUnlock()
	r := cRanges.r
	// the last range whose start <= a
	i, found := slices.BinarySearchFunc(r, a, cmpStart)
	if !found {
		i--
	}
	if i < 0 || i >= len(r) {
		return false
	}
	return a >= r[i].start && a+uintptr(n) <= r[i].end
}

func (c *cAllocator) Allocate(size int) []byte {
	b := c.mem.Allocate(size)
	addRange(b)
	return b
}

func (c *cAllocator) Reallocate(size int, b []byte) []byte {
	removeRange(b)
	nb := c.mem.Reallocate(size, b)
	addRange(nb)
	return nb
}

func (c *cAllocator) Free(b []byte) {
	removeRange(b)
	c.mem.Free(b)
}
