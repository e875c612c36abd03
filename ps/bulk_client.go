package ps

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/pspb"
)

// bulkConn is a client's bulk connection to one shard (bulk.go).
type bulkConn struct {
	conn net.Conn
	r    *bulkReader
}

// bulkState is what a client knows of a shard's bulk transport.
type bulkState struct {
	conn *bulkConn
	off  bool // the shard does not speak it: use gRPC
}

// bulkFor returns a bulk connection to shard, dialling one if needed, or
// nil when pushes and pulls to shard go through gRPC: the client was told
// so (ViaGRPC), or the shard did not answer the bulk hello (a shard
// without it, or a proxy in between). A shard that cannot be reached is
// codes.Unavailable, retried like a gRPC call.
func (c *Client) bulkFor(ctx context.Context, shard int) (*bulkConn, error) {
	if c.bulk == nil || c.bulk[shard].off {
		return nil, nil
	}
	if bc := c.bulk[shard].conn; bc != nil {
		return bc, nil
	}
	bc, err := c.dialBulk(ctx, shard)
	var se *bulkStatusError
	switch {
	case err == nil:
		c.bulk[shard].conn = bc
		return bc, nil
	case errors.As(err, &se):
		return nil, se.err
	case errors.Is(err, errNotBulk):
		c.bulk[shard].off = true // it answered, in another protocol
		return nil, nil
	case errors.Is(err, errNoAnswer):
		return nil, nil // closed or silent (stopping, or a proxy): gRPC this time, bulk again next time
	}
	return nil, status.Errorf(codes.Unavailable, "ps: bulk connection: %v", err)
}

func (c *Client) dialBulk(ctx context.Context, shard int) (*bulkConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	if c.o.dialer != nil {
		conn, err = c.o.dialer(ctx, c.addrs[shard])
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", c.addrs[shard])
	}
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	setUserTimeout(conn, keepaliveTimeout)
	if c.o.tls != nil {
		cfg := c.o.tls.Clone()
		cfg.NextProtos = []string{bulkALPN}
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(c.addrs[shard])
			if err != nil {
				host = c.addrs[shard]
			}
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Op == "remote error" {
				return nil, errNotBulk // the shard sent an alert: it refused the protocol (or our certificate: gRPC will say)
			}
			return nil, fmt.Errorf("%w: %v", errNoAnswer, err)
		}
		if tc.ConnectionState().NegotiatedProtocol != bulkALPN {
			tc.Close()
			return nil, errNotBulk
		}
		conn = tc
	}
	hello := append([]byte(nil), bulkMagic...)
	hello = binary.LittleEndian.AppendUint32(hello, uint32(len(c.o.token)))
	hello = append(hello, c.o.token...)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	bc := &bulkConn{conn: conn, r: &bulkReader{r: bufio.NewReaderSize(conn, 64<<10)}}
	if _, err := conn.Write(hello); err != nil {
		conn.Close()
		return nil, err
	}
	magic := make([]byte, len(bulkMagic))
	if n, err := io.ReadFull(bc.r.r, magic); n == 0 && err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: %v", errNoAnswer, err)
	} else if !bytes.Equal(magic[:n], bulkMagic) || err != nil {
		conn.Close()
		return nil, errNotBulk
	}
	if err := bc.r.status(); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return bc, nil
}

// dropBulk closes shard's bulk connection after a failure.
func (c *Client) dropBulk(shard int) {
	if c.bulk != nil && c.bulk[shard].conn != nil {
		c.bulk[shard].conn.conn.Close()
		c.bulk[shard].conn = nil
	}
}

func (c *Client) closeBulk() {
	for i := range c.bulk {
		c.dropBulk(i)
	}
}

// bulkCall sends one request over bc and reads the answer: the push
// response, the server info and the pulled chunks, in pooled buffers. A
// failure of the connection is codes.Unavailable (the call is retried with
// the same idempotency key); an error the shard answered is its status.
func (c *Client) bulkCall(ctx context.Context, shard int, bc *bulkConn, kind byte, msg proto.Message, chunks []*pspb.Chunk) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
	head := []byte{kind}
	var left time.Duration
	if dl, ok := ctx.Deadline(); ok {
		left = max(time.Until(dl), time.Millisecond)
		bc.conn.SetDeadline(dl)
	} else {
		bc.conn.SetDeadline(time.Time{})
	}
	// Cancelling ctx interrupts the call, and only this call: the
	// callback may still run after stop, so it checks under mu that the
	// call has not ended.
	var mu sync.Mutex
	ended := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			bc.conn.SetDeadline(time.Unix(1, 0))
		}
	})
	defer func() {
		stop()
		mu.Lock()
		ended = true
		mu.Unlock()
	}()
	head = binary.LittleEndian.AppendUint64(head, uint64(left))
	head, err := appendMessage(head, msg)
	if err != nil {
		return nil, nil, nil, err
	}
	metas := make([]bulkMeta, len(chunks))
	out := net.Buffers{nil}
	for i, ch := range chunks {
		metas[i] = bulkMeta{name: ch.GetName(), index: ch.GetIndex(), dtype: ch.GetDtype(), n: uint64(len(ch.GetData()))}
		out = append(out, ch.GetData())
	}
	out[0] = appendMetas(head, metas)
	broken := func(err error) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
		c.dropBulk(shard)
		if ctx.Err() != nil {
			return nil, nil, nil, status.FromContextError(ctx.Err()).Err()
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() { // the deadline of ctx, whose timer has not fired yet
			return nil, nil, nil, status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
		}
		return nil, nil, nil, status.Errorf(codes.Unavailable, "ps: bulk connection: %v", err)
	}
	_, werr := out.WriteTo(bc.conn)
	if werr != nil {
		// The shard may have refused the request and closed before reading
		// all of it: its answer, if it sent one, says why.
		bc.conn.SetReadDeadline(time.Now().Add(time.Second))
	}
	if err := bc.r.status(); err != nil {
		var se *bulkStatusError
		if errors.As(err, &se) {
			if se.closing || werr != nil {
				c.dropBulk(shard)
			}
			return nil, nil, nil, se.err
		}
		return broken(cmp.Or(werr, err))
	}
	if werr != nil {
		return broken(werr)
	}
	resp, info := &pspb.PushResponse{}, &pspb.ServerInfo{}
	if err := bc.r.message(resp); err != nil {
		return broken(err)
	}
	if err := bc.r.message(info); err != nil {
		return broken(err)
	}
	got, err := bc.r.metas(uint64(c.o.maxMessageBytes))
	if err != nil {
		return broken(err)
	}
	pulled := make([]*segChunk, 0, len(got))
	for _, m := range got {
		ch, err := bc.r.payload(m)
		if err != nil {
			for _, p := range pulled {
				p.release()
			}
			return broken(err)
		}
		pulled = append(pulled, ch)
	}
	return resp, pulled, info, nil
}

// pushBulk is pushShard over the bulk transport; ok is false when the
// shard is reached through gRPC instead.
func (c *Client) pushBulk(ctx context.Context, shard int, hdr *pspb.PushHeader, chunks []*pspb.Chunk, out *dstSet) (*pspb.PushResponse, bool, error) {
	kind := byte(bulkPush)
	if out != nil {
		kind = bulkPushPull
	}
	r, err := c.pushVia(ctx, shard, hdr, out, func(ctx context.Context) (*pspb.PushResponse, []*segChunk, *pspb.ServerInfo, error) {
		bc, err := c.bulkFor(ctx, shard)
		if bc == nil {
			return nil, nil, nil, cmp.Or(err, errNoBulk)
		}
		return c.bulkCall(ctx, shard, bc, kind, hdr, chunks)
	})
	if errors.Is(err, errNoBulk) {
		hdr.Pull = nil
		return nil, false, nil // the same idempotency key goes through gRPC
	}
	return r, true, err
}

// pullBulk is a pull of shard over the bulk transport; ok is false when
// the shard is reached through gRPC instead.
func (c *Client) pullBulk(ctx context.Context, shard int, out *dstSet) (bool, error) {
	err := c.call(ctx, shard, "pull", func(ctx context.Context) error {
		bc, err := c.bulkFor(ctx, shard)
		if bc == nil {
			return cmp.Or(err, errNoBulk)
		}
		_, pulled, info, err := c.bulkCall(ctx, shard, bc, bulkPull, c.pullRequest(shard), nil)
		if err != nil {
			return err
		}
		return c.received(shard, pulled, info, out)
	})
	if errors.Is(err, errNoBulk) {
		return false, nil
	}
	return true, err
}

// errNoAnswer is a hello the shard closed or did not answer.
var errNoAnswer = errors.New("ps: no answer to the bulk greeting")

// errNotBulk is a hello answered by something else than a bulk shard.
var errNotBulk = errors.New("ps: the shard does not speak the bulk protocol")

// errNoBulk says a shard is reached through gRPC.
var errNoBulk = errors.New("ps: no bulk transport")
