package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/haproxytest"
	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// opTimeout bounds one etcd or HTTP operation of a test.
const opTimeout = 5 * time.Second

// rig is one test's world: etcd, nginx, a confdir and (once started) the
// renderer.
type rig struct {
	t         *testing.T
	etcd      *etcdtest.Server
	kv        *clientv3.Client
	nginx     *nginxtest.Server
	haproxy   *haproxytest.Server // instead of nginx (newHAProxyRig)
	confdir   string
	out       string // rendered files (inside the nginx prefix)
	reloadLog string // one line per reload_cmd call: start end exit-status
	checkCmd  string
	reloadCmd string
	metrics   string // host:port of --metrics-addr
	id        string // the renderer's --id
	renderer  *proc.Proc
	http      *http.Client
}

// newRig starts etcd and prepares nginx (not started), the confdir with the
// shipped templates, and the reload wrapper.
func newRig(t *testing.T) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("runs etcd, nginx and the renderer")
	}
	bins.Need(t)
	r := &rig{t: t, nginx: nginxtest.New(t), confdir: t.TempDir()}
	r.etcd = etcdtest.Start(t)
	r.kv = r.etcd.Client(t)
	r.out = filepath.Join(r.nginx.Prefix, "rendered")
	mkdir(t, r.out, filepath.Join(r.confdir, "conf.d"), filepath.Join(r.confdir, "templates"))
	shipped, err := filepath.Glob(filepath.Join("..", "templates", "*.tmpl"))
	if err != nil || len(shipped) == 0 {
		t.Fatalf("no shipped templates in ../templates: %v", err)
	}
	for _, path := range shipped {
		copyFile(t, path, filepath.Join(r.confdir, "templates", filepath.Base(path)))
	}
	r.checkCmd = r.nginx.CommandLine("-t", "-q")
	r.writeReloadWrapper(fmt.Sprintf("%s --nginx %s --pid %s --error-log %s --timeout 10s -- %s",
		bins.Path("nginx-reload"), r.nginx.Bin, filepath.Join(r.nginx.Prefix, "nginx.pid"),
		filepath.Join(r.nginx.Prefix, "error.log"), strings.Join(r.nginx.Args(), " ")))
	port := proctest.FreePort(t)
	r.metrics = fmt.Sprintf("127.0.0.1:%d", port)
	r.id = "it-" + strings.ReplaceAll(t.Name(), "/", "-")
	r.http = &http.Client{Timeout: opTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(r.http.CloseIdleConnections)
	return r
}

// writeReloadWrapper makes r.reloadCmd a script that runs reload and logs
// each call to r.reloadLog: start end exit-status.
func (r *rig) writeReloadWrapper(reload string) {
	r.t.Helper()
	r.reloadLog = filepath.Join(r.confdir, "reloads.log")
	r.reloadCmd = filepath.Join(r.confdir, "reload.sh")
	script := fmt.Sprintf(`#!/bin/sh
start=$(date +%%s%%N)
%s
rc=$?
echo "$start $(date +%%s%%N) $rc" >> %s
exit $rc
`, reload, r.reloadLog)
	writeFile(r.t, r.reloadCmd, script, 0o755)
}

// url is the gateway's URL for path: nginx's, or HAProxy's in a HAProxy rig.
func (r *rig) url(path string) string {
	if r.haproxy != nil {
		return r.haproxy.URL(path)
	}
	return r.nginx.URL(path)
}

// resource writes conf.d/<name>.toml from the shipped resource file
// ../conf.d/<shipped>, with dest in the rig's output dir, this nginx's check
// and the reload wrapper; prefix replaces the shipped prefix unless empty.
func (r *rig) resource(name, shipped, dest, prefix string) string {
	r.t.Helper()
	return r.resourceWith(name, shipped, dest, prefix, nil)
}

// resourceWith is resource with more fields set (e.g. push).
func (r *rig) resourceWith(name, shipped, dest, prefix string, set map[string]any) string {
	r.t.Helper()
	var res struct {
		Template map[string]any `toml:"template"`
	}
	if _, err := toml.DecodeFile(filepath.Join("..", "conf.d", shipped), &res); err != nil {
		r.t.Fatal(err)
	}
	path := filepath.Join(r.out, dest)
	res.Template["dest"] = path
	res.Template["check_cmd"] = r.checkCmd
	res.Template["reload_cmd"] = r.reloadCmd
	if prefix != "" {
		res.Template["prefix"] = prefix
	}
	for k, v := range set {
		res.Template[k] = v
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(res); err != nil {
		r.t.Fatal(err)
	}
	writeFile(r.t, filepath.Join(r.confdir, "conf.d", name+".toml"), b.String(), 0o644)
	return path
}

// placeholder is what an empty rendered file holds before the first render.
const placeholder = "# placeholder\n"

// startShipped sets up the shipped pair upstreams.toml + proxy.toml: one file
// with every app's upstream (in http) and one with a location per app (in
// the main server), starts nginx with placeholders for both (and more files
// included in http) and runs --onetime.
func (r *rig) startShipped(more ...string) {
	r.t.Helper()
	up := r.resource("upstreams", "upstreams.toml", "upstreams.conf", "")
	px := r.resource("proxy", "proxy.toml", "proxy.conf", "")
	writeFile(r.t, up, placeholder, 0o644)
	writeFile(r.t, px, placeholder, 0o644)
	r.startNginx(r.shippedConf(more...))
	r.onetime()
}

// startNginx starts nginx with c; nginxtest waits until this nginx, not
// another that got the same free port, answers on it.
func (r *rig) startNginx(c nginxtest.Config) {
	r.t.Helper()
	r.nginx.Start(r.t, c)
}

// onlyFiles fails unless the rendered files' directory holds exactly names
// (sorted): no staged leftovers. The renderer's own bookkeeping next to a
// dest (.<dest>.rollcall.pending while a resource is not applied yet,
// .<dest>.rollcall.instances) is no leftover.
func (r *rig) onlyFiles(names ...string) {
	r.t.Helper()
	entries, err := os.ReadDir(r.out)
	if err != nil {
		r.t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if n := e.Name(); !strings.HasSuffix(n, ".rollcall.pending") && !strings.HasSuffix(n, ".rollcall.instances") {
			got = append(got, n)
		}
	}
	if !slices.Equal(got, names) {
		r.t.Fatalf("files in %s: %v; want %v (no staged leftovers)", r.out, got, names)
	}
}

// tail returns the end of a file, or why it cannot.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b[max(0, len(b)-2000):])
}

// shippedConf is the nginx config for startShipped, including more files
// in http.
func (r *rig) shippedConf(more ...string) nginxtest.Config {
	c := nginxtest.Config{
		HTTP:   "include " + filepath.Join(r.out, "upstreams.conf") + ";\n",
		Server: "include " + filepath.Join(r.out, "proxy.conf") + ";\n",
	}
	for _, f := range more {
		c.HTTP += "include " + f + ";\n"
	}
	return c
}

// onetime runs `renderer --onetime` as an operator would before starting the
// daemon, so the daemon starts with its files up to date.
func (r *rig) onetime(extra ...string) {
	r.t.Helper()
	args := append([]string{"--onetime", "--confdir", r.confdir, "--endpoints", r.etcd.Endpoint}, extra...)
	if code, _, stderr := proctest.Run(r.t, 30*time.Second, bins.Path("renderer"), args...); code != 0 {
		r.t.Fatalf("renderer --onetime exited %d:\n%s", code, stderr)
	}
}

// perApp returns the nginx config for per-app upstream files <svc>.conf
// (shipped upstream.tmpl) and a location /<svc>/ proxying to each, writing a
// zero-instance placeholder for each file so nginx starts.
func (r *rig) perApp(services ...string) nginxtest.Config {
	r.t.Helper()
	var c nginxtest.Config
	for _, svc := range services {
		dest := r.resource(svc, "upstream.toml.example", svc+".conf", "/"+svc)
		writeFile(r.t, dest, fmt.Sprintf("upstream %s { server 127.0.0.1:1 down; }\n", svc), 0o644)
		c.HTTP += "include " + dest + ";\n"
		c.Server += fmt.Sprintf("location /%s/ { proxy_pass http://%[1]s/; proxy_next_upstream off; }\n", svc)
	}
	return c
}

// startRenderer runs the renderer watching the rig's etcd with extra flags
// and waits until it answers /healthz.
func (r *rig) startRenderer(extra ...string) *proc.Proc {
	r.t.Helper()
	args := append([]string{"--confdir", r.confdir, "--endpoints", r.etcd.Endpoint,
		"--metrics-addr", r.metrics, "--id", r.id,
		"--log-level", "debug"}, extra...)
	r.renderer = start(r.t, bins.Path("renderer"), args...)
	waitfor.Cond(r.t, 10*time.Second, "renderer /healthz not 200", func() error {
		if err := r.renderer.Exited(); err != nil {
			return err
		}
		_, err := r.get("/healthz")
		return err
	})
	return r.renderer
}

func (r *rig) put(key, value string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := r.kv.Put(ctx, key, value); err != nil {
		r.t.Fatalf("put %s: %v", key, err)
	}
}

// del deletes key and returns the revision of the delete.
func (r *rig) del(key string) int64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := r.kv.Delete(ctx, key)
	if err != nil {
		r.t.Fatalf("delete %s: %v", key, err)
	}
	return resp.Header.Revision
}

// register writes backend b's instance key under service svc ("<app>_<env>")
// and returns the key.
func (r *rig) register(svc string, b *backend) string {
	r.t.Helper()
	key := instanceKey(r.t, svc, b.addr)
	r.put(key, registry.Value(b.addr))
	return key
}

func instanceKey(t *testing.T, svc string, a netip.AddrPort) string {
	t.Helper()
	app, env, ok := strings.Cut(svc, "_")
	if !ok {
		t.Fatalf("service %q: want <app>_<env>", svc)
	}
	return registry.Key("", app, env, a)
}

// read returns a file's content.
func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	writeFile(t, to, read(t, from), 0o644)
}

func mkdir(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// injectPort is a free port for a test to check that nothing injected ever
// listens on it: reserved for t, so no other test binds it in the meantime
// and a listener there can only be the injected one.
func injectPort(t *testing.T) int { return proctest.FreePort(t) }
