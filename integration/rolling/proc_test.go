package rolling_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one program the test started; its output goes to a log file that is
// printed when the test fails.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	done   chan struct{}
	mu     sync.Mutex
	exited time.Time
}

// startProc starts bin with args (and extra env), stopped at test cleanup:
// SIGTERM, then after grace SIGKILL to it and every descendant.
func startProc(t *testing.T, name string, env []string, grace time.Duration, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		p.mu.Lock()
		p.exited = time.Now()
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(grace)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s output (%s)\n%s", name, p.cmd.ProcessState, tail(b, 60))
		}
	})
	return p
}

// stop sends SIGTERM and waits up to grace, then kills the process tree.
func (p *proc) stop(grace time.Duration) {
	tree := descendants(p.cmd.Process.Pid)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
	for _, pid := range tree {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s %v: %v", p.name, sig, err)
	}
}

// wait waits up to timeout for the process to exit and returns when it did.
func (p *proc) wait(t *testing.T, timeout time.Duration) time.Time {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// assertLogged fails the test unless the process's output holds s.
func (p *proc) assertLogged(t *testing.T, s string) {
	t.Helper()
	b, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), s) {
		t.Errorf("%s did not log %q:\n%s", p.name, s, tail(b, 20))
	}
}

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// descendants lists the pids below pid, read from /proc/*/stat (children
// first-level and deeper), so a registrar's app, which runs in its own
// process group, can be found and killed.
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err == nil {
			parent[child] = ppid
		}
	}
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

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
