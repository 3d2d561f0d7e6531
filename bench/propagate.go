package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer"
)

// probeApp is the service whose changes are timed through nginx; it keeps
// one live instance so nginx always has somewhere to route it.
const probeApp, benchEnv = "probe", "bench"

var probeSvc = registry.Service(probeApp, benchEnv)

// startProbe registers the probe service's base instance and waits until
// nginx routes to it.
func startProbe(ctx context.Context, w *world) (*prober, error) {
	base, err := w.be.add()
	if err != nil {
		return nil, err
	}
	if _, err := w.put(ctx, registry.Key("", probeApp, benchEnv, base), registry.Value(base)); err != nil {
		return nil, err
	}
	p := newProber(w.nginx, probeSvc)
	_, err = p.routed(ctx, base.String(), 120*time.Second)
	return p, err
}

// changes are the timings of the add → remove → add pattern.
type changes struct {
	adds, removes []time.Duration
}

// propagate runs n cycles of issue 8's pattern on the probe service: add an
// instance; once nginx routes to it, wait 150 ms and remove it; add the next
// 1–2 s after the previous add. Each add is timed put → nginx routes to the
// new backend; each remove delete → nginx no longer routes to it. between,
// when set, runs after each remove is timed (given its revision), within
// the wait for the next add.
func propagate(ctx context.Context, w *world, p *prober, n int, between func(context.Context, int64) error) (changes, error) {
	var c changes
	// The world's start (the first full render, the probe's base instance)
	// spent the renderer's reload budget, full again only after a cooldown
	// without changes (renderer.DefaultCooldown): started at once, the
	// first changes waited for tokens (0.4-0.6 s seen), which no change
	// of the pattern meets later. The pattern starts as after any quiet
	// second.
	if err := sleep(ctx, renderer.DefaultCooldown+100*time.Millisecond); err != nil {
		return c, err
	}
	for i := range n {
		a, err := w.be.add()
		if err != nil {
			return c, err
		}
		key := registry.Key("", probeApp, benchEnv, a)
		t0 := time.Now()
		if _, err := w.put(ctx, key, registry.Value(a)); err != nil {
			return c, err
		}
		at, err := p.routed(ctx, a.String(), 30*time.Second)
		if err != nil {
			return c, fmt.Errorf("change %d: %w", i, err)
		}
		c.adds = append(c.adds, at.Sub(t0))
		if err := sleep(ctx, 150*time.Millisecond); err != nil {
			return c, err
		}
		t1 := time.Now()
		rev, err := w.del(ctx, key)
		if err != nil {
			return c, err
		}
		// Two instances in round robin: six answers in a row without it
		// mean it is gone.
		at, err = p.unrouted(ctx, a.String(), 6, 30*time.Second)
		if err != nil {
			return c, fmt.Errorf("change %d: %w", i, err)
		}
		c.removes = append(c.removes, at.Sub(t1))
		if between != nil {
			if err := between(ctx, rev); err != nil {
				return c, err
			}
		}
		next := t0.Add(time.Second + rand.N(time.Second))
		if err := sleep(ctx, time.Until(next)); err != nil {
			return c, err
		}
	}
	return c, nil
}

// pattern measures nginx's floor on w's config, then n cycles of the add →
// remove pattern, and adds both to the table under name with where the time
// went (percentiles pcts, each against target). It returns the floor row's
// name for other rows it bounds.
func pattern(ctx context.Context, w *world, t *table, name string, n int, pcts []float64,
	target func(fl floor, p float64) string) (string, error) {
	p, err := startProbe(ctx, w)
	if err != nil {
		return "", err
	}
	fl, err := w.nginx.floors(ctx, w.opt.floorRuns)
	if err != nil {
		return "", err
	}
	floorRow := recordFloor(t, name, fl)
	before, err := w.scrape()
	if err != nil {
		return "", err
	}
	c, err := propagate(ctx, w, p, n, nil)
	if err != nil {
		return "", err
	}
	after, err := w.scrape()
	if err != nil {
		return "", err
	}
	c.record(t, name, pcts, func(p float64) string { return target(fl, p) }, floorRow)
	breakdown(t, name, before, after, len(c.adds)+len(c.removes))
	return floorRow, nil
}

// record adds the percentiles pcts of the pattern to the table under
// prefix, each with its target (if any) and the floor that bounds it.
func (c changes) record(t *table, prefix string, pcts []float64, target func(p float64) string, floor string) {
	for _, x := range []struct {
		what string
		ds   []time.Duration
	}{{"propagation", c.adds}, {"deregistration", c.removes}} {
		for _, p := range pcts {
			name := fmt.Sprintf("%s%s p%.0f (%d changes)", prefix, x.what, p, len(x.ds))
			t.dur(name, percentile(x.ds, p)).with(target(p), floor)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// instanceAddr is a registrable address nginx never has to reach (the
// bulk of the scale test): 10.<a>.<a>.<i+1>:8080.
func instanceAddr(app, i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(app >> 8), byte(app), byte(i + 1)}), 8080)
}
