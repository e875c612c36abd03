package control

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// EnvListenFD names the file descriptor of a listening socket that a task
// inherited from its launcher (see PassListener and Listen). The launcher
// binds the socket itself, on port 0, so no other process can take the
// port between the moment it is chosen and the moment the task serves.
const EnvListenFD = "GOTFLOW_LISTEN_FD"

// Listen returns the listener this process inherited from its launcher
// (EnvListenFD), or else listens on addr. The variable is cleared so that
// the process's own children do not inherit the claim.
func Listen(addr string) (net.Listener, error) {
	v, ok := os.LookupEnv(EnvListenFD)
	if !ok || v == "" {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("distributed: listen on %s: %w", addr, err)
		}
		return lis, nil
	}
	os.Unsetenv(EnvListenFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("distributed: %s=%q, expected a file descriptor >= 3", EnvListenFD, v)
	}
	f := os.NewFile(uintptr(fd), "inherited listener")
	defer f.Close() // FileListener holds its own duplicate
	lis, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("distributed: %s=%d is not a listening socket: %w", EnvListenFD, fd, err)
	}
	return lis, nil
}
