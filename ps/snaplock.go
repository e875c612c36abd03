package ps

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrSnapshotDirInUse is returned by NewServer when another parameter
// server (in this process or another) owns the shard's snapshot files.
var ErrSnapshotDirInUse = errors.New("ps: snapshot directory in use")

// dirLock is a shard's ownership of its snapshot files: an exclusive lock
// on ps-shard-i-of-n.lock, held until the server stops (the kernel drops it
// when the process dies), and the incarnation number written into it. Each
// owner takes the next number, and snapshots carry it.
type dirLock struct {
	f           *os.File
	incarnation uint64
}

// lockInfo is what a lock file says about its holder.
type lockInfo struct {
	pid         int
	incarnation uint64
	since       string
}

func readLockInfo(f *os.File) lockInfo {
	var li lockInfo
	if _, err := f.Seek(0, 0); err != nil {
		return li
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		switch k {
		case "pid":
			li.pid, _ = strconv.Atoi(v)
		case "incarnation":
			li.incarnation, _ = strconv.ParseUint(v, 10, 64)
		case "since":
			li.since = v
		}
	}
	return li
}

// lockSnapshots takes ownership of the snapshot files at path (path +
// ".lock" is the lock file) or fails naming the current owner.
func lockSnapshots(path string) (*dirLock, error) {
	lp := path + ".lock"
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("ps: snapshot lock: %w", err)
	}
	if err := tryLock(f); err != nil {
		li := readLockInfo(f)
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%w: %s is held by pid %d (incarnation %d, since %s); stop that server or give this one another snapshot directory",
				ErrSnapshotDirInUse, lp, li.pid, li.incarnation, li.since)
		}
		return nil, fmt.Errorf("ps: snapshot lock %s: %w", lp, err)
	}
	li := readLockInfo(f)
	l := &dirLock{f: f, incarnation: li.incarnation + 1}
	content := fmt.Sprintf("pid %d\nincarnation %d\nsince %s\n", os.Getpid(), l.incarnation, time.Now().UTC().Format(time.RFC3339))
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt([]byte(content), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		l.release()
		return nil, fmt.Errorf("ps: snapshot lock %s: %w", lp, err)
	}
	return l, nil
}

// release gives the snapshot files up; safe on nil and more than once.
func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	unlock(l.f)
	l.f.Close()
	l.f = nil
}

// number is the owner's incarnation number (0 without a lock).
func (l *dirLock) number() uint64 {
	if l == nil {
		return 0
	}
	return l.incarnation
}
