package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
	"github.com/rollcall/rollcall/nginxpush"
	"github.com/rollcall/rollcall/registry"
)

// pushName prefixes the push path's rows (issue 9): the shipped Lua setup,
// instance changes pushed to nginx without a reload.
const pushName = "push path (Lua balancer), "

// pushPart is the `push` part: opt.runs runs of the small-config rows
// (propagation, deregistration, burst), the balancer's per-request cost and
// the scale rows. Without nginx's Lua module the rows say so.
func pushPart(ctx context.Context, opt *options, t *table, logf func(string, ...any)) error {
	if !nginxconf.HasLua() {
		for _, r := range []string{"propagation", "deregistration", "nginx reloads", "burst", "balancer cost", "scale"} {
			t.add(pushName+r, count, math.NaN()).note = "n/a: no Lua module (apt-get install libnginx-mod-http-lua)"
		}
		return nil
	}
	for i := range opt.runs {
		logf("push path, run %d/%d: %d add → remove cycles, burst", i+1, opt.runs, opt.changes)
		if err := pushSmall(ctx, opt, t); err != nil {
			return err
		}
	}
	window := opt.balancerWindow
	if window == 0 {
		window = map[bool]time.Duration{false: 10 * time.Second, true: 2 * time.Second}[opt.quick]
	}
	logf("push path: balancer vs static upstream, %d rounds of %d connections × %v each", opt.runs, rpsConns, window)
	if err := balancerCost(ctx, opt, t, window); err != nil {
		return fmt.Errorf("balancer cost: %w", err)
	}
	logf("push path, scale: %d services × %d instances", opt.apps, opt.perApp)
	if err := pushScale(ctx, opt, t); err != nil {
		return fmt.Errorf("scale: %w", err)
	}
	return nil
}

// pushSmall runs the small-config rows once.
func pushSmall(ctx context.Context, opt *options, t *table) error {
	pw, err := newPushWorld(ctx, opt, "push", 0)
	if err != nil {
		return err
	}
	defer pw.close()
	if _, err := pw.startRenderer(ctx, 2*time.Minute); err != nil {
		return err
	}
	name := pushName + "small config: "
	err = pushPattern(ctx, pw, t, name, opt.changes, []float64{50, 95, 99}, func(p float64) string {
		return map[float64]string{50: "≤ 15 ms (issue 9)", 99: "≤ 50 ms (issue 9)"}[p]
	})
	if err != nil {
		return err
	}
	return pushBurst(ctx, pw, t, name)
}

// pushPattern registers the probe service (an app appearing: one reload),
// then runs n cycles of the add → remove pattern on it (propagate) and adds
// the percentiles pcts, where the time went, and the reloads nginx logged
// during the changes (the push path's promise: none).
func pushPattern(ctx context.Context, pw *pushWorld, t *table, name string, n int, pcts []float64, target func(p float64) string) error {
	p := pw.prober(probeSvc)
	base, err := pw.be.add()
	if err != nil {
		return err
	}
	rev, err := pw.put(ctx, registry.Key("", probeApp, benchEnv, base), registry.Value(base))
	if err != nil {
		return err
	}
	if _, err := p.routed(ctx, base.String(), 2*time.Minute); err != nil {
		return err
	}
	if _, err := pw.acks.waitAck(ctx, rev, time.Minute); err != nil {
		return err
	}
	r0, err := pw.nginxReloads()
	if err != nil {
		return err
	}
	before, err := pw.scrape()
	if err != nil {
		return err
	}
	c, err := propagate(ctx, pw.world, p, n, nil)
	if err != nil {
		return err
	}
	after, err := pw.scrape()
	if err != nil {
		return err
	}
	r1, err := pw.nginxReloads()
	if err != nil {
		return err
	}
	changes := len(c.adds) + len(c.removes)
	c.record(t, name, pcts, target, "")
	breakdown(t, name, before, after, changes)
	t.add(fmt.Sprintf("%snginx reloads during the %d changes", name, changes), count, r1-r0).with("0", "")
	fl, err := pushFloor(ctx, pw, pw.opt.floorRuns)
	if err != nil {
		return err
	}
	t.dur(fmt.Sprintf("%snginx's share of a push: the whole peer set POSTed and confirmed (median of %d)", name, pw.opt.floorRuns), fl)
	return nil
}

// pushFloor is nginx's own part of one push on this state, the push
// path's floor: the peer set nginx holds, POSTed again at its version
// (parsed and validated whole; then not stored, being not newer) and
// confirmed with a GET. It returns the median of k.
func pushFloor(ctx context.Context, pw *pushWorld, k int) (time.Duration, error) {
	held, err := pw.push.Peers(ctx)
	if err != nil {
		return 0, err
	}
	var ds []time.Duration
	for range k {
		t0 := time.Now()
		if err := pw.push.Push(ctx, held); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(t0))
	}
	return percentile(ds, 50), nil
}

// pushBurst is the burst of issue 8 and 9 on the push path: 200
// registrations and 100 removals over burstApps apps within about a second.
// The apps exist before it (one instance each, so nginx already has their
// upstreams): every change is a membership change, none structural.
func pushBurst(ctx context.Context, pw *pushWorld, t *table, name string) error {
	bases, err := burstBases(ctx, pw.world)
	if err != nil {
		return err
	}
	addrs, err := pw.be.addN(200)
	if err != nil {
		return err
	}
	r0, err := pw.nginxReloads()
	if err != nil {
		return err
	}
	t0 := time.Now()
	last, err := burstWrites(ctx, pw.world, addrs, func(i int) string {
		return registry.Key("", fmt.Sprintf("burst%d", i%burstApps), benchEnv, addrs[i])
	})
	if err != nil {
		return err
	}
	spread := time.Since(t0)
	at, err := pw.acks.waitAck(ctx, last, time.Minute)
	if err != nil {
		return err
	}
	wrong := pushBurstCheck(ctx, pw, bases, addrs[100:])
	// Anything still scheduled would show up as a reload within a second.
	if err := sleep(ctx, time.Second); err != nil {
		return err
	}
	r1, err := pw.nginxReloads()
	if err != nil {
		return err
	}
	t.add(name+"burst (200 adds + 100 removals over 10 apps): nginx reloads", count, r1-r0).with("0 (issue 9)", "")
	t.dur(name+"burst: time to the final state (from the first write)", at.Sub(t0))
	t.dur(name+"burst: time the 300 writes took", spread).with("~1 s", "")
	r := t.add(name+"burst: final peers exactly right (nginx's dict, peers file, answers)", yesno, map[bool]float64{true: 1}[wrong == nil])
	if wrong != nil {
		r.note = wrong.Error()
	}
	return nil
}

// pushBurstCheck compares each burst app's peers in nginx's dict, in the
// rendered peers file and in nginx's answers with what is registered: its
// base instance and live[j], which belongs to app (100+j) % burstApps.
func pushBurstCheck(ctx context.Context, pw *pushWorld, bases, live []netip.AddrPort) error {
	want := burstWant(bases, live)
	held, err := pw.push.Peers(ctx)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(pw.peers)
	if err != nil {
		return err
	}
	file, err := nginxpush.Decode(b)
	if err != nil {
		return fmt.Errorf("peers file: %w", err)
	}
	for svc, addrs := range want {
		for src, got := range map[string][]netip.AddrPort{"nginx holds": held.Services[svc], "peers file has": file.Services[svc]} {
			got = slices.SortedFunc(slices.Values(got), netip.AddrPort.Compare)
			if !slices.Equal(got, addrs) {
				return fmt.Errorf("%s %v for %s; want %v", src, got, svc, addrs)
			}
		}
		if err := answeredBy(pw.prober(svc), addrs); err != nil {
			return fmt.Errorf("nginx %s: %w", svc, err)
		}
	}
	return nil
}

// burstBases registers one instance of each burst app and waits until
// the renderer acknowledges them: the apps exist before the burst.
func burstBases(ctx context.Context, w *world) ([]netip.AddrPort, error) {
	bases, err := w.be.addN(burstApps)
	if err != nil {
		return nil, err
	}
	var rev int64
	for i, a := range bases {
		if rev, err = w.put(ctx, registry.Key("", fmt.Sprintf("burst%d", i), benchEnv, a), registry.Value(a)); err != nil {
			return nil, err
		}
	}
	_, err = w.acks.waitAck(ctx, rev, time.Minute)
	return bases, err
}

// burstWant is what the burst leaves registered with app bases: per app
// its base instance (bases[i] belongs to burst<i>) and live[j], which
// belongs to app (100+j) % burstApps; each app's sorted.
func burstWant(bases, live []netip.AddrPort) map[string][]netip.AddrPort {
	want := map[string][]netip.AddrPort{}
	for i, a := range bases {
		svc := registry.Service(fmt.Sprintf("burst%d", i), benchEnv)
		want[svc] = append(want[svc], a)
	}
	for j, a := range live {
		svc := registry.Service(fmt.Sprintf("burst%d", (100+j)%burstApps), benchEnv)
		want[svc] = append(want[svc], a)
	}
	for _, addrs := range want {
		slices.SortFunc(addrs, netip.AddrPort.Compare)
	}
	return want
}

// answeredBy asks 2×len(addrs) times: every answer must come from addrs,
// and every one of addrs must answer (round robin).
func answeredBy(p *prober, addrs []netip.AddrPort) error {
	seen := map[string]bool{}
	for range 2 * len(addrs) {
		a, err := p.get()
		if err != nil {
			return err
		}
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !slices.Contains(addrs, ap) {
			return fmt.Errorf("answered by %q, which is not registered", a)
		}
		seen[a] = true
	}
	if len(seen) != len(addrs) {
		return fmt.Errorf("%d of its %d instances answered", len(seen), len(addrs))
	}
	return nil
}

// pushScale is the scale test on the push path: opt.apps apps of
// opt.perApp instances written before the renderer starts, then the
// add → remove pattern on one more app.
func pushScale(ctx context.Context, opt *options, t *table) error {
	pw, err := newPushWorld(ctx, opt, "push-scale", 0)
	if err != nil {
		return err
	}
	defer pw.close()
	var kvs [][2]string
	for a := range opt.apps {
		app := fmt.Sprintf("app%04d", a)
		for i := range opt.perApp {
			ip := instanceAddr(a, i)
			kvs = append(kvs, [2]string{registry.Key("", app, benchEnv, ip), registry.Value(ip)})
		}
	}
	if err := pw.putAll(ctx, kvs); err != nil {
		return err
	}
	name := fmt.Sprintf("%sscale, %d instances over %d apps: ", pushName, len(kvs), opt.apps)
	first, err := pw.startRenderer(ctx, 30*time.Minute)
	if err != nil {
		return err
	}
	t.dur(name+"first full render (all upstreams rendered, checked, reloaded; all peers pushed)", first)
	held, err := pw.push.Peers(ctx)
	if err != nil {
		return err
	}
	if n := peerCount(held); n != len(kvs) {
		return fmt.Errorf("nginx holds %d peers after the first render; want %d", n, len(kvs))
	}
	return pushPattern(ctx, pw, t, name, opt.scaleChanges, []float64{50, 99}, func(p float64) string {
		return map[float64]string{99: "≤ 50 ms (issue 9)"}[p]
	})
}

func peerCount(p nginxpush.PeerSet) int {
	n := 0
	for _, as := range p.Services {
		n += len(as)
	}
	return n
}
