// Package haproxytest runs a real HAProxy (Debian's package) for tests: the
// shipped haproxy/haproxy.cfg pointed at a temp dir and a free loopback port,
// in master-worker mode with a master socket and the runtime API, reading the
// rendered files from a directory of its own. It never touches /etc/haproxy.
// Missing haproxy skips the test locally and fails it when CI is set.
package haproxytest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/nginxreload"
)

// Lookup finds haproxy (also in /usr/sbin, often not on a user's PATH),
// skipping the test (failing it under CI) when missing.
func Lookup(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr == nil {
			return "/usr/sbin/haproxy"
		}
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy not installed (CI): .ci/run must install it")
		}
		t.Skip(err)
	}
	return bin
}

// Shipped returns the path of the shipped sample haproxy/haproxy.cfg.
func Shipped(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "haproxy", "haproxy.cfg")
}

// Check runs `haproxy -c` on the shipped haproxy.cfg followed by files (or
// directories) and returns HAProxy's output.
func Check(t testing.TB, bin string, files ...string) (string, error) {
	t.Helper()
	args := []string{"-c", "-q", "-f", Shipped(t)}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

// Config changes the shipped haproxy.cfg for a test.
type Config struct {
	// NoRetries replaces the shipped `retries 2` + `option redispatch 1`
	// with `retries 0`: every request sent to a dead server fails.
	NoRetries bool
}

// Server is a private HAProxy master with its workers.
type Server struct {
	Bin          string
	Dir          string // temp dir: haproxy.cfg, sockets, rendered/
	Port         int    // where the rendered frontend listens (ROLLCALL_BIND)
	Conf         string // Dir/haproxy.cfg: the shipped one, pointed at Dir and Port
	Rendered     string // Dir/rendered: read with -f after Conf
	MasterSocket string
	AdminSocket  string // the runtime API
	PIDFile      string // the master's pid (-p), as systemd's ExecReload signals it
}

// New prepares the dir, the config and a free port; Start runs it.
func New(t testing.TB, c Config) *Server {
	t.Helper()
	bin := Lookup(t)
	dir := t.TempDir()
	s := &Server{Bin: bin, Dir: dir, Port: proctest.FreePort(t),
		Conf: filepath.Join(dir, "haproxy.cfg"), Rendered: filepath.Join(dir, "rendered"),
		MasterSocket: filepath.Join(dir, "master.sock"), AdminSocket: filepath.Join(dir, "admin.sock"),
		PIDFile: filepath.Join(dir, "haproxy.pid")}
	if err := os.Mkdir(s.Rendered, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(Shipped(t))
	if err != nil {
		t.Fatal(err)
	}
	pairs := []string{
		"/run/haproxy/admin.sock", s.AdminSocket,
		"presetenv ROLLCALL_BIND :80", fmt.Sprintf("setenv ROLLCALL_BIND 127.0.0.1:%d", s.Port),
		"log /dev/log local0", "log stderr format short local0 notice",
	}
	if c.NoRetries {
		pairs = append(pairs, "retries 2\n", "retries 0\n", "\n    option redispatch 1", "")
	}
	text := strings.NewReplacer(pairs...).Replace(string(b))
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(string(b), pairs[i]) {
			t.Fatalf("shipped %s lacks %q", Shipped(t), pairs[i])
		}
	}
	if err := os.WriteFile(s.Conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// Args are the command-line arguments of this instance's master.
func (s *Server) Args() []string {
	return []string{"-W", "-S", s.MasterSocket, "-p", s.PIDFile, "-f", s.Conf, "-f", s.Rendered}
}

// CheckCommand is the check_cmd for this instance: `haproxy -c` on the
// whole configuration.
func (s *Server) CheckCommand() string {
	return fmt.Sprintf("%s -c -f %s -f %s", s.Bin, s.Conf, s.Rendered)
}

// URL is the rendered frontend's URL for path.
func (s *Server) URL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", s.Port, path) }

// Start runs the master (its log printed if the test fails) and waits until
// its master CLI lists a worker. Cleanup stops it: SIGTERM to the master,
// then SIGKILL to everything it started.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	p := proctest.Start(t, "haproxy", nil, 10*time.Second, append([]string{s.Bin}, s.Args()...)...)
	waitfor.Cond(t, 10*time.Second, "haproxy lists a worker", func() error {
		if err := p.Exited(); err != nil {
			t.Fatalf("haproxy exited before ready: %v\n%s", err, p.Tail(20))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ps, err := nginxreload.ShowProc(ctx, s.MasterSocket)
		if err == nil && len(ps.Workers) == 0 {
			err = errors.New("no worker yet")
		}
		return err
	})
}

// Runtime sends one command to the runtime API (the admin stats socket).
func (s *Server) Runtime(ctx context.Context, cmd string) (string, error) {
	return nginxreload.CLI(ctx, s.AdminSocket, cmd)
}

// Servers returns the runtime's `show servers state` as
// "<backend>/<server>=<addr>:<port>" per server, sorted.
func (s *Server) Servers(ctx context.Context) ([]string, error) {
	out, err := s.Runtime(ctx, "show servers state")
	if err != nil {
		return nil, err
	}
	var got []string
	for line := range strings.Lines(out) {
		// be_id be_name srv_id srv_name srv_addr ... srv_port (field 19)
		f := strings.Fields(line)
		if len(f) < 19 || strings.HasPrefix(f[0], "#") {
			continue
		}
		got = append(got, fmt.Sprintf("%s/%s=%s:%s", f[1], f[3], f[4], f[18]))
	}
	slices.Sort(got)
	return got, nil
}

// Resource returns the shipped haproxy/conf.d/haproxy.toml pointed at this
// instance: dest Rendered/rollcall.cfg, check_cmd CheckCommand, reload_cmd
// reload.
func (s *Server) Resource(t testing.TB, reload string) string {
	t.Helper()
	return s.shipped(t, filepath.Join("conf.d", "haproxy.toml"), reload, nil)
}

// RuntimeConfdir is the shipped confdir of the runtime API setup
// (haproxy/runtime: membership changes without reloads).
func RuntimeConfdir(t testing.TB) string {
	t.Helper()
	return filepath.Join(filepath.Dir(Shipped(t)), "runtime")
}

// RuntimeResource returns the shipped haproxy/runtime/conf.d/haproxy.toml
// pointed at this instance: the runtime API at api (AdminSocket, or a proxy
// in front of it), the config at Rendered/rollcall.cfg, the peer set at
// Dir/peers.txt, check_cmd CheckCommand, reload_cmd reload.
func (s *Server) RuntimeResource(t testing.TB, api, reload string) string {
	t.Helper()
	return s.shipped(t, filepath.Join("runtime", "conf.d", "haproxy.toml"), reload, []string{
		"haproxy:///run/haproxy/admin.sock?config=/etc/haproxy/rollcall/rollcall.cfg",
		"haproxy://" + api + "?config=" + filepath.Join(s.Rendered, "rollcall.cfg"),
		"/etc/haproxy/rollcall-peers.txt", filepath.Join(s.Dir, "peers.txt"),
	})
}

// shipped reads a shipped resource under haproxy/ and points its paths and
// commands at this instance.
func (s *Server) shipped(t testing.TB, rel, reload string, more []string) string {
	t.Helper()
	path := filepath.Join(filepath.Dir(Shipped(t)), rel)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pairs := append(more,
		"/etc/haproxy/rollcall/rollcall.cfg", filepath.Join(s.Rendered, "rollcall.cfg"),
		"/usr/sbin/haproxy -c -f /etc/haproxy/haproxy.cfg -f /etc/haproxy/rollcall", s.CheckCommand(),
		"/usr/local/bin/haproxy-reload --master-socket /run/haproxy-master.sock", reload,
	)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(string(b), pairs[i]) {
			t.Fatalf("shipped %s lacks %q", path, pairs[i])
		}
	}
	return strings.NewReplacer(pairs...).Replace(string(b))
}
