package ps

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT on a TCP connection: unacknowledged
// data older than d fails the connection, so a write to a dead peer does
// not block for the kernel's minutes of retransmissions. gRPC sets it on
// the connections it sees as *net.TCPConn from its keepalive timeout; the
// connections Serve routes through its bulk listener get it here.
func setUserTimeout(conn net.Conn, d time.Duration) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
	})
}
