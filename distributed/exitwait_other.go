//go:build unix && !linux

package distributed

// waitExited reports false where waitid(WNOWAIT) is not used: the caller
// then reaps first and signals the group only while not yet reaped.
func waitExited(pid int) bool { return false }
