package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollcall/rollcall/embedetcd"
)

// nginx is the harness's private nginx: its own prefix, a free loopback
// port, rendered upstreams included from rendered/*.conf and one regex
// location that proxies /<app>_<env>/ to the upstream of that name, so one
// config serves per-app files and the all-in-one file alike.
type nginx struct {
	*proc
	bin, prefix, conf string
	rendered          string // the renderer's output dir
	port              int
	gen               int // generation marker served at /_gen (the floor)
}

func startNginx(ctx context.Context, dir, bin string) (*nginx, error) {
	port, err := embedetcd.FreePort()
	if err != nil {
		return nil, err
	}
	n := &nginx{bin: bin, prefix: filepath.Join(dir, "nginx"), port: port}
	n.conf = filepath.Join(n.prefix, "nginx.conf")
	n.rendered = filepath.Join(n.prefix, "rendered")
	if err := os.MkdirAll(n.rendered, 0o755); err != nil {
		return nil, err
	}
	if err := n.writeGen(); err != nil {
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
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[3]s/*.conf;
    server {
        listen 127.0.0.1:%[4]d;
        include %[2]s/gen.conf;
        location ~ "^/(?<svc>[A-Za-z0-9][A-Za-z0-9.-]*_[A-Za-z0-9][A-Za-z0-9.-]*)/" {
            proxy_pass http://$svc;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
        }
    }
}
`, user, n.prefix, n.rendered, n.port)
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if n.proc, err = startProc(dir, "nginx", append([]string{bin}, n.args()...)...); err != nil {
		return nil, err
	}
	if err := n.waitGen(ctx); err != nil {
		n.stop(5 * time.Second)
		return nil, err
	}
	return n, nil
}

func (n *nginx) args(extra ...string) []string {
	return append([]string{"-p", n.prefix, "-c", n.conf, "-e", "stderr"}, extra...)
}

func (n *nginx) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path) }

func (n *nginx) writeGen() error {
	return os.WriteFile(filepath.Join(n.prefix, "gen.conf"),
		fmt.Appendf(nil, "location = /_gen { return 200 \"%d\"; }\n", n.gen), 0o644)
}

// waitGen waits until nginx serves the current generation marker.
func (n *nginx) waitGen(ctx context.Context) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	want := fmt.Sprint(n.gen)
	return poll(ctx, 10*time.Second, 2*time.Millisecond, "nginx serves generation "+want, func() error {
		if n.exited() {
			return fmt.Errorf("nginx exited: %s", n.tail())
		}
		resp, err := c.Get(n.url("/_gen"))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			return fmt.Errorf("got %q", b)
		}
		return nil
	})
}

// floor is nginx's own cost of a change on this config: `nginx -t` of the
// whole config, then `nginx -s reload` until the new workers serve.
type floor struct{ test, reload time.Duration }

func (f floor) total() time.Duration { return f.test + f.reload }

func (n *nginx) floor(ctx context.Context) (floor, error) {
	var f floor
	n.gen++
	if err := n.writeGen(); err != nil {
		return f, err
	}
	t0 := time.Now()
	if out, err := exec.CommandContext(ctx, n.bin, n.args("-t", "-q")...).CombinedOutput(); err != nil {
		return f, fmt.Errorf("nginx -t: %w: %s", err, out)
	}
	t1 := time.Now()
	if out, err := exec.CommandContext(ctx, n.bin, n.args("-s", "reload")...).CombinedOutput(); err != nil {
		return f, fmt.Errorf("nginx -s reload: %w: %s", err, out)
	}
	if err := n.waitGen(ctx); err != nil {
		return f, err
	}
	f.test, f.reload = t1.Sub(t0), time.Since(t1)
	return f, nil
}

// floors measures the floor k times and returns the medians.
func (n *nginx) floors(ctx context.Context, k int) (floor, error) {
	var ts, rs []float64
	for range k {
		f, err := n.floor(ctx)
		if err != nil {
			return floor{}, err
		}
		ts, rs = append(ts, float64(f.test)), append(rs, float64(f.reload))
	}
	return floor{test: time.Duration(median(ts)), reload: time.Duration(median(rs))}, nil
}

// checkScript writes the {{.src}} check a confd user writes for an nginx
// fragment: `nginx -t` on a wrapper that includes only the staged file.
func (n *nginx) checkScript(dir string) (string, error) {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	path := filepath.Join(dir, "check-fragment.sh")
	script := fmt.Sprintf(`#!/bin/sh
# usage: check-fragment.sh STAGED-FILE (check_cmd = "... {{.src}}")
d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
printf '%%s\npid %%s/c.pid;\nevents {}\nhttp {\ninclude %%s;\n}\n' '%s' "$d" "$1" > "$d/c.conf"
%s -t -q -p "$d" -c "$d/c.conf" -e stderr
`, user, n.bin)
	return path, os.WriteFile(path, []byte(script), 0o755)
}

// reloadCmd is the reload_cmd: the repo's nginx-reload, which returns once
// nginx runs the new workers; or, plain, `nginx -s reload`.
func (n *nginx) reloadCmd(binDir string, plain bool) string {
	if plain {
		return n.bin + " " + strings.Join(n.args("-s", "reload"), " ")
	}
	return fmt.Sprintf("%s --nginx %s --pid %s --error-log %s --timeout 10s -- %s",
		filepath.Join(binDir, "nginx-reload"), n.bin, filepath.Join(n.prefix, "nginx.pid"),
		filepath.Join(n.prefix, "error.log"), strings.Join(n.args(), " "))
}

func nginxVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
}
