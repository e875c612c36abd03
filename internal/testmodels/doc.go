// Package testmodels locates the Python-made test models under
// scripts/fixtures/<name>/ and decodes their expected.json: the inputs fed to
// each model and the outputs Python TensorFlow computed for them, so tests can
// compare gotflow's results with TensorFlow's.
//
// The models are built by scripts/fixtures/generate.py (format documented at
// the top of that file); regenerate them with
//
//	.venv/bin/python scripts/fixtures/generate.py [name ...]
//
// (make fixtures runs the same command). The package is pure Go and does not
// import tf, so any package's tests can use it.
//
// # Ownership
//
// LoadExpected returns freshly decoded values owned by the caller; nothing is
// cached or shared.
//
// # Concurrency
//
// All functions are safe for concurrent use.
//
// # Errors
//
// LoadExpected returns an error naming the file when it is missing, is not
// valid JSON, has another format, or holds an array whose data does not match
// its shape or dtype.
package testmodels
