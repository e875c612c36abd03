package serving

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Server. Its zero value (plus at least one model) is
// TF Serving's defaults: no batching, the newest version of each model,
// a one-second poll.
type Config struct {
	// Models are the models served.
	Models []ModelConfig
	// PollInterval is how often each model's base path is scanned for
	// new versions (TF Serving's file_system_poll_wait_seconds; default 1s,
	// negative: only at start).
	PollInterval time.Duration
	// Batching turns the dynamic batcher on (TF Serving's enable_batching
	// with its batching parameters); nil serves each request alone.
	Batching *BatchingParameters
	// Tags is the meta graph's tag set (default serve).
	Tags []string
	// IntraOpThreads and InterOpThreads size each session's thread pools
	// (0: TensorFlow's default).
	IntraOpThreads, InterOpThreads int
	// MaxRequestBytes bounds a request body or a received gRPC message
	// (default 64 MiB): each Flight record batch is one message, so it
	// bounds those too.
	MaxRequestBytes int64
	// RequestTimeout bounds a request without its own deadline (TF
	// Serving's rest_api_timeout_in_ms; default 30s).
	RequestTimeout time.Duration
	// TLS, when set, serves every port over TLS.
	TLS *tls.Config
	// Token, when set, is the bearer token every request must carry
	// (Authorization: Bearer <token>; gRPC metadata "authorization").
	// Health endpoints stay open.
	Token  string
	Logger *slog.Logger
}

// ModelConfig is one served model: TF Serving's ModelConfig.
type ModelConfig struct {
	// Name is what clients ask for.
	Name string
	// BasePath holds the model's versions, one numbered directory each
	// (BasePath/1/saved_model.pb, BasePath/2/...).
	BasePath string
	// Policy picks the versions served: the newest Latest (default 1), or
	// every version (All), or Specific ones.
	Policy VersionPolicy
	// Labels name versions ("stable": 3); a label must name a version
	// that is served.
	Labels map[string]int64
}

// VersionPolicy is TF Serving's ServableVersionPolicy.
type VersionPolicy struct {
	Latest   int
	All      bool
	Specific []int64
}

func (p VersionPolicy) String() string {
	switch {
	case p.All:
		return "all"
	case len(p.Specific) > 0:
		return fmt.Sprintf("specific %v", p.Specific)
	}
	return fmt.Sprintf("latest %d", max(p.Latest, 1))
}

// BatchingParameters are TF Serving's batching knobs, with its names and
// defaults.
type BatchingParameters struct {
	// MaxBatchSize is the largest batch run (default 1000).
	MaxBatchSize int `json:"max_batch_size"`
	// BatchTimeout is how long a batch that is not full waits for more
	// requests (batch_timeout_micros; default 0: run as soon as a thread
	// is free).
	BatchTimeout time.Duration `json:"batch_timeout"`
	// NumBatchThreads is how many batches run at once (default: the
	// number of CPUs).
	NumBatchThreads int `json:"num_batch_threads"`
	// MaxEnqueuedBatches bounds the queue, in batches (default 10); a
	// request that would exceed it fails at once with UNAVAILABLE.
	MaxEnqueuedBatches int `json:"max_enqueued_batches"`
	// AllowedBatchSizes, if set, are the batch sizes run (increasing, the
	// last equal to MaxBatchSize): a batch is padded up to the next one
	// by repeating its first row, and the padding is cut from the
	// results.
	AllowedBatchSizes []int `json:"allowed_batch_sizes"`
	// EnableLargeBatchSplitting splits a request larger than the room
	// left in a batch across batches (TF Serving's
	// enable_large_batch_splitting). A request larger than MaxBatchSize
	// is always split.
	EnableLargeBatchSplitting bool `json:"enable_large_batch_splitting"`
}

// withDefaults fills the zero fields.
func (b BatchingParameters) withDefaults(cpus int) BatchingParameters {
	if b.MaxBatchSize <= 0 {
		b.MaxBatchSize = 1000
		if n := len(b.AllowedBatchSizes); n > 0 {
			b.MaxBatchSize = b.AllowedBatchSizes[n-1]
		}
	}
	if b.NumBatchThreads <= 0 {
		b.NumBatchThreads = max(cpus, 1)
	}
	if b.MaxEnqueuedBatches <= 0 {
		b.MaxEnqueuedBatches = 10
	}
	return b
}

// Validate checks the parameters as TF Serving does.
func (b BatchingParameters) Validate() error {
	if b.MaxBatchSize < 0 || b.NumBatchThreads < 0 || b.MaxEnqueuedBatches < 0 || b.BatchTimeout < 0 {
		return errors.New("serving: batching parameters must not be negative")
	}
	if n := len(b.AllowedBatchSizes); n > 0 {
		for i, v := range b.AllowedBatchSizes {
			if v <= 0 || i > 0 && v <= b.AllowedBatchSizes[i-1] {
				return fmt.Errorf("serving: allowed_batch_sizes %v must be positive and strictly increasing", b.AllowedBatchSizes)
			}
		}
		if m := b.MaxBatchSize; m > 0 && b.AllowedBatchSizes[n-1] != m {
			return fmt.Errorf("serving: the last allowed_batch_sizes entry (%d) must equal max_batch_size (%d)", b.AllowedBatchSizes[n-1], m)
		}
	}
	return nil
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if len(c.Models) == 0 {
		return errors.New("serving: no model to serve (set a model's name and base path)")
	}
	seen := map[string]bool{}
	for _, m := range c.Models {
		if m.Name == "" || m.BasePath == "" {
			return fmt.Errorf("serving: model %q: a model needs a name and a base path", m.Name)
		}
		if seen[m.Name] {
			return fmt.Errorf("serving: model %q is configured twice", m.Name)
		}
		seen[m.Name] = true
		if m.Policy.Latest < 0 {
			return fmt.Errorf("serving: model %q: latest %d versions", m.Name, m.Policy.Latest)
		}
		for l, v := range m.Labels {
			if l == "" || v <= 0 {
				return fmt.Errorf("serving: model %q: label %q → version %d: labels name positive versions", m.Name, l, v)
			}
		}
	}
	if c.Batching != nil {
		return c.Batching.Validate()
	}
	return nil
}
