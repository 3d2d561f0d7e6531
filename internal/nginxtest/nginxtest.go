// Package nginxtest runs a real nginx (Debian's package) for tests, with its
// own prefix in a temp dir and a free loopback port. Missing nginx skips the
// test locally and fails it when CI is set.
package nginxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
	"github.com/rollcall/rollcall/internal/proctest"
)

// Config is spliced into nginx.conf.
type Config struct {
	Main    string // main context, e.g. ModulesConf to load the Lua module
	Workers int    // worker_processes; 0 means 1
	HTTP    string // inside http { }, e.g. include lines for rendered files
	Server  string // inside the main server { listen 127.0.0.1:Port; }
}

// Server is a running nginx master. Bin, Prefix, Conf, Port and the
// command-line helpers (Args, CommandLine, URL) come from nginxconf.Instance.
type Server struct {
	nginxconf.Instance
	cmd  *exec.Cmd
	done chan struct{}
}

// ModulesConf, in Config.Main, loads the dynamic modules Debian enables
// (the Lua module among them), as Debian's own nginx.conf does.
const ModulesConf = nginxconf.ModulesConf

// LookupLua finds nginx and Debian's Lua module (libnginx-mod-http-lua),
// skipping the test (failing it under CI) when either is missing.
func LookupLua(t testing.TB) string {
	t.Helper()
	bin := Lookup(t)
	if !nginxconf.HasLua() {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx Lua module not installed (CI): .ci/run must install libnginx-mod-http-lua")
		}
		t.Skip("nginx Lua module not installed (libnginx-mod-http-lua)")
	}
	return bin
}

// Lookup finds nginx, skipping the test (failing it under CI) when missing.
func Lookup(t testing.TB) string {
	t.Helper()
	bin, err := nginxconf.Lookup()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx not installed (CI): .ci/run must install it")
		}
		t.Skip(err)
	}
	return bin
}

// New prepares a prefix and picks a port; call Start to run it. Tests that
// need the port or prefix in their config (e.g. rendered include paths) use
// New first.
func New(t testing.TB) *Server {
	t.Helper()
	bin := Lookup(t)
	prefix := t.TempDir()
	// Workers may run as another user: let them into the prefix.
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	// Debian's modules-enabled files name modules relative to the prefix.
	if err := nginxconf.LinkModules(prefix); err != nil {
		t.Fatal(err)
	}
	return &Server{Instance: nginxconf.Instance{
		Bin: bin, Prefix: prefix, Conf: filepath.Join(prefix, "nginx.conf"), Port: proctest.FreePort(t),
	}}
}

// Start is New followed by Start.
func Start(t testing.TB, c Config) *Server {
	t.Helper()
	s := New(t)
	s.Start(t, c)
	return s
}

// WriteConf writes nginx.conf from c.
func (s *Server) WriteConf(c Config) error {
	return s.Instance.WriteConf(nginxconf.Conf{Main: c.Main, Workers: c.Workers, HTTP: c.HTTP, Server: c.Server, Ready: s.token()})
}

// token is what this instance's /_ready answers: a free port found by
// another test's nginx too would otherwise pass for ours.
func (s *Server) token() string { return "nginxtest " + s.Prefix }

// Start writes the config, starts nginx and waits until its own /_ready
// answers (not another nginx that took the same free port).
// Cleanup sends SIGQUIT, waits with a deadline, then kills.
func (s *Server) Start(t testing.TB, c Config) {
	t.Helper()
	if err := s.WriteConf(c); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.Bin, s.Args()...)
	s.cmd.Stdout = t.Output()
	s.cmd.Stderr = t.Output()
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	s.done = make(chan struct{})
	go func() { // ends with nginx; stop waits for done
		if err := s.cmd.Wait(); err != nil {
			t.Logf("nginx exited: %v", err)
		}
		close(s.done)
	}()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Logf("stop nginx: %v", err)
		}
	})
	// Each probe is bounded too: the port may belong to another server
	// (free a moment ago) that accepts and never answers.
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Get(s.URL("/_ready"))
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			if err = errors.Join(err, resp.Body.Close()); err == nil && string(b) == s.token() {
				return
			}
			if err == nil {
				err = fmt.Errorf("port %d answered by another server: %q", s.Port, b)
			}
		}
		select {
		case <-s.done:
			t.Fatalf("nginx exited before ready: %v", s.cmd.ProcessState)
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not ready after 10s: %v", err)
		}
	}
}

// stop sends SIGQUIT (a graceful shutdown), waits up to 10s, then kills
// the process group.
func (s *Server) stop() error {
	if s.Exited() {
		return nil
	}
	if err := s.cmd.Process.Signal(syscall.SIGQUIT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGQUIT: %w", err)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
		err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("no exit within 10s of SIGQUIT, killed (%v)", err)
	}
}

// Run runs nginx with this instance's flags plus extra, returning its output.
func (s *Server) Run(ctx context.Context, extra ...string) (string, error) {
	out, err := exec.CommandContext(ctx, s.Bin, s.Args(extra...)...).CombinedOutput()
	return string(out), err
}

// Reload sends a reload through nginx -s reload.
func (s *Server) Reload(ctx context.Context) error {
	if out, err := s.Run(ctx, "-s", "reload"); err != nil {
		return fmt.Errorf("nginx -s reload: %w: %s", err, out)
	}
	return nil
}

// MasterPID reads the pid file.
func (s *Server) MasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.Prefix, "nginx.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Exited reports whether the master process has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Check runs `nginx -t` (bin, from Lookup) on a fragment for http { }, in a
// wrapper `pid <tmp>/c.pid; events {} http { <http> }`, and returns nginx's
// output: the way a rendered include is checked alone.
func Check(t testing.TB, bin, http string) (string, error) {
	t.Helper()
	tmp := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := filepath.Join(tmp, "c.conf")
	text := fmt.Sprintf("%s\npid %s/c.pid;\nevents {}\nhttp {\n%s\n}\n", user, tmp, http)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-t", "-q", "-p", tmp, "-c", conf, "-e", "stderr").CombinedOutput()
	return string(out), err
}
