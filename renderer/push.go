package renderer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/nginxpush"
)

// Values of Config.Push.
const (
	PushAuto = "auto" // push when nginx's Lua module is installed
	PushOn   = "on"   // push (the module is there, e.g. a static OpenResty build)
	PushOff  = "off"  // resources with push render, check and reload like the others
)

// pusher applies resources with `push = URL`: their output is a peer set
// (templates/peers.tmpl), written to dest with its version (the etcd
// revision) so nginx loads it at start, and pushed to nginx's Lua module
// (lua/rollcall/peers.lua) and confirmed — no check, no reload.
type pusher struct {
	enabled bool
	haproxy bool                         // HAProxy's runtime API (haproxy.go): on unless --push=off
	told    bool                         // the start message was logged
	clients map[string]*nginxpush.Client // by URL
}

func newPusher(mode string) *pusher {
	return &pusher{enabled: mode == PushOn || mode == PushAuto && luaInstalled(), haproxy: mode != PushOff, clients: map[string]*nginxpush.Client{}}
}

func (p *pusher) client(url string) *nginxpush.Client {
	c := p.clients[url]
	if c == nil {
		c = &nginxpush.Client{URL: url}
		p.clients[url] = c
	}
	return c
}

// luaModules are where distributions install nginx's Lua module.
var luaModules = []string{"/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules"}

// luaInstalled reports whether nginx has the Lua module: Debian's
// libnginx-mod-http-lua in a modules dir, or built in (nginx -V).
func luaInstalled() bool {
	for _, dir := range luaModules {
		if _, err := os.Stat(filepath.Join(dir, "ngx_http_lua_module.so")); err == nil {
			return true
		}
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-V").CombinedOutput()
	return err == nil && strings.Contains(string(out), "lua-nginx-module")
}

// pushes reports whether st is applied by pushing.
func (r *Renderer) pushes(st *resState) bool {
	if isHAProxyPush(st.res.Push) {
		return r.push.haproxy && !r.cfg.Noop
	}
	return st.res.Push != "" && r.push.enabled && !r.cfg.Noop
}

// tellPush says once, when the first resource with push loads, which path
// such resources take.
func (r *Renderer) tellPush(log *slog.Logger) []string {
	var ids, names []string
	for _, st := range r.states {
		if st.res.Push != "" && !isHAProxyPush(st.res.Push) {
			names = append(names, st.name)
			if r.pushes(st) {
				ids = append(ids, st.res.Path)
			}
		}
	}
	if len(names) > 0 && !r.push.told {
		r.push.told = true
		if r.push.enabled {
			log.Info("peer sets are pushed to nginx's Lua module: instance changes cost no reload", "resource", strings.Join(names, ","))
		} else {
			log.Warn("nginx Lua module not found (libnginx-mod-http-lua) or --push=off: resources with push render, check and reload instead", "resource", strings.Join(names, ","))
		}
	}
	return ids
}

// applyPushes applies the resources of sts that push and returns the rest.
func (r *Renderer) applyPushes(ctx context.Context, snap *snapshot, sts []*resState, res *batchResult) []*resState {
	rest := sts[:0:0]
	for _, st := range sts {
		if !r.pushes(st) {
			rest = append(rest, st)
			continue
		}
		apply := r.applyPush
		if isHAProxyPush(st.res.Push) {
			apply = r.applyHAProxy
		}
		if err := apply(ctx, snap, st); err != nil {
			r.fail(res, &job{st: st, err: err})
			continue
		}
		r.succeed(res, st, snap.rev)
	}
	return rest
}

// applyPush renders st's peer set, installs it when the peers changed, and
// makes sure nginx holds it: pushed when changed, and pushed again when
// nginx reports an older version (it lost its dict, or its peers file did
// not load). It returns once nginx confirms, so an acknowledgement after it
// is true.
func (r *Renderer) applyPush(ctx context.Context, snap *snapshot, st *resState) error {
	rs := st.res
	out, err := rs.RenderContext(ctx, snap.For(st.prefixes))
	if err != nil {
		r.m.renders.WithLabelValues(st.name, "error").Inc()
		return fmt.Errorf("render %s: %w", rs.Dest, err)
	}
	for _, s := range out.Skipped {
		r.gate.skipped(s.Key, s.Value, s.Err)
	}
	head := "version " + strconv.FormatInt(snap.rev, 10) + "\n"
	want, err := nginxpush.Decode(append([]byte(head), out.Bytes...))
	if err != nil {
		r.m.renders.WithLabelValues(st.name, "error").Inc()
		return fmt.Errorf("render %s: not a peer set (one line per service: <app>_<env> ip:port ...): %w", rs.Dest, err)
	}
	cur, err := readState(rs.Dest)
	if err != nil {
		return err
	}
	changed := true
	if installed, derr := nginxpush.Decode(cur.data); cur.exists && derr == nil && installed.Equal(want) {
		want, changed = installed, false // its version says since when
		r.m.renders.WithLabelValues(st.name, "unchanged").Inc()
	} else {
		r.m.renders.WithLabelValues(st.name, "ok").Inc()
		// The file first: nginx started or reloaded from now on loads it.
		staged, err := stageFile(rs.Dest, target(rs, want.Encode(), cur))
		if err != nil {
			return err
		}
		if err := install(staged, rs.Dest); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	c := r.push.client(rs.Push)
	if !changed {
		held, err := c.Version(ctx)
		if err == nil && held >= want.Version {
			r.m.pushes.WithLabelValues("unchanged").Inc()
			return nil
		}
		r.log.Warn("nginx does not hold the installed peers, pushing them again", "resource", st.name, "rev", want.Version, "held", held, "err", err)
	}
	start := time.Now()
	if err := c.Push(ctx, want); err != nil {
		r.m.pushes.WithLabelValues("failure").Inc()
		return fmt.Errorf("push %s to %s: %w", rs.Dest, rs.Push, err)
	}
	r.m.pushes.WithLabelValues("ok").Inc()
	if since := r.sched.Since(rs.Path); !since.IsZero() {
		r.m.changeToInstall.Observe(time.Since(since).Seconds())
	}
	r.log.Info("pushed peers", "resource", st.name, "rev", want.Version, "services", len(want.Services), "took", time.Since(start))
	return nil
}

// withPushes adds to a batch every resource that pushes and is listed: each
// checks that nginx still holds its peers before the batch is acknowledged.
func (r *Renderer) withPushes(snap *snapshot, todo []*resState) []*resState {
	for _, st := range r.states {
		if r.pushes(st) && snap.Has(st.prefixes) && !slices.Contains(todo, st) {
			todo = append(todo, st)
		}
	}
	return todo
}
