package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// nginx is the demo's private nginx: its own prefix in the temp dir and a
// free 127.0.0.1 port.
type nginx struct {
	bin, prefix, conf string
	port              int
	master            int // pid of the master (daemon off: the process started)
}

func (n *nginx) args(extra ...string) []string {
	return append([]string{"-p", n.prefix, "-c", n.conf, "-e", "stderr"}, extra...)
}

func (n *nginx) commandLine(extra ...string) string {
	return n.bin + " " + strings.Join(n.args(extra...), " ")
}

func (n *nginx) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path) }

// startNginx writes nginx.conf and starts nginx. The rendered upstream is
// included by a glob (nothing matches before the first render) and reached
// through a variable, so nginx starts before the renderer. Retries are off,
// so "0 failed" is the drain's doing, not nginx's.
func startNginx(ctx context.Context, d *demo, bin string) (*nginx, error) {
	n := &nginx{bin: bin, prefix: filepath.Join(d.dir, "nginx"), port: freePort()}
	n.conf = filepath.Join(n.prefix, "nginx.conf")
	if err := os.MkdirAll(n.prefix, 0o755); err != nil {
		return nil, err
	}
	// Workers may run as another user: let them into the prefix.
	if err := os.Chmod(d.dir, 0o755); err != nil {
		return nil, err
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%[1]s
daemon off;
worker_processes 1;
worker_shutdown_timeout 5s;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log notice;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/rendered-*.conf;
    server {
        listen 127.0.0.1:%[3]d;
        location = /_ready { return 204; }
        location / {
            set $up %[4]s;
            proxy_pass http://$up;
            # no retry on another backend: a request sent to a stopped
            # backend fails visibly instead of being hidden
            proxy_next_upstream off;
        }
    }
}
`, user, n.prefix, n.port, service)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := d.ps.start("nginx", nil, append([]string{bin}, n.args()...)...)
	if err != nil {
		return nil, err
	}
	n.master = p.cmd.Process.Pid
	c := &http.Client{Timeout: time.Second}
	if err := d.until(ctx, "nginx answers", p, func() error {
		resp, err := c.Get(n.url("/_ready"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}); err != nil {
		return nil, err
	}
	version, _ := exec.Command(bin, "-v").CombinedOutput()
	d.say("%s on %s (private prefix %s)", strings.TrimSpace(strings.TrimPrefix(string(version), "nginx version: ")), n.url("/"), n.prefix)
	return n, nil
}

// writeConfdir lays out the renderer's confdir with the shipped templates
// and one resource for demo_local; it returns the rendered file's path.
func (d *demo) writeConfdir() (string, error) {
	confdir := filepath.Join(d.dir, "confdir")
	if err := os.CopyFS(filepath.Join(confdir, "templates"), os.DirFS(filepath.Join(d.cfg.repo, "templates"))); err != nil {
		return "", fmt.Errorf("copy the shipped templates: %w", err)
	}
	destDir := filepath.Join(d.dir, "out")
	check, reload := "", ""
	if d.nginx != nil {
		destDir = d.nginx.prefix
		check = d.nginx.commandLine("-t", "-q")
		reload = d.nginx.commandLine("-s", "reload")
		if nr := filepath.Join(d.cfg.bin, "nginx-reload"); fileExists(nr) {
			reload = fmt.Sprintf("%s --nginx %s --pid %s -- %s", nr, d.nginx.bin,
				filepath.Join(d.nginx.prefix, "nginx.pid"), strings.Join(d.nginx.args(), " "))
		}
	}
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return "", err
	}
	dest := filepath.Join(destDir, "rendered-"+service+".conf")
	res := fmt.Sprintf(`# The shipped per-app upstream template, for %[1]s.
[template]
src = "upstream.tmpl"
dest = %[2]q
prefix = "/%[1]s"
keys = ["/"]
mode = "0644"
`, service, dest)
	if check != "" {
		res += fmt.Sprintf("check_cmd = %q\nreload_cmd = %q\n", check, reload)
	}
	path := filepath.Join(confdir, "conf.d", service+".toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	return dest, os.WriteFile(path, []byte(res), 0o644)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// settled reports an error while nginx is between configurations: after a
// reload the old worker may still accept connections for a moment and
// answer them with the old upstream. With worker_processes 1, one child
// means one configuration.
func (n *nginx) settled() error {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	workers := 0
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, cut at the last ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(n.master) {
			workers++
		}
	}
	if workers != 1 {
		return fmt.Errorf("nginx master %d has %d workers: a reload is under way", n.master, workers)
	}
	return nil
}
