package tfserving

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/gotflow/gotflow/serving"
	"github.com/gotflow/gotflow/serving/tfserving/tfservingpb"
)

// ReadModelConfig reads a TF Serving --model_config_file: a
// ModelServerConfig in protobuf text format, with a model_config_list of
// models (name, base_path, model_platform "tensorflow",
// model_version_policy, version_labels). Relative base paths are taken
// from the file's directory.
func ReadModelConfig(path string) ([]serving.ModelConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tfserving: model config: %w", err)
	}
	var cfg tfservingpb.ModelServerConfig
	if err := prototext.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("tfserving: model config %s is not a ModelServerConfig in text format: %w", path, err)
	}
	if cfg.GetCustomModelConfig() != nil {
		return nil, fmt.Errorf("tfserving: model config %s: custom_model_config is not supported; use model_config_list", path)
	}
	list := cfg.GetModelConfigList().GetConfig()
	if len(list) == 0 {
		return nil, fmt.Errorf("tfserving: model config %s has no model in model_config_list", path)
	}
	var out []serving.ModelConfig
	for _, m := range list {
		if p := m.GetModelPlatform(); p != "" && p != "tensorflow" {
			return nil, fmt.Errorf("tfserving: model config %s: model %q: platform %q is not supported (want tensorflow)", path, m.GetName(), p)
		}
		base := m.GetBasePath()
		if base != "" && !filepath.IsAbs(base) {
			base = filepath.Join(filepath.Dir(path), base)
		}
		mc := serving.ModelConfig{Name: m.GetName(), BasePath: base, Labels: m.GetVersionLabels()}
		if p := m.GetModelVersionPolicy(); p != nil {
			switch {
			case p.GetAll() != nil:
				mc.Policy.All = true
			case p.GetSpecific() != nil:
				mc.Policy.Specific = p.GetSpecific().GetVersions()
				if len(mc.Policy.Specific) == 0 {
					return nil, fmt.Errorf("tfserving: model config %s: model %q: a specific version policy needs versions", path, m.GetName())
				}
			case p.GetLatest() != nil:
				mc.Policy.Latest = int(p.GetLatest().GetNumVersions())
			}
		}
		out = append(out, mc)
	}
	return out, nil
}

// ReadBatchingParameters reads a TF Serving --batching_parameters_file: a
// BatchingParameters in protobuf text format
// ("max_batch_size { value: 128 }" ...). Fields left out keep
// serving.BatchingParameters' defaults.
func ReadBatchingParameters(path string) (*serving.BatchingParameters, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tfserving: batching parameters: %w", err)
	}
	var p tfservingpb.BatchingParameters
	if err := prototext.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("tfserving: batching parameters %s are not a BatchingParameters in text format: %w", path, err)
	}
	out := &serving.BatchingParameters{
		MaxBatchSize:              int(p.GetMaxBatchSize().GetValue()),
		BatchTimeout:              time.Duration(p.GetBatchTimeoutMicros().GetValue()) * time.Microsecond,
		NumBatchThreads:           int(p.GetNumBatchThreads().GetValue()),
		MaxEnqueuedBatches:        int(p.GetMaxEnqueuedBatches().GetValue()),
		EnableLargeBatchSplitting: p.GetEnableLargeBatchSplitting().GetValue(),
	}
	for _, s := range p.GetAllowedBatchSizes() {
		out.AllowedBatchSizes = append(out.AllowedBatchSizes, int(s))
	}
	if p.GetPadVariableLengthInputs() {
		return nil, fmt.Errorf("tfserving: batching parameters %s: pad_variable_length_inputs is not supported", path)
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("tfserving: batching parameters %s: %w", path, err)
	}
	return out, nil
}
