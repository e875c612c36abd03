package tf

import (
	"fmt"

	configpb "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"
)

// SessionOption configures NewSession and LoadSavedModel.
type SessionOption interface{ apply(*sessionOptions) }

type sessionOptions struct {
	config *configpb.ConfigProto
	target string
}

type sessionOptionFunc func(*sessionOptions)

func (f sessionOptionFunc) apply(o *sessionOptions) { f(o) }

func buildSessionOptions(opts []SessionOption) sessionOptions {
	o := sessionOptions{config: &configpb.ConfigProto{}}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithConfig starts from a copy of cfg; options given after it change the
// copy.
func WithConfig(cfg *configpb.ConfigProto) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) {
		if cfg != nil {
			o.config = proto.Clone(cfg).(*configpb.ConfigProto)
		}
	})
}

// WithIntraOpThreads sets the threads one operation may use (0: as many as
// cores).
func WithIntraOpThreads(n int) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { o.config.IntraOpParallelismThreads = int32(n) })
}

// WithInterOpThreads sets the threads that run independent operations
// concurrently (0: as many as cores).
func WithInterOpThreads(n int) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { o.config.InterOpParallelismThreads = int32(n) })
}

// WithSoftPlacement lets TensorFlow move an operation to another device when
// the requested one cannot run it.
func WithSoftPlacement(on bool) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { o.config.AllowSoftPlacement = on })
}

// WithDeviceCount limits how many devices of a type ("CPU", "GPU") the
// session uses; WithDeviceCount("GPU", 0) hides every GPU.
func WithDeviceCount(deviceType string, n int) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) {
		if o.config.DeviceCount == nil {
			o.config.DeviceCount = map[string]int32{}
		}
		o.config.DeviceCount[deviceType] = int32(n)
	})
}

// WithVisibleGPUs restricts the session to the listed GPU ids ("0,1").
func WithVisibleGPUs(list string) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { gpuOptions(o).VisibleDeviceList = list })
}

// WithGPUMemoryGrowth makes TensorFlow allocate GPU memory as needed instead
// of reserving most of it up front.
func WithGPUMemoryGrowth(on bool) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { gpuOptions(o).AllowGrowth = on })
}

// WithGPUMemoryFraction caps the share of each GPU's memory the process uses.
func WithGPUMemoryFraction(f float64) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { gpuOptions(o).PerProcessGpuMemoryFraction = f })
}

// WithTarget connects the session to a TensorFlow server ("grpc://host:port")
// instead of running it in this process.
func WithTarget(target string) SessionOption {
	return sessionOptionFunc(func(o *sessionOptions) { o.target = target })
}

func gpuOptions(o *sessionOptions) *configpb.GPUOptions {
	if o.config.GpuOptions == nil {
		o.config.GpuOptions = &configpb.GPUOptions{}
	}
	return o.config.GpuOptions
}

func (o sessionOptions) validate() error {
	c := o.config
	if c.IntraOpParallelismThreads < 0 || c.InterOpParallelismThreads < 0 {
		return errorf(InvalidArgument, "SessionOptions", "thread counts must be >= 0, got intra=%d inter=%d", c.IntraOpParallelismThreads, c.InterOpParallelismThreads)
	}
	if g := c.GpuOptions; g != nil && (g.PerProcessGpuMemoryFraction < 0 || g.PerProcessGpuMemoryFraction > 1) {
		return errorf(InvalidArgument, "SessionOptions", "GPU memory fraction must be in [0, 1], got %g", g.PerProcessGpuMemoryFraction)
	}
	return nil
}

func (o sessionOptions) configBytes() ([]byte, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	b, err := proto.Marshal(o.config)
	if err != nil {
		return nil, fmt.Errorf("tf: encode ConfigProto: %w", err)
	}
	return b, nil
}
