// Command demo runs rollcall's whole loop on one machine (`make demo`): a
// renderer with --embed-etcd, three demo backends each wrapped by registrar,
// the shipped upstream template rendered, and — when nginx is installed — a
// private nginx showing requests spread over the backends; then one backend
// is stopped under load and leaves the upstream without a failed request.
// Everything runs in a temp dir on 127.0.0.1 and is removed at the end, also
// on Ctrl-C or failure. Exit status 0 means the demo showed what it claims.
// With nginx's Lua module installed (libnginx-mod-http-lua) the backends'
// comings and goings are pushed to nginx instead (lua/): no reload at all.
//
//	demo [--bin bin] [--repo .] [--timeout 55s] [--no-nginx] [--no-lua] [--keep]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
	"github.com/rollcall/rollcall/internal/proc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, errInterrupted) {
		fmt.Fprintln(os.Stderr, "demo interrupted; every process stopped and the work dir removed")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo FAILED: %v\n", err)
		os.Exit(1)
	}
}

// config is the demo's command line.
type config struct {
	bin     string // built binaries: registrar, renderer, demo-backend, nginx-reload
	repo    string // the checkout: templates/ is read from here
	timeout time.Duration
	keep    bool // keep the work dir (logs, rendered files) for a look after
	noNginx bool // show the rendered file only, as on a machine without nginx
	noLua   bool // the reload path even when nginx has the Lua module
}

func parse(args []string) (config, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var c config
	fs.StringVar(&c.bin, "bin", "bin", "directory holding the built binaries (make build)")
	fs.StringVar(&c.repo, "repo", ".", "the rollcall checkout, for the shipped templates/")
	fs.DurationVar(&c.timeout, "timeout", 55*time.Second, "give up after this long")
	fs.BoolVar(&c.noNginx, "no-nginx", false, "do not run nginx even when installed (show the rendered file only)")
	fs.BoolVar(&c.noLua, "no-lua", false, "render, check and reload even when nginx has the Lua module (no push)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work dir (process logs, rendered files) instead of removing it")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, name := range []string{"registrar", "renderer", "demo-backend"} {
		if _, err := os.Stat(filepath.Join(c.bin, name)); err != nil {
			return c, fmt.Errorf("%s missing in %s: run make build (or make demo)", name, c.bin)
		}
	}
	return c, nil
}

// demo is one run: its temp dir, its processes and its clock.
type demo struct {
	cfg   config
	out   io.Writer
	dir   string
	ps    *procs
	began time.Time
	nginx *nginx    // nil without nginx
	lua   *luaSetup // nil on the reload path

	metricsAddr string // the renderer's --metrics-addr
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "[%5.1fs] %s\n", time.Since(d.began).Seconds(), fmt.Sprintf(format, args...))
}

var errInterrupted = errors.New("interrupted")

func run(sigCtx context.Context, args []string, out io.Writer) (err error) {
	cfg, err := parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(sigCtx, cfg.timeout, fmt.Errorf("demo took longer than %v", cfg.timeout))
	defer cancel()
	dir, err := os.MkdirTemp("", "rollcall-demo-")
	if err != nil {
		return err
	}
	d := &demo{cfg: cfg, out: out, dir: dir, ps: &procs{dir: dir}, began: time.Now()}
	defer func() {
		d.ps.stopAll(10 * time.Second)
		if cfg.keep {
			d.say("stopped every process; kept %s", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
		d.say("stopped every process, removed %s", dir)
	}()
	if err := d.steps(ctx); err != nil {
		if sigCtx.Err() != nil {
			return errInterrupted
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		return err
	}
	return nil
}

const (
	appName = "demo"
	envName = "local"
	service = appName + "_" + envName
)

func (d *demo) steps(ctx context.Context) error {
	fmt.Fprintf(d.out, "rollcall demo — work dir %s\n", d.dir)
	etcdPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	metricsPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	endpoint := fmt.Sprintf("127.0.0.1:%d", etcdPort)
	d.metricsAddr = fmt.Sprintf("127.0.0.1:%d", metricsPort)

	// nginx first, when there is one: its glob include matches nothing until
	// the renderer writes the upstream.
	if bin, err := nginxconf.Lookup(); err == nil && !d.cfg.noNginx {
		n, err := startNginx(ctx, d, bin)
		if err != nil {
			return err
		}
		d.nginx = n
	}
	dest, err := d.writeConfdir()
	if err != nil {
		return err
	}

	renderer, err := d.startRenderer(ctx, endpoint, dest)
	if err != nil {
		return err
	}
	regs, err := d.startBackends(endpoint)
	if err != nil {
		return err
	}
	servers, err := d.untilServers(ctx, "three", 3, renderer, dest)
	if err != nil {
		return err
	}
	d.showFile("rendered upstream", dest)
	if d.lua != nil {
		d.showFile("rendered peers, pushed to nginx", d.lua.peers)
	}

	if d.nginx == nil {
		return d.withoutNginx(ctx, regs, dest, renderer)
	}
	return d.withNginx(ctx, regs, dest, renderer, servers)
}

// startRenderer starts the renderer with its embedded etcd on endpoint and
// waits for its first render to dest.
func (d *demo) startRenderer(ctx context.Context, endpoint, dest string) (*proc.Proc, error) {
	args := []string{filepath.Join(d.cfg.bin, "renderer"),
		"--confdir", filepath.Join(d.dir, "confdir"),
		"--embed-etcd", filepath.Join(d.dir, "etcd"),
		"--embed-listen", endpoint,
		"--metrics-addr", d.metricsAddr,
		"--id", "demo"}
	if d.nginx != nil { // a plain `nginx -s reload` (no nginx-reload built) is confirmed against this master
		args = append(args, "--nginx-pid", filepath.Join(d.nginx.Prefix, "nginx.pid"))
	}
	renderer, err := d.ps.start("renderer", nil, args...)
	if err != nil {
		return nil, err
	}
	d.say("renderer started: embedded etcd on %s, metrics on http://%s/metrics", endpoint, d.metricsAddr)
	return renderer, d.until(ctx, "the renderer writes the upstream", renderer, func() error {
		_, err := os.Stat(dest)
		return err
	})
}

// startBackends starts three demo backends, each through registrar.
func (d *demo) startBackends(endpoint string) ([]*proc.Proc, error) {
	var regs []*proc.Proc
	for i := 1; i <= 3; i++ {
		p, err := d.ps.start(fmt.Sprintf("registrar-%d", i), nil, filepath.Join(d.cfg.bin, "registrar"),
			"--app", appName, "--env", envName,
			"--endpoints", endpoint,
			"--ip", "127.0.0.1",
			"--ttl", "2s",
			"--drain-timeout", "5s",
			"--stop-timeout", "5s",
			"--", filepath.Join(d.cfg.bin, "demo-backend"))
		if err != nil {
			return nil, err
		}
		regs = append(regs, p)
	}
	d.say("started 3 demo backends: registrar --app %s --env %s --endpoints %s --ip 127.0.0.1 --ttl 2s --drain-timeout 5s -- demo-backend",
		appName, envName, endpoint)
	return regs, nil
}

// showSpread waits until 30 requests through nginx reach all three
// backends without a failure, and shows how they spread.
func (d *demo) showSpread(ctx context.Context, url string, renderer *proc.Proc) error {
	return d.until(ctx, "nginx serves all three", renderer, func() error {
		if err := d.nginx.settled(); err != nil {
			return err
		}
		tr := newTraffic()
		c := &http.Client{Timeout: 2 * time.Second}
		for range 30 {
			tr.get(ctx, c, url)
		}
		if tr.failed > 0 {
			return tr.firstErr
		}
		if len(tr.byAddr) != 3 {
			return fmt.Errorf("answers from %s", tr)
		}
		d.say("30 requests through nginx (%s): %s", url, tr)
		return nil
	})
}

// withNginx shows the spread through nginx, then stops backend 1 under load.
func (d *demo) withNginx(ctx context.Context, regs []*proc.Proc, dest string, renderer *proc.Proc, servers []string) error {
	url := d.nginx.URL("/")
	if err := d.showSpread(ctx, url, renderer); err != nil {
		return err
	}

	gone, err := backendAddr(regs[0], servers)
	if err != nil {
		return err
	}
	tr := newTraffic()
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { tr.run(lctx, 8, url); close(loadDone) }()
	defer func() { stopLoad(); <-loadDone }()
	if err := d.until(ctx, "the load starts", nil, func() error {
		if tr.total() < 50 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		return err
	}
	reloads0, err := d.nginx.reloads()
	if err != nil {
		return err
	}
	if err := d.stopBackend(ctx, regs[0], gone, dest); err != nil {
		return err
	}
	// Keep the load going a moment longer so a late route to the stopped
	// backend would show up as a failure.
	after := tr.total()
	if err := d.until(ctx, "more requests after the stop", nil, func() error {
		if tr.total() < after+200 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		return err
	}
	stopLoad()
	<-loadDone
	if err := d.judgeStop(tr, reloads0, servers, gone); err != nil {
		return err
	}
	d.showMetrics(ctx)
	fmt.Fprintf(d.out, "demo OK: 3 backends registered, 1 removed under load, 0 failed requests\n")
	return nil
}

// stopBackend sends SIGTERM to a backend's registrar (gone is its
// address), waits for it to exit, and shows what it logged and what the
// renderer wrote after.
func (d *demo) stopBackend(ctx context.Context, reg *proc.Proc, gone, dest string) error {
	d.say("8 clients keep sending requests; SIGTERM to backend 1's registrar (%s)", gone)
	t0 := time.Now()
	if err := reg.Terminate(); err != nil {
		return err
	}
	if err := reg.Wait(ctx); err != nil {
		return err
	}
	d.say("registrar 1 exited (%v) after %v; its log from the signal on:\n%s",
		reg.State(), time.Since(t0).Round(time.Millisecond), since(reg, "msg=stopping"))
	if d.lua != nil {
		d.showFile("rendered peers now, pushed to nginx", d.lua.peers)
	} else {
		d.showFile("rendered upstream now", dest)
	}
	return nil
}

// judgeStop is the demo's verdict on the stop: no request failed, the Lua
// path did not reload nginx, and every other backend kept serving.
func (d *demo) judgeStop(tr *traffic, reloads0 int, servers []string, gone string) error {
	reloads, err := d.nginx.reloads()
	if err != nil {
		return err
	}
	d.say("during the stop: %d requests, %d failed, %d nginx reloads — %s", tr.total()+tr.failed, tr.failed, reloads-reloads0, tr)
	if tr.failed > 0 {
		return fmt.Errorf("%d requests failed while backend 1 left (first: %v)", tr.failed, tr.firstErr)
	}
	if d.lua != nil && reloads > reloads0 {
		return fmt.Errorf("nginx reloaded %d times while backend 1 left; the Lua path should push without a reload", reloads-reloads0)
	}
	for _, s := range servers {
		if s != gone && tr.byAddr[s] == 0 {
			return fmt.Errorf("backend %s got no request during the stop: %s", s, tr)
		}
	}
	return nil
}

// withoutNginx shows the upstream file change when backend 1 stops.
func (d *demo) withoutNginx(ctx context.Context, regs []*proc.Proc, dest string, renderer *proc.Proc) error {
	d.say("no nginx (not installed, or --no-nginx): showing the rendered file only; apt-get install nginx-light for the rest")
	t0 := time.Now()
	if err := regs[0].Terminate(); err != nil {
		return err
	}
	if err := regs[0].Wait(ctx); err != nil {
		return err
	}
	d.say("SIGTERM to backend 1's registrar: it exited after %v; its log from the signal on:\n%s",
		time.Since(t0).Round(time.Millisecond), since(regs[0], "msg=stopping"))
	if _, err := d.untilServers(ctx, "two", 2, renderer, dest); err != nil {
		return err
	}
	d.showFile("rendered upstream now", dest)
	d.showMetrics(ctx)
	fmt.Fprintf(d.out, "demo OK (without nginx): 3 backends registered, 1 removed; install nginx (apt-get install nginx-light) to see traffic\n")
	return nil
}

// backendAddr is the address registrar r's demo-backend serves, read from
// its log line "serving addr=..." and checked against the upstream.
func backendAddr(r *proc.Proc, servers []string) (string, error) {
	b, err := os.ReadFile(r.Log)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`msg=serving component=demo-backend addr=(\S+)`).FindSubmatch(b)
	if m == nil || !slices.Contains(servers, string(m[1])) {
		return "", fmt.Errorf("backend 1's address not found in its log:\n%s", tail(r, 10))
	}
	return string(m[1]), nil
}

// until polls cond every 50ms until it succeeds, ctx ends, or watched exits.
// untilServers waits until the demo's app has n live servers (said as
// count; see servers: the upstream in dest, or the pushed peers file on the
// Lua path) and returns them; renderer exiting ends the wait.
func (d *demo) untilServers(ctx context.Context, count string, n int, renderer *proc.Proc, dest string) ([]string, error) {
	var servers []string
	err := d.until(ctx, count+" servers in the upstream", renderer, func() error {
		var err error
		servers, err = d.servers(dest)
		if err == nil && len(servers) != n {
			err = fmt.Errorf("servers %v", servers)
		}
		return err
	})
	return servers, err
}

func (d *demo) until(ctx context.Context, what string, watched *proc.Proc, cond func() error) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if watched != nil && !watched.Running() {
			return fmt.Errorf("waiting for %s: %s exited (%v):\n%s", what, watched.Name, watched.State(), tail(watched, 20))
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("waiting for %s: %v", what, err)
			if watched != nil {
				msg += "\n" + watched.Name + " output:\n" + tail(watched, 20)
			}
			return errors.New(msg)
		case <-tick.C:
		}
	}
}

// showMetrics prints a few of the renderer's metrics: what it cost.
func (d *demo) showMetrics(ctx context.Context) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.metricsAddr+"/metrics", nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.say("renderer metrics: %v", err)
		return
	}
	b, err := io.ReadAll(resp.Body)
	if err = errors.Join(err, resp.Body.Close()); err != nil {
		d.say("renderer metrics: %v", err)
		return
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, name := range []string{"reloads_total", "pushes_total", "applied_revision ", "renders_total"} {
			if strings.HasPrefix(l, "rollcall_renderer_"+name) {
				lines = append(lines, strings.TrimPrefix(l, "rollcall_renderer_"))
			}
		}
	}
	d.say("renderer metrics (rollcall_renderer_*): %s", strings.Join(lines, ", "))
}

func (d *demo) showFile(title, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		d.say("%s: %v", title, err)
		return
	}
	d.say("%s (%s):\n        %s", title, filepath.Base(path),
		strings.ReplaceAll(strings.TrimRight(string(b), "\n"), "\n", "\n        "))
}

var serverRE = regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)([^;]*);`)

// upstreamServers lists the live servers of the rendered upstream (the
// zero-instance placeholder, marked down, is not one).
func upstreamServers(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range serverRE.FindAllSubmatch(b, -1) {
		if strings.Contains(string(m[2]), "down") {
			continue
		}
		out = append(out, string(m[1]))
	}
	return out, nil
}
