package rolling_test

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// rollingServer proxies to the rendered upstream with retries off, so a
// request nginx sends to a stopped backend is a failed request, not hidden.
const rollingServer = `
        location / {
            set $up ` + app + "_" + env + `;
            proxy_pass http://$up;
            proxy_next_upstream off;
        }
`

// TestRollingDeploy replaces each of 4 backends in turn under 32 concurrent
// clients: with drain acknowledgements no request fails, behind nginx and
// behind HAProxy (confirmed reloads); with --drain-timeout 0 the failures it
// would cost are reported.
func TestRollingDeploy(t *testing.T) {
	bins.Need(t)
	typed := gatewayConfig{server: rollingServer, resources: upstreamResource}
	// A confd setup as it is: getvs template, plain `nginx -s reload`.
	confd := gatewayConfig{server: rollingServer, resources: confdResource,
		templates: map[string]string{"getvs.tmpl": getvsTemplate}, plainReload: true}
	// The shipped HAProxy setup, retries 0 and no redispatch, haproxy-reload.
	haproxy := gatewayConfig{haproxy: true, path: "/" + app + "_" + env + "/"}
	// The same with `systemctl reload haproxy`: the renderer confirms it
	// through the master CLI.
	haproxySystemctl := haproxy
	haproxySystemctl.plainReload = true
	// The shipped runtime API setup: instances set through HAProxy's
	// runtime API, no reload, no client connection closed.
	haproxyRuntime := haproxy
	haproxyRuntime.haproxyRuntime = true
	for _, tc := range []struct {
		name      string
		gw        gatewayConfig
		drain     time.Duration
		wantClean bool
	}{
		{"acks", typed, 5 * time.Second, true},
		{"drain-timeout-0", typed, 0, false},
		{"confd-getvs-plain-reload", confd, 5 * time.Second, true},
		// The Lua module: instance changes are pushed, nginx never reloads,
		// so no client connection is closed either.
		{"lua-push", gatewayConfig{server: rollingServer, resources: luaResources, lua: true}, 5 * time.Second, true},
		{"haproxy", haproxy, 5 * time.Second, true},
		{"haproxy-systemctl-reload", haproxySystemctl, 5 * time.Second, true},
		{"haproxy-runtime", haproxyRuntime, 5 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := rollingDeploy(t, tc.gw, tc.drain, tc.wantClean)
			t.Logf("ROLLING %s: %d failed requests", tc.name, failed)
		})
	}
}

func rollingDeploy(t *testing.T, gw gatewayConfig, drain time.Duration, wantClean bool) (failed int64) {
	g := startGateway(t, gw)
	url := g.url()

	old := make([]*backend, 4)
	for i := range old {
		old[i] = g.startBackend(t, drain)
	}
	waitServed(t, url, addrs(old), 20*time.Second)

	const maxTime = 3 * time.Minute
	l := &load{url: url, clients: 32, pace: 5 * time.Millisecond, maxRequests: 5_000_000, maxTime: maxTime}
	reloads0 := g.reloads(t)
	began := time.Now()
	l.start(t.Context())
	defer l.stop()

	exited := make([]time.Time, len(old))
	fresh := make([]*backend, len(old))
	for i, o := range old {
		n := g.startBackend(t, drain)
		fresh[i] = n
		waitfor.Cond(t, 15*time.Second, "new backend "+n.addr+" serves through nginx", func() error {
			if c := l.served(n.addr); c == 0 {
				return fmt.Errorf("no request yet; spread%s", l.spread())
			}
			return nil
		})
		exited[i] = o.stop(t)
		if wantClean {
			// The push path may acknowledge the removal before the
			// registrar first looks (renderers=1, nothing left to wait for).
			if out := o.reg.Output(); !drained.MatchString(out) {
				t.Errorf("%s did not log that the renderer acknowledged its removal:\n%s", o.reg.Name, proc.Tail(out, 20))
			}
		}
		t.Logf("replaced %s by %s (registrar exit %v)", o.addr, n.addr, o.reg.State())
	}
	l.keepOn(t, 500, "after the last replacement")
	if gw.haproxy && gw.plainReload {
		proctest.AssertLogged(t, g.renderer, "haproxy reload confirmed")
	}
	st := l.finish(t)
	reloads := g.reloads(t) - reloads0
	took := time.Since(began)
	// retried: closed while a request was sent on it.
	closed := st.closed
	t.Logf("ROLLING: %d gateway reloads, %d client connections closed by the gateway (%d of them under a request), %d failed", reloads, closed, st.retried, st.failed)
	if (gw.lua || gw.haproxyRuntime) && (reloads > 0 || closed > 0 || st.retried > 0) {
		t.Errorf("through the push path (Lua or HAProxy's runtime API): %d gateway reloads, %d client connections closed by the gateway; want 0 and 0", reloads, closed)
	}
	t.Logf("the deploy took %v under load", took.Round(time.Millisecond))
	if took >= maxTime || st.sent >= l.maxRequests {
		t.Errorf("the load ended before the deploy did (%v, %d requests)", took, st.sent)
	}

	for _, n := range fresh {
		n.stop(t)
	}
	for i, o := range old {
		r := o.readReport(t)
		last := l.lastSent[o.addr]
		reused := false
		for _, n := range fresh {
			reused = reused || n.addr == o.addr
		}
		if !reused && last.After(exited[i]) {
			t.Errorf("old backend %s answered a request sent at %v, after its registrar exited at %v",
				o.addr, last.Format(time.StampMilli), exited[i].Format(time.StampMilli))
		}
		msg := fmt.Sprintf("old backend %s: served %d, %d requests arrived after its SIGTERM", o.addr, r.Served, r.AfterSignal)
		if wantClean && r.AfterSignal > 0 {
			t.Error(msg)
		} else {
			t.Log(msg)
		}
	}
	for _, n := range fresh {
		if r := n.readReport(t); r.Served == 0 {
			t.Errorf("new backend %s got no traffic", n.addr)
		}
	}
	if wantClean && st.failed > 0 {
		t.Errorf("%d of %d requests failed during the rolling deploy; want 0", st.failed, st.sent)
	}
	return st.failed
}

// drained matches a registrar's log once every renderer acknowledged its
// removal: after a wait, or already when it first looked.
var drained = regexp.MustCompile(`drain: renderers acknowledged|drain: no renderer to wait for.*renderers=[1-9]`)

func addrs(bs []*backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.addr
	}
	return out
}

// TestRollingDeployRuntimeSlotReuse deploys the 4 backends three times in a
// row behind HAProxy's runtime API under 32 keep-alive clients: 12
// instances through 8 slots, so the second and third deploys put new
// addresses into slots drained of the first and second. Nothing fails,
// nothing reloads, no client connection is closed.
func TestRollingDeployRuntimeSlotReuse(t *testing.T) {
	bins.Need(t)
	g := startGateway(t, gatewayConfig{haproxy: true, haproxyRuntime: true, path: "/" + app + "_" + env + "/"})
	url := g.url()
	cur := make([]*backend, 4)
	for i := range cur {
		cur[i] = g.startBackend(t, 5*time.Second)
	}
	waitServed(t, url, addrs(cur), 20*time.Second)
	l := &load{url: url, clients: 32, pace: 5 * time.Millisecond, maxRequests: 5_000_000, maxTime: 3 * time.Minute}
	reloads0 := g.reloads(t)
	l.start(t.Context())
	defer l.stop()
	for round := range 3 {
		for i, o := range cur {
			n := g.startBackend(t, 5*time.Second)
			waitfor.Cond(t, 15*time.Second, "new backend "+n.addr+" serves through HAProxy", func() error {
				if l.served(n.addr) == 0 {
					return fmt.Errorf("no request yet; spread%s", l.spread())
				}
				return nil
			})
			o.stop(t)
			cur[i] = n
		}
		t.Logf("deploy %d done", round+1)
	}
	l.keepOn(t, 500, "after the last deploy")
	st := l.finish(t)
	reloads := g.reloads(t) - reloads0
	t.Logf("ROLLING x3 (runtime API, slots reused): %d reloads, %d client connections closed, %d failed of %d", reloads, st.closed, st.failed, st.sent)
	if st.failed > 0 || reloads > 0 || st.closed > 0 || st.retried > 0 {
		t.Errorf("%d failed, %d reloads, %d closed (%d under a request); want 0 each", st.failed, reloads, st.closed, st.retried)
	}
}
