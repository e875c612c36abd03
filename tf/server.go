package tf

// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
// #include "tensorflow/c/c_api_experimental.h"
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	configpb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"
)

// Server is an in-process TensorFlow server (TF_NewServer): a member of a
// TensorFlow cluster that runs graphs sent to its grpc:// target, e.g.
// variables placed on /job:ps.
type Server struct {
	mu      sync.Mutex
	c       *C.TF_Server
	started bool
}

// NewServer creates a server from a ServerDef (cluster, job name, task index,
// protocol "grpc"). It does not listen until Start.
func NewServer(def *configpb.ServerDef) (*Server, error) {
	if def == nil || def.GetCluster() == nil {
		return nil, errorf(InvalidArgument, "NewServer", "ServerDef with a cluster is required")
	}
	if def.Protocol == "" {
		def = proto.Clone(def).(*configpb.ServerDef)
		def.Protocol = "grpc"
	}
	b, err := proto.Marshal(def)
	if err != nil {
		return nil, fmt.Errorf("tf: encode ServerDef: %w", err)
	}
	st := newStatus()
	defer st.delete()
	c := C.TF_NewServer(unsafe.Pointer(&b[0]), C.size_t(len(b)), st.c)
	if err := st.err("NewServer"); err != nil {
		return nil, err
	}
	return &Server{c: c}, nil
}

// NewLocalServer creates a one-task cluster {job: [addr]} and a server for
// it, e.g. NewLocalServer("ps", "127.0.0.1:2222").
func NewLocalServer(job, addr string) (*Server, error) {
	return NewServer(&configpb.ServerDef{
		Cluster: &configpb.ClusterDef{Job: []*configpb.JobDef{{
			Name:  job,
			Tasks: map[int32]string{0: addr},
		}}},
		JobName:   job,
		TaskIndex: 0,
		Protocol:  "grpc",
	})
}

// Start starts serving.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return ErrClosed
	}
	st := newStatus()
	defer st.delete()
	C.TF_ServerStart(s.c, st.c)
	if err := st.err("ServerStart"); err != nil {
		return err
	}
	s.started = true
	return nil
}

// Target returns the address sessions use to reach the server, e.g.
// "grpc://localhost:2222"; pass it to WithTarget.
func (s *Server) Target() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return "", ErrClosed
	}
	return C.GoString(C.TF_ServerTarget(s.c)), nil
}

// ErrServerRunning is returned by Server.Close for a started server:
// TensorFlow's gRPC server has no clean in-process shutdown (its Stop is
// unimplemented and deleting a started server aborts the process), so a
// started server keeps serving until the process exits. Run servers that
// must stop in their own process (gotflow's cluster launchers do).
var ErrServerRunning = errors.New("tf: a started TensorFlow server cannot be stopped in-process; it serves until the process exits")

// Close frees a server that was never started. For a started server it
// returns ErrServerRunning and leaves the server serving (see
// ErrServerRunning). It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil
	}
	if s.started {
		return ErrServerRunning
	}
	C.TF_DeleteServer(s.c)
	s.c = nil
	return nil
}
