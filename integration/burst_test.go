package integration_test

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

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
// at most 3 reloads, and the files end exactly right.
func TestBurstCoalesced(t *testing.T) {
	r := newRig(t)
	var apps []string
	for a := range 10 {
		apps = append(apps, fmt.Sprintf("app%d_burst", a))
	}
	r.nginx.Start(t, r.perApp(apps...))
	r.onetime()
	r.startRenderer()
	r.waitReady(10 * time.Second)
	r.waitIdle(5*time.Second, cooldown+200*time.Millisecond)
	reloads0 := len(r.reloads())
	metric0 := r.metric("rollcall_renderer_reloads_total")

	// Per app: put 15 instances, delete the first 5; apps interleaved.
	addr := func(a, j int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(a), byte(j + 1)}), 8080)
	}
	want := map[string][]string{}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for k := range 20 {
		for a, svc := range apps {
			if k < 15 {
				r.put(instanceKey(t, svc, addr(a, k)), addr(a, k).String())
			} else {
				r.del(instanceKey(t, svc, addr(a, k-15)))
			}
			<-tick.C
		}
	}
	span := time.Since(start)
	for a, svc := range apps {
		for j := 5; j < 15; j++ {
			want[svc] = append(want[svc], addr(a, j).String())
		}
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
	t.Logf("200 changes over %d apps in %v: %d reload_cmd runs (metrics say %v)", len(apps), span.Round(time.Millisecond), len(rl), metric)
	if span > 1500*time.Millisecond {
		t.Logf("warning: the burst took %v, longer than the 1s the scenario is about", span)
	}
	if len(rl) > 3 || int(metric) != len(rl) {
		t.Errorf("burst cost %d reload_cmd runs, metrics reloads_total +%v; want at most 3, equal", len(rl), metric)
	}
	for i, x := range rl {
		if x.code != 0 {
			t.Errorf("reload %d exited %d", i, x.code)
		}
	}
	// The daemon's files are exactly what a fresh render of etcd gives.
	code, stdout, stderr := run(t, 30*time.Second, bins.renderer, "--noop", "--onetime", "--confdir", r.confdir, "--endpoints", r.etcd.Endpoint)
	if code != 0 || strings.TrimSpace(stdout) != "" {
		t.Fatalf("renderer --noop --onetime after the burst: exit %d, diff:\n%s\n%s", code, stdout, stderr)
	}
}
