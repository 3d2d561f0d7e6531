package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
	"github.com/rollcall/rollcall/internal/proc"
)

// nginx is the harness's private nginx (internal/nginxconf): its own
// prefix, a free loopback port, rendered upstreams included from
// rendered/*.conf and one regex location that proxies /<app>_<env>/ to the
// upstream of that name, so one config serves per-app files and the
// all-in-one file alike.
type nginx struct {
	*proc.Proc
	nginxconf.Instance
	rendered string // the renderer's output dir
	gen      int    // generation marker served at /_gen (the floor)
}

func startNginx(ctx context.Context, dir, bin string) (*nginx, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(dir, "nginx")
	n := &nginx{Instance: nginxconf.Instance{Bin: bin, Prefix: prefix, Conf: filepath.Join(prefix, "nginx.conf"), Port: port}}
	n.rendered = filepath.Join(n.Prefix, "rendered")
	if err := os.MkdirAll(n.rendered, 0o755); err != nil {
		return nil, err
	}
	if err := n.writeGen(); err != nil {
		return nil, err
	}
	if err := n.WriteConf(nginxconf.Conf{
		HTTP: fmt.Sprintf("    include %s/*.conf;\n", n.rendered),
		Server: fmt.Sprintf(`        include %s/gen.conf;
        location ~ "^/(?<svc>[A-Za-z0-9][A-Za-z0-9.-]*_[A-Za-z0-9][A-Za-z0-9.-]*)/" {
            proxy_pass http://$svc;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
        }
`, n.Prefix),
		Ready: "bench " + n.Prefix,
	}); err != nil {
		return nil, err
	}
	if n.Proc, err = startProc(dir, "nginx", append([]string{bin}, n.Args()...)...); err != nil {
		return nil, err
	}
	if err := n.waitGen(ctx); err != nil {
		stop(n.Proc, 5*time.Second)
		return nil, err
	}
	return n, nil
}

func (n *nginx) writeGen() error {
	return os.WriteFile(filepath.Join(n.Prefix, "gen.conf"),
		fmt.Appendf(nil, "location = /_gen { return 200 \"%d\"; }\n", n.gen), 0o644)
}

// waitGen waits until nginx serves the current generation marker.
func (n *nginx) waitGen(ctx context.Context) error {
	return waitServes(ctx, n.Proc, n.URL("/_gen"), fmt.Sprint(n.gen))
}

// floor is nginx's own cost of a change on this config: `nginx -t` of the
// whole config, then `nginx -s reload` until the new workers serve. retire
// is the reload until only they answer: nginx lets the old workers accept
// new connections for 100 ms more after it starts the new ones (the
// master's ngx_msleep(100) before it retires them), which a removal through
// plain `nginx -s reload` waits for and an addition does not (nginx-reload
// and the renderer's confirmed reloads quit the old workers as soon as the
// new ones run).
type floor struct{ test, reload, retire time.Duration }

func (f floor) total() time.Duration { return f.test + f.reload }

func (n *nginx) floor(ctx context.Context) (floor, error) {
	var f floor
	n.gen++
	if err := n.writeGen(); err != nil {
		return f, err
	}
	t0 := time.Now()
	if out, err := exec.CommandContext(ctx, n.Bin, n.Args("-t", "-q")...).CombinedOutput(); err != nil {
		return f, fmt.Errorf("nginx -t: %w: %s", err, out)
	}
	t1 := time.Now()
	if out, err := exec.CommandContext(ctx, n.Bin, n.Args("-s", "reload")...).CombinedOutput(); err != nil {
		return f, fmt.Errorf("nginx -s reload: %w: %s", err, out)
	}
	if err := n.waitGen(ctx); err != nil {
		return f, err
	}
	served := time.Now()
	retired, err := n.waitOnlyGen(ctx)
	if err != nil {
		return f, err
	}
	f.test, f.reload, f.retire = t1.Sub(t0), served.Sub(t1), retired.Sub(t1)
	return f, nil
}

// floors measures the floor k times and returns the medians.
func (n *nginx) floors(ctx context.Context, k int) (floor, error) {
	var ts, rs, ds []float64
	for range k {
		f, err := n.floor(ctx)
		if err != nil {
			return floor{}, err
		}
		ts, rs, ds = append(ts, float64(f.test)), append(rs, float64(f.reload)), append(ds, float64(f.retire))
	}
	return floor{test: time.Duration(median(ts)), reload: time.Duration(median(rs)), retire: time.Duration(median(ds))}, nil
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
`, user, n.Bin)
	return path, os.WriteFile(path, []byte(script), 0o755)
}

// reloadCmd is the reload_cmd of every world on n (the push part's
// structural reloads too): the repo's nginx-reload, which returns once
// nginx runs the new workers; or, plain, `nginx -s reload`. nginx-reload
// signals the master itself (--signal; a config the master refuses is
// quoted from the error log): `nginx -s reload` would first parse the
// whole config only to find the master, ~35 ms at 10,000 servers on top
// of the master's own parse (nginxreload/README.md).
func reloadCmd(n nginxconf.Instance, binDir string, plain bool) string {
	if plain {
		return n.CommandLine("-s", "reload")
	}
	return fmt.Sprintf("%s --signal --pid %s --error-log %s --timeout 10s",
		filepath.Join(binDir, "nginx-reload"), filepath.Join(n.Prefix, "nginx.pid"), filepath.Join(n.Prefix, "error.log"))
}

func nginxVersion(bin string) string {
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("unknown (%s -v: %v)", bin, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: "))
}
