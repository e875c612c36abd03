package tfjob

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/gotflow/gotflow/distributed"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The parts of a TFJob this test reads.
type tfJob struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Spec struct {
		ReplicaSpecs map[string]struct {
			Replicas      int    `yaml:"replicas"`
			RestartPolicy string `yaml:"restartPolicy"`
			Template      struct {
				Spec struct {
					Containers []struct {
						Name  string   `yaml:"name"`
						Args  []string `yaml:"args"`
						Ports []struct {
							Name          string `yaml:"name"`
							ContainerPort int    `yaml:"containerPort"`
						} `yaml:"ports"`
					} `yaml:"containers"`
					Volumes []struct {
						Secret struct {
							SecretName string `yaml:"secretName"`
						} `yaml:"secret"`
						PVC struct {
							ClaimName string `yaml:"claimName"`
						} `yaml:"persistentVolumeClaim"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"tfReplicaSpecs"`
	} `yaml:"spec"`
}

// operatorTFConfig builds the TF_CONFIG Kubeflow's training operator gives
// replica index of rtype: every replica type except Evaluator in
// "cluster", lower-cased, with addresses
// <job>-<type>-<i>.<namespace>.svc:<tfjob-port, default 2222>, and
// "environment":"cloud".
func operatorTFConfig(t *testing.T, job tfJob, rtype string, index int) []byte {
	t.Helper()
	cluster := map[string][]string{}
	for rt, spec := range job.Spec.ReplicaSpecs {
		if rt == "Evaluator" {
			continue
		}
		port := 2222
		for _, c := range spec.Template.Spec.Containers {
			if c.Name != "tensorflow" {
				continue
			}
			for _, p := range c.Ports {
				if p.Name == "tfjob-port" {
					port = p.ContainerPort
				}
			}
		}
		lrt := strings.ToLower(rt)
		for i := range spec.Replicas {
			cluster[lrt] = append(cluster[lrt], fmt.Sprintf("%s-%s-%d.%s.svc:%d", job.Metadata.Name, lrt, i, job.Metadata.Namespace, port))
		}
	}
	b, err := json.Marshal(map[string]any{
		"cluster":     cluster,
		"task":        map[string]any{"type": strings.ToLower(rtype), "index": index},
		"environment": "cloud",
	})
	require.NoError(t, err)
	return b
}

func loadYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, v), path)
}

func TestManifest(t *testing.T) {
	var job tfJob
	loadYAML(t, "tfjob.yaml", &job)
	require.Equal(t, "kubeflow.org/v1", job.APIVersion)
	require.Equal(t, "TFJob", job.Kind)
	var pvc struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	}
	loadYAML(t, "pvc.yaml", &pvc)
	require.Equal(t, "PersistentVolumeClaim", pvc.Kind)

	specs := job.Spec.ReplicaSpecs
	require.ElementsMatch(t, []string{"PS", "Chief", "Worker"}, slices.Collect(maps.Keys(specs)))
	var trainerArgs [][]string
	for rt, spec := range specs {
		require.Len(t, spec.Template.Spec.Containers, 1, rt)
		c := spec.Template.Spec.Containers[0]
		require.Equal(t, "tensorflow", c.Name, "%s: the operator configures the container named tensorflow", rt)
		require.NotEmpty(t, c.Args, rt)
		for _, v := range spec.Template.Spec.Volumes {
			if v.Secret.SecretName != "" {
				require.Equal(t, "gotflow-ps-auth", v.Secret.SecretName, rt)
				continue
			}
			require.Equal(t, pvc.Metadata.Name, v.PVC.ClaimName, rt)
		}
		switch rt {
		case "PS":
			require.Equal(t, "ps", c.Args[0])
			// One template serves every PS replica: the shard and the
			// port must come from TF_CONFIG, not from flags.
			for _, a := range c.Args {
				require.False(t, strings.HasPrefix(a, "--shard") || strings.HasPrefix(a, "--listen"), "PS arg %q", a)
			}
			require.Len(t, c.Ports, 1)
			require.Equal(t, "tfjob-port", c.Ports[0].Name)
			require.Contains(t, []string{"OnFailure", "Always"}, spec.RestartPolicy, "a dead PS must come back and resume from its snapshot")
			require.True(t, slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--snapshot-dir=") }))
			for _, f := range []string{"--token-file=", "--tls-cert=", "--tls-key=", "--tls-client-ca="} {
				require.True(t, slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, f) }), "a PS on every interface of its pod needs %s", f)
			}
		default:
			for _, f := range []string{"--ps-token-file=", "--ps-ca=", "--ps-cert=", "--ps-key="} {
				require.True(t, slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, f) }), "%s needs %s to reach the PS", rt, f)
			}
			require.Equal(t, "worker", c.Args[0], rt)
			require.Equal(t, "Never", spec.RestartPolicy, "%s: a dead worker's rows are reassigned, it is not restarted", rt)
			trainerArgs = append(trainerArgs, c.Args)
		}
	}
	require.Len(t, trainerArgs, 2)
	require.Equal(t, trainerArgs[0], trainerArgs[1], "chief and workers run the same program")

	// Every pod's TF_CONFIG parses, and ranks, coordinator and listen
	// addresses come out as the README says.
	rank := map[string]int{}
	for rt, spec := range specs {
		for i := range spec.Replicas {
			raw := operatorTFConfig(t, job, rt, i)
			cfg, err := distributed.ParseTFConfig(raw)
			require.NoError(t, err, "%s", raw)
			require.Equal(t, 1, len(cfg.Cluster.PS))
			require.Equal(t, 3, cfg.Cluster.NumTrainers())
			coord, err := cfg.Cluster.Coordinator()
			require.NoError(t, err)
			require.Equal(t, distributed.Task{Role: distributed.RoleChief}, coord)
			listen, err := cfg.ListenAddress()
			require.NoError(t, err)
			require.Equal(t, ":2222", listen)
			if cfg.Task.Trains() {
				r, err := cfg.Cluster.Rank(cfg.Task)
				require.NoError(t, err)
				rank[cfg.Task.String()] = r
			}
		}
	}
	require.Equal(t, map[string]int{"chief:0": 0, "worker:0": 1, "worker:1": 2}, rank)
}
