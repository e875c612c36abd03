// Package tfleak adds to internal/leakcheck the check that a package's
// tests closed every TensorFlow tensor, graph and session they made. It
// links package tf (and so cgo): only packages that use TensorFlow import
// it. It is for tests only.
//
//	func TestMain(m *testing.M) { leakcheck.Main(m, tfleak.Objects()) }
//
// # Ownership
//
// It owns nothing: it reads tf.Live and tf.Leaked.
//
// # Concurrency
//
// The check runs once, after every test returned.
//
// # Errors
//
// The check fails when tf.Live is not zero; its error gives the count of
// each kind left open and how many of those the garbage collector found
// unreachable (objects nothing can Close any more).
package tfleak

import (
	"fmt"
	"runtime"

	"github.com/gotflow/gotflow/internal/leakcheck"
	"github.com/gotflow/gotflow/tf"
)

// Objects is the leakcheck option that fails the tests when a TensorFlow
// tensor, graph or session is still open after them.
func Objects() leakcheck.Option {
	return leakcheck.Check("tf", check)
}

func check() error {
	live := tf.Live()
	if live == (tf.Objects{}) {
		return nil
	}
	// Let the collector find what nothing references any more, so the
	// report can tell forgotten objects from ones still held somewhere.
	// The counts of live objects do not depend on it.
	runtime.GC()
	runtime.GC()
	return fmt.Errorf("%s not closed (%s of them unreachable: garbage collected without Close)",
		describe(live), describe(tf.Leaked()))
}

func describe(o tf.Objects) string {
	return fmt.Sprintf("%d tensors, %d graphs, %d sessions", o.Tensors, o.Graphs, o.Sessions)
}
