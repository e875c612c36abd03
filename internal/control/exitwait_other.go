//go:build unix && !linux

package control

import "syscall"

// waitExited reports false where waitid(WNOWAIT) is not used: the caller
// then reaps first and signals the group only while not yet reaped.
func waitExited(pid int) bool { return false }

// dieWithParent does nothing where the kernel has no parent-death signal;
// children notice their parent's death with WithParent instead.
func dieWithParent(*syscall.SysProcAttr) {}
