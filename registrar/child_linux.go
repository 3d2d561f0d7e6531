package registrar

import "syscall"

// childAttr puts the app in a process group of its own (the stop signal
// reaches its children too; the terminal's Ctrl-C reaches the registrar
// only) and has the kernel SIGKILL it when the registrar dies, also when the
// registrar is not PID 1: the app never outlives its registrar.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
