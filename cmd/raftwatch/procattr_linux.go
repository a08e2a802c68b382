package main

import "syscall"

// childProcAttr puts a command run under a lock in its own process group,
// so that signals reach everything it started, and has the kernel kill it
// if raftwatch itself dies (it must not go on believing it holds a lock).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
