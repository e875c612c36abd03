package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gotflow/gotflow/internal/control/distpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// HeartbeatServer serves a Coordinator (normally a *Monitor) over gRPC.
type HeartbeatServer struct {
	distpb.UnimplementedCoordinatorServer
	coord Coordinator
	srv   *grpc.Server
	once  sync.Once
}

// NewHeartbeatServer builds a server for coord. opts are passed to
// grpc.NewServer (credentials, interceptors).
func NewHeartbeatServer(coord Coordinator, opts ...grpc.ServerOption) *HeartbeatServer {
	s := &HeartbeatServer{coord: coord, srv: grpc.NewServer(opts...)}
	distpb.RegisterCoordinatorServer(s.srv, s)
	return s
}

// Serve accepts connections on lis until Close; it closes lis.
func (s *HeartbeatServer) Serve(lis net.Listener) error {
	err := s.srv.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close stops the server, waiting at most timeout for in-flight heartbeats
// before cutting connections. It is idempotent.
func (s *HeartbeatServer) Close(timeout time.Duration) {
	s.once.Do(func() {
		done := make(chan struct{})
		go func() { s.srv.GracefulStop(); close(done) }()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			s.srv.Stop()
			<-done
		}
	})
}

// Heartbeat implements distpb.CoordinatorServer.
func (s *HeartbeatServer) Heartbeat(ctx context.Context, req *distpb.HeartbeatRequest) (*distpb.HeartbeatResponse, error) {
	b, err := beatFromProto(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r, err := s.coord.Beat(ctx, b)
	if err != nil {
		switch {
		case errors.Is(err, ErrUnknownTask):
			return nil, status.Error(codes.NotFound, err.Error())
		case errors.Is(err, context.DeadlineExceeded):
			return nil, status.Error(codes.DeadlineExceeded, err.Error())
		case errors.Is(err, context.Canceled):
			return nil, status.Error(codes.Canceled, err.Error())
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	return replyToProto(r), nil
}

func beatFromProto(req *distpb.HeartbeatRequest) (Beat, error) {
	r, err := ParseRole(req.GetTaskType())
	if err != nil {
		return Beat{}, err
	}
	if req.GetTaskIndex() < 0 {
		return Beat{}, fmt.Errorf("distributed: heartbeat task index %d, expected >= 0", req.GetTaskIndex())
	}
	var st TaskState
	switch req.GetState() {
	case distpb.TaskState_TASK_STATE_RUNNING:
		st = StateRunning
	case distpb.TaskState_TASK_STATE_IDLE:
		st = StateIdle
	case distpb.TaskState_TASK_STATE_FAILED:
		st = StateFailed
	default:
		return Beat{}, fmt.Errorf("distributed: heartbeat state %v, expected RUNNING, IDLE or FAILED", req.GetState())
	}
	if req.GetEpoch() < 0 || req.GetRowsDone() < 0 {
		return Beat{}, fmt.Errorf("distributed: heartbeat epoch %d rows_done %d, expected both >= 0", req.GetEpoch(), req.GetRowsDone())
	}
	return Beat{
		Task:        Task{Role: r, Index: int(req.GetTaskIndex())},
		Incarnation: req.GetIncarnation(),
		State:       st,
		Epoch:       int(req.GetEpoch()),
		RowsDone:    req.GetRowsDone(),
		Step:        req.GetStep(),
		Loss:        req.GetLoss(),
		Message:     req.GetMessage(),
	}, nil
}

func beatToProto(b Beat) *distpb.HeartbeatRequest {
	st := distpb.TaskState_TASK_STATE_RUNNING
	switch b.State {
	case StateIdle:
		st = distpb.TaskState_TASK_STATE_IDLE
	case StateFailed:
		st = distpb.TaskState_TASK_STATE_FAILED
	}
	return &distpb.HeartbeatRequest{
		TaskType: string(b.Task.Role), TaskIndex: int32(b.Task.Index), Incarnation: b.Incarnation,
		State: st, Epoch: int32(b.Epoch), RowsDone: b.RowsDone, Step: b.Step, Loss: b.Loss, Message: b.Message,
	}
}

func replyToProto(r Reply) *distpb.HeartbeatResponse {
	cmd := distpb.Command_COMMAND_WAIT
	switch r.Command {
	case CommandRun:
		cmd = distpb.Command_COMMAND_RUN
	case CommandStop:
		cmd = distpb.Command_COMMAND_STOP
	}
	out := &distpb.HeartbeatResponse{
		Command: cmd, Epoch: int32(r.Epoch), PlanVersion: r.PlanVersion,
		IntervalMs: r.Interval.Milliseconds(), Reason: r.Reason, Failed: r.Failed,
	}
	for _, rg := range r.Ranges {
		out.Ranges = append(out.Ranges, &distpb.Range{Start: rg.Start, End: rg.End})
	}
	return out
}

func replyFromProto(p *distpb.HeartbeatResponse) (Reply, error) {
	r := Reply{
		Epoch: int(p.GetEpoch()), PlanVersion: p.GetPlanVersion(),
		Interval: time.Duration(p.GetIntervalMs()) * time.Millisecond, Reason: p.GetReason(), Failed: p.GetFailed(),
	}
	switch p.GetCommand() {
	case distpb.Command_COMMAND_RUN:
		r.Command = CommandRun
	case distpb.Command_COMMAND_WAIT:
		r.Command = CommandWait
	case distpb.Command_COMMAND_STOP:
		r.Command = CommandStop
	default:
		return Reply{}, fmt.Errorf("distributed: heartbeat reply command %v, expected RUN, WAIT or STOP", p.GetCommand())
	}
	for _, rg := range p.GetRanges() {
		if rg.GetStart() < 0 || rg.GetEnd() < rg.GetStart() {
			return Reply{}, fmt.Errorf("distributed: heartbeat reply range [%d, %d) is not a valid row range", rg.GetStart(), rg.GetEnd())
		}
		r.Ranges = append(r.Ranges, Range{rg.GetStart(), rg.GetEnd()})
	}
	return r, nil
}

// CoordinatorClient is a Coordinator reached over gRPC.
type CoordinatorClient struct {
	conn *grpc.ClientConn
	c    distpb.CoordinatorClient
}

// DialCoordinator connects to the coordinator at addr. Unless opts set
// transport credentials the connection is plaintext (loopback or a trusted
// cluster network); add SendToken when the server requires one. The
// connection is lazy: errors surface on the first Beat.
func DialCoordinator(addr string, opts ...grpc.DialOption) (*CoordinatorClient, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("distributed: dial coordinator %q: %w", addr, err)
	}
	return &CoordinatorClient{conn: conn, c: distpb.NewCoordinatorClient(conn)}, nil
}

// Beat implements Coordinator. ctx should carry a deadline (Agent sets one
// per call).
func (c *CoordinatorClient) Beat(ctx context.Context, b Beat) (Reply, error) {
	p, err := c.c.Heartbeat(ctx, beatToProto(b))
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound:
			return Reply{}, fmt.Errorf("%w: %s", ErrUnknownTask, status.Convert(err).Message())
		case codes.Unauthenticated:
			return Reply{}, fmt.Errorf("%w: %s", ErrUnauthenticated, status.Convert(err).Message())
		}
		return Reply{}, fmt.Errorf("distributed: heartbeat: %w", err)
	}
	return replyFromProto(p)
}

// Close closes the connection.
func (c *CoordinatorClient) Close() error { return c.conn.Close() }
