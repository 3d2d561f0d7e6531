package integration_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// serverLine matches an upstream member in a rendered file.
var serverLine = regexp.MustCompile(`(?m)^\s*server\s+(\S+?)(\s+down)?;`)

// servers returns the live members (not the zero-instance placeholder) of
// the upstreams in a rendered file, in file order.
func servers(conf string) []string {
	var out []string
	for _, m := range serverLine.FindAllStringSubmatch(conf, -1) {
		if m[2] == "" {
			out = append(out, m[1])
		}
	}
	return out
}

// TestBurstCoalesced: 200 changes over 10 apps within about a second cost
// at most 3 reloads, and the files end exactly right. Then one change renders
// only the resource it touches, and an equal output reloads nothing.
func TestBurstCoalesced(t *testing.T) {
	r := newRig(t)
	var apps []string
	for a := range 10 {
		apps = append(apps, fmt.Sprintf("app%d_burst", a))
	}
	r.startNginx(r.perApp(apps...))
	r.onetime()
	r.startRenderer()
	r.waitReady(10 * time.Second)
	r.waitIdle(5*time.Second, cooldown+200*time.Millisecond)
	reloads0 := len(r.reloads())
	metric0 := r.metric("rollcall_renderer_reloads_total")

	// Per app, one writer: put 15 instances, then delete the first 5, one
	// change every 45ms: 200 changes in about 0.9s.
	addr := func(a, j int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(a), byte(j + 1)}), 8080)
	}
	want := map[string][]string{}
	keys := make([][]string, len(apps))
	for a, svc := range apps {
		for j := range 15 {
			keys[a] = append(keys[a], instanceKey(t, svc, addr(a, j)))
			if j >= 5 {
				want[svc] = append(want[svc], addr(a, j).String())
			}
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(apps))
	for a, svc := range apps {
		wg.Go(func() {
			tick := time.NewTicker(45 * time.Millisecond)
			defer tick.Stop()
			for k := range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				var err error
				if k < 15 {
					_, err = r.kv.Put(ctx, keys[a][k], addr(a, k).String())
				} else {
					_, err = r.kv.Delete(ctx, keys[a][k-15])
				}
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s change %d: %w", svc, k, err)
					return
				}
				<-tick.C
			}
		})
	}
	wg.Wait()
	span := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	waitfor.Cond(t, 10*time.Second, "rendered files not final", func() error {
		for _, svc := range apps {
			got := servers(read(t, fmt.Sprintf("%s/%s.conf", r.out, svc)))
			if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want[svc]))) {
				return fmt.Errorf("%s.conf servers %v; want %v", svc, got, want[svc])
			}
		}
		return nil
	})
	r.waitReady(5 * time.Second)
	r.waitIdle(5*time.Second, cooldown+200*time.Millisecond)

	rl := r.reloads()[reloads0:]
	metric := r.metric("rollcall_renderer_reloads_total") - metric0
	// The reload budget: two applies at once, then one per cooldown. Within
	// 1s that is 3.
	limit := 2 + int((span+cooldown-1)/cooldown)
	t.Logf("200 changes over %d apps in %v: %d reload_cmd runs (metrics say %v)", len(apps), span.Round(time.Millisecond), len(rl), metric)
	if span > time.Second {
		t.Logf("the burst took %v, longer than the 1s the scenario is about: allowing %d reloads", span, limit)
	}
	if len(rl) > limit || int(metric) != len(rl) {
		t.Errorf("burst cost %d reload_cmd runs, metrics reloads_total +%v; want at most %d, equal", len(rl), metric, limit)
	}
	for i, x := range rl {
		if x.code != 0 {
			t.Errorf("reload %d exited %d", i, x.code)
		}
	}
	// A change renders only the resources it touches; output equal to the
	// installed file installs and reloads nothing.
	renders := func(svc string) float64 {
		return r.metric("rollcall_renderer_renders_total", `resource="`+svc+`.toml"`)
	}
	before := map[string]float64{}
	for _, svc := range apps {
		before[svc] = renders(svc)
	}
	n, conf := len(r.reloads()), read(t, r.out+"/app0_burst.conf")
	r.put("/app0_burst/not-an-instance", "junk") // a store change the template skips
	waitfor.Cond(t, 5*time.Second, "app0_burst not rendered again", func() error {
		if got := renders("app0_burst"); got == before["app0_burst"] {
			return fmt.Errorf("renders_total{resource=app0_burst.toml} still %v", got)
		}
		return nil
	})
	r.waitReady(5 * time.Second)
	for _, svc := range apps[1:] {
		if got := renders(svc); got != before[svc] {
			t.Errorf("a change under app0_burst rendered %s: renders_total %v -> %v", svc, before[svc], got)
		}
	}
	if got := len(r.reloads()); got != n {
		t.Errorf("an unchanged render ran reload_cmd %d times", got-n)
	}
	if got := read(t, r.out+"/app0_burst.conf"); got != conf {
		t.Errorf("app0_burst.conf changed by a skipped value:\n%s", got)
	}
	if got := r.metric("rollcall_renderer_renders_total", `resource="app0_burst.toml"`, `result="unchanged"`); got < 1 {
		t.Errorf(`renders_total{resource="app0_burst.toml",result="unchanged"} = %v; want >= 1`, got)
	}

	// The daemon's files are exactly what a fresh render of etcd gives.
	code, stdout, stderr := proctest.Run(t, 30*time.Second, bins.Path("renderer"), "--noop", "--onetime", "--confdir", r.confdir, "--endpoints", r.etcd.Endpoint)
	if code != 0 || strings.TrimSpace(stdout) != "" {
		t.Fatalf("renderer --noop --onetime after the burst: exit %d, diff:\n%s\n%s", code, stdout, stderr)
	}
}
