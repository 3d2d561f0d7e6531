package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rollcall/rollcall/registry"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// hapName prefixes the `haproxy` part's rows when HAProxy is missing.
const hapName = "HAProxy: "

// hapPart is the `haproxy` part (issue 12): opt.hapRuns runs of each
// variant's rows. Without haproxy the rows say so.
func hapPart(ctx context.Context, opt *options, t *table, logf func(string, ...any)) error {
	bin, err := lookHAProxy(opt.haproxy)
	if err != nil {
		t.add(hapName+"every row", count, math.NaN()).note = "n/a: no haproxy (apt-get install haproxy)"
		return nil
	}
	for _, v := range hapVariants {
		for i := range opt.hapRuns {
			logf("%srun %d/%d: %d add → remove cycles%s, burst, stream", v.name, i+1, opt.hapRuns, opt.changes,
				map[bool]string{true: " with the floor between"}[v.reloadFloor])
			if err := hapRun(ctx, opt, t, bin, v); err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
		}
	}
	return nil
}

// hapRun runs variant v's rows once in a world of its own.
func hapRun(ctx context.Context, opt *options, t *table, bin string, v hapVariant) error {
	hw, err := newHapWorld(ctx, opt, "haproxy", bin, v)
	if err != nil {
		return err
	}
	defer hw.close()
	if _, err := hw.startRenderer(ctx, 2*time.Minute); err != nil {
		return err
	}
	floorRow, err := hapPattern(ctx, hw, t, v, opt.changes)
	if err != nil {
		return err
	}
	if err := hapBurst(ctx, hw, t, v, floorRow); err != nil {
		return err
	}
	// The stream's app keeps one instance, so each change of the stream is
	// a membership change (as in the burst).
	base, err := hw.be.add()
	if err != nil {
		return err
	}
	rev, err := hw.put(ctx, registry.Key("", steadyApp, benchEnv, base), registry.Value(base))
	if err != nil {
		return err
	}
	if _, err := hw.acks.waitAck(ctx, rev, time.Minute); err != nil {
		return err
	}
	s, err := stream(ctx, hw.world)
	if err != nil {
		return err
	}
	t.add(v.name+"steady stream (a change every 100 ms for 10 s): renderer's reloads", count, s.reloads).with(v.zero(), "")
	t.dur(v.name+"steady stream: median wait", s.p50).with("", floorRow)
	t.dur(v.name+"steady stream: worst wait", s.worst).with("", floorRow)
	return nil
}

// hapPattern registers the probe app (an app appearing: a reload on any
// variant), then runs n cycles of the add → remove pattern (propagate) on
// it. With v.reloadFloor it measures HAProxy's floor between the cycles
// (once the renderer acknowledged the remove), so the floor sees the
// machine the changes saw. It adds the percentiles (with the floor's beside
// them), where the time went, and the reloads HAProxy itself ran; it
// returns the floor p50 row ("" without a floor).
func hapPattern(ctx context.Context, hw *hapWorld, t *table, v hapVariant, n int) (string, error) {
	p, err := hapProbe(ctx, hw)
	if err != nil {
		return "", err
	}
	var fls []floor
	between := func(ctx context.Context, rev int64) error {
		if _, err := hw.acks.waitAck(ctx, rev, time.Minute); err != nil {
			return err
		}
		if !v.reloadFloor {
			return nil
		}
		f, err := hw.hap.floor(ctx)
		fls = append(fls, f)
		return err
	}
	before, err := hw.scrape()
	if err != nil {
		return "", err
	}
	r0, err := hw.hap.reloads(ctx)
	if err != nil {
		return "", err
	}
	c, err := propagate(ctx, hw.world, p, n, between)
	if err != nil {
		return "", err
	}
	after, err := hw.scrape()
	if err != nil {
		return "", err
	}
	r1, err := hw.hap.reloads(ctx)
	if err != nil {
		return "", err
	}
	changes := len(c.adds) + len(c.removes)
	floorRow := hapRecord(t, v, c, fls)
	breakdown(t, v.name, before, after, changes)
	if v.noReloads {
		t.add(fmt.Sprintf("%sHAProxy's reloads during the %d changes (`show proc`)", v.name, changes), count, r1-r0).with(v.zero(), "")
		return floorRow, nil
	}
	// The floor's reloads are HAProxy's too: one per cycle.
	t.add(fmt.Sprintf("%sHAProxy's own reloads per change (`show proc`)", v.name), count, (r1-r0-float64(len(fls)))/float64(changes))
	return floorRow, nil
}

// hapProbe registers the probe app's base instance and returns its
// prober once HAProxy routes to it and the renderer acknowledged it
// (propagate waits for the reload budget to be full again).
func hapProbe(ctx context.Context, hw *hapWorld) (*prober, error) {
	p := hw.prober(probeSvc)
	base, err := hw.be.add()
	if err != nil {
		return nil, err
	}
	rev, err := hw.put(ctx, registry.Key("", probeApp, benchEnv, base), registry.Value(base))
	if err != nil {
		return nil, err
	}
	if _, err := p.routed(ctx, base.String(), 2*time.Minute); err != nil {
		return nil, err
	}
	if _, err := hw.acks.waitAck(ctx, rev, time.Minute); err != nil {
		return nil, err
	}
	return p, nil
}

// zero is the target of v's reload rows when it promises none.
func (v hapVariant) zero() string {
	if v.noReloads {
		return "0 (issue 12)"
	}
	return ""
}

// hapRecord adds the floor's rows (check + reload until served, at each
// percentile, from the samples fls taken between the cycles; the check and
// the reload alone at p50) and the propagation and deregistration
// percentiles of c, each beside the floor at the same percentile. Without
// samples there is no floor. It returns the floor p50 row, or "".
func hapRecord(t *table, v hapVariant, c changes, fls []floor) string {
	pcts := []float64{50, 95, 99}
	floorRow := func(float64) string { return "" }
	if len(fls) > 0 {
		var tot, chk, rl []time.Duration
		for _, f := range fls {
			tot, chk, rl = append(tot, f.total()), append(chk, f.test), append(rl, f.reload)
		}
		for _, p := range pcts {
			t.dur(hapFloorName(v.name, p, len(fls)), percentile(tot, p))
		}
		t.dur(v.name+"HAProxy's floor: `haproxy -c` alone p50", percentile(chk, 50))
		t.dur(v.name+"HAProxy's floor: reload until served p50", percentile(rl, 50))
		floorRow = func(p float64) string { return hapFloorName(v.name, p, len(fls)) }
	}
	for _, x := range []struct {
		what string
		ds   []time.Duration
	}{{"propagation", c.adds}, {"deregistration", c.removes}} {
		for _, p := range pcts {
			name := fmt.Sprintf("%s%s p%.0f (%d changes)", v.name, x.what, p, len(x.ds))
			t.dur(name, percentile(x.ds, p)).with(v.target(x.what, p), floorRow(p))
		}
	}
	return floorRow(50)
}

// hapFloorName is the floor row at percentile p of k samples.
func hapFloorName(prefix string, p float64, k int) string {
	return fmt.Sprintf("%sHAProxy's floor: `haproxy -c` + reload until served p%.0f (%d, between the cycles)", prefix, p, k)
}

// hapBurst is the burst of issue 12: 200 registrations and 100 removals
// over burstApps apps within about a second. The apps exist before it (one
// instance each, acknowledged; deployed with v.burstDeploy first), so every
// change is a membership change and the runtime API's variant needs no
// reload. Reloads are HAProxy's own (`show proc`), over the burst and one
// second after its acknowledgement.
func hapBurst(ctx context.Context, hw *hapWorld, t *table, v hapVariant, floorRow string) error {
	name := v.name
	bases, err := hapBurstBases(ctx, hw, v.burstDeploy)
	if err != nil {
		return err
	}
	addrs, err := hw.be.addN(200)
	if err != nil {
		return err
	}
	r0, err := hw.hap.reloads(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	last, err := burstWrites(ctx, hw.world, addrs, func(i int) string {
		return registry.Key("", fmt.Sprintf("burst%d", i%burstApps), benchEnv, addrs[i])
	})
	if err != nil {
		return err
	}
	spread := time.Since(t0)
	at, err := hw.acks.waitAck(ctx, last, time.Minute)
	if err != nil {
		return err
	}
	// The ack says HAProxy serves it; its own view, the file and its
	// answers must agree. If they lag, the final state is when they agree.
	final, tries := at, 0
	wrong := poll(ctx, 10*time.Second, 10*time.Millisecond, "burst final state", func() error {
		if tries++; tries > 1 {
			final = time.Now()
		}
		return hapBurstCheck(ctx, hw, bases, addrs[100:])
	})
	if wrong != nil {
		final = at
	}
	if err := sleep(ctx, time.Second); err != nil { // a trailing reload shows within it
		return err
	}
	r1, err := hw.hap.reloads(ctx)
	if err != nil {
		return err
	}
	target := "≤ 3 (issue 12)"
	if v.noReloads {
		target = v.zero()
	}
	t.add(name+"burst (200 adds + 100 removals over 10 apps): HAProxy's reloads", count, r1-r0).with(target, "")
	t.dur(name+"burst: time to the final state (from the first write)", final.Sub(t0)).with("", floorRow)
	t.dur(name+"burst: time the 300 writes took", spread).with("~1 s", "")
	r := t.add(name+"burst: final servers exactly right (HAProxy's `show servers state`, file, answers)", yesno, map[bool]float64{true: 1}[wrong == nil])
	if wrong != nil {
		r.note = wrong.Error()
	}
	return nil
}

// hapBurstBases registers each burst app with its base instance and
// deploy-1 more in one transaction (the renderer first sees each app at
// that size), waits for the acknowledgement, then scales them back to their
// base instance: the apps then have one instance each, and on the runtime
// API's path the slots of deploy. With deploy ≤ 1 it is burstBases.
func hapBurstBases(ctx context.Context, hw *hapWorld, deploy int) ([]netip.AddrPort, error) {
	if deploy <= 1 {
		return burstBases(ctx, hw.world)
	}
	addrs, err := hw.be.addN(burstApps * deploy)
	if err != nil {
		return nil, err
	}
	var puts, dels []clientv3.Op
	for i, a := range addrs {
		key := registry.Key("", fmt.Sprintf("burst%d", i%burstApps), benchEnv, a)
		puts = append(puts, clientv3.OpPut(key, registry.Value(a)))
		if i >= burstApps {
			dels = append(dels, clientv3.OpDelete(key))
		}
	}
	if err := hw.txnAcked(ctx, puts); err != nil {
		return nil, err
	}
	// The renderer's mass-removal guard holds (30 s) a render removing
	// more than half of a resource's instances: scale down by at most half
	// of the burst apps' instances at a time, as an operator would.
	for n := len(addrs); len(dels) > 0; {
		k := min(len(dels), n/2)
		if err := hw.txnAcked(ctx, dels[:k]); err != nil {
			return nil, err
		}
		dels, n = dels[k:], n-k
	}
	return addrs[:burstApps], nil
}

// txnAcked commits ops in one transaction and waits until the renderer
// acknowledges it.
func (hw *hapWorld) txnAcked(ctx context.Context, ops []clientv3.Op) error {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	r, err := hw.etcd.kv.Txn(c).Then(ops...).Commit()
	cancel()
	if err != nil {
		return fmt.Errorf("deploy the burst apps: %w", err)
	}
	_, err = hw.acks.waitAck(ctx, r.Header.Revision, time.Minute)
	return err
}

// hapBurstCheck compares each burst app's servers in HAProxy's runtime
// (`show servers state`, servers not in maint), in the rendered files and in
// HAProxy's answers with what is registered: its base instance and live[j],
// which belongs to app (100+j) % burstApps.
func hapBurstCheck(ctx context.Context, hw *hapWorld, bases, live []netip.AddrPort) error {
	want := burstWant(bases, live)
	held, err := hw.hap.servers(ctx)
	if err != nil {
		return err
	}
	files, err := renderedServers(hw.hap.rendered)
	if err != nil {
		return err
	}
	for svc, addrs := range want {
		var s []string
		for _, a := range addrs {
			s = append(s, a.String())
		}
		slices.Sort(s)
		for src, got := range map[string][]string{"HAProxy runs": held[svc], "the rendered files have": files[svc]} {
			if !slices.Equal(got, s) {
				return fmt.Errorf("%s %v for %s; want %v", src, got, svc, s)
			}
		}
		if err := answeredBy(hw.prober(svc), addrs); err != nil {
			return fmt.Errorf("haproxy %s: %w", svc, err)
		}
	}
	return nil
}

var (
	hapBackendRE  = regexp.MustCompile(`^backend (\S+)`)
	hapServerRE   = regexp.MustCompile(`^\s+server \S+ (\d+\.\d+\.\d+\.\d+:\d+)\b(.*)`)
	hapDisabledRE = regexp.MustCompile(`\bdisabled\b`)
)

// renderedServers reads every rendered *.cfg: backend → its server
// addresses, sorted; a server line marked `disabled` (a free slot) is not
// one.
func renderedServers(dir string) (map[string][]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.cfg"))
	if err != nil {
		return nil, err
	}
	got := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		backend := ""
		for line := range strings.Lines(string(b)) {
			if m := hapBackendRE.FindStringSubmatch(line); m != nil {
				backend = m[1]
			} else if m := hapServerRE.FindStringSubmatch(line); m != nil && backend != "" && !hapDisabledRE.MatchString(m[2]) {
				got[backend] = append(got[backend], m[1])
			}
		}
	}
	for _, s := range got {
		slices.Sort(s)
	}
	return got, nil
}
