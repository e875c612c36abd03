package control_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	. "github.com/gotflow/gotflow/internal/control"
)

// TestMonitorOwnRows: with RankRows every trainer is dealt exactly its own
// rows each epoch, however unequal the counts.
func TestMonitorOwnRows(t *testing.T) {
	trainers := workers(3)
	rows := []int64{7, 50, 23}
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 80, RankRows: rows, Epochs: 2})
	rec, err := runJob(t, m, trainers, func(int) Coordinator { return m }, nil)
	require.NoError(t, err)
	reason, failed, ok := m.Result()
	require.True(t, ok)
	require.False(t, failed, reason)
	for e := range 2 {
		require.Len(t, rec.Seen[e], 80, "epoch %d", e)
		var at int64
		for rank, n := range rows {
			for row := at; row < at+n; row++ {
				require.Equal(t, []int{rank}, rec.Seen[e][row], "epoch %d row %d", e, row)
			}
			at += n
		}
	}
}

// TestMonitorOwnRowsDeathFails: a dead trainer's own rows cannot move, so
// the job stops as failed instead of reassigning them.
func TestMonitorOwnRowsDeathFails(t *testing.T) {
	trainers := workers(2)
	m := testMonitor(t, MonitorConfig{Trainers: trainers, Rows: 200, RankRows: []int64{100, 100}, Epochs: 2})
	rec, err := runJob(t, m, trainers, func(int) Coordinator { return m }, map[int]int64{1: 40})
	require.ErrorContains(t, err, "no other trainer holds")
	reason, failed, ok := m.Result()
	require.True(t, ok)
	require.True(t, failed)
	require.Contains(t, reason, "trainer worker:0 died")
	require.Contains(t, reason, "no other trainer holds")
	for row := range rec.Seen[0] {
		require.False(t, row >= 100 && len(rec.Seen[0][row]) > 0 && rec.Seen[0][row][0] == 0, "row %d of rank 1 went to rank 0", row)
	}
}

func TestMonitorOwnRowsValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg MonitorConfig
		msg string
	}{
		"count":    {MonitorConfig{Trainers: workers(2), Rows: 10, RankRows: []int64{10}}, "rows for 1 ranks and 2 trainers"},
		"negative": {MonitorConfig{Trainers: workers(2), Rows: 10, RankRows: []int64{11, -1}}, "rank 1 has -1 rows"},
		"sum":      {MonitorConfig{Trainers: workers(2), Rows: 10, RankRows: []int64{3, 4}}, "ranks hold 7 rows in all but Rows is 10"},
	} {
		t.Run(name, func(t *testing.T) {
			require.ErrorContains(t, tc.cfg.Validate(), tc.msg)
		})
	}
}
