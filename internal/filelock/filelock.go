// Package filelock holds exclusive, advisory locks on files for as long as
// a process keeps them: the kernel drops a lock when its holder dies, so a
// killed process never leaves a stale lock behind. The lock file records
// its holder, for the message of whoever is refused.
package filelock

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ErrLocked is returned by Acquire when another holder has the lock.
var ErrLocked = errors.New("locked by another process")

// lockedError names the file and its holder; it matches ErrLocked.
type lockedError struct{ path, holder string }

func (e *lockedError) Error() string        { return e.path + " is held by " + e.holder }
func (e *lockedError) Is(target error) bool { return target == ErrLocked }

// Lock is a held lock; Release gives it up.
type Lock struct {
	f *os.File
}

// Acquire takes the lock on path without waiting, creating the file. The
// file's previous content (what the last holder wrote with Write) is
// returned; a refusal wraps ErrLocked and quotes the holder's content.
func Acquire(path string) (*Lock, string, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, "", err
	}
	prev, _ := os.ReadFile(path)
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errBusy) {
			holder := strings.ReplaceAll(strings.TrimSpace(string(prev)), "\n", ", ")
			if holder == "" {
				holder = "another process"
			}
			return nil, string(prev), &lockedError{path: path, holder: holder}
		}
		return nil, string(prev), fmt.Errorf("%s: %w", path, err)
	}
	return &Lock{f: f}, string(prev), nil
}

// Write replaces the lock file's content, fsynced, for the next holder or
// the next refused one to read.
func (l *Lock) Write(content string) error {
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	if _, err := l.f.WriteAt([]byte(content), 0); err != nil {
		return err
	}
	return l.f.Sync()
}

// Holder is the content Acquire's callers write by convention: this
// process's id and when it took the lock, plus extra lines.
func Holder(extra ...string) string {
	return strings.Join(append([]string{fmt.Sprintf("pid %d", os.Getpid()), "since " + time.Now().UTC().Format(time.RFC3339)}, extra...), "\n") + "\n"
}

// Release gives the lock up; safe on nil and more than once.
func (l *Lock) Release() {
	if l == nil || l.f == nil {
		return
	}
	unlock(l.f)
	l.f.Close()
	l.f = nil
}

// Held reports whether the lock is still held by this process.
func (l *Lock) Held() bool { return l != nil && l.f != nil }
