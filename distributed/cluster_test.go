package distributed

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// kubeflowTFConfig is TF_CONFIG as the training operator writes it for the
// worker-1 pod of a TFJob with one chief, two workers and one PS.
const kubeflowTFConfig = `{"cluster":{"chief":["mnist-chief-0.kubeflow.svc:2222"],"ps":["mnist-ps-0.kubeflow.svc:2222"],"worker":["mnist-worker-0.kubeflow.svc:2222","mnist-worker-1.kubeflow.svc:2222"]},"task":{"type":"worker","index":1},"environment":"cloud"}`

func TestParseTFConfigKubeflow(t *testing.T) {
	cfg, err := ParseTFConfig([]byte(kubeflowTFConfig))
	require.NoError(t, err)
	require.Equal(t, Task{Role: RoleWorker, Index: 1}, cfg.Task)
	require.Equal(t, "cloud", cfg.Environment)
	require.Equal(t, []string{"mnist-chief-0.kubeflow.svc:2222"}, cfg.Cluster.Chief)
	require.Equal(t, []string{"mnist-worker-0.kubeflow.svc:2222", "mnist-worker-1.kubeflow.svc:2222"}, cfg.Cluster.Worker)
	require.Equal(t, []string{"mnist-ps-0.kubeflow.svc:2222"}, cfg.Cluster.PS)

	rank, err := cfg.Cluster.Rank(cfg.Task)
	require.NoError(t, err)
	require.Equal(t, 2, rank, "chief is rank 0, worker 0 rank 1, worker 1 rank 2")
	require.Equal(t, 3, cfg.Cluster.NumTrainers())
	require.Equal(t, []Task{{Role: RoleChief, Index: 0}, {Role: RoleWorker, Index: 0}, {Role: RoleWorker, Index: 1}}, cfg.Cluster.TrainingTasks())
	coord, err := cfg.Cluster.Coordinator()
	require.NoError(t, err)
	require.Equal(t, Task{Role: RoleChief}, coord)
	addr, err := cfg.Cluster.Address(cfg.Task)
	require.NoError(t, err)
	require.Equal(t, "mnist-worker-1.kubeflow.svc:2222", addr)
	require.Equal(t, "/job:worker/task:1", cfg.Task.Device())
	listen, err := cfg.ListenAddress()
	require.NoError(t, err)
	require.Equal(t, ":2222", listen)

	// Marshal round trip gives the same config.
	b, err := cfg.Marshal()
	require.NoError(t, err)
	again, err := ParseTFConfig(b)
	require.NoError(t, err)
	require.Equal(t, cfg, again)
}

func TestParseTFConfigMasterAndEvaluator(t *testing.T) {
	// Older TFJobs name the chief "master", both as job and task type.
	cfg, err := ParseTFConfig([]byte(`{"cluster":{"master":["m:2222"],"worker":["w:2222"]},"task":{"type":"master","index":0}}`))
	require.NoError(t, err)
	require.Equal(t, Task{Role: RoleChief, Index: 0}, cfg.Task)
	require.Equal(t, []string{"m:2222"}, cfg.Cluster.Chief)
	b, err := cfg.Marshal()
	require.NoError(t, err)
	require.JSONEq(t, `{"cluster":{"chief":["m:2222"],"worker":["w:2222"]},"task":{"type":"chief","index":0}}`, string(b))

	// TFJob leaves the evaluator out of "cluster".
	cfg, err = ParseTFConfig([]byte(`{"cluster":{"chief":["c:1"],"worker":["w:1"]},"task":{"type":"evaluator","index":0}}`))
	require.NoError(t, err)
	require.Equal(t, Task{Role: RoleEvaluator}, cfg.Task)
	_, err = cfg.ListenAddress()
	require.ErrorContains(t, err, "task evaluator:0 is not in the cluster")
	require.False(t, cfg.Task.Trains())
	_, err = cfg.Cluster.Rank(cfg.Task)
	require.Error(t, err)

	// Only workers, no chief: worker 0 coordinates.
	cfg, err = ParseTFConfig([]byte(`{"cluster":{"worker":["a:1","b:1"],"ps":["p:1"]},"task":{"type":"ps","index":0}}`))
	require.NoError(t, err)
	coord, err := cfg.Cluster.Coordinator()
	require.NoError(t, err)
	require.Equal(t, Task{Role: RoleWorker}, coord)
}

func TestParseTFConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"not json", `cluster=worker:0`, "TF_CONFIG is not valid JSON"},
		{"empty", ``, "TF_CONFIG is not valid JSON"},
		{"trailing data", `{"cluster":{"worker":["a:1"]},"task":{"type":"worker","index":0}} {}`, "data after its JSON object"},
		{"no cluster", `{"task":{"type":"worker","index":0}}`, `no "cluster" object`},
		{"no task", `{"cluster":{"worker":["a:1"]}}`, `no "task" object`},
		{"unknown task type", `{"cluster":{"worker":["a:1"]},"task":{"type":"trainer","index":0}}`, `unknown task type "trainer"`},
		{"empty task type", `{"cluster":{"worker":["a:1"]},"task":{"index":0}}`, `task has no "type"`},
		{"no index", `{"cluster":{"worker":["a:1"]},"task":{"type":"worker"}}`, `task "worker" has no "index"`},
		{"index as string", `{"cluster":{"worker":["a:1"]},"task":{"type":"worker","index":"0"}}`, "not valid JSON"},
		{"index out of range", `{"cluster":{"worker":["a:1","b:1"]},"task":{"type":"worker","index":2}}`, `index out of range, job "worker" has 2 tasks (valid indices 0..1)`},
		{"negative index", `{"cluster":{"worker":["a:1"]},"task":{"type":"worker","index":-1}}`, "index out of range"},
		{"task job absent", `{"cluster":{"worker":["a:1"]},"task":{"type":"ps","index":0}}`, `job "ps" has 0 tasks`},
		{"unknown job", `{"cluster":{"worker":["a:1"],"tpu_worker":["t:1"]},"task":{"type":"worker","index":0}}`, `unknown job "tpu_worker"`},
		{"unknown field", `{"cluster":{"worker":["a:1"]},"task":{"type":"worker","index":0},"extra":1}`, `unknown field "extra"`},
		{"chief and master", `{"cluster":{"chief":["a:1"],"master":["b:1"]},"task":{"type":"chief","index":0}}`, `both "chief" and "master"`},
		{"two chiefs", `{"cluster":{"chief":["a:1","b:1"]},"task":{"type":"chief","index":0}}`, "2 chief tasks"},
		{"no trainers", `{"cluster":{"ps":["a:1"]},"task":{"type":"ps","index":0}}`, "no chief and no worker"},
		{"bad address", `{"cluster":{"worker":["localhost"]},"task":{"type":"worker","index":0}}`, `task worker:0: address "localhost" is not host:port`},
		{"bad port", `{"cluster":{"worker":["a:http"]},"task":{"type":"worker","index":0}}`, `port "http"`},
		{"port zero", `{"cluster":{"worker":["a:0"]},"task":{"type":"worker","index":0}}`, "expected a number in 1..65535"},
		{"duplicate address", `{"cluster":{"worker":["a:1"],"ps":["a:1"]},"task":{"type":"worker","index":0}}`, `tasks worker:0 and ps:0 share the address "a:1"`},
		{"sparse cluster", `{"sparseCluster":{"worker":{"0":"a:1"},"ps":["p:1"]},"task":{"type":"worker","index":0}}`, "does not support"},
		{"evaluator outside cluster index 1", `{"cluster":{"worker":["a:1"]},"task":{"type":"evaluator","index":1}}`, "must have index 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTFConfig([]byte(tc.in))
			require.Error(t, err)
			require.ErrorContains(t, err, tc.want)
			require.Contains(t, err.Error(), "distributed: ")
		})
	}
}

func TestTFConfigFromEnv(t *testing.T) {
	t.Setenv(TFConfigEnv, "")
	_, err := TFConfigFromEnv()
	require.ErrorIs(t, err, ErrNoTFConfig)
	t.Setenv(TFConfigEnv, kubeflowTFConfig)
	cfg, err := TFConfigFromEnv()
	require.NoError(t, err)
	require.Equal(t, Task{Role: RoleWorker, Index: 1}, cfg.Task)
	t.Setenv(TFConfigEnv, "{")
	_, err = TFConfigFromEnv()
	require.ErrorContains(t, err, "not valid JSON")
}

func TestClusterSpecJSON(t *testing.T) {
	spec := ClusterSpec{Worker: []string{"127.0.0.1:5001"}, PS: []string{"127.0.0.1:5002", "127.0.0.1:5003"}}
	require.NoError(t, spec.Validate())
	b, err := json.Marshal(spec)
	require.NoError(t, err)
	require.JSONEq(t, `{"worker":["127.0.0.1:5001"],"ps":["127.0.0.1:5002","127.0.0.1:5003"]}`, string(b))
	require.Equal(t, []Task{{Role: RoleWorker, Index: 0}, {Role: RolePS, Index: 0}, {Role: RolePS, Index: 1}}, spec.Tasks())
	_, err = spec.Address(Task{Role: RolePS, Index: 2})
	require.ErrorContains(t, err, `task ps:2 is not in the cluster (job "ps" has 2 tasks)`)
	require.ErrorContains(t, ClusterSpec{}.Validate(), "at least one")
}

// FuzzParseTFConfig checks that parsing never panics and that whatever
// parses survives a Marshal/Parse round trip unchanged.
func FuzzParseTFConfig(f *testing.F) {
	f.Add([]byte(kubeflowTFConfig))
	f.Add([]byte(`{"cluster":{"master":["m:2222"],"worker":["w:2222"]},"task":{"type":"master","index":0}}`))
	f.Add([]byte(`{"cluster":{"chief":["c:1"]},"task":{"type":"evaluator","index":0}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseTFConfig(data)
		if err != nil {
			require.Contains(t, err.Error(), "distributed: ")
			return
		}
		require.NoError(t, cfg.Validate())
		b, err := cfg.Marshal()
		require.NoError(t, err)
		again, err := ParseTFConfig(b)
		require.NoError(t, err, "re-parse of %s", b)
		require.Equal(t, cfg, again)
	})
}
