package ps

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gotflow/gotflow/ps/pspb"
)

// This file is the bulk transport: pushes and pulls between a client and a
// shard travel over their own TCP connection to the shard's gRPC port
// (inside TLS when the shard uses it) instead of through gRPC, so that
// tensor bytes are written from the caller's slices and read into their
// final buffers with no framing in between (gRPC cuts messages into 16 KiB HTTP/2 frames and copies each
// through its read and write buffers). The shard tells the two protocols
// apart by a connection's first bytes, or with TLS by the protocol named in
// the handshake (ALPN). The push is handled by the same code as the other
// transports (Server.exchange): validation, idempotency keys, optimizer,
// write-ahead log, snapshots. Everything else uses gRPC.
//
// Wire format, little-endian:
//
//	hello     client: "GFPSBLK1" u32(len token) token
//	          shard:  "GFPSBLK1" status
//	request   u8 kind (bulkPush, bulkPushPull, bulkPull)
//	          u64 deadline (nanoseconds left; 0: none)
//	          u32 len, message (a PushHeader; a PullRequest for bulkPull)
//	          chunks
//	response  status, then if it is OK:
//	          u32 len, PushResponse; u32 len, ServerInfo (either may be empty)
//	          chunks
//	status    u32 code (codes.OK or the error's), u8 closing (1: the shard
//	          closes the connection after it), u32 len, message
//	chunks    u32 count, count times (u16 len, name, u32 index, u32 dtype,
//	          u64 bytes), then the data of each chunk in that order

var bulkMagic = []byte("GFPSBLK1")

const (
	bulkPush     = 1
	bulkPushPull = 2
	bulkPull     = 3

	bulkMaxMessage = 1 << 20 // header, response and info messages
	bulkMaxChunks  = 1 << 20

	// bulkIOTimeout bounds reading the rest of a request once its first
	// byte came, and writing an answer: a peer that stalls mid-request or
	// stops reading loses its connection instead of holding the shard.
	bulkIOTimeout = 2 * time.Minute
)

// keepaliveTimeout is how long a connection may go without an
// acknowledgement from its peer (gRPC keepalive pings, TCP_USER_TIMEOUT).
const keepaliveTimeout = 20 * time.Second

// bulkMeta describes one chunk of a bulk request or response.
type bulkMeta struct {
	name  string
	index uint32
	dtype pspb.DType
	n     uint64
}

func appendMetas(b []byte, metas []bulkMeta) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(metas)))
	for _, m := range metas {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(m.name)))
		b = append(b, m.name...)
		b = binary.LittleEndian.AppendUint32(b, m.index)
		b = binary.LittleEndian.AppendUint32(b, uint32(m.dtype))
		b = binary.LittleEndian.AppendUint64(b, m.n)
	}
	return b
}

// bulkReader reads the framing of the bulk transport.
type bulkReader struct {
	r       *bufio.Reader
	scratch [8]byte
}

func (r *bulkReader) u8() (byte, error) { return r.r.ReadByte() }

func (r *bulkReader) u16() (uint16, error) {
	_, err := io.ReadFull(r.r, r.scratch[:2])
	return binary.LittleEndian.Uint16(r.scratch[:2]), err
}

func (r *bulkReader) u32() (uint32, error) {
	_, err := io.ReadFull(r.r, r.scratch[:4])
	return binary.LittleEndian.Uint32(r.scratch[:4]), err
}

func (r *bulkReader) u64() (uint64, error) {
	_, err := io.ReadFull(r.r, r.scratch[:8])
	return binary.LittleEndian.Uint64(r.scratch[:8]), err
}

// bytes reads a u32-prefixed field of at most limit bytes.
func (r *bulkReader) bytes(limit int) ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if int64(n) > int64(limit) {
		return nil, fmt.Errorf("field of %d bytes, at most %d allowed", n, limit)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r.r, b)
	return b, err
}

func (r *bulkReader) message(m proto.Message) error {
	b, err := r.bytes(bulkMaxMessage)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// status reads a status; a non-OK one is returned as its error.
func (r *bulkReader) status() error {
	code, err := r.u32()
	if err != nil {
		return err
	}
	closing, err := r.u8()
	if err != nil {
		return err
	}
	msg, err := r.bytes(bulkMaxMessage)
	if err != nil {
		return err
	}
	if codes.Code(code) != codes.OK {
		return &bulkStatusError{err: status.Error(codes.Code(code), string(msg)), closing: closing != 0}
	}
	return nil
}

// bulkStatusError is an error the other side sent; closing says it closes
// the connection after it.
type bulkStatusError struct {
	err     error
	closing bool
}

func (e *bulkStatusError) Error() string { return e.err.Error() }
func (e *bulkStatusError) Unwrap() error { return e.err }

// metas reads a chunk list whose chunks hold at most maxChunk bytes each.
func (r *bulkReader) metas(maxChunk uint64) ([]bulkMeta, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	if n > bulkMaxChunks {
		return nil, fmt.Errorf("%d chunks, at most %d allowed", n, bulkMaxChunks)
	}
	metas := make([]bulkMeta, 0, min(n, 1024))
	for range n {
		var m bulkMeta
		ln, err := r.u16()
		if err != nil {
			return nil, err
		}
		name := make([]byte, ln)
		if _, err := io.ReadFull(r.r, name); err != nil {
			return nil, err
		}
		m.name = string(name)
		if m.index, err = r.u32(); err != nil {
			return nil, err
		}
		dt, err := r.u32()
		if err != nil {
			return nil, err
		}
		m.dtype = pspb.DType(int32(dt))
		if m.n, err = r.u64(); err != nil {
			return nil, err
		}
		if m.n > maxChunk {
			return nil, fmt.Errorf("chunk %q %d of %d bytes, at most %d allowed", m.name, m.index, m.n, maxChunk)
		}
		metas = append(metas, m)
	}
	return metas, nil
}

// payload reads a chunk's data into a buffer from wirePool, which the
// chunk's release gives back.
func (r *bulkReader) payload(m bulkMeta) (*segChunk, error) {
	b := wirePool.Get(int(m.n))
	c := &segChunk{name: m.name, index: m.index, dtype: m.dtype, n: int(m.n), bufs: []mem.Buffer{mem.NewBuffer(b, wirePool)}}
	if _, err := io.ReadFull(r.r, *b); err != nil {
		c.release()
		return nil, err
	}
	c.pieces = [][]byte{*b}
	return c, nil
}

func appendStatus(b []byte, err error, closing bool) []byte {
	b = slices.Clip(b)
	st := status.Convert(err)
	b = binary.LittleEndian.AppendUint32(b, uint32(st.Code()))
	if closing {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	msg := st.Message()
	if len(msg) > bulkMaxMessage {
		msg = msg[:bulkMaxMessage]
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

func appendMessage(b []byte, m proto.Message) ([]byte, error) {
	if m == nil {
		return binary.LittleEndian.AppendUint32(b, 0), nil
	}
	mb, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(mb)))
	return append(b, mb...), nil
}

// ---- shard side ----

// muxListener hands a shard's gRPC server the connections that speak
// HTTP/2 and serves the bulk ones itself.
type muxListener struct {
	net.Listener
	s     *Server
	tls   *tls.Config // nil: plain connections, told apart by their first bytes
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error // why the listener stopped accepting, under mu
}

func (s *Server) newMuxListener(lis net.Listener) *muxListener {
	m := &muxListener{Listener: lis, s: s, conns: make(chan net.Conn), done: make(chan struct{})}
	if s.o.tls != nil {
		m.tls = withProtocols(s.o.tls)
		if get := s.o.tls.GetConfigForClient; get != nil { // a config chosen per client (rotation, SNI)
			m.tls.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				c, err := get(hi)
				if err != nil || c == nil {
					return c, err
				}
				return withProtocols(c), nil
			}
		}
	}
	go m.acceptLoop()
	return m
}

func (m *muxListener) acceptLoop() {
	var delay time.Duration
	for {
		conn, err := m.Listener.Accept()
		var te interface{ Temporary() bool }
		if err != nil && errors.As(err, &te) && te.Temporary() {
			// Out of file descriptors, say: wait and try again, as gRPC does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
				continue
			case <-m.done:
				return
			}
		}
		delay = 0
		if err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			m.Close()
			return
		}
		go m.route(conn)
	}
}

// route reads a connection's first bytes (a client sends them at once)
// and passes it on.
func (m *muxListener) route(conn net.Conn) {
	setUserTimeout(conn, keepaliveTimeout) // gRPC cannot see through peekedConn to set it
	if m.tls != nil {
		// With TLS the shard completes the handshake itself and routes by
		// the protocol the client asked for (ALPN); gRPC gets the
		// connection already secured (serverTLS).
		tc := tls.Server(conn, m.tls)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			conn.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == bulkALPN {
			m.s.serveBulk(tc, bufio.NewReaderSize(tc, 64<<10))
			return
		}
		m.hand(tc)
		return
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	head, err := br.Peek(len(bulkMagic))
	conn.SetReadDeadline(time.Time{})
	if err == nil && bytes.Equal(head, bulkMagic) {
		m.s.serveBulk(conn, br)
		return
	}
	if len(head) == 0 && err != nil {
		conn.Close()
		return
	}
	m.hand(&peekedConn{Conn: conn, r: br})
}

// hand passes a connection to the gRPC server.
func (m *muxListener) hand(conn net.Conn) {
	select {
	case m.conns <- conn:
	case <-m.done:
		conn.Close()
	}
}

// withProtocols is a copy of a shard's TLS configuration that offers gRPC
// (h2) and the bulk transport, at TLS 1.2 or later as gRPC requires.
func withProtocols(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.NextProtos = []string{"h2", bulkALPN}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// bulkALPN is the bulk transport's name in a TLS handshake.
const bulkALPN = "gotflow-ps-bulk/1"

// serverTLS are the gRPC server's credentials when the shard's listener
// completed the TLS handshake itself: they report the connection's TLS
// state to gRPC without a second handshake.
type serverTLS struct{}

func (serverTLS) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, nil, errors.New("ps: connection without TLS")
	}
	return conn, credentials.TLSInfo{State: tc.ConnectionState(), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (serverTLS) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("ps: server-side credentials")
}

func (serverTLS) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.2"}
}

func (serverTLS) Clone() credentials.TransportCredentials { return serverTLS{} }

func (serverTLS) OverrideServerName(string) error { return nil }

func (m *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.err != nil {
			return nil, m.err
		}
		return nil, net.ErrClosed
	}
}

func (m *muxListener) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.Listener.Close()
	})
	return err
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// trackBulk registers a bulk connection for Stop, or reports false once
// the shard is stopping.
func (s *Server) trackBulk(conn net.Conn, on bool) bool {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	if !on {
		delete(s.bulkConns, conn)
		return true
	}
	select {
	case <-s.closed:
		return false
	default:
	}
	if s.bulkConns == nil {
		s.bulkConns = map[net.Conn]bool{}
	}
	s.bulkConns[conn] = true
	return true
}

// closeBulk closes the bulk connections. GracefulStop calls it once the
// requests in flight are answered; Stop also calls it before, so that a
// request blocked on its connection (a client that stopped reading) ends.
func (s *Server) closeBulk() {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	for c := range s.bulkConns {
		if tc, ok := c.(*tls.Conn); ok {
			c = tc.NetConn() // no close_notify: the peer may not be reading
		}
		c.Close()
	}
}

func (s *Server) serveBulk(conn net.Conn, br *bufio.Reader) {
	defer conn.Close()
	if !s.trackBulk(conn, true) {
		return
	}
	defer s.trackBulk(conn, false)
	r := &bulkReader{r: br}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if magic, err := br.Peek(len(bulkMagic)); err != nil || !bytes.Equal(magic, bulkMagic) {
		return
	}
	br.Discard(len(bulkMagic))
	token, err := r.bytes(4 << 10)
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	if s.o.token != "" && subtle.ConstantTimeCompare(token, []byte(s.o.token)) != 1 {
		s.stats.reject("unauthenticated")
		conn.Write(appendStatus(bulkMagic, status.Error(codes.Unauthenticated, "ps: missing or wrong bearer token"), true))
		return
	}
	if _, err := conn.Write(appendStatus(bulkMagic, nil, false)); err != nil {
		return
	}
	for {
		kind, err := r.u8()
		if err != nil {
			return
		}
		conn.SetReadDeadline(time.Now().Add(bulkIOTimeout))
		out, keep, done := s.bulkRequest(conn, r, kind)
		conn.SetWriteDeadline(time.Now().Add(bulkIOTimeout))
		_, err = out.WriteTo(conn)
		done() // after the answer is out: GracefulStop waits for it
		if err != nil || !keep {
			return
		}
	}
}

// bulkRequest reads the rest of one request and returns its answer; keep
// is false when the connection cannot carry another request. done must be
// called once the answer is written.
func (s *Server) bulkRequest(conn net.Conn, r *bulkReader, kind byte) (out net.Buffers, keep bool, done func()) {
	done = func() {}
	fail := func(err error, keep bool) (net.Buffers, bool, func()) {
		return net.Buffers{appendStatus(nil, err, !keep)}, keep, done
	}
	malformed := func(err error) (net.Buffers, bool, func()) {
		return fail(s.reject("malformed", s.errorf(codes.InvalidArgument, "bulk request: %v", err)), false)
	}
	deadline, err := r.u64()
	if err != nil {
		return nil, false, done
	}
	var hdr *pspb.PushHeader
	var pullReq *pspb.PullRequest
	switch kind {
	case bulkPush, bulkPushPull:
		hdr = &pspb.PushHeader{}
		err = r.message(hdr)
		if err == nil && (kind == bulkPushPull) != (hdr.GetPull() != nil) {
			err = errors.New("pull request missing or unexpected")
		}
	case bulkPull:
		pullReq = &pspb.PullRequest{}
		err = r.message(pullReq)
	default:
		err = fmt.Errorf("request kind %d unknown", kind)
	}
	if err != nil {
		return malformed(err)
	}
	metas, err := r.metas(uint64(s.o.maxMessageBytes))
	if err != nil {
		return malformed(err)
	}
	// Each pushed chunk is validated as soon as it is read, while the
	// next one arrives; after a refused chunk the rest is read and dropped
	// so that the connection stays in step.
	var ups []update
	var refused error
	seen := map[*part]bool{}
	for _, m := range metas {
		if refused != nil || hdr == nil {
			if _, err := r.r.Discard(int(m.n)); err != nil {
				releaseUpdates(ups)
				return nil, false, done
			}
			if hdr == nil {
				refused = s.reject("malformed", s.errorf(codes.InvalidArgument, "bulk request: a pull carries no chunks"))
			}
			continue
		}
		if refused = s.expectChunk(hdr, m); refused != nil { // before allocating its size
			if _, err := r.r.Discard(int(m.n)); err != nil {
				releaseUpdates(ups)
				return nil, false, done
			}
			continue
		}
		c, err := r.payload(m)
		if err != nil {
			releaseUpdates(ups)
			return nil, false, done
		}
		ups, refused = s.acceptChunks(hdr, []*segChunk{c}, ups, seen)
	}
	conn.SetReadDeadline(time.Time{}) // the whole request is in
	if refused != nil {
		releaseUpdates(ups)
		return fail(refused, true)
	}
	leave, err := s.enterLocal()
	if err != nil {
		releaseUpdates(ups)
		return fail(err, false)
	}
	pulled := []*segChunk(nil)
	done = func() {
		for _, c := range pulled {
			c.release()
		}
		leave()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if deadline > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(deadline))
		defer c2()
	}
	stopWatch := watchHangUp(conn, r.r, cancel)
	var resp *pspb.PushResponse
	var info *pspb.ServerInfo
	if hdr != nil {
		resp, pulled, info, err = s.applyAccepted(ctx, hdr, ups)
	} else {
		pulled, info, err = s.copyChanged(pullReq)
	}
	if !stopWatch() {
		return nil, false, done // the client hung up or broke the protocol
	}
	if err != nil {
		return fail(err, true)
	}
	head := appendStatus(nil, nil, false)
	if head, err = appendMessage(head, resp); err == nil {
		head, err = appendMessage(head, info)
	}
	if err != nil {
		return fail(s.errorf(codes.Internal, "bulk response: %v", err), false)
	}
	metasOut := make([]bulkMeta, len(pulled))
	out = net.Buffers{nil}
	for i, c := range pulled {
		metasOut[i] = bulkMeta{name: c.name, index: c.index, dtype: c.dtype, n: uint64(c.n)}
		out = append(out, c.pieces...)
	}
	out[0] = appendMetas(head, metasOut)
	return out, true, done
}

// expectChunk refuses a pushed chunk whose variable this shard does not
// hold or whose size does not match it, before its data is read: the
// same refusal acceptChunks gives after reading it.
func (s *Server) expectChunk(hdr *pspb.PushHeader, m bulkMeta) error {
	s.mu.RLock()
	p, ok := s.parts[partKey{m.name, m.index}]
	s.mu.RUnlock()
	size := uint64(4)
	if m.dtype == pspb.DType_DTYPE_FLOAT16 {
		size = 2
	}
	if ok && m.n == size*uint64(len(p.values)) {
		return nil
	}
	// Let acceptChunks word the refusal, on an empty chunk of that name.
	_, err := s.acceptChunks(hdr, []*segChunk{{name: m.name, index: m.index, dtype: m.dtype, n: int(m.n)}}, nil, map[*part]bool{})
	if err == nil {
		err = s.reject("malformed", s.errorf(codes.InvalidArgument, "bulk request: variable %q chunk %d of %d bytes", m.name, m.index, m.n))
	}
	return err
}

// watchHangUp cancels a request's context if its client closes the
// connection while the request runs (a Sync push may wait long). The
// client sends nothing until it has the answer, so any byte is a protocol
// error. The returned func stops the watch and reports whether the
// connection is still good.
func watchHangUp(conn net.Conn, br *bufio.Reader, cancel func()) func() bool {
	ended := make(chan bool, 1)
	go func() {
		_, err := br.Peek(1)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			ended <- true
			return
		}
		cancel()
		ended <- false
	}()
	return func() bool {
		conn.SetReadDeadline(time.Unix(1, 0))
		ok := <-ended
		conn.SetReadDeadline(time.Time{})
		return ok
	}
}
