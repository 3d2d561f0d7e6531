package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/rollcall/rollcall/registry"
)

// burstApps are the services of the burst; steadyApp takes the stream.
const burstApps, steadyApp = 10, "steady"

func burstSvcs() []string {
	var s []string
	for i := range burstApps {
		s = append(s, registry.Service(fmt.Sprintf("burst%d", i), benchEnv))
	}
	return s
}

// burstResult is one burst: reloads, time to the final state and whether
// that state was exactly right (files and nginx's answers).
type burstResult struct {
	reloads float64
	final   time.Duration
	spread  time.Duration // how long the 300 writes took
	right   bool
	why     string
}

// burst writes 200 registrations and 100 removals over burstApps services
// within about one second (a removal after every second registration, of
// the oldest instance), then waits until the renderer acknowledges the last
// write, i.e. nginx serves it.
func burst(ctx context.Context, w *world) (burstResult, error) {
	var res burstResult
	addrs, err := w.be.addN(200)
	if err != nil {
		return res, err
	}
	key := func(i int) string {
		return registry.Key("", fmt.Sprintf("burst%d", i%burstApps), benchEnv, addrs[i])
	}
	r0, err := w.reloads()
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	last, err := burstWrites(ctx, w, addrs, key)
	if err != nil {
		return res, err
	}
	res.spread = time.Since(t0)
	at, err := w.acks.waitAck(ctx, last, 60*time.Second)
	if err != nil {
		return res, err
	}
	// The ack says nginx serves it; the files and nginx's answers must agree
	// (with a reload_cmd that returns before nginx applied the config, they
	// may lag: then the final state is when they agree).
	final, tries := at, 0
	res.right = true
	err = poll(ctx, 10*time.Second, 10*time.Millisecond, "burst final state", func() error {
		if tries++; tries > 1 {
			final = time.Now()
		}
		return burstCheck(w, addrs[100:])
	})
	if err != nil {
		res.right, res.why, final = false, err.Error(), at
	}
	res.final = final.Sub(t0)
	res.reloads, err = w.reloadsSince(ctx, r0)
	return res, err
}

// burstWrites puts addrs (key(i) each) and deletes the oldest after every
// second put, paced evenly over one second; it returns the last revision.
func burstWrites(ctx context.Context, w *world, addrs []netip.AddrPort, key func(int) string) (last int64, err error) {
	const ops = 300
	gap := time.Second / ops
	t0 := time.Now()
	for i, op := 0, 0; i < len(addrs); i++ {
		if err := sleep(ctx, time.Until(t0.Add(time.Duration(op)*gap))); err != nil {
			return last, err
		}
		if last, err = w.put(ctx, key(i), registry.Value(addrs[i])); err != nil {
			return last, err
		}
		op++
		if i%2 == 1 {
			if last, err = w.del(ctx, key(i/2)); err != nil {
				return last, err
			}
			op++
		}
	}
	return last, nil
}

var serverRE = regexp.MustCompile(`(?m)^\s*server (\S+);`)

// burstCheck compares each burst service's rendered file and nginx's
// answers with the instances that remain (live[i] belongs to service
// (100+i) % burstApps).
func burstCheck(w *world, live []netip.AddrPort) error {
	want := map[string][]string{}
	for i, a := range live {
		svc := registry.Service(fmt.Sprintf("burst%d", (100+i)%burstApps), benchEnv)
		want[svc] = append(want[svc], a.String())
	}
	for svc, addrs := range want {
		slices.Sort(addrs)
		b, err := os.ReadFile(filepath.Join(w.nginx.rendered, svc+".conf"))
		if err != nil {
			return err
		}
		var got []string
		for _, m := range serverRE.FindAllStringSubmatch(string(b), -1) {
			got = append(got, m[1])
		}
		slices.Sort(got)
		if !slices.Equal(got, addrs) {
			return fmt.Errorf("%s.conf has %v; want %v", svc, got, addrs)
		}
		p := newProber(w.nginx, svc)
		seen := map[string]bool{}
		for range 2 * len(addrs) {
			a, err := p.get()
			if err != nil {
				return fmt.Errorf("nginx %s: %w", svc, err)
			}
			if !slices.Contains(addrs, a) {
				return fmt.Errorf("nginx routed %s to %s, which is not registered", svc, a)
			}
			seen[a] = true
		}
		if len(seen) != len(addrs) {
			return fmt.Errorf("nginx routed %s to %d of its %d instances", svc, len(seen), len(addrs))
		}
	}
	return nil
}

// streamResult is one steady stream: reloads and the longest a change
// waited until nginx served it.
type streamResult struct {
	reloads float64
	worst   time.Duration
	p50     time.Duration
}

// stream makes one change every 100 ms for 10 s on steadyApp (register an
// instance, remove it 100 ms later, ...) and times each change from its write
// to the renderer's acknowledgement of its revision.
func stream(ctx context.Context, w *world) (streamResult, error) {
	var res streamResult
	r0, err := w.reloads()
	if err != nil {
		return res, err
	}
	type change struct {
		rev int64
		at  time.Time
	}
	var cs []change
	var key string
	t0 := time.Now()
	for k := range 100 {
		if err := sleep(ctx, time.Until(t0.Add(time.Duration(k)*100*time.Millisecond))); err != nil {
			return res, err
		}
		at := time.Now()
		var rev int64
		if k%2 == 0 {
			a, err := w.be.add()
			if err != nil {
				return res, err
			}
			key = registry.Key("", steadyApp, benchEnv, a)
			rev, err = w.put(ctx, key, registry.Value(a))
			if err != nil {
				return res, err
			}
		} else if rev, err = w.del(ctx, key); err != nil {
			return res, err
		}
		cs = append(cs, change{rev, at})
	}
	if _, err := w.acks.waitAck(ctx, cs[len(cs)-1].rev, 60*time.Second); err != nil {
		return res, err
	}
	if res.reloads, err = w.reloadsSince(ctx, r0); err != nil {
		return res, err
	}
	var waits []time.Duration
	for _, c := range cs {
		at, _ := w.acks.ackedAt(c.rev)
		waits = append(waits, at.Sub(c.at))
	}
	res.worst, res.p50 = slices.Max(waits), percentile(waits, 50)
	return res, nil
}
