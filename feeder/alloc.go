package feeder

import (
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/memory/mallocator"

	"github.com/gotflow/gotflow/internal/cmem"
)

// NewCAllocator returns an Arrow allocator backed by C malloc (arrow-go's
// mallocator, 64-byte aligned) whose allocations are recorded so that the
// conversion can prove a buffer lives outside the Go heap and hand it to
// TensorFlow without a copy. It is the default allocator of every source
// (package arrowio) and of the Feeder.
func NewCAllocator() memory.Allocator {
	return TrackCMemory(mallocator.NewMallocator())
}

// TrackCMemory wraps mem, which must return memory outside the Go heap (a
// mallocator, or a memory.CheckedAllocator over one), and records the address
// range of every live allocation. Buffers found in a recorded range are
// eligible for zero-copy; every other buffer is copied. Wrapping an allocator
// that returns Go memory breaks the cgo pointer rules: don't.
func TrackCMemory(mem memory.Allocator) memory.Allocator {
	return cmem.Track(mem)
}

// defaultAllocator is the process-wide C allocator used when none is given,
// shared with arrowio's sources.
func defaultAllocator() memory.Allocator { return cmem.Default() }
