package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// hapVariant is one shipped HAProxy setup the `haproxy` part measures: a
// resource of haproxy/conf.d (its paths pointed at the private HAProxy) over
// haproxy/templates. Another setup (the runtime API's) is one more value.
type hapVariant struct {
	name     string // the rows' prefix
	resource string // the file in haproxy/conf.d
	// target is the propagation and deregistration target at percentile
	// p; the floor at p is printed beside it.
	target func(p float64) string
}

// hapReloads is the reload path: haproxy/conf.d/haproxy.toml, `haproxy -c`
// of the whole configuration and haproxy-reload on every change.
var hapReloads = hapVariant{
	name:     "HAProxy, reloads (haproxy.toml): ",
	resource: "haproxy.toml",
	target: func(p float64) string {
		return fmt.Sprintf("≤ floor p%.0f + 50 ms (issue 12)", p)
	},
}

// hapVariants are the setups the part measures, in order.
var hapVariants = []hapVariant{hapReloads}

// hapWorld is a world whose gateway is the private HAProxy and whose
// renderer runs the shipped haproxy/ confdir (one variant's resource). The
// embedded world has no nginx; etcd, renderer, backends and acks are the
// same.
type hapWorld struct {
	*world
	hap *haproxy
}

// newHapWorld starts etcd and HAProxy in a new temp dir and writes the
// confdir: the shipped haproxy/templates and v's resource pointed at the
// private HAProxy and the binaries of opt.bin.
func newHapWorld(ctx context.Context, opt *options, name, bin string, v hapVariant) (hw *hapWorld, err error) {
	w := &world{opt: opt, id: "bench-" + name, be: newBackends()}
	hw = &hapWorld{world: w}
	defer func() {
		if err != nil {
			hw.close()
		}
	}()
	if w.dir, err = os.MkdirTemp(opt.work, name+"-"); err != nil {
		return hw, err
	}
	w.confdir = filepath.Join(w.dir, "confdir")
	if err := os.CopyFS(filepath.Join(w.confdir, "templates"), os.DirFS(filepath.Join(opt.haproxyDir, "templates"))); err != nil {
		return hw, fmt.Errorf("copy the shipped HAProxy templates: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(w.confdir, "conf.d"), 0o755); err != nil {
		return hw, err
	}
	if w.etcd, err = startEtcd(ctx, w.dir); err != nil {
		return hw, err
	}
	if hw.hap, err = startHAProxy(ctx, w.dir, bin, opt.haproxyDir); err != nil {
		return hw, err
	}
	return hw, hw.writeResource(v.resource)
}

func (hw *hapWorld) close() {
	if hw.hap != nil && hw.hap.Proc != nil {
		stop(hw.hap.Proc, 10*time.Second)
	}
	hw.world.close()
}

// writeResource copies the shipped haproxy/conf.d/<file> with every path a
// shipped resource names moved to the private HAProxy and opt.bin.
func (hw *hapWorld) writeResource(file string) error {
	b, err := os.ReadFile(filepath.Join(hw.opt.haproxyDir, "conf.d", file))
	if err != nil {
		return fmt.Errorf("shipped resource: %w", err)
	}
	h := hw.hap
	text := strings.NewReplacer(
		"/etc/haproxy/rollcall", h.rendered,
		"/etc/haproxy/haproxy.cfg", h.conf,
		"/usr/sbin/haproxy", h.bin,
		"/usr/local/bin/haproxy-reload", filepath.Join(hw.opt.bin, "haproxy-reload"),
		"/run/haproxy-master.sock", h.master,
		"/run/haproxy/admin.sock", h.admin,
	).Replace(string(b))
	for _, left := range []string{"/etc/haproxy", "/run/", "/usr/local/bin"} {
		if strings.Contains(text, left) {
			return fmt.Errorf("shipped resource %s: %q left after pointing it at the private HAProxy", file, left)
		}
	}
	return os.WriteFile(filepath.Join(hw.confdir, "conf.d", file), []byte(text), 0o644)
}

// prober asks HAProxy which backend serves svc, a fresh connection per
// request (as the nginx prober).
func (hw *hapWorld) prober(svc string) *prober {
	return &prober{
		c:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		url: fmt.Sprintf("http://127.0.0.1:%d/%s/", hw.hap.port, svc),
	}
}
