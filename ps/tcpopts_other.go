//go:build !linux

package ps

import (
	"net"
	"time"
)

func setUserTimeout(net.Conn, time.Duration) {}
