package main

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
	iproc "github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/lua"
	"github.com/rollcall/rollcall/nginxpush"
)

// pushWorld is a world whose nginx has the shipped Lua setup (lua/) and
// whose renderer has the shipped no-reload pair: upstreams-lua.tmpl (all
// apps, checked with `nginx -t` and reloaded only when an app appears or
// disappears) and peers.tmpl with `push`, as conf.d/upstreams-lua.toml.example
// and conf.d/peers.toml.example. The embedded world has no nginx of its
// own; everything else (etcd, renderer, backends, acks) is the same.
type pushWorld struct {
	*world
	ngx     nginxconf.Instance
	ngxProc *iproc.Proc
	push    *nginxpush.Client
	peers   string           // the peers resource's dest: the file nginx loads at start
	static  []netip.AddrPort // the backends of the static upstream staticSvc
}

// staticSvc is the static upstream the balancer's cost is compared with:
// written into nginx.conf by the harness, never rendered.
const staticSvc = "static_rps"

// newPushWorld starts etcd and nginx with the Lua module in a new temp dir.
// With static > 0 nginx.conf has upstream staticSvc over that many new
// backends (pw.static).
func newPushWorld(ctx context.Context, opt *options, name string, static int) (pw *pushWorld, err error) {
	w := &world{opt: opt, id: "bench-" + name, be: newBackends()}
	pw = &pushWorld{world: w}
	defer func() {
		if err != nil {
			pw.close()
		}
	}()
	if w.dir, err = os.MkdirTemp(opt.work, name+"-"); err != nil {
		return pw, err
	}
	// nginx workers may run as another user: let them into the prefix.
	if err := os.Chmod(w.dir, 0o755); err != nil {
		return pw, err
	}
	w.confdir = filepath.Join(w.dir, "confdir")
	if err := os.CopyFS(filepath.Join(w.confdir, "templates"), os.DirFS(opt.templates)); err != nil {
		return pw, fmt.Errorf("copy the shipped templates: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(w.confdir, "conf.d"), 0o755); err != nil {
		return pw, err
	}
	if w.etcd, err = startEtcd(ctx, w.dir); err != nil {
		return pw, err
	}
	if pw.static, err = w.be.addN(static); err != nil {
		return pw, err
	}
	if err := pw.startNginx(ctx); err != nil {
		return pw, err
	}
	return pw, pw.resources()
}

func (pw *pushWorld) close() {
	if pw.ngxProc != nil {
		stop(pw.ngxProc, 10*time.Second)
	}
	pw.world.close()
}

// startNginx writes the Lua setup into nginx's prefix (the shipped Lua and
// rollcall-peers.conf with a free port for the update endpoint and the
// peers file moved into the prefix), nginx.conf loading Debian's modules,
// and starts nginx. The rendered upstreams file starts empty. Locations are
// the reload path's (one regex location: /<app>_<env>/ → upstream
// <app>_<env>), so the static upstream and a Lua one are reached the same
// way.
func (pw *pushWorld) startNginx(ctx context.Context) error {
	port, err := iproc.FreePort()
	if err != nil {
		return err
	}
	prefix := filepath.Join(pw.dir, "nginx")
	pw.ngx = nginxconf.Instance{Bin: pw.opt.nginx, Prefix: prefix, Conf: filepath.Join(prefix, "nginx.conf"), Port: port}
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return err
	}
	if err := nginxconf.LinkModules(prefix); err != nil {
		return err
	}
	httpConf, err := pw.luaSetup(prefix)
	if err != nil {
		return err
	}
	for _, f := range []struct{ name, body string }{
		{"upstreams.conf", ""},
		{"static.conf", staticUpstream(pw.static)},
	} {
		path := filepath.Join(prefix, f.name)
		if err := os.WriteFile(path, []byte(f.body), 0o644); err != nil {
			return err
		}
		httpConf += "    include " + path + ";\n"
	}
	if err := pw.ngx.WriteConf(pushConf(httpConf, prefix)); err != nil {
		return err
	}
	if pw.ngxProc, err = startProc(pw.dir, "nginx", append([]string{pw.ngx.Bin}, pw.ngx.Args()...)...); err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Second}
	return poll(ctx, 10*time.Second, 5*time.Millisecond, "nginx with Lua answers", func() error {
		if err := pw.ngxProc.Exited(); err != nil {
			return fmt.Errorf("%w: %s", err, pw.ngxProc.Tail(20))
		}
		resp, err := c.Get(pw.ngx.URL("/_ready"))
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
}

// pushConf is nginx.conf's part: Debian's modules, httpConf in http{}
// and the reload path's location.
func pushConf(httpConf, prefix string) nginxconf.Conf {
	return nginxconf.Conf{
		Main: nginxconf.ModulesConf,
		HTTP: httpConf,
		// keepalive_requests: the load generator's connections stay open
		// for the whole window (nginx closes one after 1,000 by default).
		Server: `        keepalive_requests 1000000;
        location ~ "^/(?<svc>[A-Za-z0-9][A-Za-z0-9.-]*_[A-Za-z0-9][A-Za-z0-9.-]*)/" {
            proxy_pass http://$svc;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
        }
`,
		Ready: "bench " + prefix,
	}
}

// luaSetup installs the shipped Lua and snippet below prefix and returns
// the http{} line including it.
func (pw *pushWorld) luaSetup(prefix string) (string, error) {
	port, err := iproc.FreePort()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(prefix, "lua")
	if err := lua.Install(dir); err != nil {
		return "", err
	}
	listen := lua.Listen(port)
	pw.push = &nginxpush.Client{URL: lua.URL(listen)}
	pw.peers = filepath.Join(prefix, "peers.txt")
	snip, err := lua.Snippet(lua.Setup{LuaDir: dir, PeersFile: pw.peers, Listen: listen})
	if err != nil {
		return "", err
	}
	conf := filepath.Join(prefix, "rollcall-peers.conf")
	if err := os.WriteFile(conf, snip, 0o644); err != nil {
		return "", err
	}
	return "    include " + conf + ";\n", nil
}

// staticUpstream is upstream staticSvc over peers, as the reload path's
// templates write it (round robin, keepalive 16).
func staticUpstream(peers []netip.AddrPort) string {
	if len(peers) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "upstream %s {\n", staticSvc)
	for _, a := range peers {
		fmt.Fprintf(&b, "    server %s;\n", a)
	}
	b.WriteString("    keepalive 16;\n}\n")
	return b.String()
}

// resources writes the shipped no-reload pair over every key: the
// upstreams with `nginx -t` of the whole config (a Lua upstream does not
// load without the module, so a fragment check cannot run) and
// nginx-reload; the peers with push.
func (pw *pushWorld) resources() error {
	n := pw.ngx
	reload := reloadCmd(n, pw.opt.bin, false)
	files := map[string]string{
		"upstreams.toml": fmt.Sprintf(`[template]
src = "upstreams-lua.tmpl"
dest = %q
keys = ["/"]
mode = "0644"
check_cmd = %q
reload_cmd = %q
`, filepath.Join(n.Prefix, "upstreams.conf"), n.CommandLine("-t", "-q"), reload),
		"peers.toml": fmt.Sprintf(`[template]
src = "peers.tmpl"
dest = %q
keys = ["/"]
mode = "0644"
push = %q
`, pw.peers, pw.push.URL),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(pw.confdir, "conf.d", name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// nginxReloads counts the reloads nginx itself logged (a SIGHUP, whoever
// sent it).
func (pw *pushWorld) nginxReloads() (float64, error) {
	b, err := os.ReadFile(filepath.Join(pw.ngx.Prefix, "error.log"))
	if err != nil {
		return 0, err
	}
	return float64(strings.Count(string(b), "reconfiguring")), nil
}

// prober asks this nginx which backend serves svc (a fresh connection per
// request, as the reload path's prober).
func (pw *pushWorld) prober(svc string) *prober {
	return &prober{
		c:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		url: pw.ngx.URL("/" + svc + "/"),
	}
}
