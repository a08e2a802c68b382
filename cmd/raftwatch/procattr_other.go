//go:build !linux

package main

import "syscall"

// childProcAttr puts a command run under a lock in its own process group,
// so that signals reach everything it started.
func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
