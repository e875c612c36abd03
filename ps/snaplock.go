package ps

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gotflow/gotflow/internal/filelock"
)

// ErrSnapshotDirInUse is returned by NewServer when another parameter
// server (in this process or another) owns the shard's snapshot files.
var ErrSnapshotDirInUse = errors.New("ps: snapshot directory in use")

// dirLock is a shard's ownership of its snapshot files: an exclusive lock
// on ps-shard-i-of-n.snapshot.lock, held until the server stops (the
// kernel drops it when the process dies), and the incarnation number
// written into it. Each owner takes the next number, and snapshots carry
// it.
type dirLock struct {
	l           *filelock.Lock
	incarnation uint64
}

// lockSnapshots takes ownership of the snapshot files at path (path +
// ".lock" is the lock file) or fails naming the current owner.
func lockSnapshots(path string) (*dirLock, error) {
	lp := path + ".lock"
	l, prev, err := filelock.Acquire(lp)
	if errors.Is(err, filelock.ErrLocked) {
		return nil, fmt.Errorf("%w: %w; stop that server or give this one another snapshot directory", ErrSnapshotDirInUse, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ps: snapshot lock: %w", err)
	}
	var last uint64
	for _, line := range strings.Split(prev, "\n") {
		if v, ok := strings.CutPrefix(line, "incarnation "); ok {
			last, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	d := &dirLock{l: l, incarnation: last + 1}
	if err := l.Write(filelock.Holder("incarnation " + strconv.FormatUint(d.incarnation, 10))); err != nil {
		l.Release()
		return nil, fmt.Errorf("ps: snapshot lock %s: %w", lp, err)
	}
	return d, nil
}

// release gives the snapshot files up; safe on nil and more than once.
func (d *dirLock) release() {
	if d != nil {
		d.l.Release()
	}
}

// held reports whether the server still owns its snapshot files.
func (d *dirLock) held() bool { return d != nil && d.l.Held() }

// number is the owner's incarnation number (0 without a lock).
func (d *dirLock) number() uint64 {
	if d == nil {
		return 0
	}
	return d.incarnation
}
