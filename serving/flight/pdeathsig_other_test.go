//go:build !linux

package flight_test

import "syscall"

func pdeathsig() *syscall.SysProcAttr { return nil }
