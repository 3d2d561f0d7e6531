package integration_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/haproxyapi"
	"github.com/rollcall/rollcall/internal/haproxytest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/nginxreload"
)

// newHAProxyRuntimeRig is newHAProxyRig with the shipped runtime API setup
// (haproxy/runtime): instance changes through HAProxy's runtime API, whose
// socket the renderer reaches through a recorder (apiRecorder) so a test
// sees every command sent.
func newHAProxyRuntimeRig(t *testing.T) (*rig, *apiRecorder) {
	t.Helper()
	r := newHAProxyRig(t)
	rec := newAPIRecorder(t, r.haproxy.AdminSocket)
	if err := os.Remove(filepath.Join(r.confdir, "conf.d", "haproxy.toml")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"peers.tmpl", "haproxy-slots.tmpl"} {
		copyFile(t, filepath.Join(haproxytest.RuntimeConfdir(t), "templates", name), filepath.Join(r.confdir, "templates", name))
	}
	writeFile(t, filepath.Join(r.confdir, "conf.d", "haproxy-runtime.toml"), r.haproxy.RuntimeResource(t, rec.path, r.reloadCmd), 0o644)
	return r, rec
}

// masterReloads is HAProxy's own count of reloads (master CLI `show proc`),
// whoever asked for them.
func (r *rig) masterReloads() int {
	r.t.Helper()
	var n int
	waitfor.Cond(r.t, 10*time.Second, "haproxy show proc", func() error {
		ctx, cancel := context.WithTimeout(r.t.Context(), time.Second)
		defer cancel()
		p, err := nginxreload.ShowProc(ctx, r.haproxy.MasterSocket)
		n = p.Reloads
		return err
	})
	return n
}

// readyServers is HAProxy's servers out of maint, "<backend>=<ip:port>",
// sorted; slots in maint (free or draining) are left out.
func (r *rig) readyServers() ([]string, error) {
	ctx, cancel := context.WithTimeout(r.t.Context(), opTimeout)
	defer cancel()
	out, err := r.haproxy.Runtime(ctx, "show servers state")
	if err != nil {
		return nil, err
	}
	srvs, err := haproxyapi.ParseServersState(out)
	if err != nil {
		return nil, err
	}
	var got []string
	for _, s := range srvs {
		if !s.Maint() && strings.Contains(s.Backend, "_") {
			got = append(got, s.Backend+"="+s.Addr.String())
		}
	}
	slices.Sort(got)
	return got, nil
}

// waitReadyServers waits until HAProxy's ready servers are exactly want.
func (r *rig) waitReadyServers(timeout time.Duration, want []string) {
	r.t.Helper()
	slices.Sort(want)
	waitfor.Cond(r.t, timeout, "HAProxy runs exactly the registered servers", func() error {
		got, err := r.readyServers()
		if err == nil && !slices.Equal(got, want) {
			err = fmt.Errorf("%d servers, want %d: got %v", len(got), len(want), got)
		}
		return err
	})
}

// apiRecorder is a unix socket in front of HAProxy's runtime API that
// records every request line passing through.
type apiRecorder struct {
	path string
	mu   sync.Mutex
	sent []string
}

func newAPIRecorder(t *testing.T, upstream string) *apiRecorder {
	t.Helper()
	rec := &apiRecorder{path: filepath.Join(t.TempDir(), "api.sock")}
	ln, err := net.Listen("unix", rec.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { rec.relay(c, upstream) })
		}
	})
	return rec
}

// relay passes one connection through: the request is read up to its
// newline and recorded, HAProxy's answer copied back until it closes.
func (rec *apiRecorder) relay(c net.Conn, upstream string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(opTimeout))
	var line []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(line), "\n") {
		n, err := c.Read(buf)
		line = append(line, buf[:n]...)
		if err != nil {
			break
		}
	}
	rec.mu.Lock()
	rec.sent = append(rec.sent, string(line))
	rec.mu.Unlock()
	up, err := net.Dial("unix", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	up.SetDeadline(time.Now().Add(opTimeout))
	if _, err := up.Write(line); err == nil {
		io.Copy(c, up)
	}
}

// commands is every command sent so far, split at ";".
func (rec *apiRecorder) commands() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var cmds []string
	for _, line := range rec.sent {
		cmds = append(cmds, strings.Split(strings.TrimSuffix(line, "\n"), ";")...)
	}
	return cmds
}

// TestHAProxyRuntimeNoReload: instances of an existing app come and go
// through the runtime API: 50 replacements by a new instance under a
// keep-alive client (so drained slots get new addresses), no reload,
// put → routed p50 within the 20 ms, and the file HAProxy would
// start from holds the same servers.
func TestHAProxyRuntimeNoReload(t *testing.T) {
	r, _ := newHAProxyRuntimeRig(t)
	r.startHAProxy() // --onetime: the config replaces the placeholder, checked and reloaded
	cur := newBackend(t, "b0")
	curKey := r.register("web_prod", cur)
	r.waitServed(10*time.Second, "web_prod", "b0")
	r.waitReady(10 * time.Second)
	reloads0, master0 := len(r.reloads()), r.masterReloads()

	keep := &http.Client{Timeout: opTimeout}
	url := r.url("/web_prod/")
	var adds []time.Duration
	for i := range 50 {
		next := newBackend(t, fmt.Sprintf("b%d", i+1))
		start := time.Now()
		nk := r.register("web_prod", next)
		adds = append(adds, untilRouted(t, keep, url, next.name, start))
		r.waitAck(5*time.Second, r.del(curKey))
		for range 4 {
			if got, err := fetch(keep, url); err != nil || got != next.name {
				t.Fatalf("after removing %s: served by %q, %v", cur.name, got, err)
			}
		}
		cur, curKey = next, nk
	}
	t.Logf("HAPROXY RUNTIME PROPAGATION: put→routed, 50 changes: p50 %v p99 %v max %v", percentile(adds, .5), percentile(adds, .99), percentile(adds, 1))
	if got := len(r.reloads()) - reloads0; got != 0 {
		t.Errorf("instance changes ran reload_cmd %d times; want 0", got)
	}
	if got := r.masterReloads() - master0; got != 0 {
		t.Errorf("HAProxy reloaded %d times; want 0", got)
	}
	if p50 := percentile(adds, .5); p50 > 20*time.Millisecond {
		t.Errorf("put→routed p50 %v; want ≤ 20ms", p50)
	}
	conf := read(t, filepath.Join(r.out, "rollcall.cfg"))
	ready := regexp.MustCompile(`(?m)^    server s[1-8] (\S+)$`).FindAllStringSubmatch(conf, -1)
	if len(ready) != 1 || ready[0][1] != cur.addr.String() || strings.Count(conf, " disabled\n") != 7 {
		t.Errorf("rollcall.cfg: want %s in one slot and 7 disabled:\n%s", cur.addr, conf)
	}
}

// untilRouted fetches url on keep until backend name answers (5 s after
// start at most) and returns how long since start that took.
func untilRouted(t *testing.T, keep *http.Client, url, name string, start time.Time) time.Duration {
	t.Helper()
	for {
		got, err := fetch(keep, url)
		if err != nil {
			t.Fatal(err)
		}
		if got == name {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s not routed 5s after its put", name)
		}
	}
}

// TestHAProxyRuntimeBurst: 300 changes over 10 apps that have their
// backends already cost no reload, and HAProxy ends with exactly the
// registered servers.
func TestHAProxyRuntimeBurst(t *testing.T) {
	r, _ := newHAProxyRuntimeRig(t)
	r.startHAProxy() // --onetime: the config replaces the placeholder, checked and reloaded
	// 13 instances per app, in one transaction so the renderer first sees
	// all 13 (32 slots): the burst's 15 more fit, so no slot runs out
	// (that is TestHAProxyRuntimeSlotsRunOut).
	const apps, base, puts, dels = 10, 100, 15, 15
	var names, want []string
	for a := range apps {
		names = append(names, fmt.Sprintf("app%d_burst", a))
		var ops []clientv3.Op
		for j := base; j < base+13; j++ {
			ops = append(ops, clientv3.OpPut(instanceKey(t, names[a], burstAddr(a, j)), burstAddr(a, j).String()))
			want = append(want, names[a]+"="+burstAddr(a, j).String())
		}
		ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
		_, err := r.kv.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	r.waitReadyServers(15*time.Second, want)
	r.waitReady(10 * time.Second)
	reloads0, master0 := len(r.reloads()), r.masterReloads()

	span := r.burst(names, puts, dels, 30*time.Millisecond)
	r.waitReadyServers(15*time.Second, want)
	r.waitReady(10 * time.Second)
	t.Logf("HAPROXY RUNTIME BURST: 300 changes over %d apps in %v: %d reload_cmd runs, %d HAProxy reloads",
		apps, span.Round(time.Millisecond), len(r.reloads())-reloads0, r.masterReloads()-master0)
	if got := len(r.reloads()) - reloads0; got != 0 {
		t.Errorf("the burst ran reload_cmd %d times; want 0", got)
	}
	if got := r.masterReloads() - master0; got != 0 {
		t.Errorf("HAProxy reloaded %d times; want 0", got)
	}
}

// TestHAProxyRuntimeSlotsRunOut: an app registering more instances than
// its slots costs exactly one reload (with more slots), and HAProxy ends
// with exactly its instances, none moved from its slot.
func TestHAProxyRuntimeSlotsRunOut(t *testing.T) {
	r, _ := newHAProxyRuntimeRig(t)
	r.startHAProxy() // --onetime: the config replaces the placeholder, checked and reloaded
	bs := r.serve(10*time.Second, "grow_test", "b0", "b1")
	before := r.slotOf("grow_test")
	reloads0, master0 := len(r.reloads()), r.masterReloads()
	want := []string{"grow_test=" + bs[0].addr.String(), "grow_test=" + bs[1].addr.String()}
	for j := range 10 { // 12 instances in 8 slots
		a := burstAddr(7, j)
		r.put(instanceKey(t, "grow_test", a), a.String())
		want = append(want, "grow_test="+a.String())
	}
	r.waitReadyServers(15*time.Second, want)
	r.waitReady(10 * time.Second)
	if got := len(r.reloads()) - reloads0; got != 1 {
		t.Errorf("slots running out ran reload_cmd %d times; want 1", got)
	}
	if got := r.masterReloads() - master0; got != 1 {
		t.Errorf("HAProxy reloaded %d times; want 1", got)
	}
	if after := r.slotOf("grow_test"); after[bs[0].addr.String()] != before[bs[0].addr.String()] || after[bs[1].addr.String()] != before[bs[1].addr.String()] {
		t.Errorf("slots moved: before %v, after %v", before, after)
	}
	r.waitServed(10*time.Second, "grow_test", "b0", "b1") // the other 10 are not listening: checks take them out
}

// slotOf maps each ready server of backend to its slot name.
func (r *rig) slotOf(backend string) map[string]string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), opTimeout)
	defer cancel()
	out, err := r.haproxy.Runtime(ctx, "show servers state "+backend)
	if err != nil {
		r.t.Fatal(err)
	}
	srvs, err := haproxyapi.ParseServersState(out)
	if err != nil {
		r.t.Fatal(err)
	}
	m := map[string]string{}
	for _, s := range srvs {
		if !s.Maint() {
			m[s.Addr.String()] = s.Name
		}
	}
	return m
}

// TestHAProxyRuntimeColdStart: HAProxy restarted while the renderer is
// down serves exactly the instances it last set through the runtime API,
// from the rendered config alone; the renderer started again keeps every
// slot and reloads nothing.
func TestHAProxyRuntimeColdStart(t *testing.T) {
	r, _ := newHAProxyRuntimeRig(t)
	r.startHAProxy() // --onetime: the config replaces the placeholder, checked and reloaded
	bs := r.serve(10*time.Second, "cold_test", "b1", "b2")
	b3 := newBackend(t, "b3")
	r.register("cold_test", b3)
	r.waitAck(10*time.Second, r.del(instanceKey(t, "cold_test", bs[0].addr)))
	r.waitServed(10*time.Second, "cold_test", "b2", "b3")
	slots := r.slotOf("cold_test")

	r.renderer.Stop(syscall.SIGTERM, 10*time.Second)
	r.renderer = nil // servedBy checks a running renderer
	pid, err := os.ReadFile(r.haproxy.PIDFile)
	if err != nil {
		t.Fatal(err)
	}
	var master int
	if _, err := fmt.Sscan(string(pid), &master); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(master, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, "haproxy gone", func() error {
		if c, err := net.Dial("unix", r.haproxy.MasterSocket); err == nil {
			c.Close()
			return fmt.Errorf("master socket still answers")
		}
		return nil
	})
	r.haproxy.Start(t)
	if err := r.servedBy("cold_test", "b2", "b3"); err != nil {
		t.Fatalf("HAProxy cold-started from the rendered files: %v", err)
	}
	if got := r.slotOf("cold_test"); !maps.Equal(got, slots) {
		t.Errorf("after the cold start slots %v; want %v", got, slots)
	}
	master0 := r.masterReloads()
	r.startRenderer()
	r.waitReady(10 * time.Second)
	if got := r.masterReloads() - master0; got != 0 {
		t.Errorf("the renderer started again reloaded HAProxy %d times; want 0", got)
	}
	if got := r.slotOf("cold_test"); !maps.Equal(got, slots) {
		t.Errorf("after the renderer's restart slots %v; want %v", got, slots)
	}
}

// runtimeCommand is every command the renderer may send to the runtime API.
var runtimeCommand = regexp.MustCompile(`^(show servers state|show stat -1 4 -1|set server [A-Za-z0-9][A-Za-z0-9.-]*_[A-Za-z0-9][A-Za-z0-9.-]*/s[1-9][0-9]* (addr [0-9a-f.:]+ port [1-9][0-9]*|state (ready|maint)))$`)

// TestHAProxyRuntimeInjection: the injection values of the nginx tests
// (and two written for HAProxy's syntax) never reach HAProxy's runtime API
// nor its config: every command sent is one of the renderer's own shapes,
// none names an injected address, the legitimate route keeps answering.
func TestHAProxyRuntimeInjection(t *testing.T) {
	r, rec := newHAProxyRuntimeRig(t)
	r.startHAProxy() // --onetime: the config replaces the placeholder, checked and reloaded
	const svc = "inj_test"
	bs := r.serve(10*time.Second, svc, "b1", "b2")
	port := injectPort(t)
	// and two for the runtime API's: a second command after ";" or "\n".
	evil := append(haproxyInjections(port),
		"1.2.3.7 port 80;shutdown sessions server inj_test/s1", "127.0.0.1:1\nshutdown frontend rollcall")
	offset := len(r.renderer.Output())
	for i, v := range evil {
		r.put(fmt.Sprintf("/%s/127.0.0.1-%d", svc, i+1), v)
	}
	r.put(instanceKey(t, svc, bs[1].addr), bs[1].addr.String()+";shutdown frontend rollcall") // a valid one turned
	r.logSince(10*time.Second, offset, regexpWithheld(len(evil)+1))
	r.waitServed(10*time.Second, svc, "b1")
	r.waitReady(10 * time.Second)
	conf := read(t, filepath.Join(r.out, "rollcall.cfg"))
	for _, cmd := range append(rec.commands(), strings.Split(conf, "\n")...) {
		if strings.Contains(cmd, "injected") || strings.Contains(cmd, "backup") || strings.Contains(cmd, "shutdown") ||
			strings.Contains(cmd, "1.2.3.") || strings.Contains(cmd, "127.0.0.1:1 ") || strings.Contains(cmd, "port 1\n") {
			t.Errorf("an injected value reached HAProxy: %q", cmd)
		}
	}
	for _, cmd := range rec.commands() {
		if !runtimeCommand.MatchString(cmd) {
			t.Errorf("runtime API command %q is not one of the renderer's shapes", cmd)
		}
	}
	if len(rec.commands()) == 0 {
		t.Error("the recorder saw no command")
	}
	r.waitReadyServers(5*time.Second, []string{svc + "=" + bs[0].addr.String()})
	if err := r.servedBy(svc, "b1"); err != nil {
		t.Errorf("the legitimate route: %v", err)
	}
}

// TestHAProxyRuntimeDrainBeforeReuse: a removed instance's slot with a
// request still in flight is not given to another instance: with every
// other slot taken, the next instance costs a reload with more slots
// instead, and the request in flight completes.
func TestHAProxyRuntimeDrainBeforeReuse(t *testing.T) {
	r, _ := newHAProxyRuntimeRig(t)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("slow"))
	}))
	t.Cleanup(slow.Close)
	sa := netip.MustParseAddrPort(slow.Listener.Addr().String())
	r.startHAProxy()
	r.register("drain_test", &backend{name: "slow", addr: sa})
	r.waitServed(10*time.Second, "drain_test", "slow")
	r.waitReady(10 * time.Second)
	slot := r.slotOf("drain_test")[sa.String()]

	inflight := make(chan error, 1)
	var wg sync.WaitGroup
	t.Cleanup(func() { closeOnce(release); wg.Wait() }) // before slow closes
	wg.Go(func() {
		code, body, err := r.status("/drain_test/slow")
		if err == nil && (code != 200 || body != "slow") {
			err = fmt.Errorf("got %d %q", code, body)
		}
		inflight <- err
	})
	waitfor.Cond(t, 5*time.Second, "the slow request reaches its server", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
		defer cancel()
		out, err := r.haproxy.Runtime(ctx, "show stat -1 4 -1")
		if err != nil {
			return err
		}
		s, err := haproxyapi.ParseSessions(out)
		if err == nil && s["drain_test/"+slot] != 1 {
			err = fmt.Errorf("sessions %v", s)
		}
		return err
	})
	r.waitAck(10*time.Second, r.del(instanceKey(t, "drain_test", sa)))
	reloads0 := r.masterReloads()
	var want []string
	for j := range 8 { // 7 fit the free slots; the 8th finds only the busy one
		a := burstAddr(9, j)
		r.put(instanceKey(t, "drain_test", a), a.String())
		want = append(want, "drain_test="+a.String())
		if j == 6 { // the app kept its backend with no instance: no reload so far
			r.waitReadyServers(10*time.Second, want)
			if got := r.masterReloads() - reloads0; got != 0 {
				t.Fatalf("7 instances in 7 free slots cost %d reloads", got)
			}
		}
	}
	r.waitReadyServers(15*time.Second, want)
	r.waitReady(10 * time.Second)
	if got := r.masterReloads() - reloads0; got != 1 {
		t.Errorf("the 8th instance with the only free slot busy cost %d reloads; want 1 (more slots)", got)
	}
	if got := r.slotOf("drain_test"); slices.Contains(slices.Collect(maps.Values(got)), slot) {
		t.Errorf("the busy slot %s was given to another instance: %v", slot, got)
	}
	closeOnce(release)
	if err := <-inflight; err != nil {
		t.Errorf("the request in flight through the drained slot: %v", err)
	}
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}
