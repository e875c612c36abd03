package ps

import (
	"math/bits"
	"runtime"
	"sync"

	"google.golang.org/grpc/mem"
)

// wirePool is the buffer pool of the shard's and the client's gRPC
// transports. gRPC's default pool clears every buffer it hands out; every
// buffer gRPC asks for is about to be filled by a read of exactly that
// length, and clearing megabytes of frame and read buffers per push costs
// as much as copying them. Buffers come in power-of-two classes from 256
// bytes to 16 MiB; other sizes are allocated and dropped.
var wirePool mem.BufferPool = newDirtyPool(8, 24)

type dirtyPool struct {
	min, max int // size class exponents
	classes  []sync.Pool
}

func newDirtyPool(min, max int) *dirtyPool {
	return &dirtyPool{min: min, max: max, classes: make([]sync.Pool, max-min+1)}
}

// class returns the index of the smallest class holding n bytes, or -1.
func (p *dirtyPool) class(n int) int {
	e := p.min
	if n > 1<<p.min {
		e = bits.Len(uint(n - 1))
	}
	if e > p.max {
		return -1
	}
	return e - p.min
}

func (p *dirtyPool) Get(n int) *[]byte {
	k := p.class(n)
	if k < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.classes[k].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := makeNoZero(1 << (k + p.min))[:n]
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	k := p.class(c)
	if k < 0 || c != 1<<(k+p.min) {
		return // not one of ours
	}
	*b = (*b)[:0]
	p.classes[k].Put(b)
}

// spreadCopy copies src into dst (of the same length) on up to GOMAXPROCS
// goroutines when it is large enough for that to pay: one core does not
// saturate memory bandwidth.
func spreadCopy(dst, src []byte) {
	const grain = 1 << 20
	parts := min(runtime.GOMAXPROCS(0), len(src)/grain)
	if parts < 2 {
		copy(dst, src)
		return
	}
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		lo, hi := i*len(src)/parts, (i+1)*len(src)/parts
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[lo:hi], src[lo:hi])
		}()
	}
	copy(dst[:len(src)/parts], src[:len(src)/parts])
	wg.Wait()
}
