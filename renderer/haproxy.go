package renderer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/haproxyapi"
	"github.com/rollcall/rollcall/nginxpush"
)

// isHAProxyPush reports whether a push URL names HAProxy's runtime API
// (haproxy/runtime/conf.d/haproxy.toml) rather than nginx's Lua endpoint.
func isHAProxyPush(url string) bool { return strings.HasPrefix(url, "haproxy:") }

// hapTargetOf reads st's push URL; the template is found under st's
// confdir templates/.
func hapTargetOf(st *resState) (haproxyapi.Push, error) {
	p, err := haproxyapi.ParsePush(st.res.Push)
	if err != nil {
		return haproxyapi.Push{}, err
	}
	p.Template = filepath.Join(filepath.Dir(st.res.Src), p.Template)
	return p, nil
}

// applyHAProxy applies a resource whose push names HAProxy's runtime API
// (its peer set pj.want rendered on the loop; this runs apart,
// pushlane.go): the peer set is planned into the backends' server slots;
// the changed slots are set through the runtime API, or — for a new or
// removed app, slots run out, another config shape — the config is
// checked and HAProxy reloaded. The config holding every slot is written either way (so a cold
// start serves the same servers), and `show servers state` must show the
// plan after it, so an acknowledgement after this is true.
func (r *Renderer) applyHAProxy(ctx context.Context, pj *pushJob) error {
	st, want, t := pj.st, pj.want, pj.hap
	prev, err := readState(st.res.Dest)
	if err != nil {
		return err
	}
	managed := func(name string) bool { _, ok := want.Services[name]; return ok }
	if old, derr := nginxpush.Decode(prev.data); prev.exists && derr == nil {
		managed = func(name string) bool { _, ok := want.Services[name]; _, was := old.Services[name]; return ok || was }
	}
	start := time.Now()
	cur, busy, err := hapLive(ctx, t.API, managed)
	if err != nil {
		return err
	}
	next, structural := haproxyapi.Plan(cur, want.Services, busy)
	n, reloaded, err := r.hapApply(ctx, st, t, hapPlan{cur: cur, next: next, structural: structural, managed: managed})
	if err == nil {
		err = r.installSlotsPeers(st, want, prev)
	}
	if err == nil && (n > 0 || reloaded) {
		err = hapConfirm(ctx, t.API, next)
	}
	if err != nil {
		r.m.pushes.WithLabelValues("failure").Inc()
		return fmt.Errorf("haproxy %s: %w", t.API.Address, err)
	}
	r.m.pushes.WithLabelValues(map[bool]string{true: "ok", false: "unchanged"}[n > 0 || reloaded]).Inc()
	if n > 0 || reloaded {
		if !pj.since.IsZero() {
			r.m.changeToInstall.Observe(time.Since(pj.since).Seconds())
		}
		r.log.Info("haproxy servers set", "resource", st.name, "rev", want.Version, "commands", n, "reload", reloaded, "took", time.Since(start))
	}
	return nil
}

// hapPlan is one apply's plan: the live slots, the planned ones, whether
// Plan found the change structural, and which backends the resource owns.
type hapPlan struct {
	cur, next  haproxyapi.Layout
	structural bool
	managed    func(string) bool
}

// hapApply renders the config for p.next. A structural change (or another
// shape) installs it, checks and reloads first; otherwise the runtime API
// is told first, so propagation never waits for the file's fsyncs, and the
// config is installed after (the caller confirms after that). It returns
// how many commands it sent and whether HAProxy reloaded.
func (r *Renderer) hapApply(ctx context.Context, st *resState, t haproxyapi.Push, p hapPlan) (n int, reloaded bool, err error) {
	text, err := os.ReadFile(t.Template)
	if err != nil {
		return 0, false, fmt.Errorf("read template: %w", err)
	}
	data, err := haproxyapi.RenderConfig(t.Template, string(text), p.next)
	if err != nil {
		return 0, false, fmt.Errorf("render %s: %w", t.Config, err)
	}
	prev, err := readState(t.Config)
	if err != nil {
		return 0, false, err
	}
	// A config of another shape (template edited, or HAProxy started on
	// another file) reloads too, even when every backend has its slots.
	cur := p.cur
	if reloaded = p.structural || haproxyapi.Shape(prev.data) != haproxyapi.Shape(data); reloaded {
		if err := r.installAndReload(ctx, st, t.Config, data, prev); err != nil {
			return 0, false, err
		}
		if cur, err = hapReloaded(ctx, t.API, p.managed, p.next); err != nil {
			return 0, true, err
		}
	}
	cmds, err := haproxyapi.Commands(cur, p.next)
	if err == nil && len(cmds) > 0 {
		var answer string
		if answer, err = t.API.Run(ctx, cmds...); err != nil {
			err = fmt.Errorf("%w (HAProxy answered %q)", err, strings.TrimSpace(answer))
		}
	}
	if err == nil && !reloaded {
		err = installBytes(st, t.Config, data, prev)
	}
	return len(cmds), reloaded, err
}

// renderSlotsPeers renders st's peer set at snap. An app whose last instance
// went stays, with none (as on the reload path): its backend answers 503
// and its slots wait in maint, no reload either way.
func (r *Renderer) renderSlotsPeers(ctx context.Context, snap *snapshot, st *resState) (nginxpush.PeerSet, error) {
	rs := st.res
	out, err := rs.RenderKnown(ctx, snap.For(st.prefixes), st.known)
	if err == nil {
		st.known = slices.Compact(slices.Sorted(slices.Values(slices.Concat(st.known, out.Services))))
		r.gate.skippedAll(out.Skipped)
		head := "version " + strconv.FormatInt(snap.rev, 10) + "\n"
		var p nginxpush.PeerSet
		if p, err = nginxpush.Decode(append([]byte(head), out.Bytes...)); err == nil {
			r.m.renders.WithLabelValues(st.name, "ok").Inc()
			return p, nil
		}
		err = fmt.Errorf("not a peer set (one line per service: <app>_<env> ip:port ...): %w", err)
	}
	r.m.renders.WithLabelValues(st.name, "error").Inc()
	return nginxpush.PeerSet{}, fmt.Errorf("render %s: %w", rs.Dest, err)
}

// installSlotsPeers writes the peer set to dest when its peers changed: the
// next pass reads which apps it managed from there.
func (r *Renderer) installSlotsPeers(st *resState, want nginxpush.PeerSet, prev fileState) error {
	if installed, err := nginxpush.Decode(prev.data); prev.exists && err == nil && installed.Equal(want) {
		return nil
	}
	return installBytes(st, st.res.Dest, want.Encode(), prev)
}

// installBytes stages data for dest and installs it.
func installBytes(st *resState, dest string, data []byte, prev fileState) error {
	t := target(st.res, data, prev)
	if prev.same(t) {
		return nil
	}
	return put(dest, t)
}

// installAndReload installs the config, checks the whole configuration and
// reloads HAProxy, confirmed; on a failure the old file is back, so the
// next pass tries again.
func (r *Renderer) installAndReload(ctx context.Context, st *resState, config string, data []byte, prev fileState) error {
	if err := installBytes(st, config, data, prev); err != nil {
		return err
	}
	if err := r.checkAndReload(ctx, st, config); err != nil {
		if rerr := restore(config, prev); rerr != nil {
			return fmt.Errorf("%w (and restoring %s: %v)", err, config, rerr)
		}
		return err
	}
	return nil
}

// checkAndReload checks the whole configuration with config installed and
// reloads HAProxy, confirmed.
func (r *Renderer) checkAndReload(ctx context.Context, st *resState, config string) error {
	if c := st.res.CheckCmd; c != "" {
		cmd, err := expandCmd(c, "", config)
		if err == nil {
			err = r.check(ctx, st.name, cmd)
		}
		if err != nil {
			return err
		}
	}
	if st.res.ReloadCmd == "" {
		return fmt.Errorf("%s: the config changed in structure, and no reload_cmd", config)
	}
	return r.runReload(ctx, &reloadGroup{cmd: st.res.ReloadCmd, items: []reloadItem{{st: st}}})
}

// hapLive reads the managed backends' slots and the sessions each server
// still has.
func hapLive(ctx context.Context, api haproxyapi.Client, managed func(string) bool) (haproxyapi.Layout, func(string, int) bool, error) {
	out, err := api.Run(ctx, "show servers state")
	if err != nil {
		return nil, nil, err
	}
	srvs, err := haproxyapi.ParseServersState(out)
	if err != nil {
		return nil, nil, fmt.Errorf("haproxy %s: %w", api.Address, err)
	}
	if out, err = api.Run(ctx, "show stat -1 4 -1"); err != nil {
		return nil, nil, err
	}
	sessions, err := haproxyapi.ParseSessions(out)
	if err != nil {
		return nil, nil, fmt.Errorf("haproxy %s: %w", api.Address, err)
	}
	busy := func(backend string, slot int) bool { return sessions[backend+"/"+haproxyapi.SlotName(slot)] > 0 }
	return haproxyapi.FromServers(srvs, managed), busy, nil
}

// hapReloaded reads the live slots after a confirmed reload until they have
// the planned shape: for a moment the old worker may still answer on the
// runtime API's socket.
func hapReloaded(ctx context.Context, api haproxyapi.Client, managed func(string) bool, next haproxyapi.Layout) (haproxyapi.Layout, error) {
	for {
		cur, _, err := hapLive(ctx, api, managed)
		if err == nil && sameShape(cur, next) {
			return cur, nil
		}
		if err == nil {
			err = fmt.Errorf("reloaded, but HAProxy's backends are not the new config's")
		}
		if serr := sleepCtx(ctx, 10*time.Millisecond); serr != nil {
			return nil, fmt.Errorf("haproxy %s: %w", api.Address, err)
		}
	}
}

// sameShape reports whether a and b hold the same backends with as many
// slots each.
func sameShape(a, b haproxyapi.Layout) bool {
	if len(a) != len(b) {
		return false
	}
	for name, slots := range b {
		if len(a[name]) != len(slots) {
			return false
		}
	}
	return true
}

// hapConfirm reads `show servers state` and compares it with the plan.
func hapConfirm(ctx context.Context, api haproxyapi.Client, next haproxyapi.Layout) error {
	live, _, err := hapLive(ctx, api, func(name string) bool { _, ok := next[name]; return ok })
	if err != nil {
		return err
	}
	return haproxyapi.Confirm(live, next)
}
