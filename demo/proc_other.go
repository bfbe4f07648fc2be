//go:build !linux

package demo

import "syscall"

// sysProcAttr puts a child in its own process group. Only Linux can have a
// child killed when its parent dies; elsewhere a demo killed hard leaves
// its nodes running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
