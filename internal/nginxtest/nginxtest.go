// Package nginxtest runs a real nginx (Debian's package) for tests, with its
// own prefix in a temp dir and a free loopback port. Missing nginx skips the
// test locally and fails it when CI is set.
package nginxtest

import (
	"context"
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

	"github.com/rollcall/rollcall/embedetcd"
)

// Config is spliced into nginx.conf.
type Config struct {
	Main    string // main context, e.g. ModulesConf to load the Lua module
	Workers int    // worker_processes; 0 means 1
	HTTP    string // inside http { }, e.g. include lines for rendered files
	Server  string // inside the main server { listen 127.0.0.1:Port; }
}

// Server is a running nginx master.
type Server struct {
	Bin    string // path of the nginx binary
	Prefix string // nginx -p; holds nginx.conf, nginx.pid, error.log
	Conf   string // path of nginx.conf
	Port   int    // the main server's port
	cmd    *exec.Cmd
	done   chan struct{}
}

// ModulesConf, in Config.Main, loads the dynamic modules Debian enables
// (the Lua module among them), as Debian's own nginx.conf does.
const ModulesConf = "include /etc/nginx/modules-enabled/*.conf;"

const debianModules = "/usr/lib/nginx/modules"

// LookupLua finds nginx and Debian's Lua module (libnginx-mod-http-lua),
// skipping the test (failing it under CI) when either is missing.
func LookupLua(t testing.TB) string {
	t.Helper()
	bin := Lookup(t)
	if _, err := os.Stat(filepath.Join(debianModules, "ngx_http_lua_module.so")); err != nil {
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
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, e := os.Stat(p); e == nil {
				return p
			}
		}
		if os.Getenv("CI") != "" {
			t.Fatal("nginx not installed (CI): .ci/run must install it")
		}
		t.Skip("nginx not installed")
	}
	return bin
}

// New prepares a prefix and picks a port; call Start to run it. Tests that
// need the port or prefix in their config (e.g. rendered include paths) use
// New first.
func New(t testing.TB) *Server {
	t.Helper()
	bin := Lookup(t)
	port, err := embedetcd.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	// Workers may run as another user: let them into the prefix.
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	// Debian's modules-enabled files name modules relative to the prefix.
	if _, err := os.Stat(debianModules); err == nil {
		if err := os.Symlink(debianModules, filepath.Join(prefix, "modules")); err != nil {
			t.Fatal(err)
		}
	}
	return &Server{Bin: bin, Prefix: prefix, Conf: filepath.Join(prefix, "nginx.conf"), Port: port}
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
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	p := s.Prefix
	conf := fmt.Sprintf(`%s
%[7]s
daemon off;
worker_processes %[8]d;
worker_shutdown_timeout 5s;
pid %[2]s/nginx.pid;
error_log stderr notice;
error_log %[2]s/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
    server {
        listen 127.0.0.1:%[4]d;
        location = /_ready { return 200 "%[6]s"; }
%[5]s
    }
}
`, user, p, c.HTTP, s.Port, c.Server, s.token(), c.Main, max(c.Workers, 1))
	return os.WriteFile(s.Conf, []byte(conf), 0o644)
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
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(s.URL("/_ready"))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == s.token() {
				return
			}
			err = fmt.Errorf("port %d answered by another server: %q", s.Port, b)
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

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

// Args are the flags that point nginx at this instance: -p, -c, -e.
func (s *Server) Args(extra ...string) []string {
	return append([]string{"-p", s.Prefix, "-c", s.Conf, "-e", "stderr"}, extra...)
}

// CommandLine returns a shell-ready nginx command for this instance, e.g.
// CommandLine("-t", "-q") for a check_cmd or CommandLine("-s", "reload").
func (s *Server) CommandLine(extra ...string) string {
	return s.Bin + " " + strings.Join(s.Args(extra...), " ")
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

// URL is http://127.0.0.1:Port + path.
func (s *Server) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", s.Port, path)
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
