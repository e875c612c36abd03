package control

import (
	"context"
	"testing"

	"github.com/gotflow/gotflow/internal/control/distpb"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
)

// FuzzHeartbeat decodes arbitrary bytes as a heartbeat request and feeds
// whatever decodes to a Monitor: nothing may panic, and every reply must be
// a well-formed command with row ranges inside the job.
func FuzzHeartbeat(f *testing.F) {
	seed := func(r *distpb.HeartbeatRequest) {
		b, err := proto.Marshal(r)
		require.NoError(f, err)
		f.Add(b)
	}
	seed(&distpb.HeartbeatRequest{TaskType: "chief", State: distpb.TaskState_TASK_STATE_RUNNING, Incarnation: 1})
	seed(&distpb.HeartbeatRequest{TaskType: "worker", TaskIndex: 0, State: distpb.TaskState_TASK_STATE_IDLE, Incarnation: 2, RowsDone: 50})
	seed(&distpb.HeartbeatRequest{TaskType: "worker", TaskIndex: 0, State: distpb.TaskState_TASK_STATE_FAILED, Message: "oom"})
	seed(&distpb.HeartbeatRequest{TaskType: "master", Epoch: 3, RowsDone: -1})
	seed(&distpb.HeartbeatRequest{TaskType: "ps", TaskIndex: -4})
	f.Add([]byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req distpb.HeartbeatRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		b, err := beatFromProto(&req)
		if err != nil {
			require.Contains(t, err.Error(), "distributed: ")
			return
		}
		m, err := NewMonitor(MonitorConfig{Trainers: []Task{{RoleChief, 0}, {RoleWorker, 0}}, Rows: 100})
		require.NoError(t, err)
		for range 2 { // twice: a second beat sees the state the first left
			r, err := m.Beat(context.Background(), b)
			if err != nil {
				require.ErrorIs(t, err, ErrUnknownTask)
				return
			}
			require.Contains(t, []Command{CommandRun, CommandWait, CommandStop}, r.Command)
			for _, rg := range r.Ranges {
				require.True(t, 0 <= rg.Start && rg.Start <= rg.End && rg.End <= 100, "range %v", rg)
			}
			back, err := replyFromProto(replyToProto(r))
			require.NoError(t, err)
			require.Equal(t, r.Ranges, back.Ranges)
		}
	})
}
