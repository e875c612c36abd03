package ps

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/gotflow/gotflow/ps/pspb"
)

// This file is the in-process data plane: clients of a LocalCluster push
// and pull by calling their shard directly instead of through gRPC. A push
// goes through the same validation (acceptChunks), deduplication, optimizer,
// write-ahead log and snapshot code as one that arrived over the network,
// and a pull reads the same changed parts (changed); only the
// serialisation, the HTTP/2 framing and the copies they cost are skipped.
// Register, Barrier, Snapshot and the other control calls still use gRPC
// over the cluster's in-memory listeners.

// enterLocal admits a call from an in-process client, or refuses it with
// codes.Unavailable (as a stopped network shard would) once the shard is
// stopping. The returned func ends the call; stop waits for every call
// admitted before it began.
func (s *Server) enterLocal() (func(), error) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	select {
	case <-s.closed:
		return nil, status.Errorf(codes.Unavailable, "ps: shard %d is stopped", s.o.shard)
	default:
	}
	s.localCalls.Add(1)
	untrack := s.track()
	return func() {
		untrack()
		s.localCalls.Done()
	}, nil
}

// waitLocal waits for the in-process calls admitted before the shard was
// closed; s.closed must already be closed.
func (s *Server) waitLocal() {
	s.localMu.Lock()
	s.localMu.Unlock() //nolint:staticcheck // an empty critical section orders later enterLocal calls after close
	s.localCalls.Wait()
}

// localPush applies one push from an in-process client. The chunks'
// data is borrowed until it returns. If hdr asks for a pull, the parts
// changed since its cursor come back as chunks the caller owns, with the
// server info.
func (s *Server) localPush(ctx context.Context, hdr *pspb.PushHeader, chunks []*pspb.Chunk) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
	done, err := s.enterLocal()
	if err != nil {
		return nil, nil, nil, err
	}
	defer done()
	segs := make([]*segChunk, len(chunks))
	for i, c := range chunks {
		segs[i] = chunkFromBytes(c)
	}
	return s.exchange(ctx, hdr, segs)
}

// exchange validates and applies one push whose chunks were read whole
// (it takes them over) and, if hdr asks for a pull, copies out the parts
// changed since its cursor: the handling of a push shared by the
// in-process and bulk transports, the same steps as the gRPC handlers'.
func (s *Server) exchange(ctx context.Context, hdr *pspb.PushHeader, segs []*segChunk) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
	ups, err := s.acceptChunks(hdr, segs, nil, map[*part]bool{})
	if err != nil {
		releaseUpdates(ups)
		return nil, nil, nil, err
	}
	return s.applyAccepted(ctx, hdr, ups)
}

// applyAccepted is exchange for updates acceptChunks already validated
// (it takes them over).
func (s *Server) applyAccepted(ctx context.Context, hdr *pspb.PushHeader, ups []update) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
	if err := s.checkChunkCount(hdr, ups); err != nil {
		releaseUpdates(ups)
		return nil, nil, nil, err
	}
	resp, err := s.push(ctx, hdr, ups)
	releaseUpdates(ups)
	if err != nil {
		return nil, nil, nil, err
	}
	if h := s.testAfterPush; h != nil {
		if err := h(hdr.GetIdempotencyKey()); err != nil {
			return nil, nil, nil, err
		}
	}
	if hdr.GetPull() == nil {
		return resp, nil, nil, nil
	}
	pulled, info, err := s.copyChanged(hdr.GetPull())
	if err != nil {
		return nil, nil, nil, err
	}
	return resp, pulled, info, nil
}

// localPull answers a pull from an in-process client.
func (s *Server) localPull(req *pspb.PullRequest) ([]*segChunk, *pspb.ServerInfo, error) {
	done, err := s.enterLocal()
	if err != nil {
		return nil, nil, err
	}
	defer done()
	return s.copyChanged(req)
}

// copyChanged copies the parts changed since req's cursor into chunks of
// their own, in the dtype req asks for.
func (s *Server) copyChanged(req *pspb.PullRequest) ([]*segChunk, *pspb.ServerInfo, error) {
	var out []*segChunk
	var info *pspb.ServerInfo
	var bytes uint64
	err := s.changed(req, func(parts []pullPart, dtype pspb.DType, _ int, in *pspb.ServerInfo) error {
		info = in
		out = make([]*segChunk, len(parts))
		elements := 0
		for _, p := range parts {
			elements += len(p.values)
		}
		eachPart(len(parts), elements, func(i int) {
			p := parts[i]
			if dtype != pspb.DType_DTYPE_FLOAT32 || !littleEndian {
				out[i] = chunkFromBytes(encodeChunk(p.name, p.index, p.values, dtype))
				return
			}
			// A pooled buffer: the client's cache gives it back when the
			// next pull replaces it, so steady pulls allocate nothing.
			n := 4 * len(p.values)
			b := wirePool.Get(n)
			spreadCopy(*b, float32Bytes(p.values))
			out[i] = &segChunk{name: p.name, index: p.index, dtype: dtype, n: n, pieces: [][]byte{*b}, bufs: []mem.Buffer{mem.NewBuffer(b, wirePool)}}
		})
		for _, c := range out {
			bytes += uint64(c.n)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.stats.bytesOut.Add(bytes)
	return out, info, nil
}
