package tune

import (
	"testing"

	"github.com/stretchr/testify/require"
)

const exampleSpace = `
objective:
  type: maximize
  objectiveMetricName: val_accuracy
  goal: 0.99
algorithm:
  algorithmName: random
  algorithmSettings:
    - name: random_state
      value: "7"
maxTrialCount: 16
parallelTrialCount: 2
maxFailedTrialCount: 2
timeBudget: 30m
parameters:
  - name: learning_rate
    parameterType: double
    feasibleSpace: {min: "0.0001", max: "0.1", distribution: logUniform}
  - name: batch_size
    parameterType: int
    feasibleSpace: {min: 16, max: 128}
  - name: optimizer
    parameterType: categorical
    feasibleSpace: {list: [adam, sgd]}
earlyStopping:
  algorithmName: asha
  algorithmSettings:
    - {name: grace_period, value: "1"}
    - {name: reduction_factor, value: "3"}
`

func TestParseSpace(t *testing.T) {
	s, err := ParseSpace([]byte(exampleSpace))
	require.NoError(t, err)
	require.Equal(t, "maximize", s.Objective.Type)
	require.Equal(t, 0.99, *s.Objective.Goal)
	require.Equal(t, 16, s.MaxTrialCount)
	require.Equal(t, 2, s.ParallelTrialCount)
	require.Equal(t, 2, *s.MaxFailedTrialCount)
	require.Equal(t, "30m0s", string(mustJSON(t, s.TimeBudget)))
	require.Len(t, s.Parameters, 3)
	require.Equal(t, Value("16"), s.Parameters[1].FeasibleSpace.Min, "numbers and strings alike")
	require.Equal(t, 3.0, setting(s.EarlyStopping.AlgorithmSettings, "reduction_factor", 4))

	// A Katib Experiment is read as its spec; its Kubernetes keys are ignored.
	katib := `apiVersion: kubeflow.org/v1beta1
kind: Experiment
metadata: {name: digits}
spec:
  objective: {type: minimize, objectiveMetricName: val_loss}
  algorithm: {algorithmName: grid}
  parameters:
    - name: learning_rate
      parameterType: double
      feasibleSpace: {min: "0.01", max: "0.03", step: "0.01"}
    - name: optimizer
      parameterType: categorical
      feasibleSpace: {list: [adam, sgd]}
  trialTemplate: {primaryContainerName: training}
`
	k, err := ParseSpace([]byte(katib))
	require.NoError(t, err)
	require.Equal(t, 6, k.MaxTrialCount, "grid: its size")
	require.Equal(t, 1, k.ParallelTrialCount)
	require.Equal(t, 3, *k.MaxFailedTrialCount)
}

func mustJSON(t *testing.T, v interface{ MarshalJSON() ([]byte, error) }) []byte {
	b, err := v.MarshalJSON()
	require.NoError(t, err)
	return b[1 : len(b)-1]
}

func TestParseSpaceBadInput(t *testing.T) {
	head := "objective: {type: minimize, objectiveMetricName: val_loss}\n"
	for _, tc := range []struct{ space, want string }{
		{head + "parameters: [{name: lerning_rate, parameterType: double, feasibleSpace: {min: 0.1, max: 1}}]",
			`parameters[0] (lerning_rate): "lerning_rate" is not a TFEstimator field a trial can set; want one of`},
		{head + "parameters: [{name: learning_rate, parameterType: double, feasibleSpace: {min: 1, max: 0.1}}]",
			"parameters[0] (learning_rate): feasibleSpace.min 1 is greater than max 0.1"},
		{head + "parameters: [{name: optimizer, parameterType: categorical, feasibleSpace: {list: []}}]",
			"parameters[0] (optimizer): feasibleSpace.list is empty"},
		{head + "parameters: [{name: optimizer, parameterType: categorical, feasibleSpace: {list: [adam, adam]}}]",
			`feasibleSpace.list[1] "adam" is listed twice`},
		{head + "parameters: [{name: learning_rate, parameterType: double, feasibleSpace: {min: 0, max: 1, distribution: logUniform}}]",
			"logUniform needs min > 0"},
		{head + "parameters: [{name: batch_size, parameterType: double, feasibleSpace: {min: 1, max: 8}}]",
			"batch_size is an integer; search it as int"},
		{head + "parameters: [{name: batch_size, parameterType: int, feasibleSpace: {min: 1.5, max: 8}}]",
			"must be integers"},
		{head + "parameters: [{name: model_dir, parameterType: categorical, feasibleSpace: {list: [a]}}]",
			`"model_dir" is not a TFEstimator field a trial can set`},
		{head + "parameters: [{name: epochs, parameterType: categorical, feasibleSpace: {list: [two]}}]",
			`feasibleSpace.list[0]: "two" is not an integer`},
		{head + "parameters: [{name: epochs, parameterType: float, feasibleSpace: {min: 1, max: 2}}]",
			`parameterType "float": want double, int or categorical`},
		{"objective: {type: best, objectiveMetricName: val_loss}\nparameters: [{name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 2}}]",
			`objective.type "best"`},
		{"objective: {type: minimize}\nparameters: [{name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 2}}]",
			"objective.objectiveMetricName is missing"},
		{head + "parameters: []", "parameters is empty"},
		{head + "algorithm: {algorithmName: hyperband}\nparameters: [{name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 2}}]",
			`algorithm.algorithmName "hyperband"`},
		{head + "algorithm: {algorithmName: grid}\nparameters: [{name: learning_rate, parameterType: double, feasibleSpace: {min: 0.1, max: 1}}]",
			"grid needs feasibleSpace.step for a double parameter"},
		{head + "earlyStopping: {algorithmName: asha, algorithmSettings: [{name: brackets, value: 1}]}\nparameters: [{name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 2}}]",
			`earlyStopping.algorithmSettings[0]: unknown setting "brackets"`},
		{head + "maxTrials: 3\nparameters: [{name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 2}}]",
			`unknown field "maxTrials"`},
		{head + "timeBudget: soon\nparameters: [{name: epochs, parameterType: int, feasibleSpace: {min: 1, max: 2}}]",
			`want a duration such as 30m or 2h, got "soon"`},
		{"- a\n- b\n", "want a mapping at the top level"},
	} {
		_, err := ParseSpace([]byte(tc.space))
		require.ErrorContains(t, err, tc.want, "space:\n%s", tc.space)
	}
}
