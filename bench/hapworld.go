package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rollcall/rollcall/haproxyapi"
)

// hapVariant is one shipped HAProxy setup the `haproxy` part measures: a
// confdir under haproxy/ (its resource's paths pointed at the private
// HAProxy). Another setup is one more value.
type hapVariant struct {
	name     string // the rows' prefix
	confdir  string // under --haproxy-dir: "" (haproxy/ itself) or "runtime"
	resource string // the file in <confdir>/conf.d
	// target is the target of what ("propagation", "deregistration") at
	// percentile p ("" for none).
	target func(what string, p float64) string
	// reloadFloor measures HAProxy's check + reload floor between the
	// cycles and prints it beside the rows it bounds. A path without
	// reloads has no such floor, and a reload between its cycles would be
	// one of the reloads it must not have.
	reloadFloor bool
	// noReloads: membership changes must not reload HAProxy; its reload
	// rows are totals with target 0.
	noReloads bool
	// burstDeploy is how many instances each burst app is deployed with
	// before it is scaled back to its one base instance and the burst
	// starts: the runtime API's backends keep the slots of their largest
	// deploy, and the burst's peak (~12 per app) must fit, as it does for
	// an app deployed at that size.
	burstDeploy int
}

// hapReloads is the reload path: haproxy/conf.d/haproxy.toml, `haproxy -c`
// of the whole configuration and haproxy-reload on every change.
var hapReloads = hapVariant{
	name:     "HAProxy, reloads (haproxy.toml): ",
	resource: "haproxy.toml",
	target: func(_ string, p float64) string {
		return fmt.Sprintf("≤ floor p%.0f + 50 ms (issue 12)", p)
	},
	reloadFloor: true,
	burstDeploy: 1,
}

// hapRuntime is the runtime API's path: haproxy/runtime/conf.d/haproxy.toml,
// instances of existing apps set in server slots through the admin socket,
// no check and no reload.
var hapRuntime = hapVariant{
	name:     "HAProxy, runtime API (runtime/haproxy.toml): ",
	confdir:  "runtime",
	resource: "haproxy.toml",
	target: func(what string, p float64) string {
		if what == "propagation" && p == 50 {
			return "≤ 20 ms (issue 12)"
		}
		return ""
	},
	noReloads: true,
	// 12 instances: 24 slots (haproxyapi.SlotCount).
	burstDeploy: 12,
}

// hapVariants are the setups the part measures, in order.
var hapVariants = []hapVariant{hapReloads, hapRuntime}

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
	shipped := filepath.Join(opt.haproxyDir, v.confdir)
	if err := os.CopyFS(filepath.Join(w.confdir, "templates"), os.DirFS(filepath.Join(shipped, "templates"))); err != nil {
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
	return hw, hw.writeResource(filepath.Join(shipped, "conf.d", v.resource))
}

func (hw *hapWorld) close() {
	if hw.hap != nil && hw.hap.Proc != nil {
		stop(hw.hap.Proc, 10*time.Second)
	}
	hw.world.close()
}

// writeResource copies the shipped resource file into the confdir with
// every path a shipped resource names moved to the private HAProxy and
// opt.bin: the runtime API (`push = "haproxy:///run/haproxy/admin.sock?..."`)
// becomes the private HAProxy's admin socket, its config the rendered
// directory's rollcall.cfg, its peer set a file beside that directory.
func (hw *hapWorld) writeResource(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("shipped resource: %w", err)
	}
	h := hw.hap
	text := strings.NewReplacer(
		"/etc/haproxy/rollcall-peers.txt", filepath.Join(h.dir, "peers.txt"),
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
	if err := hw.checkPush(text); err != nil {
		return fmt.Errorf("shipped resource %s: %w", file, err)
	}
	return os.WriteFile(filepath.Join(hw.confdir, "conf.d", filepath.Base(file)), []byte(text), 0o644)
}

var pushRE = regexp.MustCompile(`(?m)^push\s*=\s*"([^"]*)"`)

// checkPush checks a resource whose push names HAProxy's runtime API: it
// must reach the private HAProxy's admin socket and write its config into
// the directory HAProxy reads with -f, or the renderer would set servers
// of another HAProxy, or HAProxy would never load the slots.
func (hw *hapWorld) checkPush(text string) error {
	m := pushRE.FindStringSubmatch(text)
	if m == nil {
		return nil // the reload path
	}
	p, err := haproxyapi.ParsePush(m[1])
	if err != nil {
		return err
	}
	if p.API.Network != "unix" || p.API.Address != hw.hap.admin {
		return fmt.Errorf("push %s: not the private HAProxy's admin socket %s", m[1], hw.hap.admin)
	}
	if filepath.Dir(p.Config) != hw.hap.rendered {
		return fmt.Errorf("push %s: config not in %s, which HAProxy reads", m[1], hw.hap.rendered)
	}
	return nil
}

// prober asks HAProxy which backend serves svc, a fresh connection per
// request (as the nginx prober).
func (hw *hapWorld) prober(svc string) *prober {
	return &prober{
		c:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		url: fmt.Sprintf("http://127.0.0.1:%d/%s/", hw.hap.port, svc),
	}
}
