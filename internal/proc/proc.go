// Package proc supervises the programs that the demo and the end-to-end
// tests run: each in its own process group, its output in a log file, stopped
// with a signal, a grace period, then SIGKILL to its group and to every
// process it left behind. Test helpers built on it live in internal/proctest;
// this package does not import testing, so the demo binary can use it.
package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec is a program to start.
type Spec struct {
	Name string   // for messages
	Args []string // argv: Args[0] is the binary
	Env  []string // added to this process's environment
	Log  string   // the log file (stdout and stderr), created

	// DieWithParent has the kernel SIGKILL the process when the supervisor
	// dies (Linux; elsewhere it does nothing): a harness killed -9 leaves
	// nothing behind.
	DieWithParent bool
}

// Proc is a running (or exited) program.
type Proc struct {
	Name string
	Log  string // path of its log file

	cmd  *exec.Cmd
	done chan struct{}
	err  error     // Wait's result, set before done closes
	end  time.Time // when it exited, set before done closes

	mu       sync.Mutex
	signaled bool // Terminate or Stop sent a signal already
}

// Start starts s in a process group of its own, so a Ctrl-C at the terminal
// reaches only the supervisor and Stop can kill the group.
func Start(s Spec) (*Proc, error) {
	if len(s.Args) == 0 {
		return nil, fmt.Errorf("start %s: no command", s.Name)
	}
	f, err := os.Create(s.Log)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	p := &Proc{Name: s.Name, Log: s.Log, done: make(chan struct{})}
	p.cmd = exec.Command(s.Args[0], s.Args[1:]...)
	p.cmd.Env = append(os.Environ(), s.Env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.DieWithParent {
		dieWithParent(p.cmd.SysProcAttr)
	}
	err = p.cmd.Start()
	if cerr := f.Close(); err == nil && cerr != nil { // the child holds its own copy
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	go func() { // ends when the process does: Stop and Wait wait for done
		err := p.cmd.Wait()
		p.err, p.end = err, time.Now()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (and process group id).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited returns nil while the process runs, else how it ended.
func (p *Proc) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.Name, p.State())
	default:
		return nil
	}
}

// State is how the process ended ("exit status 1", "signal: killed"), or
// "running".
func (p *Proc) State() string {
	select {
	case <-p.done:
		if p.cmd.ProcessState == nil {
			return p.err.Error()
		}
		return p.cmd.ProcessState.String()
	default:
		return "running"
	}
}

// Ended is when the process exited; zero while it runs.
func (p *Proc) Ended() time.Time {
	select {
	case <-p.done:
		return p.end
	default:
		return time.Time{}
	}
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s %v: %w", p.Name, sig, err)
	}
	return nil
}

// Terminate sends SIGTERM once: a second SIGTERM would make a registrar
// skip its drain.
func (p *Proc) Terminate() error {
	if p.markSignaled() {
		return nil
	}
	return p.Signal(syscall.SIGTERM)
}

func (p *Proc) markSignaled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.signaled
	p.signaled = true
	return was
}

// Wait returns when the process exited, or an error when ctx ends first.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s did not exit: %w", p.Name, context.Cause(ctx))
	}
}

// Stop ends the process: sig (unless Terminate sent one already), up to
// grace to exit, then SIGKILL to its process group; last, SIGKILL to every
// process it started that is still there (a registrar's app runs in a group
// of its own). It returns Wait's error, or one saying it had to be killed.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) error {
	if !p.Running() {
		return p.err
	}
	tree := Descendants(p.Pid())
	if !p.markSignaled() {
		if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal %s: %w", p.Name, err)
		}
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	var err error
	select {
	case <-p.done:
		err = p.err
	case <-t.C:
		if kerr := syscall.Kill(-p.Pid(), syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			err = fmt.Errorf("kill %s's group: %w", p.Name, kerr)
		}
		<-p.done
		err = errors.Join(fmt.Errorf("%s: no exit within %v of %v, killed: %v", p.Name, grace, sig, p.err), err)
	}
	for _, pid := range tree {
		// Gone already, mostly (ESRCH): this only catches strays.
		if kerr := syscall.Kill(pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			err = errors.Join(err, fmt.Errorf("kill %s's leftover %d: %w", p.Name, pid, kerr))
		}
	}
	return err
}

// Output is the whole log.
func (p *Proc) Output() string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// Tail is the last n lines of the log, after a line counting those left out.
func (p *Proc) Tail(n int) string {
	return Tail(p.Output(), n)
}

// Tail is the last n lines of s, after a line counting those left out.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// Descendants lists the processes below pid, at any depth, read from
// /proc/*/stat: a registrar's app runs in a process group of its own.
func Descendants(pid int) []int {
	parent := parents()
	var out []int
	for child := range parent {
		for p := parent[child]; p > 1; p = parent[p] {
			if p == pid {
				out = append(out, child)
				break
			}
		}
	}
	return out
}

// Children lists the processes whose parent is pid (an nginx master's
// workers, say).
func Children(pid int) []int {
	var out []int
	for child, p := range parents() {
		if p == pid {
			out = append(out, child)
		}
	}
	return out
}

// parents maps every process to its parent, read from /proc/*/stat.
func parents() map[int]int {
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat") // the pattern is valid
	for _, path := range stats {
		if child, ppid, ok := statParent(path); ok {
			parent[child] = ppid
		}
	}
	return parent
}

// statParent reads pid and parent pid from a /proc/<pid>/stat file.
func statParent(path string) (pid, ppid int, ok bool) {
	pid, _, ppid, err := readStat(path)
	return pid, ppid, err == nil
}

// readStat reads pid, state letter and parent pid from a /proc/<pid>/stat
// file: "pid (comm) state ppid ...", where comm may hold spaces and
// parentheses, so the fields after it are found from the last ')'.
func readStat(path string) (pid int, state string, ppid int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", 0, err
	}
	s := string(b)
	head, _, _ := strings.Cut(s, " ")
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, "", 0, fmt.Errorf("%s: want state and ppid after comm", path)
	}
	pid, err1 := strconv.Atoi(head)
	ppid, err2 := strconv.Atoi(fields[1])
	if err := errors.Join(err1, err2); err != nil {
		return 0, "", 0, fmt.Errorf("%s: %w", path, err)
	}
	return pid, fields[0], ppid, nil
}

// Alive reports whether pid runs: it exists and is not a zombie waiting for
// whoever inherited it.
func Alive(pid int) bool {
	_, state, _, err := readStat(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && state != "Z" && state != "X"
}

// FreePort returns a port on 127.0.0.1 that was free a moment ago (nginx
// and etcd's peer URL take no port 0). Another process may take it before
// the caller binds it: servers that must be told apart check who answers.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// Buffer is a bytes.Buffer-like writer safe for concurrent writers and
// readers: a logger's or a command's output that a test reads while it runs.
type Buffer struct {
	// Echo, when set, gets every write too, under the same lock: a test's
	// t.Output(), to read the log as it happens.
	Echo io.Writer

	mu sync.Mutex
	b  strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.Write(p) // a strings.Builder write never fails
	if b.Echo != nil {
		return b.Echo.Write(p)
	}
	return len(p), nil
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
