package registrar

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Status is how the app ended.
type Status struct {
	Code   int            // exit code, when it exited
	Signal syscall.Signal // the signal that killed it, or 0
}

// ExitCode is the registrar's exit code for the app's status: the app's own
// code, or 128+N when signal N killed it (a shell's convention).
func (s Status) ExitCode() int {
	if s.Signal != 0 {
		return 128 + int(s.Signal)
	}
	return s.Code
}

func (s Status) String() string {
	if s.Signal != 0 {
		return "killed by " + unix.SignalName(s.Signal)
	}
	return "exit " + strconv.Itoa(s.Code)
}

func statusOf(ws unix.WaitStatus) Status {
	if ws.Signaled() {
		return Status{Signal: ws.Signal()}
	}
	return Status{Code: ws.ExitStatus()}
}

// Child is the app, in its own process group. The reaper, not Child, waits
// for it (see reap_linux.go), so PID-1 zombie reaping and the app's status
// share one waiter.
type Child struct {
	pid    int
	log    *slog.Logger
	once   sync.Once
	exited chan struct{} // closed once status is set
	status Status
}

// startChild starts argv with env, stdio inherited, in a new process group,
// set to get SIGKILL when the registrar dies (childAttr). Linux sends that
// signal when the creating OS thread exits, not the process, and the Go
// runtime ends a thread whose goroutine exits locked to it: so the app is
// started from a goroutine locked to its thread that returns only once the
// app has exited. wg owns that goroutine.
func startChild(wg *sync.WaitGroup, argv, env []string, log *slog.Logger) (*Child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = childAttr()
	c := &Child{log: log, exited: make(chan struct{})}
	started := make(chan error, 1)
	wg.Go(func() {
		runtime.LockOSThread() // never unlocked: the thread ends after the app
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		c.pid = cmd.Process.Pid
		if err := cmd.Process.Release(); err != nil { // the reaper waits by pid
			log.Debug("release the app's process handle", "pid", c.pid, "err", err)
		}
		started <- nil
		<-c.exited
	})
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	log.Info("app started", "pid", c.pid, "cmd", strings.Join(argv, " "))
	return c, nil
}

// startCode is the exit code for a command that could not start, as a shell
// would return it: 127 not found, 126 not executable.
func startCode(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return 127
	}
	return 126
}

// Pid is the app's process id (and process group id).
func (c *Child) Pid() int { return c.pid }

// Exited is closed when the app has exited and been reaped.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// Status is the app's status; valid once Exited is closed.
func (c *Child) Status() Status {
	<-c.exited
	return c.status
}

func (c *Child) setExited(s Status) {
	c.once.Do(func() {
		c.status = s
		c.log.Info("app exited", "pid", c.pid, "status", s.String())
		close(c.exited)
	})
}

// Forward passes sig on to the app process (not its group: the app decides
// what its own children get).
func (c *Child) Forward(sig syscall.Signal) {
	c.log.Debug("forwarding signal", "pid", c.pid, "sig", unix.SignalName(sig))
	c.kill(c.pid, sig)
}

// Stop sends SIGTERM to the app's process group, SIGKILL after grace, and
// returns the app's status once it is gone.
func (c *Child) Stop(grace time.Duration) Status {
	select {
	case <-c.exited:
		return c.status
	default:
	}
	c.log.Info("stopping app", "pid", c.pid, "sig", "SIGTERM", "grace", grace)
	c.kill(-c.pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		return c.status
	case <-t.C:
	}
	c.log.Warn("app did not stop in time, killing it", "pid", c.pid, "sig", "SIGKILL", "grace", grace)
	c.kill(-c.pid, syscall.SIGKILL)
	return c.Status()
}

// kill signals pid (negative: a process group) while the app is not reaped;
// afterwards the pid may belong to someone else.
func (c *Child) kill(pid int, sig syscall.Signal) {
	select {
	case <-c.exited:
		return
	default:
	}
	if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		c.log.Warn("signal app", "pid", pid, "sig", unix.SignalName(sig), "err", err)
	}
}

// childEnv is the app's environment: ours without the etcd password, plus
// the port in every portEnv variable and HOST_IP.
func childEnv(base []string, portEnv []string, ip string, port uint16) []string {
	set := map[string]string{}
	for _, n := range portEnv {
		set[n] = strconv.Itoa(int(port))
	}
	set["HOST_IP"] = ip // wins over a --port-env of the same name
	env := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := set[name]; ok || name == "ETCD_PASSWORD" {
			continue
		}
		env = append(env, kv)
	}
	for _, n := range append(portEnv, "HOST_IP") {
		if v, ok := set[n]; ok {
			env = append(env, n+"="+v)
			delete(set, n)
		}
	}
	return env
}

// signalName is "SIGTERM" rather than "terminated".
func signalName(s os.Signal) string {
	if ss, ok := s.(syscall.Signal); ok && unix.SignalName(ss) != "" {
		return unix.SignalName(ss)
	}
	return s.String()
}
