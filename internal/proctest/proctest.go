// Package proctest is the end-to-end tests' process harness: the binaries
// built once per test binary exactly as `make build` builds them, programs
// started with their logs and stopped at cleanup, free ports, and commands
// run under a deadline. Import it only from _test.go files; what the demo
// binary shares with it lives in internal/proc.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proc"
)

// Binaries are the programs of cmd/, built by Build.
type Binaries struct {
	Dir string // holds one binary per cmd/ program
	err error  // why they are missing
}

// Main is the whole TestMain of a package whose tests run the built
// programs: Build into b, run the tests, remove the binaries, exit.
func Main(m *testing.M, b *Binaries) {
	flag.Parse() // testing.Short reads the flags
	*b = Build()
	code := m.Run()
	if err := b.Remove(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// Build builds every program of cmd/ into a temp dir by running `make build
// BIN=<dir>` in the repository root: the build flags are defined once, in
// the Makefile, so the tests run what users run. In -short mode it builds
// nothing (Need skips). Remove the directory when the tests are done.
func Build() Binaries {
	if testing.Short() {
		return Binaries{err: errors.New("not built in -short mode")}
	}
	root, err := repoRoot()
	if err != nil {
		return Binaries{err: err}
	}
	dir, err := os.MkdirTemp("", "rollcall-bin-")
	if err != nil {
		return Binaries{err: err}
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go") // the toolchain running the tests
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+dir, "GO="+gobin)
	cmd.Dir = root
	// Under `make test` this is a make inside make: a fresh one, not a
	// sub-make expecting the outer one's jobserver.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); name != "MAKEFLAGS" && name != "MFLAGS" && name != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{Dir: dir, err: fmt.Errorf("make build BIN=%s: %v\n%s", dir, err, out)}
	}
	return Binaries{Dir: dir}
}

// Remove deletes the built binaries.
func (b *Binaries) Remove() error {
	if b.Dir == "" {
		return nil
	}
	return os.RemoveAll(b.Dir)
}

// Need skips the test in -short mode and fails it when the build failed.
func (b *Binaries) Need(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real processes: skipped in -short mode")
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
}

// Path is the built program name (Need first).
func (b *Binaries) Path(name string) string { return filepath.Join(b.Dir, name) }

// repoRoot is the directory holding go.mod, above the test's directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Start runs args (env added to the test's environment) with its output in a
// log file under t.TempDir(). At cleanup it is stopped — SIGTERM, up to
// grace, then SIGKILL to it and everything it started — and, when the test
// failed, the log's tail is printed.
func Start(t testing.TB, name string, env []string, grace time.Duration, args ...string) *proc.Proc {
	t.Helper()
	p, err := proc.Start(proc.Spec{Name: name, Args: args, Env: env, Log: filepath.Join(t.TempDir(), name+".log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := p.Stop(syscall.SIGTERM, grace)
		if t.Failed() {
			t.Logf("--- %s output (%s, stop: %v)\n%s", name, p.State(), err, p.Tail(60))
		}
	})
	return p
}

// Wait waits up to timeout for p to exit and returns when it did.
func Wait(t testing.TB, p *proc.Proc, timeout time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("%s still running after %v", p.Name, timeout)
	}
	return p.Ended()
}

// Signal sends sig to p, failing the test when it cannot.
func Signal(t testing.TB, p *proc.Proc, sig syscall.Signal) {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// AssertLogged fails the test unless p's output holds s.
func AssertLogged(t testing.TB, p *proc.Proc, s string) {
	t.Helper()
	if out := p.Output(); !strings.Contains(out, s) {
		t.Errorf("%s did not log %q:\n%s", p.Name, s, proc.Tail(out, 20))
	}
}

// Run runs bin to completion under a deadline and returns its exit code,
// stdout and stderr.
func Run(t testing.TB, timeout time.Duration, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish within %v:\n%s", filepath.Base(bin), args, timeout, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// Ports FreePort reserves: below the registrars' default range
// (20000-32767) and the kernel's ephemeral range (32768 and up on Linux),
// so neither an outgoing connection nor a listener on port 0 takes one
// while a test has its server stopped and means to restart it there.
const (
	reservedLow  = 10000
	reservedHigh = 20000
)

// FreePort returns a loopback port reserved for t until it ends: free when
// picked, and locked (flock on a file per port in the temp dir) so that no
// other test, in this test binary or another running at the same time,
// picks it meanwhile. A port number picked at random collided between two
// test binaries; the kernel's port 0 handed a stopped server's port to a
// connection before the server came back.
func FreePort(t testing.TB) int {
	t.Helper()
	dir := portsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for range 500 {
		port := reservedLow + rand.IntN(reservedHigh-reservedLow)
		if f, ok := reserve(t, dir, port); ok {
			t.Cleanup(func() { f.Close() }) // closing the file releases the lock
			return port
		}
	}
	t.Fatalf("no free port to reserve in %d-%d", reservedLow, reservedHigh-1)
	return 0
}

// portsDir holds one lock file per port, shared by every test process.
func portsDir() string { return filepath.Join(os.TempDir(), "rollcall-test-ports") }

// reserve locks port's file without waiting and checks that the port is
// free; it returns the open, locked file when both hold.
func reserve(t testing.TB, dir string, port int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		f.Close()
		return nil, false
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return f, true
}
