//go:build cgo

package cmem

import (
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/arrow/memory/mallocator"
)

// New returns an allocator backed by C malloc (arrow-go's mallocator,
// 64-byte aligned) whose allocations are tracked.
func New() memory.Allocator { return Track(mallocator.NewMallocator()) }
