//go:build unix

package filelock

import (
	"errors"
	"os"
	"syscall"
)

var errBusy = errors.New("locked")

// tryLock takes an exclusive flock on f without waiting. flock locks
// belong to the open file, so a second server in the same process is
// refused as well.
func tryLock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errBusy
		}
		return err
	}
}

func unlock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
