package registrar

import (
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// TestRunDrain: after SIGTERM the app's SIGTERM waits until every live
// renderer covering the key acknowledged the removal, at most
// --drain-timeout, and not at all when no renderer covers the key.
func TestRunDrain(t *testing.T) {
	const react = 500 * time.Millisecond // how long the fake renderer takes
	ack := func(rev int64, prefixes ...string) string {
		b, _ := json.Marshal(registry.Ack{Revision: rev, Prefixes: prefixes, Updated: time.Now()})
		return string(b)
	}
	type renderer struct {
		id, value string
		leased    bool
	}
	tests := []struct {
		name      string
		drain     time.Duration
		renderers []renderer
		// act plays the renderer once the key is removed at rev.
		act func(ctx context.Context, cli *clientv3.Client, rev int64, leases map[string]clientv3.LeaseID) error
		// the app's SIGTERM comes between min and max after the registrar's
		min, max time.Duration
		afterAct bool // and after act ran
	}{
		{name: "no renderer", drain: 5 * time.Second, max: 1500 * time.Millisecond},
		{name: "renderer not covering the key", drain: 5 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1, "/other")}}, max: 1500 * time.Millisecond},
		{name: "renderer already past", drain: 5 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1<<40, "/")}}, max: 1500 * time.Millisecond},
		{name: "unparsable ack", drain: 5 * time.Second,
			renderers: []renderer{{id: "gw1", value: "{"}}, max: 1500 * time.Millisecond},
		{name: "renderer acknowledges", drain: 5 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1, "/web_PRE")}, {id: "gw2", value: ack(1, "/other")}},
			act: func(ctx context.Context, cli *clientv3.Client, rev int64, _ map[string]clientv3.LeaseID) error {
				_, err := cli.Put(ctx, registry.RendererKey("", "gw1"), ack(rev, "/web_PRE"))
				return err
			},
			min: react, max: 4 * time.Second, afterAct: true},
		{name: "renderer stops cleanly", drain: 5 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1, ""), leased: true}},
			act: func(ctx context.Context, cli *clientv3.Client, rev int64, leases map[string]clientv3.LeaseID) error {
				b, _ := json.Marshal(registry.Ack{Revision: 1, Prefixes: []string{""}, Stopped: true})
				if _, err := cli.Put(ctx, registry.RendererKey("", "gw1"), string(b), clientv3.WithLease(leases["gw1"])); err != nil {
					return err
				}
				_, err := cli.Revoke(ctx, leases["gw1"])
				return err
			},
			min: react, max: 4 * time.Second, afterAct: true},
		// A key gone without the stopped mark expired: the renderer may
		// still route to the instance, so the drain waits for its ack.
		{name: "renderer's key expires, it acknowledges later", drain: 5 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1, ""), leased: true}},
			act: func(ctx context.Context, cli *clientv3.Client, rev int64, leases map[string]clientv3.LeaseID) error {
				if _, err := cli.Revoke(ctx, leases["gw1"]); err != nil {
					return err
				}
				time.Sleep(react) // stands for the renderer's reconnect
				_, err := cli.Put(ctx, registry.RendererKey("", "gw1"), ack(rev, ""))
				return err
			},
			min: 2 * react, max: 4 * time.Second, afterAct: true},
		{name: "renderer's key expires for good", drain: 2 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1, ""), leased: true}},
			act: func(ctx context.Context, cli *clientv3.Client, rev int64, leases map[string]clientv3.LeaseID) error {
				_, err := cli.Revoke(ctx, leases["gw1"])
				return err
			},
			min: 2*time.Second - 50*time.Millisecond, max: 3 * time.Second},
		{name: "renderer never acknowledges", drain: 2 * time.Second,
			renderers: []renderer{{id: "gw1", value: ack(1, "/")}, {id: "gw2", value: ack(1<<40, "/")}},
			min:       2*time.Second - 50*time.Millisecond,
			max:       3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			leases := map[string]clientv3.LeaseID{}
			for _, r := range tc.renderers {
				var opts []clientv3.OpOption
				if r.leased {
					l, err := h.cli.Grant(ctx, 30)
					if err != nil {
						t.Fatal(err)
					}
					leases[r.id] = l.ID
					opts = append(opts, clientv3.WithLease(l.ID))
				}
				if _, err := h.cli.Put(ctx, registry.RendererKey("", r.id), r.value, opts...); err != nil {
					t.Fatal(err)
				}
			}
			a := h.newApp()
			cfg := h.config(a)
			cfg.Check, cfg.DrainTimeout = "none", tc.drain
			r := h.start(cfg)
			key, value := h.instanceKey(t, a)
			h.registered(key, value, 10*time.Second)
			sent := time.Now()
			rev := terminate(ctx, t, h, r, key)
			var acted time.Time
			if tc.act != nil {
				select {
				case <-time.After(react):
				case <-r.done:
					t.Fatal("registrar returned before the renderer acknowledged")
				}
				acted = time.Now()
				if err := tc.act(ctx, h.cli, rev, leases); err != nil {
					t.Fatal(err)
				}
			}
			term := appStopped(t, r, a)
			if d := term.at.Sub(sent); d < tc.min || d > tc.max {
				t.Fatalf("app got SIGTERM %v after the registrar; want between %v and %v", d, tc.min, tc.max)
			}
			if tc.afterAct && term.at.Before(acted) {
				t.Fatalf("app got SIGTERM %v before the renderer acted", acted.Sub(term.at))
			}
		})
	}
}

// appStopped waits for the registrar to exit 0 and returns the app's
// SIGTERM.
func appStopped(t *testing.T, r *running, a app) event {
	t.Helper()
	if code, err := r.wait(t, 15*time.Second); code != 0 || err != nil {
		t.Fatalf("registrar exit = %d, %v; want 0", code, err)
	}
	term, ok := a.find("sigterm")
	if !ok {
		t.Fatalf("app never got SIGTERM: %v", a.events())
	}
	return term
}

// terminate sends the registrar SIGTERM and returns the revision at which
// its key was removed.
func terminate(ctx context.Context, t *testing.T, h *harness, r *running, key string) int64 {
	t.Helper()
	wch := h.cli.Watch(ctx, key, clientv3.WithFilterPut())
	r.sigs <- syscall.SIGTERM
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || wr.Events[0].Type != mvccpb.DELETE {
			t.Fatalf("watch %s = %v, %v; want its deletion", key, wr.Events, wr.Err())
		}
		return wr.Events[0].Kv.ModRevision
	case <-ctx.Done():
		t.Fatalf("%s not removed", key)
		return 0
	}
}

// TestRunDrainCutShort: a second SIGTERM/SIGINT during the drain wait stops
// the app at once; an app that exits during the wait ends it.
func TestRunDrainCutShort(t *testing.T) {
	tests := []struct {
		name string
		sig  syscall.Signal // sent during the drain wait
		code int
	}{
		{"second signal", syscall.SIGINT, 9}, // the app exits 9 on SIGTERM too
		{"app exits", syscall.SIGUSR1, 9},    // forwarded; the app exits 9 on it
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			testDrainCutShort(t, tc.sig, tc.code)
		})
	}
}

func testDrainCutShort(t *testing.T, sig syscall.Signal, want int) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, _ := json.Marshal(registry.Ack{Revision: 1, Prefixes: []string{"/"}})
	if _, err := h.cli.Put(ctx, registry.RendererKey("", "gw1"), string(b)); err != nil {
		t.Fatal(err)
	}
	a := h.newApp()
	cfg := h.config(a, "exit-on-usr1=1", "exit=9")
	cfg.Check, cfg.DrainTimeout = "none", 20*time.Second
	r := h.start(cfg)
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)
	r.sigs <- syscall.SIGTERM
	h.absent(key, 5*time.Second)
	waitfor.Cond(t, 5*time.Second, "drain wait logged", func() error { return h.logs.has("drain: waiting for renderers") })
	if _, ok := a.find("sigterm"); ok {
		t.Fatal("app stopped before the drain timeout or the second signal")
	}
	sent := time.Now()
	r.sigs <- sig
	if code, err := r.wait(t, 10*time.Second); code != want || err != nil {
		t.Fatalf("registrar exit = %d, %v; want %d", code, err, want)
	}
	if d := time.Since(sent); d > 3*time.Second {
		t.Fatalf("registrar returned %v after %v; want at once, not after the 20s drain", d, unix.SignalName(sig))
	}
}

// TestRunDrainLayouts: in every supported prefix layout the registrar waits
// for exactly the renderers whose watched keys cover its key, wherever they
// acknowledge (under their global prefix, or the root without one), and
// stops the app only after the ack.
func TestRunDrainLayouts(t *testing.T) {
	const react = 500 * time.Millisecond
	ack := func(rev int64, prefixes ...string) string {
		b, _ := json.Marshal(registry.Ack{Revision: rev, Prefixes: prefixes, Updated: time.Now()})
		return string(b)
	}
	tests := []struct {
		name     string
		prefix   string // the registrar's --prefix
		ackUnder string // the renderer's global --prefix: where it acknowledges
		covers   []string
		other    string // a second, not covering renderer's ack dir prefix ("" = none)
	}{
		{name: "no prefixes", covers: []string{"/"}},
		{name: "global prefix on both", prefix: "/services", ackUnder: "/services", covers: []string{"/services"}},
		{name: "per-resource prefixes", prefix: "/services", covers: []string{"/services/web_PRE"}, other: "/other"},
		{name: "global and per-resource prefixes", prefix: "/services", ackUnder: "/services",
			covers: []string{"/services/web_PRE", "/services/api_PRE"}},
		{name: "registrar below the renderer's prefix", prefix: "/dc1/services", ackUnder: "/dc1", covers: []string{"/dc1/services"}},
		{name: "per-app renderer prefix", prefix: "/services", ackUnder: "/services/web_PRE", covers: []string{"/services/web_PRE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ackKey := registry.RendererKey(tc.ackUnder, "gw1")
			if _, err := h.cli.Put(ctx, ackKey, ack(1, tc.covers...)); err != nil {
				t.Fatal(err)
			}
			if tc.other != "" { // lagging but covering nothing of ours: not waited for
				if _, err := h.cli.Put(ctx, registry.RendererKey(tc.prefix, "gw2"), ack(1, tc.other)); err != nil {
					t.Fatal(err)
				}
			}
			a := h.newApp()
			cfg := h.config(a)
			cfg.Check, cfg.Prefix, cfg.DrainTimeout = "none", tc.prefix, 5*time.Second
			r := h.start(cfg)
			key, value := h.instanceKey(t, a)
			key = registry.CleanPrefix(tc.prefix) + key
			h.registered(key, value, 10*time.Second)
			rev := terminate(ctx, t, h, r, key)
			select {
			case <-time.After(react):
			case <-r.done:
				t.Fatal("registrar returned before the renderer acknowledged")
			}
			if _, ok := a.find("sigterm"); ok {
				t.Fatal("app stopped before the renderer acknowledged")
			}
			acked := time.Now()
			if _, err := h.cli.Put(ctx, ackKey, ack(rev, tc.covers...)); err != nil {
				t.Fatal(err)
			}
			term := appStopped(t, r, a)
			if term.at.Before(acked) {
				t.Fatalf("app got SIGTERM %v before the ack", acked.Sub(term.at))
			}
			if d := term.at.Sub(acked); d > 2*time.Second {
				t.Fatalf("app got SIGTERM %v after the ack; want promptly", d)
			}
			if err := h.logs.has("drain: renderers acknowledged"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRunDrainAfterOutage: a renderer's ack key expires after an etcd
// outage (etcd restarted on the same data; the renderer has not reconnected
// yet), and a registrar stopped then still waits for that renderer: the app
// gets SIGTERM only once the renderer acknowledged the removal. Without the
// roster it would find no renderer and stop the app at once, while the
// gateway still routes to it.
func TestRunDrainAfterOutage(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The renderer: its own client, gone for the outage (it never reconnects
	// in time), its ack on a lease of etcd's minimum TTL.
	gw := h.etcd.Client(t)
	lease, err := gw.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	ackKey := registry.RendererKey("", "gw1")
	b, _ := json.Marshal(registry.Ack{Revision: 1, Prefixes: []string{""}})
	if _, err := gw.Put(ctx, ackKey, string(b), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	if _, err := gw.KeepAlive(kctx, lease.ID); err != nil {
		t.Fatal(err)
	}

	a := h.newApp()
	cfg := h.config(a)
	cfg.Check, cfg.DrainTimeout = "none", 10*time.Second
	r := h.start(cfg)
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)
	waitfor.Cond(t, 10*time.Second, "registrar follows the acks", func() error {
		return h.logs.has("roster: following renderer acks")
	})

	h.etcd.Stop()
	kcancel() // the renderer is cut off from here on
	h.etcd.Restart()
	h.reconnect()
	h.absent(ackKey, 10*time.Second) // etcd expires the renderer's lease
	waitfor.Cond(t, 10*time.Second, "registrar saw the renderer's ack expire", func() error {
		return h.logs.has("renderer's ack expired without a clean stop")
	})
	h.registered(key, value, 2*testTTL) // the registrar is back

	rev := terminate(ctx, t, h, r, key)
	select {
	case <-time.After(time.Second):
	case <-r.done:
		t.Fatal("registrar stopped the app without waiting for the expired renderer")
	}
	b, _ = json.Marshal(registry.Ack{Revision: rev, Prefixes: []string{""}})
	acked := time.Now()
	if _, err := h.cli.Put(ctx, ackKey, string(b)); err != nil { // the renderer is back
		t.Fatal(err)
	}
	term := appStopped(t, r, a)
	if term.at.Before(acked) {
		t.Fatalf("app got SIGTERM %v before the renderer acknowledged", acked.Sub(term.at))
	}
	if d := term.at.Sub(acked); d > 2*time.Second {
		t.Fatalf("app got SIGTERM %v after the ack; want at once", d)
	}
}
