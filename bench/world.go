package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/proc"
)

// world is one scenario's system: etcd, nginx, a confdir of the shipped
// templates, the renderer (once started) and in-process backends.
type world struct {
	opt      *options
	dir      string
	confdir  string
	etcd     *etcdProc
	nginx    *nginx
	be       *backends
	renderer *proc.Proc
	metrics  string // the renderer's --metrics-addr
	id       string
	acks     *ackWatch
	check    string // check_cmd, with {{.src}}
	reload   string // reload_cmd
}

// newWorld starts etcd and nginx in a new temp dir; plain selects
// reload_cmd = nginx -s reload instead of nginx-reload.
func newWorld(ctx context.Context, opt *options, name string, plain bool) (w *world, err error) {
	w = &world{opt: opt, id: "bench-" + name, be: newBackends()}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.dir, err = os.MkdirTemp(opt.work, name+"-"); err != nil {
		return w, err
	}
	// nginx workers may run as another user: let them into the prefix.
	if err := os.Chmod(w.dir, 0o755); err != nil {
		return w, err
	}
	w.confdir = filepath.Join(w.dir, "confdir")
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.MkdirAll(filepath.Join(w.confdir, d), 0o755); err != nil {
			return w, err
		}
	}
	for _, t := range []string{"upstream.tmpl", "upstreams.tmpl"} {
		b, err := os.ReadFile(filepath.Join(opt.templates, t))
		if err != nil {
			return w, fmt.Errorf("shipped template: %w", err)
		}
		if err := os.WriteFile(filepath.Join(w.confdir, "templates", t), b, 0o644); err != nil {
			return w, err
		}
	}
	if w.etcd, err = startEtcd(ctx, w.dir); err != nil {
		return w, err
	}
	if w.nginx, err = startNginx(ctx, w.dir, opt.nginx); err != nil {
		return w, err
	}
	if w.check, err = w.nginx.checkScript(w.dir); err != nil {
		return w, err
	}
	w.check += " {{.src}}"
	w.reload = reloadCmd(w.nginx.Instance, opt.bin, plain)
	return w, nil
}

func (w *world) close() {
	if w.acks != nil {
		w.acks.close()
	}
	if w.renderer != nil {
		stop(w.renderer, 10*time.Second)
	}
	if w.nginx != nil && w.nginx.Proc != nil {
		stop(w.nginx.Proc, 10*time.Second)
	}
	if w.etcd != nil {
		w.etcd.close()
	}
	w.be.close()
	if w.dir != "" && !w.opt.keep {
		note("remove work dir", os.RemoveAll(w.dir))
	}
}

// perApp writes one confd-style resource per service: the shipped
// upstream.tmpl with prefix /<svc>, as conf.d/upstream.toml.example.
func (w *world) perApp(svcs ...string) error {
	for _, svc := range svcs {
		if err := w.resource(svc, "upstream.tmpl", "/"+svc); err != nil {
			return err
		}
	}
	return nil
}

// allInOne writes one resource for every service: the shipped
// upstreams.tmpl over all keys, as conf.d/upstreams.toml.
func (w *world) allInOne() error { return w.resource("upstreams", "upstreams.tmpl", "") }

func (w *world) resource(name, tmpl, prefix string) error {
	toml := fmt.Sprintf(`[template]
src = %q
dest = %q
prefix = %q
keys = ["/"]
mode = "0644"
check_cmd = %q
reload_cmd = %q
`, tmpl, filepath.Join(w.nginx.rendered, name+".conf"), prefix, w.check, w.reload)
	return os.WriteFile(filepath.Join(w.confdir, "conf.d", name+".toml"), []byte(toml), 0o644)
}

// startRenderer starts the renderer daemon with default settings and waits
// until /readyz says every resource is applied; it returns how long that
// took (the first full render).
func (w *world) startRenderer(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	port, err := proc.FreePort()
	if err != nil {
		return 0, err
	}
	w.metrics = fmt.Sprintf("127.0.0.1:%d", port)
	w.acks = watchAcks(ctx, w.etcd.kv, w.id)
	t0 := time.Now()
	w.renderer, err = startProc(w.dir, "renderer", filepath.Join(w.opt.bin, "renderer"),
		"--confdir", w.confdir, "--endpoints", w.etcd.endpoint, "--metrics-addr", w.metrics,
		"--id", w.id, "--log-level", "warn")
	if err != nil {
		return 0, err
	}
	c := &http.Client{Timeout: time.Second}
	err = poll(ctx, timeout, 10*time.Millisecond, "renderer ready", func() error {
		if !w.renderer.Running() {
			return fmt.Errorf("renderer exited: %s", tail(w.renderer))
		}
		resp, err := c.Get("http://" + w.metrics + "/readyz")
		if err != nil {
			return err
		}
		b, err := readBody(resp)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		return nil
	})
	return time.Since(t0), err
}

// scrape reads the renderer's /metrics: each sample line's series (name and
// labels) to its value.
func (w *world) scrape() (m map[string]float64, err error) {
	resp, err := http.Get("http://" + w.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, resp.Body.Close()) }()
	m = map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, sc.Err()
}

// sum adds every series of metric name (all label values).
func sum(m map[string]float64, name string) (float64, bool) {
	var s float64
	found := false
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s, found = s+v, true
		}
	}
	return s, found
}

// reloads is the renderer's reload_cmd count so far.
func (w *world) reloads() (float64, error) {
	m, err := w.scrape()
	if err != nil {
		return 0, err
	}
	n, _ := sum(m, "rollcall_renderer_reloads_total")
	return n, nil
}

// reloadsSince is the reload count less r0 once a second has passed: what
// is still scheduled would show up as a reload within it.
func (w *world) reloadsSince(ctx context.Context, r0 float64) (float64, error) {
	if err := sleep(ctx, time.Second); err != nil {
		return 0, err
	}
	r1, err := w.reloads()
	return r1 - r0, err
}

// put writes one key and returns the revision it made; del deletes one.
func (w *world) put(ctx context.Context, key, val string) (int64, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := w.etcd.kv.Put(c, key, val)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return r.Header.Revision, nil
}

func (w *world) del(ctx context.Context, key string) (int64, error) {
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := w.etcd.kv.Delete(c, key)
	if err != nil {
		return 0, fmt.Errorf("delete %s: %w", key, err)
	}
	return r.Header.Revision, nil
}

// putAll writes kvs in transactions of up to 128 puts (etcd's default
// limit of operations per transaction).
func (w *world) putAll(ctx context.Context, kvs [][2]string) error {
	for len(kvs) > 0 {
		n := min(len(kvs), 128)
		ops := make([]clientv3.Op, n)
		for i, kv := range kvs[:n] {
			ops[i] = clientv3.OpPut(kv[0], kv[1])
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := w.etcd.kv.Txn(c).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("put %d keys: %w", n, err)
		}
		kvs = kvs[n:]
	}
	return nil
}
