package rolling_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestCrash kills one registrar and its app with SIGKILL under load: the
// shipped proxy template's proxy_next_upstream retries the dead instance's
// requests on another, so every GET succeeds, and the key goes within the TTL.
func TestCrash(t *testing.T) {
	bins.Need(t)
	const server = "        include @PREFIX@/rendered-server-*.conf;\n"
	for _, tc := range []struct {
		name string
		gw   gatewayConfig
	}{
		{"reload", gatewayConfig{server: server, resources: shippedResources}},
		// The Lua balancer retries on another peer (set_more_tries) under
		// the same shipped proxy_next_upstream.
		{"lua-push", gatewayConfig{server: server, resources: luaResources, lua: true}},
	} {
		t.Run(tc.name, func(t *testing.T) { crash(t, tc.gw) })
	}
}

func crash(t *testing.T, gw gatewayConfig) {
	g := startGateway(t, gw)
	url := g.nginx.URL("/" + app + "_" + env + "/")
	bs := make([]*backend, 3)
	for i := range bs {
		bs[i] = g.startBackend(t, 5*time.Second)
	}
	waitServed(t, url, addrs(bs), 20*time.Second)

	l := &load{url: url, clients: 32, pace: 5 * time.Millisecond, maxRequests: 5_000_000, maxTime: time.Minute}
	l.start(t.Context())
	defer l.stop()
	victim := bs[0]
	waitfor.Cond(t, 10*time.Second, "load reaches the victim", func() error {
		if l.served(victim.addr) < 50 {
			return fmt.Errorf("spread%s", l.spread())
		}
		return nil
	})

	apps := proc.Descendants(victim.reg.Pid())
	if len(apps) == 0 {
		t.Fatalf("no app process below registrar %d", victim.reg.Pid())
	}
	killed := time.Now()
	proctest.Signal(t, victim.reg, syscall.SIGKILL) // the registrar first: it must not deregister
	for _, pid := range apps {
		// The app dies with its registrar (parent-death signal): it may be
		// gone already.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("kill -9 app %d: %v", pid, err)
		}
	}

	waitfor.Cond(t, ttl+2*time.Second, "key "+victim.key+" expires", func() error {
		keys, err := g.instances(t)
		if err != nil {
			return err
		}
		if slices.Contains(keys, victim.key) {
			return fmt.Errorf("still registered after %v", time.Since(killed).Round(time.Millisecond))
		}
		return nil
	})
	gone := time.Since(killed)
	t.Logf("CRASH: key gone %v after kill -9 (TTL %v)", gone.Round(time.Millisecond), ttl)
	// etcd's lessor checks expiry every 500ms; a keep-alive is sent every TTL/3.
	if gone > ttl+time.Second {
		t.Errorf("key gone %v after the kill; want within the TTL %v (+1s of etcd's expiry granularity)", gone, ttl)
	}
	waitServed(t, url, addrs(bs[1:]), 10*time.Second)
	l.keepOn(t, 500, "after the crash")
	st := l.finish(t)
	if st.failed > 0 {
		t.Errorf("%d GETs failed while an instance crashed; want 0 (proxy_next_upstream)", st.failed)
	}
	// Zero failures must be the retry's doing: nginx did send requests to
	// the dead instance, and each one was answered by another.
	errorLog, err := os.ReadFile(filepath.Join(g.nginx.Prefix, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	tried := regexp.MustCompile(`(?m)^.*\[error\].*upstream: "http://`+regexp.QuoteMeta(victim.addr)+`/`).FindAll(errorLog, -1)
	t.Logf("CRASH: nginx sent %d requests to the dead instance; the shipped template retried each on another", len(tried))
	if len(tried) == 0 {
		t.Errorf("nginx's error.log shows no request to the dead instance %s: the retry was never exercised", victim.addr)
	}
}
