package tf

import (
	"runtime"
	"sync/atomic"
)

// Objects counts C objects of each kind this package owns: tensors,
// graphs and sessions.
type Objects struct {
	Tensors, Graphs, Sessions int64
}

// kind names a counted kind of C object.
type kind int

const (
	kindTensor kind = iota
	kindGraph
	kindSession
	numKinds
)

var live, leaked [numKinds]atomic.Int64

// lifetime is the one lifetime record that Tensor, Graph and Session each
// hold: it counts the object as live from construction to its Close, and
// arms a cleanup that only counts the object as leaked if the collector
// finds it unreachable before Close. The cleanup never calls TensorFlow: it
// runs on the runtime's single cleanup goroutine, where a blocking C call
// (TF_CloseSession waits for running steps) would stall every other
// cleanup in the program, and freeing C memory from there would hide the
// missing Close that the count is meant to reveal. A leaked object's C
// memory stays allocated, and it stays counted in Live.
type lifetime struct {
	kind    kind
	cleanup runtime.Cleanup
}

// track counts p, of kind k, as live and arms its leak detector. Call it
// once construction has succeeded.
func track[T any](p *T, k kind) lifetime {
	live[k].Add(1)
	return lifetime{kind: k, cleanup: runtime.AddCleanup(p, noteLeak, k)}
}

// noteLeak runs when an object of kind k became unreachable without Close.
func noteLeak(k kind) { leaked[k].Add(1) }

// release disarms the leak detector and stops counting the object as live.
// The caller frees the C object and makes sure release runs once.
func (l *lifetime) release() {
	l.cleanup.Stop()
	live[l.kind].Add(-1)
}

func load(c *[numKinds]atomic.Int64) Objects {
	return Objects{Tensors: c[kindTensor].Load(), Graphs: c[kindGraph].Load(), Sessions: c[kindSession].Load()}
}

// Live returns the objects created and not yet closed, leaked ones
// included. Every kind is freed the same way: by its Close, explicitly;
// tests check that Live is back to zero (internal/leakcheck does it for
// every package that uses TensorFlow).
func Live() Objects { return load(&live) }

// Leaked returns the objects that the garbage collector found unreachable
// before their Close. Their C memory was never freed (the collector only
// counts them; it is a leak detector, not the way to free C memory), so
// they also stay in Live. A correct program keeps every count at zero.
func Leaked() Objects { return load(&leaked) }
