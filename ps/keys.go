package ps

import (
	"sync"

	"github.com/gotflow/gotflow/ps/pspb"
)

// keyEntry is one push's idempotency record. done is closed when the push
// has been applied (resp set) or has failed (err set; the key is then
// forgotten so that a retry applies it).
type keyEntry struct {
	done    chan struct{}
	resp    *pspb.PushResponse
	err     error
	applied bool   // recorded in the FIFO (by markApplied or finish)
	lsn     uint64 // the write-ahead log record of the change (0: none)
}

// keyCache remembers the idempotency keys of the most recent applied pushes
// (a bounded FIFO) and the pushes in flight.
type keyCache struct {
	mu   sync.Mutex
	m    map[string]*keyEntry
	fifo []string // applied keys, oldest first
	cap  int
}

func newKeyCache(n int) *keyCache {
	return &keyCache{m: map[string]*keyEntry{}, cap: n}
}

// begin returns the entry for key and whether it existed; a new entry is in
// flight until finish.
func (k *keyCache) begin(key string) (*keyEntry, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e, ok := k.m[key]; ok {
		return e, true
	}
	e := &keyEntry{done: make(chan struct{})}
	k.m[key] = e
	return e, false
}

// markApplied records key as applied. The server calls it while it holds
// the lock under which it applied the push, so that a snapshot (taken under
// the same lock) holds the push's values exactly when it holds its key.
func (k *keyCache) markApplied(key string, e *keyEntry, lsn uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.lsn = lsn
	k.appliedLocked(key, e)
}

// replayed records the keys of a change replayed from the write-ahead log
// as applied, answered like keys restored from a snapshot.
func (k *keyCache) replayed(keys []string, info *pspb.ServerInfo, lsn uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range keys {
		e := &keyEntry{done: make(chan struct{}), resp: &pspb.PushResponse{Info: info, LrScale: 1}, lsn: lsn}
		close(e.done)
		k.m[key] = e
		k.appliedLocked(key, e)
	}
}

// finish records the outcome of the push that began key.
func (k *keyCache) finish(key string, e *keyEntry, resp *pspb.PushResponse, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e.resp, e.err = resp, err
	close(e.done)
	if err != nil && !e.applied {
		if k.m[key] == e {
			delete(k.m, key)
		}
		return
	}
	k.appliedLocked(key, e)
}

func (k *keyCache) appliedLocked(key string, e *keyEntry) {
	if e.applied {
		return
	}
	e.applied = true
	k.fifo = append(k.fifo, key)
	for len(k.fifo) > k.cap {
		old := k.fifo[0]
		k.fifo = k.fifo[1:]
		if oe, ok := k.m[old]; ok && oe != e {
			delete(k.m, old)
		}
	}
}

// applied returns the remembered applied keys, oldest first.
func (k *keyCache) applied() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.fifo...)
}

// reset replaces the cache content with applied keys (after a restore).
func (k *keyCache) reset(keys []string, info *pspb.ServerInfo) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m = make(map[string]*keyEntry, len(keys))
	k.fifo = k.fifo[:0]
	for _, key := range keys {
		e := &keyEntry{done: make(chan struct{}), resp: &pspb.PushResponse{Info: info, LrScale: 1}}
		close(e.done)
		k.m[key] = e
		k.fifo = append(k.fifo, key)
	}
}
