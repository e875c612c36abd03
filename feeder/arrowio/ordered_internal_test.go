package arrowio

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecodeAheadWindow: readers of later units wait for a slot of the
// window; the reader of the unit Next reads never waits; stopping wakes
// the waiters.
func TestDecodeAheadWindow(t *testing.T) {
	s := &orderedSource{window: 2}
	s.wake = sync.NewCond(&s.gate)
	require.True(t, s.acquire(3))
	require.True(t, s.acquire(4))
	got := make(chan bool)
	go func() { got <- s.acquire(5) }()
	require.True(t, s.acquire(0), "the head unit passes a full window")
	s.release(2) // 1 in the window (unit 0's record) and unit 5's waiter
	require.True(t, <-got)
	go func() { got <- s.acquire(6) }()
	s.gate.Lock()
	s.stopped = true
	s.gate.Unlock()
	s.wake.Broadcast()
	require.False(t, <-got, "a stopped source refuses slots")
}
