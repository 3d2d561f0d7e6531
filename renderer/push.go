package renderer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/haproxyapi"
	"github.com/rollcall/rollcall/nginxpush"
	"github.com/rollcall/rollcall/renderer/confd"
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
	// last is, by resource, the peer set installed in dest and confirmed
	// by nginx: a change is pushed as a delta from it. Absent (at start,
	// after a failure) the installed file is read and the full state
	// pushed when nginx does not hold it.
	last map[string]*peerState
}

func newPusher(mode string) *pusher {
	return &pusher{enabled: mode == PushOn || mode == PushAuto && luaInstalled(), haproxy: mode != PushOff,
		clients: map[string]*nginxpush.Client{}, last: map[string]*peerState{}}
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

// pushJob is one pushed resource's apply at rev: rendered on the loop
// (preparePush), sent, installed and confirmed apart from it (sendPush),
// and taken back on the loop (pushLanded). Apart, it touches no resState,
// pusher or scheduler: what it needs of them is copied in.
type pushJob struct {
	st    *resState
	rev   int64
	since time.Time // the scheduler's Since: when its oldest unapplied change arrived
	err   error

	// nginx's Lua endpoint: base is what nginx confirmed last (the
	// delta's base; nil: none); next the rendered set, confirmed once err
	// is nil.
	c          *nginxpush.Client
	base, next *peerState
	rendered   []byte

	// HAProxy's runtime API.
	hap  haproxyapi.Push
	want nginxpush.PeerSet
}

// target is what pj pushes to: pushes to one target take turns.
func (pj *pushJob) target() string {
	if isHAProxyPush(pj.st.res.Push) {
		return "haproxy " + pj.hap.API.Address
	}
	return pj.st.res.Push
}

// applyPushes applies the resources of sts that push, on the caller (no
// loop: --onetime, tests), and returns the rest.
func (r *Renderer) applyPushes(ctx context.Context, snap *snapshot, sts []*resState, res *batchResult) []*resState {
	pjs, rest := r.preparePushes(ctx, snap, sts)
	for _, pj := range pjs {
		r.sendPush(ctx, pj)
		r.pushLanded(pj, res)
	}
	return rest
}

// preparePushes renders the resources of sts that push and returns them
// with the rest.
func (r *Renderer) preparePushes(ctx context.Context, snap *snapshot, sts []*resState) (pjs []*pushJob, rest []*resState) {
	for _, st := range sts {
		if r.pushes(st) {
			pjs = append(pjs, r.preparePush(ctx, snap, st))
		} else {
			rest = append(rest, st)
		}
	}
	return pjs, rest
}

// preparePush renders st's peer set at snap, on the loop; a failure is in
// the job's err.
func (r *Renderer) preparePush(ctx context.Context, snap *snapshot, st *resState) *pushJob {
	pj := &pushJob{st: st, rev: snap.rev, since: r.sched.Since(st.res.Path)}
	if isHAProxyPush(st.res.Push) {
		if pj.want, pj.err = r.renderSlotsPeers(ctx, snap, st); pj.err == nil {
			pj.hap, pj.err = hapTargetOf(st)
		}
		return pj
	}
	rs := st.res
	// base: what nginx confirmed last; kept again only once nginx
	// confirms the new state (pushLanded).
	base := r.push.last[rs.Path]
	if base != nil && (base.dest != rs.Dest || base.url != rs.Push) {
		base = nil
	}
	delete(r.push.last, rs.Path)
	pj.base, pj.c = base, r.push.client(rs.Push)
	if pj.next, pj.rendered, pj.err = r.renderPeers(ctx, snap, st, base); pj.err != nil {
		r.m.renders.WithLabelValues(st.name, "error").Inc()
	}
	return pj
}

// sendPush sends pj, installs its file and waits for the confirmation,
// within --command-timeout (a timeout is counted). It touches only pj, files
// and the counters: it runs apart from the loop (pushlane.go).
func (r *Renderer) sendPush(ctx context.Context, pj *pushJob) {
	if pj.err != nil {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	if isHAProxyPush(pj.st.res.Push) {
		pj.err = r.applyHAProxy(tctx, pj)
	} else {
		pj.err = r.applyPush(tctx, pj)
	}
	if pj.err != nil && ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		r.m.commandTimeouts.WithLabelValues("push").Inc()
	}
}

// pushLanded records how pj went, on the loop: from a confirmed push to
// nginx the next is a delta.
func (r *Renderer) pushLanded(pj *pushJob, res *batchResult) {
	if pj.err != nil {
		r.fail(res, &job{st: pj.st, err: pj.err})
		return
	}
	if pj.next != nil {
		r.push.last[pj.st.res.Path] = pj.next
	}
	r.succeed(res, pj.st, pj.rev)
}

// applyPush installs pj's peer set when the peers changed, and makes sure
// nginx holds it: the changed apps pushed as a delta from the set nginx
// last confirmed, the full state when there is none (start, a failure) or
// nginx does not hold the delta's base (it lost its dict), and the full
// state again when nginx reports an older version while nothing changed.
// It returns once nginx confirms and the file is installed, so an
// acknowledgement after it is true.
func (r *Renderer) applyPush(ctx context.Context, pj *pushJob) error {
	rs, base, next := pj.st.res, pj.base, pj.next
	// last: what dest holds: base or, at start, the installed file.
	last := base
	if last == nil {
		var err error
		if last, err = installedPeers(rs.Dest); err != nil {
			return err
		}
	}
	if last != nil && next.same(last) {
		r.m.renders.WithLabelValues(pj.st.name, "unchanged").Inc()
		next.version = last.version // its version says since when
		return r.ensureHeld(ctx, pj)
	}
	r.m.renders.WithLabelValues(pj.st.name, "ok").Inc()
	if last != nil && next.version <= last.version {
		// Other peers at a version already out: the template was edited
		// while etcd was quiet. nginx keeps a version it holds, so the
		// edit takes the next one (versions run ahead of the revision).
		next.version = last.version + 1
	}
	// The file and the push at once. nginx reloaded before the file is in
	// place loads the older file, which does not replace a newer dict;
	// restarted, it reports the older version, and the next batch pushes
	// the full state (412 to a delta, or the version check). The
	// acknowledgement waits for both.
	installed := make(chan error, 1)
	start := time.Now()
	go func() { installed <- installPeers(rs, next, pj.rendered) }()
	kind, err := r.pushPeers(ctx, pj.c, base, next)
	if ierr := <-installed; ierr != nil {
		return errors.Join(ierr, err)
	}
	return r.pushed(pj, kind, start, err)
}

// renderPeers renders st's peer set at snap and parses it, re-parsing only
// the lines that differ from base's.
func (r *Renderer) renderPeers(ctx context.Context, snap *snapshot, st *resState, base *peerState) (*peerState, []byte, error) {
	rs := st.res
	out, err := rs.RenderContext(ctx, snap.For(st.prefixes))
	if err != nil {
		return nil, nil, fmt.Errorf("render %s: %w", rs.Dest, err)
	}
	r.gate.skippedAll(out.Skipped)
	next, err := parsePeers(out.Bytes, snap.rev, base)
	if err != nil {
		return nil, nil, fmt.Errorf("render %s: not a peer set (one line per service: <app>_<env> ip:port ...): %w", rs.Dest, err)
	}
	next.dest, next.url = rs.Dest, rs.Push
	return next, out.Bytes, nil
}

// ensureHeld checks that nginx holds pj's peer set, which is installed,
// and pushes the full state when it reports an older version (it lost its
// dict, or its peers file did not load).
func (r *Renderer) ensureHeld(ctx context.Context, pj *pushJob) error {
	held, err := pj.c.Version(ctx)
	if err == nil && held >= pj.next.version {
		r.m.pushes.WithLabelValues("unchanged").Inc()
		return nil
	}
	r.log.Warn("nginx does not hold the installed peers, pushing them again", "resource", pj.st.name, "rev", pj.next.version, "held", held, "err", err)
	start := time.Now()
	kind, err := r.pushPeers(ctx, pj.c, nil, pj.next)
	return r.pushed(pj, kind, start, err)
}

// pushed counts and logs a push's outcome.
func (r *Renderer) pushed(pj *pushJob, kind string, start time.Time, err error) error {
	st, next := pj.st, pj.next
	if err != nil {
		r.m.pushes.WithLabelValues("failure").Inc()
		return fmt.Errorf("push %s to %s: %w", st.res.Dest, st.res.Push, err)
	}
	r.m.pushes.WithLabelValues("ok").Inc()
	if !pj.since.IsZero() {
		r.m.changeToInstall.Observe(time.Since(pj.since).Seconds())
	}
	r.log.Info("pushed peers", "resource", st.name, "rev", next.version, "services", len(next.apps), "push", kind, "took", time.Since(start))
	return nil
}

// pushPeers sends next: as a delta from base, the state nginx confirmed
// last, else (none: the first push, or after a failure), or when nginx
// answers that it does not hold base's version, the full state. It says
// which it sent.
func (r *Renderer) pushPeers(ctx context.Context, c *nginxpush.Client, base, next *peerState) (string, error) {
	if base != nil && base.version < next.version {
		err := c.PushDelta(ctx, next.diff(base))
		var base *nginxpush.BaseError
		if !errors.As(err, &base) {
			return "delta", err
		}
		r.log.Warn("nginx does not hold the peers it confirmed (restarted or reloaded), pushing them all", "rev", next.version, "err", err)
	}
	return "full", c.Push(ctx, next.set())
}

// installPeers writes the full state next to dest: the version line, then
// the rendered lines (every one checked by parsePeers).
func installPeers(rs *confd.Resource, next *peerState, rendered []byte) error {
	cur := fileState{}
	if fi, err := os.Stat(rs.Dest); err == nil {
		cur = fileState{exists: true, mode: fi.Mode().Perm()}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", rs.Dest, err)
	}
	data := make([]byte, 0, len(rendered)+32)
	data = append(data, "version "...)
	data = strconv.AppendInt(data, next.version, 10)
	data = append(data, '\n')
	data = append(data, rendered...)
	return put(rs.Dest, target(rs, data, cur))
}

// installedPeers reads the peer set installed in dest (nil: none, or not
// one), to compare the first render after a start with.
func installedPeers(dest string) (*peerState, error) {
	cur, err := readState(dest)
	if err != nil || !cur.exists {
		return nil, err
	}
	head, body, _ := bytes.Cut(cur.data, []byte("\n"))
	p, err := nginxpush.Decode(append(head, '\n'))
	if err != nil {
		return nil, nil
	}
	st, err := parsePeers(body, p.Version, nil)
	if err != nil {
		return nil, nil
	}
	return st, nil
}

// withPushes adds to a batch every resource that pushes and is listed: each
// checks that nginx still holds its peers before the batch is acknowledged.
// Left out: those whose push is out (it confirms them when it lands) and
// those failing (their retries come with their backoff; the ack waits for
// them anyway).
func (r *Renderer) withPushes(snap *snapshot, todo []*resState) []*resState {
	failing := r.sched.FailingIDs()
	for _, st := range r.states {
		if r.pushes(st) && snap.Has(st.prefixes) && !slices.Contains(todo, st) &&
			!r.lanes.Pushing(st) && !slices.Contains(failing, st.res.Path) {
			todo = append(todo, st)
		}
	}
	return todo
}
