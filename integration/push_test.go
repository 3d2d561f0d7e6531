package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/nginxpush"
)

// luaRig is a rig whose nginx has the shipped Lua setup and the shipped
// no-reload resources: upstreams-lua (structure, reloads), proxy, and peers
// (pushed).
type luaRig struct {
	*rig
	lua   nginxtest.Lua
	peers string // the peers resource's dest: the peers file nginx loads
	push  *nginxpush.Client
	conf  nginxtest.Config
}

// newLuaRig writes the three resources and starts nginx (workers worker
// processes) with placeholders for the rendered files.
func newLuaRig(t *testing.T, workers int) *luaRig {
	t.Helper()
	r := newRig(t)
	l := r.nginx.Lua(t, "")
	lr := &luaRig{rig: r, lua: l, push: &nginxpush.Client{URL: l.URL}}
	up := r.resource("upstreams", "upstreams-lua.toml.example", "upstreams.conf", "")
	px := r.resource("proxy", "proxy.toml", "proxy.conf", "")
	lr.peers = r.resourceWith("peers", "peers.toml.example", "peers.txt", "", map[string]any{"push": l.URL})
	// The shipped snippet loads its own peers file: point it at the dest.
	if err := os.Symlink(lr.peers, l.PeersFile); err != nil {
		t.Fatal(err)
	}
	writeFile(t, up, placeholder, 0o644)
	writeFile(t, px, placeholder, 0o644)
	lr.conf = nginxtest.Config{
		Main:    l.Main,
		Workers: workers,
		HTTP:    l.HTTP + "include " + up + ";\n",
		Server:  "include " + px + ";\n",
	}
	r.startNginx(lr.conf)
	return lr
}

// nginxReloads counts the reloads nginx itself logged (SIGHUP received),
// whoever sent them.
func (lr *luaRig) nginxReloads() int {
	b, err := os.ReadFile(filepath.Join(lr.nginx.Prefix, "error.log"))
	if err != nil {
		lr.t.Fatal(err)
	}
	return strings.Count(string(b), "reconfiguring")
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestPushNoReload: with the Lua module, instance changes are pushed and
// confirmed: nginx routes to exactly the registered backends, with no
// reload at all, and an acknowledgement follows the push. Only an app
// appearing or disappearing reloads. It measures put→routed.
func TestPushNoReload(t *testing.T) {
	lr := newLuaRig(t, 2)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	ka := lr.register("web_prod", a)
	lr.onetime()
	lr.startRenderer()
	lr.waitServed(10*time.Second, "web_prod", "a")
	lr.waitReady(10 * time.Second)
	reloads0, ngx0 := len(lr.reloads()), lr.nginxReloads()
	pushes0 := lr.metric("rollcall_renderer_pushes_total", `result="ok"`)

	// Swap a and b 25 times each way: register the other, wait until nginx
	// routes to it; remove the one before, wait until nginx confirms.
	keep := &http.Client{Timeout: opTimeout}
	url := lr.nginx.URL("/web_prod/")
	var adds, dels []time.Duration
	cur, curKey, next := a, ka, b
	for range 50 {
		start := time.Now()
		nk := lr.register("web_prod", next)
		adds = append(adds, untilRouted(t, keep, url, next.name, start))
		start = time.Now()
		rev := lr.del(curKey)
		for {
			v, err := lr.push.Version(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if v >= rev {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("removal of %s (rev %d) not in nginx after 5s (holds %d)", cur.name, rev, v)
			}
			time.Sleep(time.Millisecond) // a poll interval of the measurement, not a wait for a condition
		}
		dels = append(dels, time.Since(start))
		lr.waitAck(5*time.Second, rev)
		for range 4 {
			if got, err := fetch(keep, url); err != nil || got != next.name {
				t.Fatalf("after removing %s: served by %q, %v", cur.name, got, err)
			}
		}
		cur, curKey, next = next, nk, cur
	}
	t.Logf("put→routed through the push path, 50 changes: p50 %v p99 %v max %v", percentile(adds, .5), percentile(adds, .99), percentile(adds, 1))
	t.Logf("delete→nginx holds it, 50 changes: p50 %v p99 %v max %v", percentile(dels, .5), percentile(dels, .99), percentile(dels, 1))
	if got := len(lr.reloads()) - reloads0; got != 0 {
		t.Errorf("instance changes ran reload_cmd %d times; want 0", got)
	}
	if got := lr.nginxReloads() - ngx0; got != 0 {
		t.Errorf("nginx reloaded %d times; want 0", got)
	}
	if got := lr.metric("rollcall_renderer_pushes_total", `result="ok"`) - pushes0; got < 100 {
		t.Errorf("pushes_total{ok} +%v; want at least 100 (one per change)", got)
	}
	// Changes this close together are a sustained stream: the reload path
	// applies one per --cooldown (1s), so each waits about a second.
	if p50, p99 := percentile(adds, .5), percentile(adds, .99); p50 > 50*time.Millisecond || p99 >= cooldown {
		t.Errorf("put→routed p50 %v, p99 %v; want p50 ≤ 50ms and p99 under the reload budget's %v", p50, p99, cooldown)
	}

	// Structural: a new app reloads once, and is served at once after.
	c := newBackend(t, "c")
	lr.register("api_prod", c)
	lr.waitServed(10*time.Second, "api_prod", "c")
	lr.waitReady(10 * time.Second)
	if got := lr.nginxReloads() - ngx0; got < 1 {
		t.Errorf("a new app did not reload nginx (%d reloads)", got)
	}
	got, err := lr.push.Peers(context.Background())
	if err != nil || len(got.Services) != 2 {
		t.Fatalf("nginx holds %+v, %v; want web_prod and api_prod", got, err)
	}
	// The rendered peers file holds the same full state as nginx.
	file, err := nginxpush.Decode([]byte(read(t, lr.peers)))
	if err != nil || !file.Equal(got) || file.Version != got.Version {
		t.Fatalf("peers file %+v (%v) differs from nginx's %+v", file, err, got)
	}
}

// TestPushAfterLostDict: nginx restarted without its peers file reports
// version 0; the next batch pushes the peers again before it acknowledges.
func TestPushAfterLostDict(t *testing.T) {
	lr := newLuaRig(t, 1)
	a := newBackend(t, "a")
	lr.register("web_prod", a)
	lr.onetime()
	lr.startRenderer()
	lr.waitServed(10*time.Second, "web_prod", "a")
	lr.waitReady(10 * time.Second)

	// Restart nginx with the peers file gone: the dict starts empty.
	pid, err := lr.nginx.MasterPID()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, "nginx stopped", func() error {
		if !lr.nginx.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	saved := read(t, lr.peers)
	if err := os.Remove(lr.peers); err != nil {
		t.Fatal(err)
	}
	lr.nginx.Start(t, lr.conf)
	if v, _ := lr.push.Version(context.Background()); v != 0 {
		t.Fatalf("restarted nginx holds version %d; want 0", v)
	}
	writeFile(t, lr.peers, saved, 0o644) // the renderer's file is back; nginx's dict is not
	// A change that leaves the peers as they are (a key that is no
	// instance: no service line changes).
	rev := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		resp, err := lr.kv.Put(ctx, "/config/feature", "on")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}()
	lr.waitAck(10*time.Second, rev)
	if v, err := lr.push.Version(context.Background()); err != nil || v == 0 {
		t.Fatalf("acknowledged rev %d while nginx holds version %d (%v)", rev, v, err)
	}
	lr.waitServed(5*time.Second, "web_prod", "a")
}

// TestPushTemplateEdit: the peers template edited in place while etcd is
// quiet (an ops engineer in vim) renders other peers at the revision nginx
// already holds; they reach nginx at the next version, with no reload, and
// the peers file holds the same.
func TestPushTemplateEdit(t *testing.T) {
	lr := newLuaRig(t, 1)
	// Keys that leave out the renderer's acknowledgements: else its own
	// ack moves the revision on before the edit, and the edit renders at a
	// revision nginx does not hold yet.
	keys := []string{"/web_prod"}
	lr.resourceWith("upstreams", "upstreams-lua.toml.example", "upstreams.conf", "", map[string]any{"keys": keys})
	lr.resourceWith("proxy", "proxy.toml", "proxy.conf", "", map[string]any{"keys": keys})
	lr.resourceWith("peers", "peers.toml.example", "peers.txt", "", map[string]any{"keys": keys, "push": lr.lua.URL})
	a, b := newBackend(t, "a"), newBackend(t, "b")
	lr.register("web_prod", a)
	kb := lr.register("web_prod", b)
	lr.onetime()
	lr.startRenderer()
	lr.waitServed(10*time.Second, "web_prod", "a", "b")
	lr.waitReady(10 * time.Second)
	before, err := lr.push.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rev := lr.modRevision(kb); before.Version != rev {
		t.Fatalf("nginx holds version %d before the edit; want the last change's revision %d", before.Version, rev)
	}
	ngx0 := lr.nginxReloads()

	// Only each app's first instance from now on.
	edited := "{{range services}}{{.Name}}{{range $i, $e := .Instances}}{{if eq $i 0}} {{$e}}{{end}}{{end}}\n{{end -}}\n"
	writeFile(t, filepath.Join(lr.confdir, "templates", "peers.tmpl"), edited, 0o644)
	var held nginxpush.PeerSet
	waitfor.Cond(t, 10*time.Second, "nginx holds the edited peers", func() error {
		held, err = lr.push.Peers(context.Background())
		if err == nil && len(held.Services["web_prod"]) != 1 {
			err = fmt.Errorf("nginx holds %+v", held)
		}
		return err
	})
	if held.Version <= before.Version {
		t.Errorf("edited peers at version %d; want past %d", held.Version, before.Version)
	}
	first := map[netip.AddrPort]string{a.addr: "a", b.addr: "b"}[held.Services["web_prod"][0]]
	lr.waitServed(5*time.Second, "web_prod", first)
	file, err := nginxpush.Decode([]byte(read(t, lr.peers)))
	if err != nil || !file.Equal(held) || file.Version != held.Version {
		t.Errorf("peers file %+v (%v) differs from nginx's %+v", file, err, held)
	}
	if got := lr.nginxReloads() - ngx0; got != 0 {
		t.Errorf("the edit reloaded nginx %d times; want 0", got)
	}
}

// modRevision is the revision key was last written at.
func (r *rig) modRevision(key string) int64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := r.kv.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		r.t.Fatalf("get %s: %v, %d keys", key, err, len(resp.Kvs))
	}
	return resp.Kvs[0].ModRevision
}

// TestPushBurst: 300 changes over 10 apps cost no reload, and nginx ends
// with exactly the registered peers.
func TestPushBurst(t *testing.T) {
	lr := newLuaRig(t, 1)
	var apps []string
	first := map[string]string{} // each app's first instance, a real backend
	for i := range 10 {
		apps = append(apps, fmt.Sprintf("app%d_burst", i))
		b := newBackend(t, apps[i])
		lr.register(apps[i], b)
		first[apps[i]] = b.addr.String()
	}
	lr.onetime()
	lr.startRenderer()
	lr.waitReady(10 * time.Second)
	reloads0, ngx0 := len(lr.reloads()), lr.nginxReloads()
	want := map[string][]string{}
	var wg sync.WaitGroup
	for i, svc := range apps {
		wg.Go(func() {
			// 30 changes per app: put 20 instances, then delete the first 10.
			for k := range 30 {
				j := k
				if k >= 20 {
					j = k - 20
				}
				key := fmt.Sprintf("/%s/10.1.%d.%d-8080", svc, i, j+1)
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				var err error
				if k < 20 {
					_, err = lr.kv.Put(ctx, key, fmt.Sprintf("10.1.%d.%d:8080", i, j+1))
				} else {
					_, err = lr.kv.Delete(ctx, key)
				}
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
		for j := 10; j < 20; j++ {
			want[svc] = append(want[svc], fmt.Sprintf("10.1.%d.%d:8080", i, j+1))
		}
	}
	wg.Wait()
	waitfor.Cond(t, 10*time.Second, "nginx peers not final", func() error {
		got, err := lr.push.Peers(context.Background())
		if err != nil {
			return err
		}
		for _, svc := range apps {
			var addrs []string
			for _, a := range got.Services[svc] {
				addrs = append(addrs, a.String())
			}
			w := append(slices.Clone(want[svc]), first[svc])
			if !slices.Equal(slices.Sorted(slices.Values(addrs)), slices.Sorted(slices.Values(w))) {
				return fmt.Errorf("%s: %v; want %v", svc, addrs, w)
			}
		}
		return nil
	})
	lr.waitReady(10 * time.Second)
	if got := len(lr.reloads()) - reloads0; got != 0 {
		t.Errorf("300 instance changes ran reload_cmd %d times; want 0", got)
	}
	if got := lr.nginxReloads() - ngx0; got != 0 {
		t.Errorf("nginx reloaded %d times; want 0", got)
	}
	t.Logf("300 changes over 10 apps: %v pushes, 0 reloads", lr.metric("rollcall_renderer_pushes_total", `result="ok"`))
}

// TestPushOff: without the Lua module (here: --push=off) a resource with
// push is rendered, checked and reloaded like any other, and the renderer
// says so once.
func TestPushOff(t *testing.T) {
	r := newRig(t)
	peers := r.resourceWith("peers", "peers.toml.example", "peers.txt", "", map[string]any{"push": "http://127.0.0.1:1/rollcall/peers"})
	up := r.resource("upstreams", "upstreams.toml", "upstreams.conf", "")
	px := r.resource("proxy", "proxy.toml", "proxy.conf", "")
	writeFile(t, up, placeholder, 0o644)
	writeFile(t, px, placeholder, 0o644)
	r.startNginx(r.shippedConf())
	r.onetime("--push=off")
	a := newBackend(t, "a")
	r.register("web_prod", a)
	r.startRenderer("--push=off")
	r.waitServed(10*time.Second, "web_prod", "a")
	r.waitReady(10 * time.Second)
	if got, want := read(t, peers), "web_prod "+a.addr.String()+"\n"; got != want {
		t.Errorf("peers file %q; want the template's output %q", got, want)
	}
	b := newBackend(t, "b")
	r.register("web_prod", b)
	r.waitServed(10*time.Second, "web_prod", "a", "b")
	r.waitReady(10 * time.Second)
	if n := strings.Count(r.renderer.Output(), "nginx Lua module not found"); n != 1 {
		t.Errorf("the fallback was announced %d times; want once:\n%s", n, r.renderer.Output())
	}
	if got := r.metric("rollcall_renderer_pushes_total"); got != 0 {
		t.Errorf("pushes_total = %v with --push=off", got)
	}
}
