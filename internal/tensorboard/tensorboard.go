package tensorboard

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/wamuir/graft/tensorflow/core/framework/summary_go_proto"
	"github.com/wamuir/graft/tensorflow/core/util/event_go_proto"
	"google.golang.org/protobuf/proto"
)

// FileVersion is the version string of the first event in every file.
const FileVersion = "brain.Event:2"

// ErrClosed is returned by a Writer's methods after Close.
var ErrClosed = errors.New("tensorboard: writer is closed")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC returns the CRC32C of b masked the way TFRecord files store it.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return ((c >> 15) | (c << 17)) + 0xa282ead8
}

// Scalar is one named value of a summary.
type Scalar struct {
	Tag   string
	Value float64
}

// Option configures a Writer.
type Option interface{ apply(*options) }

type options struct {
	suffix string
	now    func() time.Time
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithFilenameSuffix appends s to the event file's name, e.g. ".worker-0",
// so that several writers can share a directory.
func WithFilenameSuffix(s string) Option {
	return optionFunc(func(o *options) { o.suffix = s })
}

// WithClock sets the function that supplies events' wall times (default
// time.Now).
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) { o.now = now })
}

// Writer appends events to one event file.
type Writer struct {
	mu      sync.Mutex
	f       *os.File
	bw      *bufio.Writer
	path    string
	now     func() time.Time
	err     error // sticky write error
	closed  bool
	scratch [12]byte
}

// NewWriter creates dir if needed, creates a new event file in it and writes
// the file-version event.
func NewWriter(dir string, opts ...Option) (*Writer, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if dir == "" {
		return nil, errors.New("tensorboard: log directory is empty")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tensorboard: create log directory: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	start := o.now()
	// The name follows TF's writer, with the pid and nanoseconds added so
	// two writers started in the same second do not collide.
	name := fmt.Sprintf("events.out.tfevents.%010d.%s.%d.%d%s", start.Unix(), host, os.Getpid(), start.Nanosecond(), o.suffix)
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("tensorboard: create event file: %w", err)
	}
	w := &Writer{f: f, bw: bufio.NewWriter(f), path: path, now: o.now}
	ev := &event_go_proto.Event{
		WallTime: wallTime(start),
		What:     &event_go_proto.Event_FileVersion{FileVersion: FileVersion},
	}
	if err := w.writeEvent(ev); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return w, nil
}

func wallTime(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}

// Path returns the event file's path.
func (w *Writer) Path() string { return w.path }

// AddScalar writes one scalar at step.
func (w *Writer) AddScalar(step int64, tag string, value float64) error {
	return w.AddScalars(step, Scalar{Tag: tag, Value: value})
}

// AddScalars writes one event at step holding every given scalar. Tags must
// be non-empty; values are stored as float32, TensorBoard's simple_value.
func (w *Writer) AddScalars(step int64, scalars ...Scalar) error {
	if len(scalars) == 0 {
		return nil
	}
	vals := make([]*summary_go_proto.Summary_Value, len(scalars))
	for i, s := range scalars {
		if s.Tag == "" {
			return fmt.Errorf("tensorboard: scalar %d at step %d has an empty tag", i, step)
		}
		vals[i] = &summary_go_proto.Summary_Value{
			Tag:   s.Tag,
			Value: &summary_go_proto.Summary_Value_SimpleValue{SimpleValue: float32(s.Value)},
		}
	}
	ev := &event_go_proto.Event{
		WallTime: wallTime(w.now()),
		Step:     step,
		What:     &event_go_proto.Event_Summary{Summary: &summary_go_proto.Summary{Value: vals}},
	}
	return w.WriteEvent(ev)
}

// WriteEvent appends an arbitrary event. A zero WallTime is set to now.
func (w *Writer) WriteEvent(ev *event_go_proto.Event) error {
	if ev == nil {
		return errors.New("tensorboard: event is nil")
	}
	if ev.WallTime == 0 {
		ev.WallTime = wallTime(w.now())
	}
	return w.writeEvent(ev)
}

func (w *Writer) writeEvent(ev *event_go_proto.Event) error {
	b, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("tensorboard: encode event: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	if err := writeRecord(w.bw, w.scratch[:], b); err != nil {
		w.err = fmt.Errorf("tensorboard: write %s: %w", w.path, err)
		return w.err
	}
	return nil
}

// writeRecord writes one TFRecord: length, masked CRC of the length, data,
// masked CRC of the data. scratch must hold 12 bytes.
func writeRecord(bw io.Writer, scratch, data []byte) error {
	binary.LittleEndian.PutUint64(scratch[:8], uint64(len(data)))
	binary.LittleEndian.PutUint32(scratch[8:12], maskedCRC(scratch[:8]))
	if _, err := bw.Write(scratch[:12]); err != nil {
		return err
	}
	if _, err := bw.Write(data); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(scratch[:4], maskedCRC(data))
	_, err := bw.Write(scratch[:4])
	return err
}

// Flush writes buffered events to the file.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	return w.flushLocked()
}

func (w *Writer) flushLocked() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("tensorboard: write %s: %w", w.path, err)
	}
	return w.err
}

// Close flushes, syncs and closes the file. It is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.flushLocked()
	if err == nil {
		if serr := w.f.Sync(); serr != nil {
			err = fmt.Errorf("tensorboard: sync %s: %w", w.path, serr)
		}
	}
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("tensorboard: close %s: %w", w.path, cerr)
	}
	return err
}

// ReadEvents decodes every event of a TFRecord stream, checking both CRCs
// of each record.
func ReadEvents(r io.Reader) ([]*event_go_proto.Event, error) {
	br := bufio.NewReader(r)
	var out []*event_go_proto.Event
	var off int64
	var hdr [12]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, fmt.Errorf("tensorboard: record at offset %d: truncated header: %w", off, err)
		}
		n := binary.LittleEndian.Uint64(hdr[:8])
		if got := binary.LittleEndian.Uint32(hdr[8:]); got != maskedCRC(hdr[:8]) {
			return out, fmt.Errorf("tensorboard: record at offset %d: length CRC mismatch", off)
		}
		if n > math.MaxInt32 {
			return out, fmt.Errorf("tensorboard: record at offset %d: length %d exceeds 2 GiB", off, n)
		}
		data := make([]byte, n+4)
		if _, err := io.ReadFull(br, data); err != nil {
			return out, fmt.Errorf("tensorboard: record at offset %d: truncated payload of %d bytes: %w", off, n, err)
		}
		if got := binary.LittleEndian.Uint32(data[n:]); got != maskedCRC(data[:n]) {
			return out, fmt.Errorf("tensorboard: record at offset %d: payload CRC mismatch", off)
		}
		ev := &event_go_proto.Event{}
		if err := proto.Unmarshal(data[:n], ev); err != nil {
			return out, fmt.Errorf("tensorboard: record at offset %d: decode event: %w", off, err)
		}
		out = append(out, ev)
		off += 12 + int64(n) + 4
	}
}
