package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a program the demo started, in its own process group so that a
// Ctrl-C reaches only the demo, which then stops everything in order.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}

	mu       sync.Mutex
	ended    time.Time
	signaled bool // a stop signal was sent already
}

// procs owns every process; stopAll ends them in reverse start order.
type procs struct {
	dir  string
	list []*proc
}

func (ps *procs) start(name string, env []string, args ...string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(ps.dir, name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.ended = time.Now()
		p.mu.Unlock()
		close(p.done)
	}()
	ps.list = append(ps.list, p)
	return p, nil
}

// stopAll ends every live process: the registrars together first (each
// deregisters, drains and stops its app), then the rest in reverse start
// order. Each gets SIGTERM and up to grace to exit; then its
// process group is killed.
func (ps *procs) stopAll(grace time.Duration) {
	var regs, rest []*proc
	for i := len(ps.list) - 1; i >= 0; i-- {
		if p := ps.list[i]; strings.HasPrefix(p.name, "registrar") {
			regs = append(regs, p)
		} else {
			rest = append(rest, p)
		}
	}
	var wg sync.WaitGroup
	for _, p := range regs {
		wg.Go(func() { p.stop(syscall.SIGTERM, grace) })
	}
	wg.Wait()
	for _, p := range rest {
		p.stop(syscall.SIGTERM, grace) // nginx too: a fast shutdown is right here
	}
}

// stop sends sig, waits up to grace, then kills p's process group (and the
// app of a registrar, which runs in a group of its own).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if !p.running() {
		return
	}
	t0 := time.Now()
	defer func() {
		if d := time.Since(t0); d > 2*time.Second {
			fmt.Fprintf(os.Stderr, "demo: %s took %v to stop (see %s)\n", p.name, d.Round(time.Millisecond), p.log)
		}
	}()
	if !p.markSignaled() {
		p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait returns when p exited, or an error when ctx ends first.
func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s did not exit: %w", p.name, context.Cause(ctx))
	}
}

// tail is the end of p's output, for error messages.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

var logPrefixRE = regexp.MustCompile(`^time=\S+ level=(INFO )?`)

// since is p's output from the first line containing mark on, indented,
// without slog's time and INFO level.
func (p *proc) since(mark string) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, l := range lines {
		if strings.Contains(l, mark) {
			lines = lines[i:]
			break
		}
	}
	for i, l := range lines {
		lines[i] = "        " + logPrefixRE.ReplaceAllString(l, "")
	}
	return strings.Join(lines, "\n")
}

// terminate sends SIGTERM, once: a second SIGTERM would make a registrar
// skip its drain.
func (p *proc) terminate() error {
	if p.markSignaled() {
		return nil
	}
	return p.cmd.Process.Signal(syscall.SIGTERM)
}

// markSignaled records a stop signal and reports whether one was sent before.
func (p *proc) markSignaled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.signaled
	p.signaled = true
	return was
}
