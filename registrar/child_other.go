//go:build unix && !linux

package registrar

import "syscall"

// childAttr puts the app in a process group of its own. Outside Linux there
// is no parent-death signal: the registrar runs there for development only.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
