package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/gotflow/gotflow/distributed"
)

// psFromTFConfig fills --shard and --listen from TF_CONFIG (as Kubeflow's
// TFJob sets it) when they were not given: shard i/N from the task index
// and the size of the "ps" job, listen on every interface at the port the
// cluster advertises for this task. Without TF_CONFIG it does nothing.
func psFromTFConfig(fs *flag.FlagSet, shard, listen *string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["shard"] && set["listen"] {
		return nil
	}
	cfg, err := distributed.TFConfigFromEnv()
	if errors.Is(err, distributed.ErrNoTFConfig) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.Task.Role != distributed.RolePS {
		return fmt.Errorf("%w: TF_CONFIG task is %s; gotflow ps runs ps tasks", errUsage, cfg.Task)
	}
	if !set["shard"] {
		*shard = fmt.Sprintf("%d/%d", cfg.Task.Index, len(cfg.Cluster.PS))
	}
	if !set["listen"] {
		if *listen, err = cfg.ListenAddress(); err != nil {
			return err
		}
	}
	return nil
}
