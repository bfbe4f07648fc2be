package demo

import "syscall"

// sysProcAttr puts a child in its own process group (a Ctrl-C at the
// terminal reaches the demo, which stops the children in order) and has the
// kernel SIGKILL it when the demo process dies, however it dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
