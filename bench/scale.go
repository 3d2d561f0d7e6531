package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/rollcall/rollcall/registry"
)

// shareMetric is the renderer's own part of a change: etcd event received →
// file installed, commands excluded.
const shareMetric = "rollcall_renderer_change_to_install_seconds"

// scale measures one layout ("per-app" or "all-in-one") at opt.apps
// services of opt.perApp instances each, plus the probe service.
func scale(ctx context.Context, opt *options, t *table, layout string) error {
	w, err := newWorld(ctx, opt, "scale-"+layout, false)
	if err != nil {
		return err
	}
	defer w.close()
	var kvs [][2]string
	svcs := []string{probeSvc}
	for a := range opt.apps {
		app := fmt.Sprintf("app%04d", a)
		svcs = append(svcs, registry.Service(app, benchEnv))
		for i := range opt.perApp {
			ip := instanceAddr(a, i)
			kvs = append(kvs, [2]string{registry.Key("", app, benchEnv, ip), registry.Value(ip)})
		}
	}
	if err := w.putAll(ctx, kvs); err != nil {
		return err
	}
	if layout == "per-app" {
		err = w.perApp(svcs...)
	} else {
		err = w.allInOne()
	}
	if err != nil {
		return err
	}
	name := fmt.Sprintf("scale, %d instances over %d apps, %s: ", len(kvs), opt.apps, layout)
	first, err := w.startRenderer(ctx, 30*time.Minute)
	if err != nil {
		return err
	}
	reloads, err := w.reloads()
	if err != nil {
		return err
	}
	res := "1 resource"
	if layout == "per-app" {
		res = fmt.Sprintf("%d resources", len(svcs))
	}
	t.dur(name+"first full render ("+res+")", first)
	t.add(name+"reloads in the first full render", count, reloads).with(map[bool]string{true: "1", false: ""}[layout == "per-app"], "")
	_, err = pattern(ctx, w, t, name, opt.scaleChanges, []float64{50, 99}, func(fl floor, _ float64) string {
		return "≤ " + fmtDur(fl.total()+50*time.Millisecond) + " (floor + 50 ms)"
	})
	if err != nil {
		return err
	}
	return rendererCost(ctx, opt, t, w, name)
}

// rendererCost adds the renderer's memory (now and peak) and its CPU over
// opt.idle without changes.
func rendererCost(ctx context.Context, opt *options, t *table, w *world, name string) error {
	rss, err := rssBytes(w.renderer.Pid(), "VmRSS")
	if err != nil {
		return err
	}
	hwm, err := rssBytes(w.renderer.Pid(), "VmHWM")
	if err != nil {
		return err
	}
	t.add(name+"renderer RSS", mb, rss).with("≤ 150 MB", "")
	t.add(name+"renderer peak RSS", mb, hwm).with("≤ 150 MB", "")
	cpu, err := startCPU(w.renderer.Pid())
	if err != nil {
		return err
	}
	if err := sleep(ctx, opt.idle); err != nil {
		return err
	}
	share, err := cpu.share()
	if err != nil {
		return err
	}
	t.add(fmt.Sprintf("%srenderer CPU idle over %v", name, opt.idle), pct, share).with("≈ 0", "")
	if math.IsNaN(share) {
		return fmt.Errorf("no CPU figure")
	}
	return nil
}

// breakdown adds where a change's time goes, from the renderer's metrics
// between two scrapes around n changes: its own share (p50, p99), the mean
// check_cmd and reload_cmd, and reloads per change.
func breakdown(t *table, name string, before, after map[string]float64, n int) {
	for _, q := range []float64{0.5, 0.99} {
		v, _, _ := histQuantile(before, after, shareMetric, q)
		tgt := ""
		if q == 0.99 {
			tgt = "≤ 20 ms"
		}
		t.add(fmt.Sprintf("%sper change: renderer's share p%.0f (event → installed, commands excluded)", name, q*100), ms, v*1e9).with(tgt, "")
	}
	for _, kind := range []string{"check", "reload"} {
		series := fmt.Sprintf(`rollcall_renderer_command_duration_seconds_%%s{kind="%s"}`, kind)
		s := after[fmt.Sprintf(series, "sum")] - before[fmt.Sprintf(series, "sum")]
		k := after[fmt.Sprintf(series, "count")] - before[fmt.Sprintf(series, "count")]
		t.add(fmt.Sprintf("%sper change: %s_cmd mean", name, kind), ms, s/k*1e9)
	}
	r0, _ := sum(before, "rollcall_renderer_reloads_total")
	r1, _ := sum(after, "rollcall_renderer_reloads_total")
	t.add(fmt.Sprintf("%sper change: reloads", name), count, (r1-r0)/float64(n))
}

// recordFloor adds nginx's floor rows under name and returns the name of
// the row that other rows print as their floor.
func recordFloor(t *table, name string, fl floor) string {
	total := name + "nginx's floor: `nginx -t` + reload until served"
	t.dur(total, fl.total())
	t.dur(name+"nginx's floor: `nginx -t` alone", fl.test)
	t.dur(name+"nginx's floor: reload until served", fl.reload)
	t.dur(name+"nginx's floor: reload until only the new workers answer (what a removal waits for after plain `nginx -s reload`)", fl.retire)
	return total
}
