package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rollcall/rollcall/haproxyapi"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/nginxreload"
)

// haproxy is the harness's private HAProxy 2.6 in master-worker mode: the
// shipped haproxy/haproxy.cfg pointed at its own dir (runtime API socket,
// ROLLCALL_BIND on a free loopback port, log to stderr) and, after it, the
// rendered directory, as haproxy/README.md runs it. The harness appends a
// frontend of its own on a second port answering the generation number
// (the floor), so HAProxy starts before anything is rendered.
type haproxy struct {
	*proc.Proc
	bin      string
	dir      string
	conf     string // dir/haproxy.cfg: the shipped one pointed here + the generation frontend
	rendered string // dir/rendered, read with -f after conf
	master   string // the master CLI socket (-S)
	admin    string // the runtime API socket
	port     int    // the rendered frontend (ROLLCALL_BIND)
	genPort  int    // the generation frontend
	shipped  string // the shipped haproxy.cfg pointed here, without the generation frontend
	gen      int
}

func startHAProxy(ctx context.Context, dir, bin, shippedDir string) (*haproxy, error) {
	h := &haproxy{bin: bin, dir: filepath.Join(dir, "haproxy")}
	h.conf, h.rendered = filepath.Join(h.dir, "haproxy.cfg"), filepath.Join(h.dir, "rendered")
	h.master, h.admin = filepath.Join(h.dir, "master.sock"), filepath.Join(h.dir, "admin.sock")
	if err := os.MkdirAll(h.rendered, 0o755); err != nil {
		return nil, err
	}
	var err error
	if h.port, err = proc.FreePort(); err != nil {
		return nil, err
	}
	if h.genPort, err = proc.FreePort(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(shippedDir, "haproxy.cfg"))
	if err != nil {
		return nil, fmt.Errorf("shipped haproxy.cfg: %w", err)
	}
	if h.shipped, err = pointAt(string(b), []string{
		// The runtime API's path sets servers: the socket must be level admin.
		"stats socket /run/haproxy/admin.sock mode 660 level admin", "stats socket " + h.admin + " mode 660 level admin",
		"presetenv ROLLCALL_BIND :80", fmt.Sprintf("setenv ROLLCALL_BIND 127.0.0.1:%d", h.port),
		"log /dev/log local0", "log stderr format short local0 notice",
	}); err != nil {
		return nil, fmt.Errorf("shipped haproxy.cfg: %w", err)
	}
	if err := h.writeGen(); err != nil {
		return nil, err
	}
	args := []string{bin, "-W", "-S", h.master, "-p", filepath.Join(h.dir, "haproxy.pid"), "-f", h.conf, "-f", h.rendered}
	if h.Proc, err = startProc(dir, "haproxy", args...); err != nil {
		return nil, err
	}
	if err := h.waitGen(ctx); err != nil {
		stop(h.Proc, 5*time.Second)
		return nil, err
	}
	return h, nil
}

// pointAt replaces each pairs[2i] in text by pairs[2i+1], failing when one
// is missing (the shipped file changed under the harness).
func pointAt(text string, pairs []string) (string, error) {
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			return "", fmt.Errorf("lacks %q", pairs[i])
		}
	}
	return strings.NewReplacer(pairs...).Replace(text), nil
}

func (h *haproxy) writeGen() error {
	conf := fmt.Sprintf(`%s
# bench: the generation marker (the floor), on a port of its own.
frontend bench-gen
    bind 127.0.0.1:%d
    http-request return status 200 content-type text/plain string "%d"
`, h.shipped, h.genPort, h.gen)
	return os.WriteFile(h.conf, []byte(conf), 0o644)
}

// waitGen waits until a fresh connection is answered with the current
// generation: a worker running the current config serves.
func (h *haproxy) waitGen(ctx context.Context) error {
	return waitServes(ctx, h.Proc, fmt.Sprintf("http://127.0.0.1:%d/", h.genPort), fmt.Sprint(h.gen))
}

// checkCmd is `haproxy -c` of the whole configuration, as the shipped
// check_cmd runs it.
func (h *haproxy) checkCmd() []string {
	return []string{h.bin, "-c", "-f", h.conf, "-f", h.rendered}
}

// floor is HAProxy's own cost of a change on this config: `haproxy -c` of
// the whole config, then `reload` on the master CLI until a fresh
// connection is served by the new worker generation.
func (h *haproxy) floor(ctx context.Context) (floor, error) {
	var f floor
	h.gen++
	if err := h.writeGen(); err != nil {
		return f, err
	}
	t0 := time.Now()
	args := h.checkCmd()
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		return f, fmt.Errorf("haproxy -c: %w: %s", err, out)
	}
	t1 := time.Now()
	if err := h.reload(ctx); err != nil {
		return f, err
	}
	if err := h.waitGen(ctx); err != nil {
		return f, err
	}
	f.test, f.reload = t1.Sub(t0), time.Since(t1)
	return f, nil
}

// reload sends `reload` to the master CLI, retrying while the socket
// refuses connections (a master still re-executing). The master closes the
// connection as it re-executes: a failed read is the reload being taken.
func (h *haproxy) reload(ctx context.Context) error {
	return poll(ctx, 10*time.Second, 2*time.Millisecond, "haproxy master takes a reload", func() error {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := nginxreload.CLI(c, h.master, "reload")
		var op *net.OpError
		if err == nil || errors.As(err, &op) && op.Op == "read" {
			return nil
		}
		return err
	})
}

// reloads is the master's count of reloads (`show proc`): every reload
// HAProxy ran, whoever asked for it.
func (h *haproxy) reloads(ctx context.Context) (float64, error) {
	var p nginxreload.Procs
	err := poll(ctx, 10*time.Second, 5*time.Millisecond, "haproxy show proc", func() error {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var err error
		p, err = nginxreload.ShowProc(c, h.master)
		return err
	})
	return float64(p.Reloads), err
}

// servers is HAProxy's own view (`show servers state` on the runtime API):
// see serving.
func (h *haproxy) servers(ctx context.Context) (map[string][]string, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := haproxyapi.Client{Network: "unix", Address: h.admin}.Run(c, "show servers state")
	if err != nil {
		return nil, err
	}
	srvs, err := haproxyapi.ParseServersState(out)
	if err != nil {
		return nil, err
	}
	return serving(srvs), nil
}

// serving is backend → the "<addr>:<port>" of its servers that take
// traffic, sorted: not in maintenance (a free or draining slot of the
// runtime API's path, a `disabled` one) and with an address.
func serving(srvs []haproxyapi.Server) map[string][]string {
	got := map[string][]string{}
	for _, s := range srvs {
		if !s.Maint() && s.Addr.IsValid() {
			got[s.Backend] = append(got[s.Backend], s.Addr.String())
		}
	}
	for _, s := range got {
		slices.Sort(s)
	}
	return got
}

// lookHAProxy finds haproxy, also in /usr/sbin (often off a user's PATH).
func lookHAProxy(name string) (string, error) {
	bin, err := exec.LookPath(name)
	if err != nil && name == "haproxy" {
		if _, serr := os.Stat("/usr/sbin/haproxy"); serr == nil {
			return "/usr/sbin/haproxy", nil
		}
	}
	return bin, err
}

func haproxyVersion(bin string) string {
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("unknown (%s -v: %v)", bin, err)
	}
	// "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
	f := strings.Fields(strings.TrimPrefix(string(out), "HAProxy version "))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}
