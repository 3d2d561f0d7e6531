package rolling_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/haproxytest"
	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/nginxreload"
	"github.com/rollcall/rollcall/registry"
)

const (
	app = "rolling"
	env = "test"
	ttl = 2 * time.Second // etcd's floor: the fastest crash detection
)

// gateway is one etcd, one nginx (or HAProxy) and one renderer process
// rendering the shipped upstream template for app_env into it.
type gateway struct {
	cluster   *etcdtest.Cluster // with cfg.members > 1; etcd is nil then
	endpoints string            // etcd's, or every member's, comma-separated

	etcd     *etcdtest.Server
	cli      *clientv3.Client
	nginx    *nginxtest.Server
	haproxy  *haproxytest.Server // instead of nginx when cfg.haproxy
	renderer *proc.Proc
	confdir  string
	known    map[string]bool // instance keys seen so far
	cfg      gatewayConfig
	lua      *nginxtest.Lua // with cfg.lua: the shipped Lua setup in nginx
}

// gatewayConfig says what the renderer renders and nginx serves.
type gatewayConfig struct {
	// members > 1 runs an etcd cluster (etcdtest.StartCluster) instead of
	// one server; renderer and registrars get every member's endpoint.
	members int
	// certs makes etcd require client certificates (etcdtest.StartTLS).
	certs *etcdtest.Certs
	// beforeRenderer runs once etcd is up, before nginx and the renderer.
	beforeRenderer func(g *gateway)
	// extra flags and environment of the renderer and the registrars.
	rendererArgs, rendererEnv, registrarArgs, registrarEnv []string
	// ttl is the registrars' --ttl; 0 = ttl, etcd's floor.
	ttl time.Duration

	// server is spliced into nginx's main server block; @PREFIX@ stands
	// for the nginx prefix.
	server string
	// resources returns the renderer's conf.d files (name -> content) for
	// an nginx prefix and its check and reload commands. Rendered files go
	// to <prefix>/rendered-http-*.conf (included in http { }) or
	// <prefix>/rendered-server-*.conf (for server to include).
	resources func(t *testing.T, prefix, check, reload string) map[string]string
	// templates are written to the confdir's templates/ (name -> content).
	templates map[string]string
	// plainReload makes reload `nginx -s reload`, as a confd setup has it,
	// instead of nginx-reload: the renderer confirms it (--nginx-pid).
	plainReload bool
	// prefix is the renderer's --prefix; regPrefix the registrars'.
	prefix, regPrefix string
	// lua runs nginx with the shipped Lua setup (lua/) and adds the shipped
	// peers resource pushing to it: instance changes without reloads.
	lua bool
	// haproxy runs HAProxy (haproxytest, retries 0, no redispatch) with
	// the shipped haproxy/ confdir instead of nginx; resources and
	// templates are then unused, reload is haproxy-reload, or with
	// plainReload `systemctl reload haproxy` (a stand-in that signals the
	// master as Debian's unit does), confirmed by the renderer.
	haproxy bool
	// haproxyRuntime (with haproxy) uses the shipped runtime API setup
	// (haproxy/runtime): instance changes through HAProxy's runtime API,
	// reloads only for new apps or slots run out.
	haproxyRuntime bool
	// path is what the load requests: "/" when empty.
	path string
}

// startGateway starts etcd, nginx and the renderer, and waits until the
// renderer has acknowledged its first apply.
func startGateway(t *testing.T, c gatewayConfig) *gateway {
	t.Helper()
	g := &gateway{confdir: t.TempDir(), known: map[string]bool{}, cfg: c}
	if c.members > 1 {
		g.cluster = etcdtest.StartCluster(t, c.members)
		g.cli, g.endpoints = g.cluster.Client(t), strings.Join(g.cluster.Endpoints(), ",")
	} else {
		if c.certs != nil {
			g.etcd = etcdtest.StartTLS(t, *c.certs)
		} else {
			g.etcd = etcdtest.Start(t)
		}
		g.cli, g.endpoints = g.etcd.Client(t), g.etcd.Endpoint
	}
	if c.beforeRenderer != nil {
		c.beforeRenderer(g)
	}
	var extra []string
	if c.haproxy {
		extra = g.startHAProxy(t)
	} else {
		extra = g.startNginx(t)
	}
	metrics := proctest.FreePort(t)
	g.renderer = proctest.Start(t, "renderer", c.rendererEnv, 15*time.Second, append([]string{bins.Path("renderer"),
		"--confdir", g.confdir,
		"--endpoints", g.endpoints,
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--id", "gw1",
		"--log-level", "debug", "--prefix", c.prefix}, append(extra, c.rendererArgs...)...)...)
	waitfor.Cond(t, 20*time.Second, "renderer acknowledges its first apply", func() error {
		if !g.renderer.Running() {
			return fmt.Errorf("renderer exited: %v", g.renderer.State())
		}
		_, err := g.ack(t)
		return err
	})
	return g
}

// startNginx starts nginx and writes the confdir for it; it returns the
// renderer's extra flags.
func (g *gateway) startNginx(t *testing.T) []string {
	c := g.cfg
	g.nginx = nginxtest.New(t)
	// A glob include may match nothing, so nginx starts before the first render.
	nc := nginxtest.Config{
		HTTP:   fmt.Sprintf("    include %s/rendered-http-*.conf;\n", g.nginx.Prefix),
		Server: strings.ReplaceAll(c.server, "@PREFIX@", g.nginx.Prefix),
	}
	if c.lua {
		l := g.nginx.Lua(t, "")
		g.lua = &l
		nc.Main, nc.HTTP = l.Main, l.HTTP+nc.HTTP
	}
	g.nginx.Start(t, nc)

	if err := os.CopyFS(filepath.Join(g.confdir, "templates"), os.DirFS(filepath.Join(repoRoot, "templates"))); err != nil {
		t.Fatal(err)
	}
	for name, text := range c.templates {
		writeFile(t, filepath.Join(g.confdir, "templates", name), text)
	}
	check := g.nginx.CommandLine("-t", "-q")
	reload := g.nginx.CommandLine("-s", "reload")
	var extra []string
	if c.plainReload {
		extra = []string{"--nginx-pid", filepath.Join(g.nginx.Prefix, "nginx.pid"), "--nginx-error-log", filepath.Join(g.nginx.Prefix, "error.log")}
	} else if _, err := os.Stat(bins.Path("nginx-reload")); err == nil {
		reload = fmt.Sprintf("%s --nginx %s --pid %s --timeout 10s -- %s", bins.Path("nginx-reload"),
			g.nginx.Bin, filepath.Join(g.nginx.Prefix, "nginx.pid"), strings.Join(g.nginx.Args(), " "))
	}
	for name, r := range c.resources(t, g.nginx.Prefix, check, reload) {
		writeFile(t, filepath.Join(g.confdir, "conf.d", name), r)
	}
	if g.lua != nil {
		writeFile(t, filepath.Join(g.confdir, "conf.d", "peers.toml"), peersResource(t, g.lua))
	}
	return extra
}

// startHAProxy starts HAProxy on a placeholder and writes the shipped
// haproxy/ confdir pointed at it; it returns the renderer's extra flags.
func (g *gateway) startHAProxy(t *testing.T) []string {
	g.haproxy = haproxytest.New(t, haproxytest.Config{NoRetries: true})
	writeFile(t, filepath.Join(g.haproxy.Rendered, "rollcall.cfg"), "# placeholder\n")
	g.haproxy.Start(t)
	shipped := filepath.Join(repoRoot, "haproxy")
	if g.cfg.haproxyRuntime {
		shipped = haproxytest.RuntimeConfdir(t)
	}
	if err := os.CopyFS(g.confdir, os.DirFS(shipped)); err != nil {
		t.Fatal(err)
	}
	reload := fmt.Sprintf("%s --master-socket %s --timeout 10s", bins.Path("haproxy-reload"), g.haproxy.MasterSocket)
	var extra []string
	if g.cfg.plainReload {
		// What `systemctl reload haproxy` does with Debian's unit
		// (ExecReload=/bin/kill -USR2 $MAINPID), under the name the
		// renderer's rule recognises.
		systemctl := filepath.Join(g.confdir, "bin", "systemctl")
		writeFile(t, systemctl, fmt.Sprintf("#!/bin/sh\n[ \"$*\" = \"reload haproxy\" ] || exit 2\nexec kill -USR2 \"$(cat %s)\"\n", g.haproxy.PIDFile))
		if err := os.Chmod(systemctl, 0o755); err != nil {
			t.Fatal(err)
		}
		reload = systemctl + " reload haproxy"
		extra = []string{"--haproxy-master-socket", g.haproxy.MasterSocket}
	}
	res := g.haproxy.Resource(t, reload)
	if g.cfg.haproxyRuntime {
		res = g.haproxy.RuntimeResource(t, g.haproxy.AdminSocket, reload)
	}
	writeFile(t, filepath.Join(g.confdir, "conf.d", "haproxy.toml"), res)
	return extra
}

// url is the gateway's URL the load requests.
func (g *gateway) url() string {
	path := g.cfg.path
	if path == "" {
		path = "/"
	}
	if g.haproxy != nil {
		return g.haproxy.URL(path)
	}
	return g.nginx.URL(path)
}

// upstreamResource renders the shipped per-app upstream template for
// app_env into nginx's http { }.
func upstreamResource(_ *testing.T, prefix, check, reload string) map[string]string {
	return map[string]string{"upstream.toml": fmt.Sprintf(`[template]
src = "upstream.tmpl"
dest = "%s/rendered-http-upstream.conf"
prefix = "/%s"
keys = ["/"]
mode = "0644"
check_cmd = %q
reload_cmd = %q
`, prefix, app+"_"+env, check, reload)}
}

// getvsTemplate is the classic confd upstream template: raw values through
// getvs, no typed functions.
var getvsTemplate = getvsAt("/" + app + "_" + env)

// getvsAt is getvsTemplate reading the instances in store dir dir.
func getvsAt(dir string) string {
	return `upstream ` + app + "_" + env + ` {
{{- range getvs "` + path.Join(dir, "*") + `"}}
    server {{.}};
{{- else}}
    server 127.0.0.1:1 down;
{{- end}}
}
`
}

// confdResource is a resource as a confd user has it: prefix "/", the
// service dir in keys, the getvs template, and whatever reload it is given.
func confdResource(t *testing.T, prefix, check, reload string) map[string]string {
	return getvsResource("/", "/"+app+"_"+env)(t, prefix, check, reload)
}

// getvsResource is a getvs.tmpl resource with the given prefix and key.
func getvsResource(resPrefix, key string) func(*testing.T, string, string, string) map[string]string {
	return func(_ *testing.T, prefix, check, reload string) map[string]string {
		return map[string]string{"upstream.toml": fmt.Sprintf(`[template]
src = "getvs.tmpl"
dest = "%s/rendered-http-upstream.conf"
prefix = %q
keys = [%q]
check_cmd = %q
reload_cmd = %q
`, prefix, resPrefix, key, check, reload)}
	}
}

// shippedResources are the shipped conf.d/upstreams.toml and proxy.toml
// as an operator installs them, their /etc/nginx paths and nginx commands
// pointed at the test's nginx.
func shippedResources(t *testing.T, prefix, check, reload string) map[string]string {
	r := shippedPaths(prefix, check, reload)
	out := map[string]string{}
	for _, name := range []string{"upstreams.toml", "proxy.toml"} {
		out[name] = shippedFile(t, name, r)
	}
	return out
}

// shippedPaths points the shipped resources' /etc/nginx paths and nginx
// commands at the test's nginx.
func shippedPaths(prefix, check, reload string) *strings.Replacer {
	return strings.NewReplacer(
		"/etc/nginx/conf.d/rollcall-upstreams.conf", prefix+"/rendered-http-upstreams.conf",
		"/etc/nginx/snippets/rollcall-proxy.conf", prefix+"/rendered-server-proxy.conf",
		"/usr/sbin/nginx -t -q", check,
		"/usr/local/bin/nginx-reload --signal --pid /run/nginx.pid --error-log /var/log/nginx/error.log", reload)
}

// shippedFile reads a shipped conf.d file with its paths replaced by r.
func shippedFile(t *testing.T, name string, r *strings.Replacer) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "conf.d", name))
	if err != nil {
		t.Fatal(err)
	}
	return r.Replace(string(b))
}

// luaResources are the shipped upstreams-lua.toml.example (every app's
// upstream fed by the Lua balancer) and proxy.toml, pointed at the test's
// nginx; gatewayConfig.lua adds the peers resource.
func luaResources(t *testing.T, prefix, check, reload string) map[string]string {
	r := shippedPaths(prefix, check, reload)
	return map[string]string{
		"upstreams.toml": shippedFile(t, "upstreams-lua.toml.example", r),
		"proxy.toml":     shippedFile(t, "proxy.toml", r),
	}
}

// peersResource is the shipped peers.toml.example pushing to l.
func peersResource(t *testing.T, l *nginxtest.Lua) string {
	return shippedFile(t, "peers.toml.example", strings.NewReplacer(
		"/etc/nginx/rollcall-peers.txt", l.PeersFile,
		"http://127.0.0.1:8089/rollcall/peers", l.URL))
}

// reloads counts the gateway's reloads: those nginx logged (SIGHUP
// received, whoever sent it), or HAProxy's master's reload count.
func (g *gateway) reloads(t *testing.T) int {
	t.Helper()
	if g.haproxy != nil {
		var n int
		// The master's socket refuses connections while it re-executes.
		waitfor.Cond(t, 10*time.Second, "haproxy show proc", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			p, err := nginxreload.ShowProc(ctx, g.haproxy.MasterSocket)
			n = p.Reloads
			return err
		})
		return n
	}
	b, err := os.ReadFile(filepath.Join(g.nginx.Prefix, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "reconfiguring")
}

// ack reads the renderer's acknowledgement.
func (g *gateway) ack(t *testing.T) (registry.Ack, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	key := registry.RendererKey(g.cfg.prefix, "gw1")
	resp, err := g.cli.Get(ctx, key)
	if err != nil {
		return registry.Ack{}, err
	}
	if len(resp.Kvs) == 0 {
		return registry.Ack{}, fmt.Errorf("no %s", key)
	}
	var a registry.Ack
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
		return registry.Ack{}, fmt.Errorf("ack %q: %w", resp.Kvs[0].Value, err)
	}
	return a, nil
}

// instances lists the registered instance keys of app_env.
func (g *gateway) instances(t *testing.T) ([]string, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	resp, err := g.cli.Get(ctx, registry.ServiceDir(g.cfg.regPrefix, app, env), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys, nil
}

// backend is one `registrar -- demo-backend` process pair.
type backend struct {
	addr   string // ip:port, as registered
	key    string
	reg    *proc.Proc
	report string // demo-backend's JSON report, written when it exits
}

// startBackend starts a registrar wrapping demo-backend and waits for its key.
func (g *gateway) startBackend(t *testing.T, drain time.Duration) *backend {
	t.Helper()
	b := &backend{report: filepath.Join(t.TempDir(), "report.json")}
	name := fmt.Sprintf("registrar-%d", len(g.known)+1)
	args := append([]string{bins.Path("registrar"), "--app", app, "--env", env}, g.cfg.registrarArgs...)
	b.reg = proctest.Start(t, name, append([]string{"DEMO_BACKEND_REPORT=" + b.report}, g.cfg.registrarEnv...), 20*time.Second, append(args,
		"--endpoints", g.endpoints,
		"--prefix", g.cfg.regPrefix,
		"--ip", "127.0.0.1",
		"--ttl", cmp.Or(g.cfg.ttl, ttl).String(),
		"--drain-timeout", drain.String(),
		"--stop-timeout", "5s",
		"--", bins.Path("demo-backend"))...)
	waitfor.Cond(t, 15*time.Second, name+" registers", func() error {
		if !b.reg.Running() {
			return fmt.Errorf("registrar exited: %v", b.reg.State())
		}
		keys, err := g.instances(t)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if !g.known[k] {
				b.key = k
				return nil
			}
		}
		return fmt.Errorf("no new key among %v", keys)
	})
	g.known[b.key] = true
	v, err := g.cli.Get(t.Context(), b.key)
	if err != nil || len(v.Kvs) == 0 {
		t.Fatalf("get %s: %v", b.key, err)
	}
	b.addr = string(v.Kvs[0].Value)
	return b
}

// stop sends SIGTERM to the registrar and returns when it exited.
func (b *backend) stop(t *testing.T) time.Time {
	t.Helper()
	proctest.Signal(t, b.reg, syscall.SIGTERM)
	return proctest.Wait(t, b.reg, 30*time.Second)
}

// backendReport is demo-backend's --report file.
type backendReport struct {
	Addr        string    `json:"addr"`
	Served      int64     `json:"served"`
	Last        time.Time `json:"last"`
	SignalAt    time.Time `json:"signal_at"`
	AfterSignal int64     `json:"after_signal"`
}

func (b *backend) readReport(t *testing.T) backendReport {
	t.Helper()
	var r backendReport
	data, err := os.ReadFile(b.report)
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	if err != nil {
		t.Fatalf("report of %s: %v", b.addr, err)
	}
	return r
}

// waitServed waits until GETs through nginx reach exactly want (by address).
func waitServed(t *testing.T, url string, want []string, timeout time.Duration) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	client := &http.Client{Timeout: 2 * time.Second}
	waitfor.Cond(t, timeout, fmt.Sprintf("nginx serves exactly %v", want), func() error {
		seen := map[string]bool{}
		for range 4 * len(want) {
			addr, _, err := get(t.Context(), client, url)
			if err != nil {
				return err
			}
			seen[addr] = true
		}
		got := slices.Sorted(maps.Keys(seen))
		if !slices.Equal(got, want) {
			return fmt.Errorf("got %v", got)
		}
		return nil
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
