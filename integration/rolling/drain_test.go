package rolling_test

import (
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proctest"
)

// TestDrainLayouts: with a real renderer and real registrars, the drain
// finds the renderer and waits for its ack in every supported prefix
// layout: a global renderer --prefix, per-resource prefixes, both, a
// registrar below the renderer's prefix, a per-app resource. The app is
// stopped only after the ack, and got no request after its SIGTERM.
func TestDrainLayouts(t *testing.T) {
	bins.Need(t)
	svc := "/" + app + "_" + env
	for _, tc := range []struct {
		name              string
		prefix, regPrefix string // renderer's --prefix, registrars' --prefix
		resPrefix, key    string // the resource's prefix and its one key
		dir               string // the instances' store dir, as the template sees it
	}{
		{"no prefixes", "", "", "/", svc, svc},
		{"global prefix", "/svc", "/svc", "/", svc, svc},
		{"per-resource prefix", "", "/svc", "/svc", svc, svc},
		{"global and per-resource prefix", "/svc", "/svc", "/replaced", svc, svc},
		{"registrar below the renderer's prefix", "/dc1", "/dc1/svc", "/", "/svc" + svc, "/svc" + svc},
		{"per-app resource", "", "/svc", "/svc" + svc, "/", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t, gatewayConfig{
				server: rollingServer, resources: getvsResource(tc.resPrefix, tc.key),
				templates: map[string]string{"getvs.tmpl": getvsAt(tc.dir)}, plainReload: true,
				prefix: tc.prefix, regPrefix: tc.regPrefix,
			})
			url := g.nginx.URL("/")
			a, b := g.startBackend(t, 5*time.Second), g.startBackend(t, 5*time.Second)
			waitServed(t, url, addrs([]*backend{a, b}), 20*time.Second)
			a.stop(t)
			proctest.AssertLogged(t, a.reg, "drain: waiting for renderers")
			proctest.AssertLogged(t, a.reg, "drain: renderers acknowledged")
			if r := a.readReport(t); r.AfterSignal > 0 {
				t.Errorf("%s got %d requests after its SIGTERM", a.addr, r.AfterSignal)
			}
			waitServed(t, url, []string{b.addr}, 10*time.Second)
			b.stop(t)
		})
	}
}
