package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestTrafficFollowsRegistrations: two registered backends get the traffic
// through nginx; a deleted one stops getting it, at the latest when the
// renderer acknowledges the delete.
func TestTrafficFollowsRegistrations(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startShipped()
	r.startRenderer()
	b2 := r.serve(5*time.Second, "a_test", "b1", "b2")[1]

	// The renderer acknowledges a revision only once nginx runs it (what a
	// registrar's drain relies on): from the moment its ack covers the
	// delete, b2 must get nothing more.
	r.waitAck(5*time.Second, r.del(instanceKey(t, "a_test", b2.addr)))
	before := b2.hits.Load()
	if err := r.servedBy("a_test", "b1"); err != nil {
		t.Fatalf("after the ack of the delete: %v", err)
	}
	if got := b2.hits.Load(); got != before {
		t.Fatalf("deleted backend b2 got %d requests after the ack", got-before)
	}
	if up := read(t, r.out+"/upstreams.conf"); strings.Contains(up, b2.addr.String()) {
		t.Fatalf("upstreams.conf still names deleted %s:\n%s", b2.addr, up)
	}
	for _, f := range []string{"upstreams.conf", "proxy.conf"} {
		fi, err := os.Stat(filepath.Join(r.out, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o644 {
			t.Errorf("%s: mode %v; want -rw-r--r-- (the shipped mode)", f, fi.Mode())
		}
	}
	r.waitReady(5 * time.Second)
}

// TestSingleRegistrationLatency: with no configured wait, one registration
// is served through nginx within 1s (the brief allows 2s; it takes ~150ms):
// right after the renderer started (a startup pass spends no reload budget)
// and isolated (the renderer idle for longer than its cooldown). It logs
// put->served and put->reload confirmed.
func TestSingleRegistrationLatency(t *testing.T) {
	r := newRig(t)
	r.startShipped()
	r.startRenderer()
	r.waitReady(10 * time.Second)
	steps := []struct {
		name     string
		backend  string
		deadline time.Duration
	}{
		{"right after start", "b1", time.Second},
		{"isolated", "b2", time.Second},
	}
	var want []string
	for _, s := range steps {
		if s.name == "isolated" {
			r.waitIdle(5*time.Second, cooldown+200*time.Millisecond)
		}
		b := newBackend(t, s.backend)
		want = append(want, s.backend)
		n := len(r.reloads())
		start := time.Now()
		r.register("a_test", b)
		waitfor.Cond(t, s.deadline, s.name+": registration not served through nginx", func() error {
			return r.servedBy("a_test", want...)
		})
		served := time.Since(start)
		r.waitApplied(5*time.Second, n+1)
		rl := r.reloads()[n]
		t.Logf("%s: put -> served through nginx %v (polled every %v); put -> reload confirmed %v; reload_cmd took %v",
			s.name, served.Round(time.Millisecond), waitfor.Interval, rl.end.Sub(start).Round(time.Millisecond),
			rl.end.Sub(rl.start).Round(time.Millisecond))
	}
}

// TestLastInstanceRemoved: with the shipped per-app upstream, removing an
// app's last instance keeps nginx's config valid and the app answers 502;
// registering again serves it.
func TestLastInstanceRemoved(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startNginx(r.perApp("a_test"))
	r.onetime()
	r.startRenderer()
	k := r.register("a_test", newBackend(t, "b1"))
	r.waitServed(5*time.Second, "a_test", "b1")

	r.del(k)
	waitfor.Cond(t, 5*time.Second, "/a_test/ with no instances does not answer 502", func() error {
		resp, err := r.http.Get(r.nginx.URL("/a_test/"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			return fmt.Errorf("GET /a_test/: %s", resp.Status)
		}
		return nil
	})
	r.waitReady(5 * time.Second)
	if got := servers(read(t, r.out+"/a_test.conf")); len(got) != 0 {
		t.Fatalf("a_test.conf still lists %v", got)
	}
	r.register("a_test", newBackend(t, "b2"))
	r.waitServed(5*time.Second, "a_test", "b2")
}

// TestWaitQuiescence: with --wait min:max a registration is applied only
// after min of quiet, and a stream of changes that never goes quiet is
// applied at most max after its first change.
func TestWaitQuiescence(t *testing.T) {
	t.Parallel()
	const minQuiet, maxWait = 500 * time.Millisecond, 1500 * time.Millisecond
	r := newRig(t)
	r.startShipped()
	r.startRenderer("--wait", fmt.Sprintf("%v:%v", minQuiet, maxWait))
	r.waitReady(10 * time.Second)

	start := time.Now()
	r.register("a_test", newBackend(t, "b1"))
	r.waitServed(5*time.Second, "a_test", "b1")
	if took := time.Since(start); took < minQuiet {
		t.Fatalf("registration served after %v; want at least the %v of quiet", took, minQuiet)
	} else {
		t.Logf("quiet registration served after %v", took.Round(time.Millisecond))
	}

	// Keep poking a_test with values the template skips, every 100ms for
	// 3s: never min of quiet, so only max applies b2.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	start = time.Now()
	r.register("a_test", newBackend(t, "b2"))
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 30; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, opTimeout)
			r.kv.Put(pctx, "/a_test/junk", strconv.Itoa(i))
			pcancel()
		}
	})
	r.waitServed(maxWait+time.Second, "a_test", "b1", "b2")
	t.Logf("registration amid a stream of changes served after %v", time.Since(start).Round(time.Millisecond))
}
