package flight

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"google.golang.org/grpc/codes"

	"github.com/gotflow/gotflow/serving"
)

// job is a bulk job's predictions, from DoPut until DoGet or expiry.
type job struct {
	schema  *arrow.Schema
	recs    []arrow.RecordBatch
	metas   [][]byte // each record's app_metadata
	rows    int64
	bytes   int64 // reserved in the store
	expires time.Time
	timer   *time.Timer
}

func (j *job) release() {
	for _, r := range j.recs {
		r.Release()
	}
	j.recs, j.metas = nil, nil
}

// jobStore keeps jobs in memory: their records count against maxBytes
// from the moment they are computed, and a job is dropped ttl after its
// upload ended.
type jobStore struct {
	maxBytes int64
	ttl      time.Duration
	now      func() time.Time
	// afterFunc schedules a job's expiry (time.AfterFunc).
	afterFunc func(time.Duration, func()) *time.Timer

	mu     sync.Mutex
	jobs   map[string]*job
	bytes  int64 // held by stored jobs and uploads in progress
	closed bool
}

func newJobStore(maxBytes int64, ttl time.Duration) *jobStore {
	return &jobStore{maxBytes: maxBytes, ttl: ttl, now: time.Now, afterFunc: time.AfterFunc, jobs: map[string]*job{}}
}

// reserve counts n more bytes of an upload against the cap.
func (s *jobStore) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return serving.Errorf(codes.Unavailable, "the Flight service is closed")
	}
	if s.bytes+n > s.maxBytes {
		return serving.Errorf(codes.ResourceExhausted, "bulk jobs would hold %d bytes of predictions, more than the %d allowed: fetch finished jobs with DoGet, let them expire (after %v) or use DoExchange", s.bytes+n, s.maxBytes, s.ttl)
	}
	s.bytes += n
	return nil
}

// unreserve returns bytes of an upload that failed.
func (s *jobStore) unreserve(n int64) {
	s.mu.Lock()
	s.bytes -= n
	s.mu.Unlock()
}

// add stores a finished upload and returns its ticket.
func (s *jobStore) add(j *job) ([]byte, error) {
	var b [16]byte
	rand.Read(b[:])
	ticket := jobTicketPrefix + hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, serving.Errorf(codes.Unavailable, "the Flight service is closed")
	}
	j.expires = s.now().Add(s.ttl)
	s.jobs[ticket] = j
	j.timer = s.afterFunc(s.ttl, func() { s.expire(ticket, j) })
	return []byte(ticket), nil
}

// expire drops a job whose time is up (unless it was taken already).
func (s *jobStore) expire(ticket string, j *job) {
	s.mu.Lock()
	if s.jobs[ticket] != j {
		s.mu.Unlock()
		return
	}
	delete(s.jobs, ticket)
	s.bytes -= j.bytes
	s.mu.Unlock()
	j.release()
}

// take removes and returns a job; nil when the ticket is unknown, expired
// or already used. The caller releases it and returns its bytes with
// done.
func (s *jobStore) take(ticket []byte) *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[string(ticket)]
	if j == nil {
		return nil
	}
	delete(s.jobs, string(ticket))
	j.timer.Stop()
	if !s.now().Before(j.expires) {
		s.bytes -= j.bytes
		j.release()
		return nil
	}
	return j
}

// done frees a taken job.
func (s *jobStore) done(j *job) {
	j.release()
	s.unreserve(j.bytes)
}

// stats returns the stored jobs and the bytes held.
func (s *jobStore) stats() (jobs int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs), s.bytes
}

// close drops every stored job and refuses new ones.
func (s *jobStore) close() {
	s.mu.Lock()
	s.closed = true
	jobs := s.jobs
	s.jobs = map[string]*job{}
	for _, j := range jobs {
		j.timer.Stop()
		s.bytes -= j.bytes
	}
	s.mu.Unlock()
	for _, j := range jobs {
		j.release()
	}
}

// recordBytes is the size of a record's buffers.
func recordBytes(r arrow.RecordBatch) int64 {
	var n int64
	for _, c := range r.Columns() {
		n += dataBytes(c.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}
