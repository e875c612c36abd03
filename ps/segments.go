package ps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/pspb"
)

// This file is the parameter server's one hand-written protobuf decoder. It
// reads pushes on the shard (pushMsg) and pull and push-pull responses on
// the client (pullMsg) straight from the buffers gRPC received them in,
// without first copying each message into one slice: chunk payloads stay
// in those buffers (a reference is kept) until they are applied or decoded
// into the caller's tensors. wireCodec.Unmarshal is its entry point.

// segChunk is a received chunk whose data lies in received buffers.
type segChunk struct {
	name   string
	index  uint32
	dtype  pspb.DType
	n      int      // payload bytes
	pieces [][]byte // the payload, in order
	bufs   []mem.Buffer
}

// release drops the references on the received buffers.
func (c *segChunk) release() {
	for _, b := range c.bufs {
		b.Free()
	}
	c.bufs, c.pieces = nil, nil
}

// decode writes the chunk's elements into dst (len(dst) elements).
func (c *segChunk) decode(dst []float32) error {
	if c.dtype == pspb.DType_DTYPE_FLOAT32 && littleEndian && c.n == 4*len(dst) {
		if len(dst) == 0 {
			return nil
		}
		out := unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst))
		if len(c.pieces) == 1 {
			spreadCopy(out, c.pieces[0])
			return nil
		}
		for _, p := range c.pieces {
			out = out[copy(out, p):]
		}
		return nil
	}
	data := make([]byte, 0, c.n)
	for _, p := range c.pieces {
		data = append(data, p...)
	}
	return decodeInto(dst, &pspb.Chunk{Name: c.name, Index: c.index, Dtype: c.dtype, Data: data})
}

// chunkFromBytes wraps a contiguous chunk.
func chunkFromBytes(c *pspb.Chunk) *segChunk {
	return &segChunk{name: c.GetName(), index: c.GetIndex(), dtype: c.GetDtype(), n: len(c.GetData()), pieces: [][]byte{c.GetData()}}
}

// pullMsg receives a PullResponse (push == false) or a PushPullResponse.
type pullMsg struct {
	pushPull bool
	push     *pspb.PushResponse
	info     *pspb.ServerInfo
	chunks   []*segChunk
}

func (m *pullMsg) releaseAll() {
	for _, c := range m.chunks {
		c.release()
	}
}

// segReader reads protobuf wire format across received buffers.
type segReader struct {
	segs []mem.Buffer
	i    int // current buffer
	off  int // offset in it
	pos  int // absolute position
}

var errSegTruncated = errors.New("message truncated")

func wrongType(num protowire.Number, typ protowire.Type) error {
	return fmt.Errorf("field %d has wire type %d", num, typ)
}

func (r *segReader) byte() (byte, error) {
	for r.i < len(r.segs) {
		d := r.segs[r.i].ReadOnlyData()
		if r.off < len(d) {
			b := d[r.off]
			r.off++
			r.pos++
			return b, nil
		}
		r.i, r.off = r.i+1, 0
	}
	return 0, errSegTruncated
}

func (r *segReader) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

// take returns the next n bytes as pieces of the buffers (no copy) and the
// buffers they lie in, each referenced once more.
func (r *segReader) take(n int) ([][]byte, []mem.Buffer, error) {
	var pieces [][]byte
	var bufs []mem.Buffer
	last := -1 // index of the buffer referenced last
	for n > 0 {
		if r.i >= len(r.segs) {
			for _, b := range bufs {
				b.Free()
			}
			return nil, nil, errSegTruncated
		}
		d := r.segs[r.i].ReadOnlyData()
		k := min(n, len(d)-r.off)
		if k > 0 {
			pieces = append(pieces, d[r.off:r.off+k])
			if last != r.i {
				r.segs[r.i].Ref()
				bufs = append(bufs, r.segs[r.i])
				last = r.i
			}
			r.off += k
			r.pos += k
			n -= k
		}
		if r.off == len(d) {
			r.i, r.off = r.i+1, 0
		}
	}
	return pieces, bufs, nil
}

// copyN returns a copy of the next n bytes. The copy grows with the bytes
// actually present, so a length read off the wire cannot make it allocate
// more than the message holds.
func (r *segReader) copyN(n int) ([]byte, error) {
	if n < 0 {
		return nil, errSegTruncated
	}
	out := make([]byte, 0, min(n, 1<<16))
	for len(out) < n {
		if r.i >= len(r.segs) {
			return nil, errSegTruncated
		}
		d := r.segs[r.i].ReadOnlyData()
		k := min(n-len(out), len(d)-r.off)
		out = append(out, d[r.off:r.off+k]...)
		r.off += k
		r.pos += k
		if r.off == len(d) {
			r.i, r.off = r.i+1, 0
		}
	}
	return out, nil
}

// advance moves past the next n bytes without copying them.
func (r *segReader) advance(n uint64) error {
	for n > 0 {
		if r.i >= len(r.segs) {
			return errSegTruncated
		}
		d := r.segs[r.i].ReadOnlyData()
		k := min(n, uint64(len(d)-r.off))
		r.off += int(k)
		r.pos += int(k)
		n -= k
		if r.off == len(d) {
			r.i, r.off = r.i+1, 0
		}
	}
	return nil
}

// skip moves past a field value of type typ (an unknown field).
func (r *segReader) skip(typ protowire.Type) error {
	switch typ {
	case protowire.VarintType:
		_, err := r.varint()
		return err
	case protowire.Fixed32Type:
		return r.advance(4)
	case protowire.Fixed64Type:
		return r.advance(8)
	case protowire.BytesType:
		n, err := r.varint()
		if err != nil {
			return err
		}
		return r.advance(n)
	}
	return fmt.Errorf("wire type %d not supported", typ)
}

// fields reads fields until position end, calling f with each field's
// number and type; f must consume the value (or call skip).
func (r *segReader) fields(end int, f func(num protowire.Number, typ protowire.Type) error) error {
	for r.pos < end {
		tag, err := r.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(tag)
		if num <= 0 {
			return fmt.Errorf("invalid field number %d", num)
		}
		if err := f(num, typ); err != nil {
			return err
		}
	}
	if r.pos != end {
		return errors.New("field overruns its message")
	}
	return nil
}

// length reads a length prefix and returns the end position it implies.
func (r *segReader) length(total int) (int, error) {
	n, err := r.varint()
	if err != nil {
		return 0, err
	}
	if n > uint64(total-r.pos) {
		return 0, errSegTruncated
	}
	return r.pos + int(n), nil
}

func (r *segReader) chunk(end int) (*segChunk, error) {
	c := &segChunk{}
	err := r.fields(end, func(num protowire.Number, typ protowire.Type) error {
		switch {
		case num == fChunkName && typ == protowire.BytesType:
			e, err := r.length(end)
			if err != nil {
				return err
			}
			b, err := r.copyN(e - r.pos)
			c.name = string(b)
			return err
		case num == fChunkIndex && typ == protowire.VarintType:
			v, err := r.varint()
			c.index = uint32(v)
			return err
		case num == fChunkDtype && typ == protowire.VarintType:
			v, err := r.varint()
			c.dtype = pspb.DType(int32(v))
			return err
		case num == fChunkData && typ == protowire.BytesType:
			e, err := r.length(end)
			if err != nil {
				return err
			}
			c.release() // a repeated field: the last one wins
			c.n = e - r.pos
			c.pieces, c.bufs, err = r.take(c.n)
			return err
		case num == fChunkName || num == fChunkIndex || num == fChunkDtype || num == fChunkData:
			return wrongType(num, typ)
		}
		return r.skip(typ)
	})
	if err != nil {
		c.release()
		return nil, fmt.Errorf("chunk: %w", err)
	}
	return c, nil
}

func (r *segReader) message(end int, m proto.Message) error {
	b, err := r.copyN(end - r.pos)
	if err != nil {
		return err
	}
	return proto.UnmarshalOptions{Merge: true}.Unmarshal(b, m)
}

func (r *segReader) pullResponse(end int, m *pullMsg) error {
	return r.fields(end, func(num protowire.Number, typ protowire.Type) error {
		if typ != protowire.BytesType {
			if num == fPullChunks || num == fPullInfo {
				return wrongType(num, typ)
			}
			return r.skip(typ)
		}
		e, err := r.length(end)
		if err != nil {
			return err
		}
		switch num {
		case fPullChunks:
			c, err := r.chunk(e)
			if err != nil {
				return err
			}
			m.chunks = append(m.chunks, c)
			return nil
		case fPullInfo:
			if m.info == nil {
				m.info = &pspb.ServerInfo{}
			}
			return r.message(e, m.info)
		}
		err = r.advance(uint64(e - r.pos))
		return err
	})
}

// unmarshalPullMsg decodes data into m, referencing data's buffers for
// chunk payloads.
func unmarshalPullMsg(data mem.BufferSlice, m *pullMsg) error {
	r := &segReader{segs: data}
	total := data.Len()
	var err error
	if !m.pushPull {
		err = r.pullResponse(total, m)
	} else {
		err = r.fields(total, func(num protowire.Number, typ protowire.Type) error {
			if typ != protowire.BytesType {
				if num == fPushPullPush || num == fPushPullPull {
					return wrongType(num, typ)
				}
				return r.skip(typ)
			}
			e, err := r.length(total)
			if err != nil {
				return err
			}
			switch num {
			case fPushPullPush:
				if m.push == nil {
					m.push = &pspb.PushResponse{}
				}
				return r.message(e, m.push)
			case fPushPullPull:
				return r.pullResponse(e, m)
			}
			err = r.advance(uint64(e - r.pos))
			return err
		})
	}
	if err != nil {
		m.releaseAll()
		m.chunks = nil
	}
	return err
}

// runs calls f with the chunk's float32 elements in order, as slices
// starting at element off: aligned stretches of a piece are viewed in
// place, unaligned ones copied to a scratch slice, and an element split
// between two pieces assembled. Only for little-endian float32 chunks.
func (c *segChunk) runs(f func(off int, g []float32)) {
	var carry [4]byte
	nc := 0
	elem := 0
	var tmp []float32
	for _, p := range c.pieces {
		if nc > 0 {
			k := copy(carry[nc:], p)
			nc += k
			p = p[k:]
			if nc < 4 {
				continue
			}
			one := [1]float32{math.Float32frombits(binary.LittleEndian.Uint32(carry[:]))}
			f(elem, one[:])
			elem++
			nc = 0
		}
		n := len(p) / 4
		if n > 0 {
			if uintptr(unsafe.Pointer(&p[0]))%4 == 0 {
				f(elem, unsafe.Slice((*float32)(unsafe.Pointer(&p[0])), n))
			} else {
				if cap(tmp) < n {
					tmp = make([]float32, n)
				}
				tmp = tmp[:n]
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&tmp[0])), 4*n), p[:4*n])
				f(elem, tmp)
			}
			elem += n
		}
		nc = copy(carry[:], p[4*n:])
	}
}

// pushMsg receives a PushRequest on the server, chunk payloads left in
// the received buffers.
type pushMsg struct {
	header *pspb.PushHeader
	chunks []*segChunk
}

// unmarshalPushMsg decodes data into m, referencing data's buffers for
// chunk payloads.
func unmarshalPushMsg(data mem.BufferSlice, m *pushMsg) error {
	r := &segReader{segs: data}
	total := data.Len()
	err := r.fields(total, func(num protowire.Number, typ protowire.Type) error {
		if typ != protowire.BytesType {
			if num == fPushHeader || num == fPushChunks {
				return wrongType(num, typ)
			}
			return r.skip(typ)
		}
		e, err := r.length(total)
		if err != nil {
			return err
		}
		switch num {
		case fPushHeader:
			if m.header == nil {
				m.header = &pspb.PushHeader{}
			}
			return r.message(e, m.header)
		case fPushChunks:
			c, err := r.chunk(e)
			if err != nil {
				return err
			}
			m.chunks = append(m.chunks, c)
			return nil
		}
		err = r.advance(uint64(e - r.pos))
		return err
	})
	if err != nil {
		for _, c := range m.chunks {
			c.release()
		}
		m.chunks = nil
	}
	return err
}
