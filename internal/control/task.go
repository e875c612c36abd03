package control

import (
	"fmt"
	"strconv"
	"strings"
)

// Role is the job a task plays in a cluster. The names are TensorFlow's job
// names as they appear in TF_CONFIG.
type Role string

const (
	// RoleChief is the worker that also coordinates: it runs the heartbeat
	// monitor, writes summaries and exports the model. TFJob's legacy
	// "master" replica type is read as RoleChief.
	RoleChief Role = "chief"
	// RoleWorker computes gradients on its partition of the data.
	RoleWorker Role = "worker"
	// RolePS serves one shard of the parameters.
	RolePS Role = "ps"
	// RoleEvaluator evaluates snapshots on held-out data; it is not part of
	// the training cluster (TFJob leaves it out of "cluster").
	RoleEvaluator Role = "evaluator"

	// roleMaster is the TF1 / TFJob name for the chief.
	roleMaster Role = "master"
)

// Roles lists the roles in the order cluster specs list jobs.
var Roles = []Role{RoleChief, RoleWorker, RolePS, RoleEvaluator}

// ParseRole parses a job name, accepting "master" as RoleChief.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleChief, RoleWorker, RolePS, RoleEvaluator:
		return r, nil
	case roleMaster:
		return RoleChief, nil
	}
	return "", fmt.Errorf("distributed: unknown task type %q (expected chief, master, worker, ps or evaluator)", s)
}

// Task identifies one task of a cluster: its role and its index within the
// role's job.
type Task struct {
	Role  Role `json:"type"`
	Index int  `json:"index"`
}

// String returns "role:index", e.g. "worker:1".
func (t Task) String() string { return string(t.Role) + ":" + strconv.Itoa(t.Index) }

// Device returns the task's TensorFlow device prefix, e.g. "/job:ps/task:0".
func (t Task) Device() string { return "/job:" + string(t.Role) + "/task:" + strconv.Itoa(t.Index) }

// Trains reports whether the task computes gradients (chief or worker).
func (t Task) Trains() bool { return t.Role == RoleChief || t.Role == RoleWorker }

// ParseTask parses "role:index" (Task.String's form).
func ParseTask(s string) (Task, error) {
	role, idx, ok := strings.Cut(s, ":")
	if !ok {
		return Task{}, fmt.Errorf("distributed: task %q is not role:index", s)
	}
	r, err := ParseRole(role)
	if err != nil {
		return Task{}, err
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 {
		return Task{}, fmt.Errorf("distributed: task %q has index %q, expected an integer >= 0", s, idx)
	}
	return Task{Role: r, Index: i}, nil
}

// TrainerTask returns the task of rank r: chief:0 for rank 0, worker:r-1
// otherwise.
func TrainerTask(rank int) Task {
	if rank == 0 {
		return Task{Role: RoleChief}
	}
	return Task{Role: RoleWorker, Index: rank - 1}
}
