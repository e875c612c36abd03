package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames from to to, failing with EEXIST if to exists.
func renameNoReplace(from, to string) error { return renameat2(from, to, unix.RENAME_NOREPLACE) }

// renameExchange swaps a and b, both of which must exist.
func renameExchange(a, b string) error { return renameat2(a, b, unix.RENAME_EXCHANGE) }

func renameat2(from, to string, flags uint) error {
	if portableOnly {
		return errUnsupported
	}
	switch err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags); err {
	case nil:
		return nil
	case unix.ENOSYS, unix.EINVAL, unix.EOPNOTSUPP:
		// An old kernel, or a filesystem without these flags.
		return errUnsupported
	default:
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
}
