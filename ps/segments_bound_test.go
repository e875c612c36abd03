package ps

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestUnknownFieldLengthDoesNotAllocate: a push of a few bytes that
// declares a 2 GiB unknown field inside a chunk is rejected as truncated
// without allocating anything near that size.
func TestUnknownFieldLengthDoesNotAllocate(t *testing.T) {
	var chunk []byte
	chunk = protowire.AppendTag(chunk, 99, protowire.BytesType)
	chunk = protowire.AppendVarint(chunk, 1<<31-1)
	var msg []byte
	msg = protowire.AppendTag(msg, fPushChunks, protowire.BytesType)
	msg = protowire.AppendBytes(msg, chunk)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := wireCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(msg)}, &pushMsg{})
	runtime.ReadMemStats(&after)
	require.Error(t, err)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "decoding %d bytes allocated %d bytes", len(msg), after.TotalAlloc-before.TotalAlloc)
}
