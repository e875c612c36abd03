package control

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// waitExited blocks until process pid has exited, without reaping it, and
// reports true: until it is reaped its pid (and process group id) cannot be
// given to another process, so signalling its group stays safe.
func waitExited(pid int) bool {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return err == nil
		}
	}
}

// dieWithParent asks the kernel to send the child SIGTERM when this process
// dies, however it dies (see also WithParent, which covers the case the
// kernel does not: the thread that started the child exiting first).
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGTERM }
