package nginxpush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/renderer/confd"
)

// gateway is a real nginx with the shipped Lua setup, the shipped
// upstreams-lua and proxy templates rendered for apps, and a client for its
// update endpoint.
type gateway struct {
	ngx    *nginxtest.Server
	lua    nginxtest.Lua
	client *Client
	conf   nginxtest.Config
}

type gatewayOpts struct {
	apps     []string
	dictSize string // "" = shipped
	workers  int
	peers    string // initial peers file; "" = none
	http     string // extra http{} config
}

func startGateway(t *testing.T, o gatewayOpts) *gateway {
	t.Helper()
	if testing.Short() {
		t.Skip("nginx in -short")
	}
	s := nginxtest.New(t)
	l := s.Lua(t, o.dictSize)
	if o.peers != "" {
		if err := os.WriteFile(l.PeersFile, []byte(o.peers), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var kvs []confd.KV
	for _, app := range o.apps {
		kvs = append(kvs, confd.KV{Key: "/" + app + "/127.0.0.1-1", Value: "127.0.0.1:1"})
	}
	ups := renderShipped(t, s.Prefix, "upstreams-lua.toml.example", kvs)
	proxy := renderShipped(t, s.Prefix, "proxy.toml", kvs)
	g := &gateway{ngx: s, lua: l, client: &Client{URL: l.URL}}
	g.conf = nginxtest.Config{
		Main:    l.Main,
		Workers: max(o.workers, 1),
		HTTP:    l.HTTP + "include " + ups + ";\n" + o.http,
		Server:  "include " + proxy + ";",
	}
	s.Start(t, g.conf)
	return g
}

// renderShipped renders a shipped resource of the repo (a confdir) into dir.
func renderShipped(t *testing.T, dir, resource string, kvs []confd.KV) string {
	t.Helper()
	root := filepath.Join("..")
	r, err := confd.Load(root, filepath.Join(root, "conf.d", resource), "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render(kvs)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, strings.TrimSuffix(resource, ".example")+".conf")
	if err := os.WriteFile(dest, out.Bytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return dest
}

// backend answers its own address.
func backend(t *testing.T) netip.AddrPort {
	t.Helper()
	var addr string
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, addr)
	}))
	t.Cleanup(s.Close)
	addr = s.Listener.Addr().String()
	return netip.MustParseAddrPort(addr)
}

// deadAddr is a loopback port nothing listens on.
func deadAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return a
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// get sends one request through nginx on a new connection (so requests
// spread over the workers) and returns the answering backend.
func (g *gateway) get(app string) (string, int, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(g.ngx.URL("/" + app + "/"))
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// served sends n requests and counts answers by backend; any non-200 fails.
func (g *gateway) served(t *testing.T, app string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		b, code, err := g.get(app)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /%s/ through nginx: %d %q %v", app, code, b, err)
		}
		got[b]++
	}
	return got
}

var keepAlive = &http.Client{Timeout: 5 * time.Second}

func keepAliveGet(t *testing.T, g *gateway, app string) string {
	t.Helper()
	resp, err := keepAlive.Get(g.ngx.URL("/" + app + "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /%s/: %d %q %v", app, resp.StatusCode, b, err)
	}
	return string(b)
}

func wantServed(t *testing.T, got map[string]int, want ...netip.AddrPort) {
	t.Helper()
	var names []string
	for _, a := range want {
		names = append(names, a.String())
	}
	if !slices.Equal(slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(names))) {
		t.Fatalf("served by %v; want exactly %v", got, names)
	}
}

func set(v int64, svcs map[string][]netip.AddrPort) PeerSet {
	return PeerSet{Version: v, Services: svcs}
}

// TestNginxPushRoutes: a push routes traffic to exactly the pushed peers,
// round-robin, in every worker from the next request on (no waiting).
func TestNginxPushRoutes(t *testing.T) {
	t.Parallel()
	b1, b2, b3 := backend(t), backend(t), backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"web_prod", "api_prod"}, workers: 2})
	ctx := ctxT(t)
	if v, err := g.client.Version(ctx); err != nil || v != 0 {
		t.Fatalf("Version() of a fresh nginx = %d, %v; want 0", v, err)
	}
	if _, code, _ := g.get("web_prod"); code != http.StatusBadGateway {
		t.Fatalf("no peers yet: got %d; want 502", code)
	}
	steps := []struct {
		web, api []netip.AddrPort
	}{
		{[]netip.AddrPort{b1, b2}, []netip.AddrPort{b3}},
		{[]netip.AddrPort{b3}, []netip.AddrPort{b1, b2, b3}},
		{[]netip.AddrPort{b1, b2, b3}, nil},
	}
	for i, st := range steps {
		p := set(int64(10+i), map[string][]netip.AddrPort{"web_prod": st.web, "api_prod": st.api})
		if err := g.client.Push(ctx, p); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		// No waiting: the push is confirmed, so every worker routes by it.
		wantServed(t, g.served(t, "web_prod", 6*len(st.web)), st.web...)
		// Round-robin is per worker: one keep-alive connection stays on
		// one worker and sees every peer in turn.
		got := map[string]int{}
		for range 3 * len(st.web) {
			got[keepAliveGet(t, g, "web_prod")]++
		}
		for _, a := range st.web {
			if got[a.String()] != 3 {
				t.Errorf("step %d: round-robin uneven on one connection: %v", i, got)
			}
		}
		if len(st.api) > 0 {
			wantServed(t, g.served(t, "api_prod", 4*len(st.api)), st.api...)
		} else if _, code, _ := g.get("api_prod"); code != http.StatusBadGateway {
			t.Errorf("step %d: api_prod with no peers answered %d; want 502", i, code)
		}
	}
	got, err := g.client.Peers(ctx)
	if err != nil || got.Version != 12 || !got.Equal(set(12, map[string][]netip.AddrPort{"web_prod": {b1, b2, b3}, "api_prod": nil})) {
		t.Fatalf("Peers() = %+v, %v", got, err)
	}
}

// TestNginxPushRefusesInvalid: the Lua parser accepts and refuses exactly
// what Decode does; a refused body applies nothing.
func TestNginxPushRefusesInvalid(t *testing.T) {
	t.Parallel()
	b1 := backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}})
	ctx := ctxT(t)
	if err := g.client.Push(ctx, set(5, map[string][]netip.AddrPort{"a_b": {b1}})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			// Keep every version below 5 so accepted bodies are stale and
			// change nothing; the parser runs before the version check.
			body := strings.Replace(tc.body, "version 9007199254740991", "version 1", 1)
			body = strings.Replace(body, "version 12", "version 1", 1)
			body = strings.Replace(body, "version 7", "version 1", 1)
			code, msg := post(t, g.lua.URL, body)
			want := http.StatusBadRequest
			if tc.ok {
				want = http.StatusOK
			}
			if code != want {
				t.Fatalf("POST %q: %d %q; want %d (Decode ok=%v)", body, code, msg, want, tc.ok)
			}
			if !tc.ok && !strings.Contains(msg, "nothing applied") {
				t.Errorf("refusal %q does not say nothing was applied", msg)
			}
		})
	}
	code, msg := post(t, g.lua.URL, "version 9\na_b "+b1.String()+" 1.2.3.4:80;}server{\n")
	if code != http.StatusBadRequest || !strings.Contains(msg, `invalid address "1.2.3.4:80;}server{"`) {
		t.Fatalf("injection: %d %q; want 400 naming the address", code, msg)
	}
	err := g.client.Push(ctx, set(9, map[string][]netip.AddrPort{"a_b": {b1, netip.MustParseAddrPort("[fe80::1%eth0]:80")}}))
	if err == nil || !strings.Contains(err.Error(), "zone") {
		t.Fatalf("Push with a zone = %v; want refused before sending", err)
	}
	if v, err := g.client.Version(ctx); err != nil || v != 5 {
		t.Fatalf("after refusals nginx holds %d, %v; want 5", v, err)
	}
	wantServed(t, g.served(t, "a_b", 4), b1)
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestNginxPushStale: a version at or below the one held is acknowledged
// and not applied, so a late or repeated push never goes back in time.
func TestNginxPushStale(t *testing.T) {
	t.Parallel()
	b1, b2 := backend(t), backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}})
	ctx := ctxT(t)
	if err := g.client.Push(ctx, set(5, map[string][]netip.AddrPort{"a_b": {b1}})); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{5, 4, 1} {
		if err := g.client.Push(ctx, set(v, map[string][]netip.AddrPort{"a_b": {b2}})); err != nil {
			t.Fatalf("stale push %d: %v; want acknowledged", v, err)
		}
	}
	if v, _ := g.client.Version(ctx); v != 5 {
		t.Fatalf("holds version %d; want 5", v)
	}
	wantServed(t, g.served(t, "a_b", 4), b1)
}

// TestNginxPushFullDict: an update that does not fit is refused (507) and
// the last good peers stay; nothing is evicted.
func TestNginxPushFullDict(t *testing.T) {
	t.Parallel()
	b1 := backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b", "c_d"}, dictSize: "12k"})
	ctx := ctxT(t)
	if err := g.client.Push(ctx, set(2, map[string][]netip.AddrPort{"a_b": {b1}})); err != nil {
		t.Fatal(err)
	}
	big := set(3, map[string][]netip.AddrPort{"a_b": {b1}, "c_d": nil})
	for i := range 2000 {
		big.Services["c_d"] = append(big.Services["c_d"], netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i+1)))
	}
	err := g.client.Push(ctx, big)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Status != http.StatusInsufficientStorage || !strings.Contains(refused.Msg, "no memory") {
		t.Fatalf("Push(too big) = %v; want 507 no memory", err)
	}
	if v, _ := g.client.Version(ctx); v != 2 {
		t.Fatalf("holds version %d; want 2", v)
	}
	wantServed(t, g.served(t, "a_b", 4), b1)
	// A set that fits still applies afterwards.
	if err := g.client.Push(ctx, set(4, map[string][]netip.AddrPort{"a_b": {b1}, "c_d": {b1}})); err != nil {
		t.Fatal(err)
	}
	wantServed(t, g.served(t, "c_d", 2), b1)
}

// TestNginxPushLocalOnly: the shipped endpoint refuses a caller that is not
// the host's 127.0.0.1 (nginx's allow/deny), and so does the Lua handler on
// its own, in a server without allow/deny.
func TestNginxPushLocalOnly(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	open := fmt.Sprintf("server { listen 127.0.0.1:%d; location = /rollcall/peers { content_by_lua_block { require(\"rollcall.peers\").serve() } } }\n", port)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}, http: open})
	remote := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)},
	}).DialContext}}
	for _, url := range []string{g.lua.URL, fmt.Sprintf("http://127.0.0.1:%d/rollcall/peers", port)} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, url, strings.NewReader("version 3\na_b 127.0.0.1:80\n"))
			resp, err := remote.Do(req)
			if err != nil {
				t.Fatalf("%s %s from 127.0.0.2: %v", method, url, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("%s %s from 127.0.0.2: %d %q; want 403", method, url, resp.StatusCode, b)
			}
		}
	}
	if v, err := g.client.Version(ctxT(t)); err != nil || v != 0 {
		t.Fatalf("holds %d, %v; want 0: a remote push got through", v, err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// TestNginxPushRetriesFailedPeer: a peer that refuses connections is
// retried on another one (set_more_tries + the shipped proxy_next_upstream):
// no request fails.
func TestNginxPushRetriesFailedPeer(t *testing.T) {
	t.Parallel()
	b1, b2, dead := backend(t), backend(t), deadAddr(t)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}})
	if err := g.client.Push(ctxT(t), set(1, map[string][]netip.AddrPort{"a_b": {dead, b1, dead2(t), b2}})); err != nil {
		t.Fatal(err)
	}
	got := g.served(t, "a_b", 40) // served fails the test on any non-200
	wantServed(t, got, b1, b2)
	// A peer whose connection failed is skipped afterwards (for 10s): one
	// refused connection per dead peer, not one per request.
	log, err := os.ReadFile(filepath.Join(g.ngx.Prefix, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "connect() failed"); n != 2 {
		t.Errorf("%d refused connections in 40 requests over 2 dead peers; want 2 (dead peers skipped after a failure)", n)
	}
}

// get answers a GET's body, on a new connection (not a worker going away).
func get(url string) (string, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func dead2(t *testing.T) netip.AddrPort { return deadAddr(t) }

// TestNginxPushColdStartAndReload: nginx started cold serves the rendered
// peers file; a reload keeps the dict, and loads the file only when it is
// not older than what the dict holds.
func TestNginxPushColdStartAndReload(t *testing.T) {
	t.Parallel()
	b1, b2, b3 := backend(t), backend(t), backend(t)
	file := set(3, map[string][]netip.AddrPort{"a_b": {b2}})
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	// The worker's pid, to see a reload applied (a new worker answers).
	pidURL := fmt.Sprintf("http://127.0.0.1:%d/pid", port)
	pidServer := fmt.Sprintf("server { listen 127.0.0.1:%d; location = /pid { return 200 $pid; } }\n", port)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}, peers: string(file.Encode()), http: pidServer})
	ctx := ctxT(t)
	if v, err := g.client.Version(ctx); err != nil || v != 3 {
		t.Fatalf("cold start holds %d, %v; want the file's 3", v, err)
	}
	wantServed(t, g.served(t, "a_b", 3), b2)

	if err := g.client.Push(ctx, set(10, map[string][]netip.AddrPort{"a_b": {b1}})); err != nil {
		t.Fatal(err)
	}
	reload := func(what string) {
		t.Helper()
		old, _ := get(pidURL)
		if err := g.ngx.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		// The reload is applied once a new worker answers.
		waitfor.Cond(t, 5*time.Second, what, func() error {
			if pid, err := get(pidURL); err != nil || pid == old {
				return fmt.Errorf("worker %q (before: %q), %v", pid, old, err)
			}
			return nil
		})
	}
	reload("reload with an older file")
	if v, _ := g.client.Version(ctx); v != 10 {
		t.Fatalf("after a reload with an older file: holds %d; want the pushed 10", v)
	}
	wantServed(t, g.served(t, "a_b", 3), b1)

	newer := set(11, map[string][]netip.AddrPort{"a_b": {b3}})
	if err := os.WriteFile(g.lua.PeersFile, newer.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	reload("reload with a newer file")
	waitfor.Cond(t, 5*time.Second, "the newer file applied by the reload", func() error {
		if v, err := g.client.Version(ctx); err != nil || v != 11 {
			return fmt.Errorf("holds %d, %v", v, err)
		}
		return nil
	})
	wantServed(t, g.served(t, "a_b", 3), b3)
	// Reloaded again with the file at the version the dict holds (the
	// renderer wrote and pushed it, then an app appeared): the dict stays.
	reload("reload with the file at the dict's version")
	wantServed(t, g.served(t, "a_b", 3), b3)
}

// TestNginxPushWhileDown: a push started before nginx listens is retried
// until nginx is up, then confirmed.
func TestNginxPushWhileDown(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("nginx in -short")
	}
	b1 := backend(t)
	s := nginxtest.New(t)
	l := s.Lua(t, "")
	kvs := []confd.KV{{Key: "/a_b/127.0.0.1-1", Value: "127.0.0.1:1"}}
	ups := renderShipped(t, s.Prefix, "upstreams-lua.toml.example", kvs)
	proxy := renderShipped(t, s.Prefix, "proxy.toml", kvs)
	c := &Client{URL: l.URL, MaxBackoff: 50 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- c.Push(ctxT(t), set(7, map[string][]netip.AddrPort{"a_b": {b1}})) }()
	s.Start(t, nginxtest.Config{Main: l.Main, HTTP: l.HTTP + "include " + ups + ";", Server: "include " + proxy + ";"})
	if err := <-done; err != nil {
		t.Fatalf("Push while nginx was starting: %v", err)
	}
	g := &gateway{ngx: s, lua: l, client: c}
	wantServed(t, g.served(t, "a_b", 2), b1)
}

// TestNginxPushTenThousand: the shipped dict holds 10,000 IPv6 instances
// over 1,000 apps, with room to replace them.
func TestNginxPushTenThousand(t *testing.T) {
	t.Parallel()
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}})
	ctx := ctxT(t)
	v4 := set(0, map[string][]netip.AddrPort{})
	p := set(0, map[string][]netip.AddrPort{})
	for i := range 10000 {
		ip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xaa, 0xaa, 0xbb, 0xbb, 0xcc, 0xcc, 0xdd, 0xdd, 0xee, byte(i >> 8), 0xff, byte(i)})
		name := fmt.Sprintf("app%d_prod", i%1000)
		p.Services[name] = append(p.Services[name], netip.AddrPortFrom(ip, 65535))
		v4.Services[name] = append(v4.Services[name], netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)}), 30000))
	}
	version := int64(10)
	for _, s := range []PeerSet{v4, v4, p, p, p} { // IPv6 last: the biggest state must fit
		version++
		s.Version = version
		start := time.Now()
		if err := g.client.Push(ctx, s); err != nil {
			t.Fatalf("push of 10,000 instances (%d bytes): %v", len(s.Encode()), err)
		}
		t.Logf("pushed %d bytes (10,000 instances, 1,000 apps) and confirmed in %v", len(s.Encode()), time.Since(start))
	}
	got, err := g.client.Peers(ctx)
	if err != nil || !got.Equal(p) {
		t.Fatalf("Peers() differs from the pushed set: %v", err)
	}
	// One instance coming and going is a delta of one app: nginx's share
	// is a small fraction of a full push's.
	var took []time.Duration
	cur := p
	for i := range 20 {
		next := PeerSet{Version: cur.Version + 1, Services: maps.Clone(cur.Services)}
		next.Services["app7_prod"] = p.Services["app7_prod"][i%2:]
		d := Diff(cur, next)
		start := time.Now()
		if err := g.client.PushDelta(ctx, d); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		cur = next
	}
	slices.Sort(took)
	t.Logf("a delta of one app at 10,000 instances pushed and confirmed: median %v, max %v", took[len(took)/2], took[len(took)-1])
	if took[len(took)/2] > 5*time.Millisecond {
		t.Errorf("a delta of one app took %v (median); want ≤ 5 ms (a full push of this state takes ~30 ms)", took[len(took)/2])
	}
	if got, err := g.client.Peers(ctx); err != nil || !got.Equal(cur) {
		t.Fatalf("Peers() after the deltas differs: %v", err)
	}
}

// TestNginxPushBadPeersFile: a peers file that does not parse never keeps
// nginx from starting; it starts empty (version 0), so the renderer pushes.
func TestNginxPushBadPeersFile(t *testing.T) {
	t.Parallel()
	g := startGateway(t, gatewayOpts{apps: []string{"a_b"}, peers: "version 3\na_b 1.2.3.4:80;}\n"})
	if v, err := g.client.Version(ctxT(t)); err != nil || v != 0 {
		t.Fatalf("with a bad peers file nginx holds %d, %v; want 0", v, err)
	}
}

func delta(base, v int64, svcs map[string][]netip.AddrPort) Delta {
	return Delta{Base: base, Version: v, Services: svcs}
}

// TestNginxPushDelta: a delta changes only the apps it names (an app named
// alone loses its peers), in every worker from the next request on; a
// repeated or late delta is harmless; the Lua parser accepts and refuses
// exactly the deltas DecodeDelta does.
func TestNginxPushDelta(t *testing.T) {
	t.Parallel()
	b1, b2, b3 := backend(t), backend(t), backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"web_prod", "api_prod", "db_prod"}, workers: 2})
	ctx := ctxT(t)
	full := set(10, map[string][]netip.AddrPort{"web_prod": {b1}, "api_prod": {b2}, "db_prod": {b3}})
	if err := g.client.Push(ctx, full); err != nil {
		t.Fatal(err)
	}
	wantServed(t, g.served(t, "api_prod", 4), b2) // parsed by the workers before the delta
	d := delta(10, 11, map[string][]netip.AddrPort{"web_prod": {b2, b3}, "db_prod": nil})
	if err := g.client.PushDelta(ctx, d); err != nil {
		t.Fatal(err)
	}
	wantServed(t, g.served(t, "web_prod", 8), b2, b3)
	wantServed(t, g.served(t, "api_prod", 4), b2)
	if _, code, _ := g.get("db_prod"); code != http.StatusBadGateway {
		t.Fatalf("db_prod emptied by a delta answered %d; want 502", code)
	}
	want := full.Apply(d)
	got, err := g.client.Peers(ctx)
	if err != nil || got.Version != 11 || !got.Equal(want) || len(got.Services) != 2 {
		t.Fatalf("Peers() = %+v, %v; want %+v", got, err, want)
	}
	// Repeated, or late behind a newer one: acknowledged, nothing changes.
	if err := g.client.PushDelta(ctx, d); err != nil {
		t.Fatalf("repeated delta: %v", err)
	}
	if err := g.client.PushDelta(ctx, delta(9, 10, map[string][]netip.AddrPort{"api_prod": {b1}})); err != nil {
		t.Fatalf("late delta: %v", err)
	}
	wantServed(t, g.served(t, "api_prod", 4), b2)
	for _, tc := range deltaCases {
		t.Run(tc.name, func(t *testing.T) {
			// Versions at or below the one held: an accepted delta is stale
			// and changes nothing; the parser runs before the version check.
			code, msg := post(t, g.lua.URL, tc.body)
			want := http.StatusBadRequest
			if tc.ok {
				want = http.StatusOK
			}
			if code != want {
				t.Fatalf("POST %q: %d %q; want %d (DecodeDelta ok=%v)", tc.body, code, msg, want, tc.ok)
			}
		})
	}
	if got, err := g.client.Peers(ctx); err != nil || got.Version != 11 || !got.Equal(want) {
		t.Fatalf("after stale and refused deltas Peers() = %+v, %v; want %+v", got, err, want)
	}
}

// TestNginxPushDeltaLostDict: nginx that does not hold a delta's base (it
// restarted and lost its dict, or missed a push) refuses it with a
// *BaseError and applies nothing; the full state then applies, and the
// next delta on top of it.
func TestNginxPushDeltaLostDict(t *testing.T) {
	t.Parallel()
	b1, b2 := backend(t), backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b", "c_d"}})
	ctx := ctxT(t)
	var be *BaseError
	err := g.client.PushDelta(ctx, delta(5, 6, map[string][]netip.AddrPort{"a_b": {b1}}))
	if !errors.As(err, &be) || be.Base != 5 || !strings.Contains(err.Error(), "holding version 0") {
		t.Fatalf("delta to an empty dict = %v; want a *BaseError naming version 0", err)
	}
	if v, _ := g.client.Version(ctx); v != 0 {
		t.Fatalf("holds %d after a refused delta; want 0", v)
	}
	if err := g.client.Push(ctx, set(6, map[string][]netip.AddrPort{"a_b": {b1}, "c_d": {b1}})); err != nil {
		t.Fatal(err)
	}
	// A gap (the delta from 7 when nginx holds 6) is refused the same way.
	if err := g.client.PushDelta(ctx, delta(7, 8, map[string][]netip.AddrPort{"a_b": {b2}})); !errors.As(err, &be) {
		t.Fatalf("delta over a gap = %v; want a *BaseError", err)
	}
	if err := g.client.PushDelta(ctx, delta(6, 8, map[string][]netip.AddrPort{"a_b": {b2}})); err != nil {
		t.Fatal(err)
	}
	wantServed(t, g.served(t, "a_b", 3), b2)
	wantServed(t, g.served(t, "c_d", 3), b1)
}

// TestNginxPushDeltaFullDict: a delta that does not fit is refused (507)
// whole: none of its apps change, the version stays, and a full state
// replacing everything is refused the same way.
func TestNginxPushDeltaFullDict(t *testing.T) {
	t.Parallel()
	b1, b2 := backend(t), backend(t)
	g := startGateway(t, gatewayOpts{apps: []string{"a_b", "c_d"}, dictSize: "12k"})
	ctx := ctxT(t)
	if err := g.client.Push(ctx, set(2, map[string][]netip.AddrPort{"a_b": {b1}, "c_d": {b1}})); err != nil {
		t.Fatal(err)
	}
	var big []netip.AddrPort
	for i := range 2000 {
		big = append(big, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i+1)))
	}
	// a_b's new value fits; c_d's does not, and a_b must not change either.
	var refused *RefusedError
	err := g.client.PushDelta(ctx, delta(2, 3, map[string][]netip.AddrPort{"a_b": {b2}, "c_d": big}))
	if !errors.As(err, &refused) || refused.Status != http.StatusInsufficientStorage {
		t.Fatalf("PushDelta(too big) = %v; want 507", err)
	}
	err = g.client.Push(ctx, set(3, map[string][]netip.AddrPort{"a_b": {b2}, "c_d": big}))
	if !errors.As(err, &refused) || refused.Status != http.StatusInsufficientStorage {
		t.Fatalf("Push(too big) = %v; want 507", err)
	}
	if v, _ := g.client.Version(ctx); v != 2 {
		t.Fatalf("holds version %d; want 2", v)
	}
	wantServed(t, g.served(t, "a_b", 3), b1)
	wantServed(t, g.served(t, "c_d", 3), b1)
	// What fits still applies, on top of the last good version.
	if err := g.client.PushDelta(ctx, delta(2, 4, map[string][]netip.AddrPort{"a_b": {b2}})); err != nil {
		t.Fatal(err)
	}
	wantServed(t, g.served(t, "a_b", 3), b2)
	wantServed(t, g.served(t, "c_d", 3), b1)
}
