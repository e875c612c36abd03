package kserve

import (
	"context"
	"strconv"
	"time"

	"github.com/gotflow/gotflow/serving"
	pb "github.com/gotflow/gotflow/serving/kserve/inferencepb"
	"github.com/gotflow/gotflow/tf"
)

// grpcService is the inference.GRPCInferenceService.
type grpcService struct {
	pb.UnimplementedGRPCInferenceServiceServer
	f *frontend
}

func (g *grpcService) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: g.f.s.Live()}, nil
}

func (g *grpcService) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: g.f.s.Ready()}, nil
}

func (g *grpcService) ModelReady(_ context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	ok, err := g.f.modelReady(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, serving.AsStatus(err)
	}
	return &pb.ModelReadyResponse{Ready: ok}, nil
}

func (g *grpcService) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: ServerName, Version: serving.Version, Extensions: extensions}, nil
}

func (g *grpcService) ModelMetadata(_ context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, err := g.f.modelMetadata(req.GetName(), req.GetVersion(), "")
	if err != nil {
		return nil, serving.AsStatus(err)
	}
	conv := func(ts []tensorMeta) []*pb.ModelMetadataResponse_TensorMetadata {
		out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
		for i, t := range ts {
			out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
		}
		return out
	}
	return &pb.ModelMetadataResponse{Name: m.Name, Versions: m.Versions, Platform: m.Platform, Inputs: conv(m.Inputs), Outputs: conv(m.Outputs)}, nil
}

func (g *grpcService) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	sreq := &serving.Request{Model: req.GetModelName(), API: serving.APIV2GRPC}
	var err error
	if sreq.Version, sreq.Label, err = parseVersion(req.GetModelVersion()); err != nil {
		return nil, err
	}
	opts, typed, err := decodeGRPC(req, sreq)
	if err != nil {
		return nil, err
	}
	resp, err := g.f.predict(ctx, sreq, opts)
	if err != nil {
		if serving.HTTPStatus(serving.Code(err)) >= 500 {
			g.f.s.Logger().Warn("v2 gRPC infer failed", "model", sreq.Model, "err", err)
		}
		return nil, serving.AsStatus(err)
	}
	out := &pb.ModelInferResponse{ModelName: resp.Model, ModelVersion: strconv.FormatInt(resp.Version, 10), Id: req.GetId()}
	order := orderOutputs(resp, sreq.Outputs)
	raw := !typed
	for _, name := range order {
		if dt := resp.Outputs[name].DType; dt == tf.Half || dt == tf.BFloat16 {
			raw = true
		}
	}
	for _, name := range order {
		t := resp.Outputs[name]
		o := &pb.ModelInferResponse_InferOutputTensor{Name: name, Datatype: datatypeName(t.DType), Shape: t.Shape}
		if raw {
			out.RawOutputContents = append(out.RawOutputContents, rawBytes(t))
		} else {
			o.Contents = contentsOf(t)
		}
		out.Outputs = append(out.Outputs, o)
	}
	return out, nil
}

// decodeGRPC fills sreq from an infer request; typed reports whether the
// inputs came in typed contents (the response then answers in kind).
func decodeGRPC(req *pb.ModelInferRequest, sreq *serving.Request) (o inferOptions, typed bool, err error) {
	for k, v := range req.GetParameters() {
		switch k {
		case SignatureParameter:
			s, ok := v.GetParameterChoice().(*pb.InferParameter_StringParam)
			if !ok {
				return o, false, serving.InvalidArgument("parameter %q: want a string_param", k)
			}
			o.signature = s.StringParam
		case "timeout":
			us, ok := v.GetParameterChoice().(*pb.InferParameter_Int64Param)
			if !ok || us.Int64Param < 0 {
				return o, false, serving.InvalidArgument("parameter %q: want a non-negative int64_param (microseconds)", k)
			}
			o.timeout = time.Duration(us.Int64Param) * time.Microsecond
		}
	}
	raw := req.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(req.GetInputs()) {
		return o, false, serving.InvalidArgument("%d raw_input_contents for %d inputs", len(raw), len(req.GetInputs()))
	}
	sreq.Inputs = make(map[string]*serving.Tensor, len(req.GetInputs()))
	for i, in := range req.GetInputs() {
		shape := in.GetShape()
		if shape == nil {
			shape = []int64{}
		}
		t, n, err := newInput(in.GetName(), in.GetDatatype(), shape, sreq.Inputs)
		if err != nil {
			return o, false, err
		}
		for k := range in.GetParameters() {
			switch k {
			case "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset":
				return o, false, serving.InvalidArgument("input %q: shared memory is not supported", in.GetName())
			}
		}
		switch {
		case len(raw) > 0 && in.GetContents() != nil:
			return o, false, serving.InvalidArgument("input %q has contents, but the request uses raw_input_contents", in.GetName())
		case len(raw) > 0:
			err = setRaw(t, in.GetName(), n, raw[i])
		default:
			typed = true
			err = setContents(t, in.GetName(), n, in.GetContents())
		}
		if err != nil {
			return o, false, err
		}
		sreq.Inputs[in.GetName()] = t
	}
	for _, out := range req.GetOutputs() {
		if out.GetName() == "" {
			return o, false, serving.InvalidArgument("a requested output has no name")
		}
		for k := range out.GetParameters() {
			switch k {
			case "classification":
				return o, false, serving.InvalidArgument("output %q: the classification extension is not supported", out.GetName())
			case "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset":
				return o, false, serving.InvalidArgument("output %q: shared memory is not supported", out.GetName())
			}
		}
		sreq.Outputs = append(sreq.Outputs, out.GetName())
	}
	return o, typed, nil
}

// setContents fills t, which has n elements, from the typed field its
// datatype uses.
func setContents(t *serving.Tensor, name string, n int64, c *pb.InferTensorContents) error {
	count := func(field string, got int) error {
		if int64(got) != n {
			return serving.InvalidArgument("input %q: %d values in %s for shape %v (%d elements)", name, got, field, t.Shape, n)
		}
		return nil
	}
	switch t.DType {
	case tf.Bool:
		v := c.GetBoolContents()
		if err := count("bool_contents", len(v)); err != nil {
			return err
		}
		t.Data = serving.NewTensor(t.Shape, v).Data
	case tf.Int8, tf.Int16, tf.Int32:
		v := c.GetIntContents()
		if err := count("int_contents", len(v)); err != nil {
			return err
		}
		if t.DType == tf.Int32 {
			t.Data = serving.NewTensor(t.Shape, v).Data
			break
		}
		limit := int32(1) << (t.DType.Size()*8 - 1)
		t.Data = make([]byte, n*int64(t.DType.Size()))
		for i, x := range v {
			if x < -limit || x >= limit {
				return serving.InvalidArgument("input %q: element %d (%d) is out of range for %s", name, i, x, datatypeName(t.DType))
			}
			t.SetInt64(i, int64(x))
		}
	case tf.Int64:
		v := c.GetInt64Contents()
		if err := count("int64_contents", len(v)); err != nil {
			return err
		}
		t.Data = serving.NewTensor(t.Shape, v).Data
	case tf.Uint8, tf.Uint16, tf.Uint32:
		v := c.GetUintContents()
		if err := count("uint_contents", len(v)); err != nil {
			return err
		}
		if t.DType == tf.Uint32 {
			t.Data = serving.NewTensor(t.Shape, v).Data
			break
		}
		limit := uint32(1) << (t.DType.Size() * 8)
		t.Data = make([]byte, n*int64(t.DType.Size()))
		for i, x := range v {
			if x >= limit {
				return serving.InvalidArgument("input %q: element %d (%d) is out of range for %s", name, i, x, datatypeName(t.DType))
			}
			t.SetInt64(i, int64(x))
		}
	case tf.Uint64:
		v := c.GetUint64Contents()
		if err := count("uint64_contents", len(v)); err != nil {
			return err
		}
		t.Data = serving.NewTensor(t.Shape, v).Data
	case tf.Float:
		v := c.GetFp32Contents()
		if err := count("fp32_contents", len(v)); err != nil {
			return err
		}
		t.Data = serving.NewTensor(t.Shape, v).Data
	case tf.Double:
		v := c.GetFp64Contents()
		if err := count("fp64_contents", len(v)); err != nil {
			return err
		}
		t.Data = serving.NewTensor(t.Shape, v).Data
	case tf.String:
		v := c.GetBytesContents()
		if err := count("bytes_contents", len(v)); err != nil {
			return err
		}
		t.Strings = v
	default:
		return serving.InvalidArgument("input %q: %s data travels only in raw_input_contents", name, datatypeName(t.DType))
	}
	return nil
}

// contentsOf is a tensor's elements in the typed field of its datatype
// (not for FP16 and BF16, which travel raw).
func contentsOf(t *serving.Tensor) *pb.InferTensorContents {
	c := &pb.InferTensorContents{}
	n := int(t.NumElements())
	switch t.DType {
	case tf.Bool:
		c.BoolContents, _ = serving.Values[bool](t)
	case tf.Int32:
		c.IntContents, _ = serving.Values[int32](t)
	case tf.Int8, tf.Int16:
		c.IntContents = make([]int32, n)
		for i := range n {
			c.IntContents[i] = int32(t.Int64At(i))
		}
	case tf.Int64:
		c.Int64Contents, _ = serving.Values[int64](t)
	case tf.Uint32:
		c.UintContents, _ = serving.Values[uint32](t)
	case tf.Uint8, tf.Uint16:
		c.UintContents = make([]uint32, n)
		for i := range n {
			c.UintContents[i] = uint32(t.Int64At(i))
		}
	case tf.Uint64:
		c.Uint64Contents, _ = serving.Values[uint64](t)
	case tf.Float:
		c.Fp32Contents, _ = serving.Values[float32](t)
	case tf.Double:
		c.Fp64Contents, _ = serving.Values[float64](t)
	case tf.String:
		c.BytesContents = t.Strings
	}
	return c
}
