// Package optimtest reads the Keras parity fixture of package optim
// (optim/testdata/optimizer_parity.json, written by
// testdata/record_optimizers.py) and compares values with it, for the
// tests of optim and of the parameter server that replay it. It is for
// tests only; like ps, it has no cgo.
//
// # Ownership
//
// LoadParity returns a fixture the caller owns.
//
// # Concurrency
//
// The functions are safe for concurrent use.
//
// # Errors
//
// A fixture that cannot be read or holds no case, and a value outside
// Tol, fail the test; a mismatch names the element and both values.
package optimtest
