package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/lua"
	"github.com/rollcall/rollcall/nginxpush"
)

// nginx is the demo's private nginx (internal/nginxconf): its own prefix in
// the temp dir and a free 127.0.0.1 port.
type nginx struct {
	nginxconf.Instance
	master int // pid of the master (daemon off: the process started)
}

// startNginx writes nginx.conf and starts nginx. The rendered upstream is
// included by a glob (nothing matches before the first render) and reached
// through a variable, so nginx starts before the renderer. Retries are off,
// so "0 failed" is the drain's doing, not nginx's.
func startNginx(ctx context.Context, d *demo, bin string) (*nginx, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(d.dir, "nginx")
	n := &nginx{Instance: nginxconf.Instance{Bin: bin, Prefix: prefix, Conf: filepath.Join(prefix, "nginx.conf"), Port: port}}
	if err := os.MkdirAll(n.Prefix, 0o755); err != nil {
		return nil, err
	}
	// Workers may run as another user: let them into the prefix.
	if err := os.Chmod(d.dir, 0o755); err != nil {
		return nil, err
	}
	conf, err := d.nginxConf(n.Prefix)
	if err != nil {
		return nil, err
	}
	if err := n.WriteConf(conf); err != nil {
		return nil, err
	}
	p, err := d.ps.start("nginx", nil, append([]string{bin}, n.Args()...)...)
	if err != nil {
		return nil, err
	}
	n.master = p.Pid()
	c := &http.Client{Timeout: time.Second}
	if err := d.until(ctx, "nginx answers", p, func() error {
		resp, err := c.Get(n.URL("/_ready"))
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}); err != nil {
		return nil, err
	}
	version, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s -v: %w", bin, err)
	}
	d.say("%s on %s (private prefix %s)", strings.TrimSpace(strings.TrimPrefix(string(version), "nginx version: ")), n.URL("/"), n.Prefix)
	if d.lua != nil {
		d.say("nginx has the Lua module: instance changes are pushed to %s, no reload (lua/README.md)", d.lua.url)
	}
	return n, nil
}

// nginxConf is the demo's nginx.conf in prefix: the rendered upstreams, a
// proxy through a variable, and the Lua setup when nginx has the module
// (which sets d.lua).
func (d *demo) nginxConf(prefix string) (nginxconf.Conf, error) {
	conf := nginxconf.Conf{
		HTTP: fmt.Sprintf("    include %s/rendered-*.conf;\n", prefix),
		Server: fmt.Sprintf(`        location / {
            set $up %s;
            proxy_pass http://$up;
            # no retry on another backend: a request sent to a stopped
            # backend fails visibly instead of being hidden
            proxy_next_upstream off;
        }
`, service),
		Ready: "rollcall demo " + prefix,
	}
	if nginxconf.HasLua() && !d.cfg.noLua {
		l, err := setupLua(prefix)
		if err != nil {
			return nginxconf.Conf{}, err
		}
		d.lua = l
		conf.Main, conf.HTTP = nginxconf.ModulesConf, l.include+conf.HTTP
	}
	return conf, nil
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
		destDir = d.nginx.Prefix
		check = d.nginx.CommandLine("-t", "-q")
		reload = d.nginx.CommandLine("-s", "reload")
		if nr := filepath.Join(d.cfg.bin, "nginx-reload"); fileExists(nr) {
			reload = fmt.Sprintf("%s --nginx %s --pid %s -- %s", nr, d.nginx.Bin,
				filepath.Join(d.nginx.Prefix, "nginx.pid"), strings.Join(d.nginx.Args(), " "))
		}
	}
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return "", err
	}
	dest := filepath.Join(destDir, "rendered-"+service+".conf")
	res := d.resourceTOML(dest, check, reload)
	path := filepath.Join(confdir, "conf.d", service+".toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(res), 0o644); err != nil {
		return "", err
	}
	if d.lua != nil {
		// The shipped peers resource: instance changes pushed, no reload.
		peers := fmt.Sprintf(`[template]
src = "peers.tmpl"
dest = %q
keys = ["/%s"]
mode = "0644"
push = %q
`, d.lua.peers, service, d.lua.url)
		if err := os.WriteFile(filepath.Join(confdir, "conf.d", "peers.toml"), []byte(peers), 0o644); err != nil {
			return "", err
		}
	}
	return dest, nil
}

// resourceTOML is the demo app's resource writing dest: the shipped
// per-app upstream, or on the Lua path the upstreams template; check and
// reload are set only when there is an nginx to run them on.
func (d *demo) resourceTOML(dest, check, reload string) string {
	res := fmt.Sprintf(`# The shipped per-app upstream template, for %[1]s.
[template]
src = "upstream.tmpl"
dest = %[2]q
prefix = "/%[1]s"
keys = ["/"]
mode = "0644"
`, service, dest)
	if d.lua != nil {
		res = fmt.Sprintf(`# The shipped Lua-balanced upstreams template: it changes only when an app
# appears or disappears (then nginx reloads).
[template]
src = "upstreams-lua.tmpl"
dest = %[2]q
keys = ["/%[1]s"]
mode = "0644"
`, service, dest)
	}
	if check != "" {
		res += fmt.Sprintf("check_cmd = %q\nreload_cmd = %q\n", check, reload)
	}
	return res
}

// luaSetup is the shipped dynamic-upstream setup (package lua) in the
// demo's nginx prefix.
type luaSetup struct {
	include string // the http{} line including the shipped snippet
	url     string // its update endpoint
	peers   string // the peers file: the peers resource's dest, loaded by nginx at start
}

func setupLua(prefix string) (*luaSetup, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	if err := nginxconf.LinkModules(prefix); err != nil {
		return nil, err
	}
	dir := filepath.Join(prefix, "lua")
	if err := lua.Install(dir); err != nil {
		return nil, err
	}
	listen := lua.Listen(port)
	l := &luaSetup{url: lua.URL(listen), peers: filepath.Join(prefix, "peers.txt")}
	snip, err := lua.Snippet(lua.Setup{LuaDir: dir, PeersFile: l.peers, Listen: listen})
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(prefix, "rollcall-peers.conf")
	if err := os.WriteFile(conf, snip, 0o644); err != nil {
		return nil, err
	}
	l.include = "    include " + conf + ";\n"
	return l, nil
}

// servers lists the live servers of the demo's app: from the rendered
// upstream, or on the Lua path from the rendered peers file.
func (d *demo) servers(dest string) ([]string, error) {
	if d.lua == nil {
		return upstreamServers(dest)
	}
	b, err := os.ReadFile(d.lua.peers)
	if err != nil {
		return nil, err
	}
	p, err := nginxpush.Decode(b)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range p.Services[service] {
		out = append(out, a.String())
	}
	return out, nil
}

// reloads counts the reloads nginx logged in its error log.
func (n *nginx) reloads() (int, error) {
	b, err := os.ReadFile(filepath.Join(n.Prefix, "error.log"))
	if err != nil {
		return 0, err
	}
	return strings.Count(string(b), "reconfiguring"), nil
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
	if workers := len(proc.Children(n.master)); workers != 1 {
		return fmt.Errorf("nginx master %d has %d workers: a reload is under way", n.master, workers)
	}
	return nil
}
