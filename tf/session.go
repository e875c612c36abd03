package tf

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"

	configpb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"
)

// Feed binds a tensor to a graph output (usually a placeholder) for one Run.
type Feed struct {
	Output Output
	Tensor *Tensor
	// AnyShape skips the check of the tensor's shape against the graph's
	// static shape for Output, leaving it to the kernels at run time (as
	// TensorFlow's C++ Session and TF Serving do; a tensor of another
	// rank can then flow through elementwise ops). The dtype is still
	// checked.
	AnyShape bool
}

// Session runs a Graph. Run may be called from many goroutines at once.
type Session struct {
	mu      sync.Mutex
	c       *C.TF_Session
	graph   *Graph
	closed  bool
	running sync.WaitGroup
	life    lifetime
}

// newCSessionOptions builds TF_SessionOptions; the caller deletes them.
func newCSessionOptions(opts []SessionOption) (*C.TF_SessionOptions, error) {
	o := buildSessionOptions(opts)
	cfg, err := o.configBytes()
	if err != nil {
		return nil, err
	}
	copts := C.TF_NewSessionOptions()
	if o.target != "" {
		ct := C.CString(o.target)
		C.TF_SetTarget(copts, ct)
		C.free(unsafe.Pointer(ct))
	}
	if len(cfg) > 0 {
		st := newStatus()
		defer st.delete()
		C.TF_SetConfig(copts, unsafe.Pointer(&cfg[0]), C.size_t(len(cfg)), st.c)
		if err := st.err("SetConfig"); err != nil {
			C.TF_DeleteSessionOptions(copts)
			return nil, err
		}
	}
	return copts, nil
}

// NewSession creates a session for g. The graph must stay open while the
// session is used (closing it early is safe: TensorFlow keeps it alive).
func NewSession(g *Graph, opts ...SessionOption) (*Session, error) {
	copts, err := newCSessionOptions(opts)
	if err != nil {
		return nil, err
	}
	defer C.TF_DeleteSessionOptions(copts)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.c == nil {
		return nil, ErrClosed
	}
	st := newStatus()
	defer st.delete()
	c := C.TF_NewSession(g.c, copts, st.c)
	if err := st.err("NewSession"); err != nil {
		return nil, err
	}
	return newSession(c, g), nil
}

func newSession(c *C.TF_Session, g *Graph) *Session {
	s := &Session{c: c, graph: g}
	// A session the program forgot is only counted when collected (Leaked
	// tells the tests); its C memory stays allocated.
	s.life = track(s, kindSession)
	return s
}

// Graph returns the session's graph.
func (s *Session) Graph() *Graph { return s.graph }

// Run feeds the given tensors, computes fetches and runs targets. Feeds are
// borrowed; the caller owns (and must Close) the returned tensors, which are
// in the order of fetches.
//
// A deadline on ctx becomes RunOptions.timeout_in_ms; an expired deadline
// returns an error matching ErrDeadlineExceeded. TensorFlow cannot interrupt
// a Run that has no deadline: a ctx canceled during such a Run takes effect
// when the Run returns.
func (s *Session) Run(ctx context.Context, feeds []Feed, fetches []Output, targets []*Operation) ([]*Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(err)
	}
	if err := checkFeeds(feeds); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.running.Add(1)
	s.mu.Unlock()
	defer s.running.Done()

	var runOpts *C.TF_Buffer
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		if ms <= 0 {
			return nil, &Error{Code: DeadlineExceeded, Op: "Run", Msg: "context deadline passed before the run started"}
		}
		b, err := proto.Marshal(&configpb.RunOptions{TimeoutInMs: ms})
		if err != nil {
			return nil, fmt.Errorf("tf: encode RunOptions: %w", err)
		}
		runOpts = C.TF_NewBufferFromString(unsafe.Pointer(&b[0]), C.size_t(len(b)))
		defer C.TF_DeleteBuffer(runOpts)
	}

	inputs := make([]C.TF_Output, len(feeds))
	values := make([]*C.TF_Tensor, len(feeds))
	for i, f := range feeds {
		inputs[i] = f.Output.c()
		values[i] = f.Tensor.c
	}
	outputs := make([]C.TF_Output, len(fetches))
	for i, f := range fetches {
		if f.Op == nil {
			return nil, errorf(InvalidArgument, "Run", "fetch %d has no operation", i)
		}
		outputs[i] = f.c()
	}
	results := make([]*C.TF_Tensor, len(fetches))
	ctargets := make([]*C.TF_Operation, len(targets))
	for i, t := range targets {
		if t == nil {
			return nil, errorf(InvalidArgument, "Run", "target %d is nil", i)
		}
		ctargets[i] = t.c
	}

	st := newStatus()
	defer st.delete()
	C.TF_SessionRun(s.c, runOpts,
		ptr(inputs), ptr(values), C.int(len(feeds)),
		ptr(outputs), ptr(results), C.int(len(fetches)),
		ptr(ctargets), C.int(len(targets)),
		nil, st.c)
	runtime.KeepAlive(feeds)
	runtime.KeepAlive(fetches)
	runtime.KeepAlive(targets)
	if err := st.err("Run"); err != nil {
		for _, r := range results {
			if r != nil {
				C.TF_DeleteTensor(r)
			}
		}
		if ctx.Err() != nil {
			return nil, ctxError(ctx.Err())
		}
		return nil, err
	}
	out := make([]*Tensor, len(results))
	for i, r := range results {
		out[i] = wrapTensor(r)
	}
	return out, nil
}

func ptr[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: DeadlineExceeded, Op: "Run", Msg: err.Error()}
	}
	return &Error{Code: Canceled, Op: "Run", Msg: err.Error()}
}

// checkFeeds rejects feeds whose tensor does not fit the graph's static type
// and shape, with a message naming the feed.
func checkFeeds(feeds []Feed) error {
	for i, f := range feeds {
		if f.Output.Op == nil {
			return errorf(InvalidArgument, "Run", "feed %d has no operation", i)
		}
		if f.Tensor == nil || f.Tensor.closed.Load() {
			return errorf(InvalidArgument, f.Output.Name(), "feed tensor is nil or closed")
		}
		if want, got := f.Output.DataType(), f.Tensor.DataType(); want != got {
			return errorf(InvalidArgument, f.Output.Name(), "feed has dtype %s, the graph expects %s", got, want)
		}
		if f.AnyShape {
			continue
		}
		shape, ok, err := f.Output.Shape()
		if err != nil || !ok {
			continue
		}
		got := f.Tensor.shape
		if len(shape) != len(got) {
			return errorf(InvalidArgument, f.Output.Name(), "feed has shape %v, the graph expects %v", got, shape)
		}
		for d := range shape {
			if shape[d] >= 0 && shape[d] != got[d] {
				return errorf(InvalidArgument, f.Output.Name(), "feed has shape %v, the graph expects %v", got, shape)
			}
		}
	}
	return nil
}

// Close waits for in-flight Runs, then closes and frees the session. It is
// idempotent; Run after Close returns ErrClosed.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.running.Wait()
	s.life.release()
	st := newStatus()
	defer st.delete()
	C.TF_CloseSession(s.c, st.c)
	err := st.err("CloseSession")
	C.TF_DeleteSession(s.c, st.c)
	if err == nil {
		err = st.err("DeleteSession")
	}
	s.c = nil
	return err
}
