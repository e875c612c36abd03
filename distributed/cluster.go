package distributed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/gotflow/gotflow/internal/control"
)

// Role is the job a task plays in a cluster: chief, worker, ps or
// evaluator, TensorFlow's job names as they appear in TF_CONFIG (which
// may also say "master" for the chief).
type Role = control.Role

// The roles of a cluster's tasks.
const (
	// RoleChief is the worker that also coordinates: it runs the heartbeat
	// monitor, writes summaries and exports the model. TFJob's legacy
	// "master" replica type is read as RoleChief.
	RoleChief = control.RoleChief
	// RoleWorker computes gradients on its partition of the data.
	RoleWorker = control.RoleWorker
	// RolePS serves one shard of the parameters.
	RolePS = control.RolePS
	// RoleEvaluator evaluates snapshots on held-out data; it is not part of
	// the training cluster (TFJob leaves it out of "cluster").
	RoleEvaluator = control.RoleEvaluator

	// roleMaster is the TF1 / TFJob name for the chief.
	roleMaster Role = "master"
)

// Task identifies one task of a cluster: its role and its index within the
// role's job, {"type":"worker","index":1} in TF_CONFIG. Its String method
// returns "role:index" ("worker:1"), Device the TensorFlow device prefix
// ("/job:worker/task:1"), and Trains whether it computes gradients (chief
// or worker).
type Task = control.Task

// ClusterSpec maps each job to the addresses ("host:port") of its tasks, in
// task-index order. It marshals to the "cluster" object of TF_CONFIG.
type ClusterSpec struct {
	Chief     []string `json:"chief,omitempty"`
	Worker    []string `json:"worker,omitempty"`
	PS        []string `json:"ps,omitempty"`
	Evaluator []string `json:"evaluator,omitempty"`
}

// Addresses returns the addresses of role's tasks (nil for an empty job).
func (c ClusterSpec) Addresses(r Role) []string {
	switch r {
	case RoleChief:
		return c.Chief
	case RoleWorker:
		return c.Worker
	case RolePS:
		return c.PS
	case RoleEvaluator:
		return c.Evaluator
	}
	return nil
}

// Address returns the address of task t.
func (c ClusterSpec) Address(t Task) (string, error) {
	addrs := c.Addresses(t.Role)
	if t.Index < 0 || t.Index >= len(addrs) {
		return "", fmt.Errorf("distributed: task %s is not in the cluster (job %q has %d tasks)", t, t.Role, len(addrs))
	}
	return addrs[t.Index], nil
}

// Tasks returns every task of the spec: chief, workers, ps, evaluator.
func (c ClusterSpec) Tasks() []Task {
	var out []Task
	for _, r := range control.Roles {
		for i := range c.Addresses(r) {
			out = append(out, Task{Role: r, Index: i})
		}
	}
	return out
}

// TrainingTasks returns the tasks that compute gradients, chief first, in
// rank order: the i-th task returned has rank i.
func (c ClusterSpec) TrainingTasks() []Task {
	out := make([]Task, 0, len(c.Chief)+len(c.Worker))
	for i := range c.Chief {
		out = append(out, Task{Role: RoleChief, Index: i})
	}
	for i := range c.Worker {
		out = append(out, Task{Role: RoleWorker, Index: i})
	}
	return out
}

// NumTrainers returns the number of tasks that compute gradients.
func (c ClusterSpec) NumTrainers() int { return len(c.Chief) + len(c.Worker) }

// Rank returns t's position among TrainingTasks: the chief is rank 0 and
// worker i is rank i+len(Chief). It fails for ps and evaluator tasks.
func (c ClusterSpec) Rank(t Task) (int, error) {
	if _, err := c.Address(t); err != nil {
		return 0, err
	}
	switch t.Role {
	case RoleChief:
		return t.Index, nil
	case RoleWorker:
		return len(c.Chief) + t.Index, nil
	}
	return 0, fmt.Errorf("distributed: task %s does not train and has no rank", t)
}

// Coordinator returns the task that runs the heartbeat monitor: the chief if
// there is one, otherwise worker 0.
func (c ClusterSpec) Coordinator() (Task, error) {
	switch {
	case len(c.Chief) > 0:
		return Task{Role: RoleChief}, nil
	case len(c.Worker) > 0:
		return Task{Role: RoleWorker}, nil
	}
	return Task{}, errors.New("distributed: cluster has no chief and no worker to coordinate")
}

// Validate checks that the spec can run training: at most one chief, at
// least one chief or worker, at most one evaluator, and every address a
// distinct host:port with a port in 1..65535.
func (c ClusterSpec) Validate() error {
	if len(c.Chief) > 1 {
		return fmt.Errorf("distributed: cluster has %d chief tasks, expected at most 1", len(c.Chief))
	}
	if len(c.Evaluator) > 1 {
		return fmt.Errorf("distributed: cluster has %d evaluator tasks, expected at most 1", len(c.Evaluator))
	}
	if c.NumTrainers() == 0 {
		return errors.New("distributed: cluster has no chief and no worker task, expected at least one")
	}
	seen := make(map[string]Task)
	for _, t := range c.Tasks() {
		addr := c.Addresses(t.Role)[t.Index]
		if err := checkAddress(addr); err != nil {
			return fmt.Errorf("distributed: task %s: %w", t, err)
		}
		if prev, dup := seen[addr]; dup {
			return fmt.Errorf("distributed: tasks %s and %s share the address %q", prev, t, addr)
		}
		seen[addr] = t
	}
	return nil
}

func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q has an empty host", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q has port %q, expected a number in 1..65535", addr, port)
	}
	return nil
}

// TFConfigEnv is the environment variable Kubeflow's TFJob operator sets.
const TFConfigEnv = "TF_CONFIG"

// TFConfig is the parsed content of TF_CONFIG: the cluster and this
// process's task in it.
type TFConfig struct {
	Cluster     ClusterSpec
	Task        Task
	Environment string // "cloud" under TFJob; informational
	RPCLayer    string // "grpc" when set; informational
}

// rawTFConfig is TF_CONFIG as written on the wire. Cluster jobs are decoded
// into a map so unknown job names and "master" can be reported or mapped.
type rawTFConfig struct {
	Cluster     map[string][]string `json:"cluster"`
	Task        *rawTask            `json:"task"`
	Environment string              `json:"environment,omitempty"`
	RPCLayer    string              `json:"rpc_layer,omitempty"`
	// SparseCluster is what TFJob writes with enableDynamicWorker; it is
	// decoded only to be rejected with a clear error.
	SparseCluster json.RawMessage `json:"sparseCluster,omitempty"`
}

type rawTask struct {
	Type  string `json:"type"`
	Index *int   `json:"index"`
}

// ParseTFConfig parses TF_CONFIG as Kubeflow's TFJob operator writes it:
//
//	{"cluster":{"chief":["h:p"],"worker":["h:p",…],"ps":["h:p",…]},
//	 "task":{"type":"worker","index":0},"environment":"cloud"}
//
// The "master" job and task type are read as chief. An evaluator task may be
// absent from "cluster" (TFJob leaves it out). The result is validated:
// unknown fields, unknown jobs or task types, an index out of range and
// every ClusterSpec.Validate failure are errors.
func ParseTFConfig(data []byte) (TFConfig, error) {
	var raw rawTFConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return TFConfig{}, fmt.Errorf("distributed: TF_CONFIG is not valid JSON of the form {\"cluster\":{…},\"task\":{\"type\":…,\"index\":…}}: %w", err)
	}
	if dec.More() {
		return TFConfig{}, errors.New("distributed: TF_CONFIG has data after its JSON object")
	}
	if raw.SparseCluster != nil {
		return TFConfig{}, errors.New("distributed: TF_CONFIG has \"sparseCluster\" (TFJob enableDynamicWorker), which gotflow does not support; expected a full \"cluster\"")
	}
	if raw.Cluster == nil {
		return TFConfig{}, errors.New("distributed: TF_CONFIG has no \"cluster\" object")
	}
	if raw.Task == nil {
		return TFConfig{}, errors.New("distributed: TF_CONFIG has no \"task\" object")
	}
	var cfg TFConfig
	cfg.Environment, cfg.RPCLayer = raw.Environment, raw.RPCLayer
	for job, addrs := range raw.Cluster {
		r, err := control.ParseRole(job)
		if err != nil {
			return TFConfig{}, fmt.Errorf("distributed: TF_CONFIG cluster has unknown job %q (expected chief, master, worker, ps or evaluator)", job)
		}
		if addrs == nil {
			addrs = []string{}
		}
		switch r {
		case RoleChief:
			if cfg.Cluster.Chief != nil {
				return TFConfig{}, errors.New("distributed: TF_CONFIG cluster has both \"chief\" and \"master\" jobs, expected one of them")
			}
			cfg.Cluster.Chief = addrs
		case RoleWorker:
			cfg.Cluster.Worker = addrs
		case RolePS:
			cfg.Cluster.PS = addrs
		case RoleEvaluator:
			cfg.Cluster.Evaluator = addrs
		}
	}
	for _, r := range control.Roles { // empty jobs marshal as absent
		if a := cfg.Cluster.Addresses(r); a != nil && len(a) == 0 {
			cfg.Cluster = cfg.Cluster.with(r, nil)
		}
	}
	if raw.Task.Type == "" {
		return TFConfig{}, errors.New("distributed: TF_CONFIG task has no \"type\" (expected chief, master, worker, ps or evaluator)")
	}
	r, err := control.ParseRole(raw.Task.Type)
	if err != nil {
		return TFConfig{}, fmt.Errorf("distributed: TF_CONFIG task: %w", err)
	}
	if raw.Task.Index == nil {
		return TFConfig{}, fmt.Errorf("distributed: TF_CONFIG task %q has no \"index\"", raw.Task.Type)
	}
	cfg.Task = Task{Role: r, Index: *raw.Task.Index}
	if err := cfg.Validate(); err != nil {
		return TFConfig{}, err
	}
	return cfg, nil
}

func (c ClusterSpec) with(r Role, addrs []string) ClusterSpec {
	switch r {
	case RoleChief:
		c.Chief = addrs
	case RoleWorker:
		c.Worker = addrs
	case RolePS:
		c.PS = addrs
	case RoleEvaluator:
		c.Evaluator = addrs
	}
	return c
}

// Validate checks the cluster and that the task is in it (an evaluator may
// be outside the cluster, with index 0).
func (c TFConfig) Validate() error {
	if err := c.Cluster.Validate(); err != nil {
		return err
	}
	if _, err := control.ParseRole(string(c.Task.Role)); err != nil || c.Task.Role == roleMaster {
		return fmt.Errorf("distributed: task type %q is not one of chief, worker, ps, evaluator", c.Task.Role)
	}
	n := len(c.Cluster.Addresses(c.Task.Role))
	if c.Task.Role == RoleEvaluator && n == 0 {
		if c.Task.Index != 0 {
			return fmt.Errorf("distributed: TF_CONFIG task evaluator index %d: an evaluator outside the cluster must have index 0", c.Task.Index)
		}
		return nil
	}
	if c.Task.Index < 0 || c.Task.Index >= n {
		return fmt.Errorf("distributed: TF_CONFIG task %s: index out of range, job %q has %d tasks (valid indices 0..%d)", c.Task, c.Task.Role, n, n-1)
	}
	return nil
}

// Marshal returns the TF_CONFIG JSON for c, with "chief" (never "master").
func (c TFConfig) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	raw := struct {
		Cluster     ClusterSpec `json:"cluster"`
		Task        Task        `json:"task"`
		Environment string      `json:"environment,omitempty"`
		RPCLayer    string      `json:"rpc_layer,omitempty"`
	}{c.Cluster, c.Task, c.Environment, c.RPCLayer}
	return json.Marshal(raw)
}

// Address returns the address of c's own task. An evaluator outside the
// cluster has none and gets an error.
func (c TFConfig) Address() (string, error) { return c.Cluster.Address(c.Task) }

// ListenAddress returns the address c's task should listen on: every
// interface, on the port of its cluster address (":2222" for
// "job-ps-0.ns.svc:2222"). In a TFJob pod the task's service name resolves
// to the pod, so binding all interfaces is what peers need; outside a
// cluster network prefer the loopback defaults of the commands.
func (c TFConfig) ListenAddress() (string, error) {
	addr, err := c.Address()
	if err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("distributed: task %s address %q: %w", c.Task, addr, err)
	}
	return ":" + port, nil
}

// TFConfigFromEnv parses the TF_CONFIG environment variable. It returns
// ErrNoTFConfig when the variable is unset or blank.
func TFConfigFromEnv() (TFConfig, error) {
	v, ok := os.LookupEnv(TFConfigEnv)
	if !ok || strings.TrimSpace(v) == "" {
		return TFConfig{}, ErrNoTFConfig
	}
	return ParseTFConfig([]byte(v))
}
