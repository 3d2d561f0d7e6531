// Package integration_test runs the renderer binary against a real etcd and a
// real nginx and checks, with HTTP requests through nginx, that traffic
// reaches exactly the registered backends.
//
// Each test builds a rig: an embedded etcd (internal/etcdtest), an nginx with
// its own prefix (internal/nginxtest) that includes the rendered files, a
// confdir holding the SHIPPED templates and resources rewritten to point at
// that nginx, and the renderer process (built once in TestMain). reload_cmd
// is a wrapper that logs each call and runs nginx-reload, so a reload counts
// only when nginx really applied the new config.
package integration_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// bins holds the binaries TestMain built, or why it could not.
var bins struct {
	renderer, nginxReload string
	err                   error
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		dir, err := os.MkdirTemp("", "rollcall-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if !testing.Short() {
			bins.err = build(dir)
		}
		bins.renderer = filepath.Join(dir, "renderer")
		bins.nginxReload = filepath.Join(dir, "nginx-reload")
		return m.Run()
	}()
	os.Exit(code)
}

// build compiles the two programs the tests run (without -race: it applies
// to the test process).
func build(dir string) error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-o", dir+string(filepath.Separator), "./cmd/renderer", "./cmd/nginx-reload")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/renderer ./cmd/nginx-reload: %v\n%s", err, out)
	}
	return nil
}

// opTimeout bounds one etcd or HTTP operation of a test.
const opTimeout = 5 * time.Second

// rig is one test's world: etcd, nginx, a confdir and (once started) the
// renderer.
type rig struct {
	t         *testing.T
	etcd      *etcdtest.Server
	kv        *clientv3.Client
	nginx     *nginxtest.Server
	confdir   string
	out       string // rendered files (inside the nginx prefix)
	reloadLog string // one line per reload_cmd call: start end exit-status
	checkCmd  string
	reloadCmd string
	metrics   string // host:port of --metrics-addr
	renderer  *proc
	http      *http.Client
}

// newRig starts etcd and prepares nginx (not started), the confdir with the
// shipped templates, and the reload wrapper.
func newRig(t *testing.T) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("runs etcd, nginx and the renderer")
	}
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	r := &rig{t: t, nginx: nginxtest.New(t), confdir: t.TempDir()}
	r.etcd = etcdtest.Start(t)
	r.kv = r.etcd.Client(t)
	r.out = filepath.Join(r.nginx.Prefix, "rendered")
	mkdir(t, r.out, filepath.Join(r.confdir, "conf.d"), filepath.Join(r.confdir, "templates"))
	for _, name := range []string{"upstream.tmpl", "upstreams.tmpl", "proxy.tmpl"} {
		copyFile(t, filepath.Join("..", "templates", name), filepath.Join(r.confdir, "templates", name))
	}
	r.checkCmd = r.nginx.CommandLine("-t", "-q")
	r.reloadLog = filepath.Join(r.confdir, "reloads.log")
	r.reloadCmd = filepath.Join(r.confdir, "reload.sh")
	script := fmt.Sprintf(`#!/bin/sh
start=$(date +%%s%%N)
%s --nginx %s --pid %s --error-log %s --timeout 10s -- %s
rc=$?
echo "$start $(date +%%s%%N) $rc" >> %s
exit $rc
`, bins.nginxReload, r.nginx.Bin, filepath.Join(r.nginx.Prefix, "nginx.pid"),
		filepath.Join(r.nginx.Prefix, "error.log"), strings.Join(r.nginx.Args(), " "), r.reloadLog)
	writeFile(t, r.reloadCmd, script, 0o755)
	port, err := embedetcd.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r.metrics = fmt.Sprintf("127.0.0.1:%d", port)
	r.http = &http.Client{Timeout: opTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(r.http.CloseIdleConnections)
	return r
}

// resource writes conf.d/<name>.toml from the shipped resource file
// ../conf.d/<shipped>, with dest in the rig's output dir, this nginx's check
// and the reload wrapper; prefix replaces the shipped prefix unless empty.
func (r *rig) resource(name, shipped, dest, prefix string) string {
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
	r.nginx.Start(r.t, r.shippedConf(more...))
	r.onetime()
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
	if code, _, stderr := run(r.t, 30*time.Second, bins.renderer, args...); code != 0 {
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
func (r *rig) startRenderer(extra ...string) *proc {
	r.t.Helper()
	args := append([]string{"--confdir", r.confdir, "--endpoints", r.etcd.Endpoint,
		"--metrics-addr", r.metrics, "--id", "it-" + strings.ReplaceAll(r.t.Name(), "/", "-"),
		"--log-level", "debug"}, extra...)
	r.renderer = start(r.t, bins.renderer, args...)
	waitfor.Cond(r.t, 10*time.Second, "renderer /healthz not 200", func() error {
		if err := r.renderer.exited(); err != nil {
			return err
		}
		_, err := r.get("/healthz")
		return err
	})
	return r.renderer
}

// waitReady waits until /readyz says every resource is applied.
func (r *rig) waitReady(timeout time.Duration) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, "renderer not ready", func() error {
		if err := r.renderer.exited(); err != nil {
			return err
		}
		_, err := r.get("/readyz")
		return err
	})
}

// get fetches a path from the renderer's metrics server, failing on non-200.
func (r *rig) get(path string) (string, error) {
	resp, err := r.http.Get("http://" + r.metrics + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return string(b), nil
}

// metric sums the samples of a metric whose labels include every given
// `name="value"` pair; a missing metric is 0.
func (r *rig) metric(name string, labels ...string) float64 {
	r.t.Helper()
	body, err := r.get("/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	return sumMetric(body, name, labels...)
}

func sumMetric(body, name string, labels ...string) float64 {
	var sum float64
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		sp := strings.LastIndexByte(rest, ' ')
		if slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(rest[:sp], l) }) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[sp+1:]), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// reloads returns the reload wrapper's lines: start and end (unix ns) and the
// exit status of each reload_cmd run.
func (r *rig) reloads() []reload {
	r.t.Helper()
	b, err := os.ReadFile(r.reloadLog)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var out []reload
	for line := range strings.Lines(string(b)) {
		var start, end int64
		var rl reload
		if _, err := fmt.Sscan(line, &start, &end, &rl.code); err != nil {
			r.t.Fatalf("reload log line %q: %v", line, err)
		}
		rl.start, rl.end = time.Unix(0, start), time.Unix(0, end)
		out = append(out, rl)
	}
	return out
}

// waitApplied waits until reload_cmd has finished at least n times in all
// and the renderer is ready (applied up to its store revision).
func (r *rig) waitApplied(timeout time.Duration, n int) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, fmt.Sprintf("%d reloads not done", n), func() error {
		if got := len(r.reloads()); got < n {
			return fmt.Errorf("%d reloads", got)
		}
		return nil
	})
	r.waitReady(timeout)
}

// cooldown is the renderer's default: changes within it after an apply are
// coalesced into the next apply.
const cooldown = time.Second

// waitIdle waits until no resource was applied for at least idle, by the
// renderer's last_apply_success_timestamp_seconds.
func (r *rig) waitIdle(timeout, idle time.Duration) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, "renderer not idle", func() error {
		body, err := r.get("/metrics")
		if err != nil {
			return err
		}
		var last float64
		for line := range strings.Lines(body) {
			if v, ok := strings.CutPrefix(line, "rollcall_renderer_last_apply_success_timestamp_seconds{"); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v[strings.LastIndexByte(v, ' ')+1:]), 64)
				if err != nil {
					return err
				}
				last = max(last, f)
			}
		}
		if since := time.Since(time.Unix(0, int64(last*1e9))); since < idle {
			return fmt.Errorf("last apply %v ago", since)
		}
		return nil
	})
}

type reload struct {
	start, end time.Time
	code       int
}

func (r *rig) put(key, value string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := r.kv.Put(ctx, key, value); err != nil {
		r.t.Fatalf("put %s: %v", key, err)
	}
}

func (r *rig) del(key string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := r.kv.Delete(ctx, key); err != nil {
		r.t.Fatalf("delete %s: %v", key, err)
	}
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

// served sends n requests through nginx to /<svc>/ and counts the answers by
// backend name; any non-200 answer is an error.
func (r *rig) served(svc string, n int) (map[string]int, error) {
	got := map[string]int{}
	for range n {
		resp, err := r.http.Get(r.nginx.URL("/" + svc + "/"))
		if err != nil {
			return got, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return got, err
		}
		if resp.StatusCode != http.StatusOK {
			return got, fmt.Errorf("GET /%s/: %s after %v", svc, resp.Status, got)
		}
		got[string(b)]++
	}
	return got, nil
}

// waitServed waits until requests through nginx to /<svc>/ reach exactly
// the named backends (each at least once, nothing else).
func (r *rig) waitServed(timeout time.Duration, svc string, want ...string) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, fmt.Sprintf("/%s/ not served by exactly %v", svc, want), func() error {
		return r.servedBy(svc, want...)
	})
}

// servedBy checks once that 10 requests per backend reach exactly want.
func (r *rig) servedBy(svc string, want ...string) error {
	if r.renderer != nil {
		if err := r.renderer.exited(); err != nil {
			return err
		}
	}
	got, err := r.served(svc, 10*len(want))
	if err != nil {
		return err
	}
	names := make([]string, 0, len(got))
	for name := range got {
		names = append(names, name)
	}
	slices.Sort(names)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(names, want) {
		return fmt.Errorf("got %v", got)
	}
	return nil
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

// proc is a program the test runs, with its output kept for assertions.
type proc struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error // Wait's result, set before done closes
}

// start runs bin; cleanup sends SIGTERM, waits up to 10s, then kills its
// process group, and reports an unclean exit or, on failure, its log.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		err := p.stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), p.stderr.String())
		}
		if err != nil {
			t.Errorf("%s on SIGTERM: %v", filepath.Base(bin), err)
		}
	})
	return p
}

// stop sends SIGTERM and waits for the exit, killing after 10s.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("no exit within 10s, killed: %v", p.err)
	}
}

// exited returns an error once the process has exited.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", filepath.Base(p.cmd.Path), p.err)
	default:
		return nil
	}
}

// run runs bin to completion under a deadline and returns its exit code,
// stdout and stderr.
func run(t *testing.T, timeout time.Duration, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish within %v:\n%s", filepath.Base(bin), args, timeout, stderr.String())
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
