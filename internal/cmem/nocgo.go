//go:build !cgo

package cmem

import "github.com/apache/arrow-go/v18/arrow/memory"

// New returns Go memory: without cgo there is no C allocator, and nothing
// can hand a buffer to TensorFlow anyway.
func New() memory.Allocator { return memory.NewGoAllocator() }
