// Package leakcheck ends a package's tests with a check that they left
// nothing behind: no goroutines, no Arrow memory on the shared checked
// allocator, and whatever else an Option adds (package
// internal/leakcheck/tfleak adds "no live TensorFlow objects"). It is for
// tests only: a package's TestMain calls Main.
//
//	func TestMain(m *testing.M) { leakcheck.Main(m, tfleak.Objects()) }
//
// It links neither cgo nor package tf, so cgo-free packages can use it.
// No goroutine is ignored by default; IgnoreGoroutine lets one through
// and must say why. Verify runs the same checks on demand.
//
// # Ownership
//
// Allocator returns one process-wide checked allocator; tests allocate
// Arrow memory through it and release every buffer they make. Main owns
// the process: it exits.
//
// # Concurrency
//
// Allocator is safe for concurrent use. Main runs the checks after every
// test has returned; a goroutine that is still finishing gets goleak's
// short retry window, never a sleep.
//
// # Errors
//
// When the tests passed but a check fails, Main prints what leaked (the
// counts, Arrow allocation sites, goroutine stacks) to stderr and exits
// with status 1. When the tests failed it exits with their status and
// checks nothing.
package leakcheck
