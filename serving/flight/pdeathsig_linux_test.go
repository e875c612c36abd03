package flight_test

import "syscall"

// pdeathsig kills a child process when the test process dies.
func pdeathsig() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
