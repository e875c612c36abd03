//go:build !linux

package atomicfile

// renameNoReplace and renameExchange need renameat2, which only Linux
// has: elsewhere commits use placePortable.
func renameNoReplace(from, to string) error { return errUnsupported }

func renameExchange(a, b string) error { return errUnsupported }
