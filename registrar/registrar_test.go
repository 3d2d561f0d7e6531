package registrar

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// TestRunLifecycle: the key appears with ip:port only once the app is ready,
// on a lease of --ttl with the port claim; the app gets the port and
// HOST_IP; signals are forwarded; SIGTERM removes the key before the app
// gets SIGTERM; the app's exit code is the registrar's.
func TestRunLifecycle(t *testing.T) {
	h := newHarness(t)
	a := h.newApp()
	dir := registry.ServiceDir("", "web", "PRE")
	cfg := h.config(a, "exit=7", "ready-delay=800ms", "etcd="+h.etcd.Endpoint, "keydir="+dir)
	cfg.PortEnv = []string{"PORT", "APP_PORT"}
	cfg.Check = "http://{{.IP}}:{{.Port}}/health"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wch := h.cli.Watch(ctx, dir, clientv3.WithPrefix())
	r := h.start(cfg)

	var put *mvccpb.KeyValue
	select {
	case wr := <-wch:
		if len(wr.Events) == 0 || wr.Events[0].Type != mvccpb.PUT {
			t.Fatalf("first event under %s = %v; want a PUT", dir, wr.Events)
		}
		put = wr.Events[0].Kv
	case <-ctx.Done():
		t.Fatal("no registration within 30s")
	}
	if _, ok := a.find("listening"); !ok {
		t.Fatalf("%s registered before the app listened: events %v", put.Key, a.events())
	}
	port := a.env(t, "PORT")
	if want := dir + "127.0.0.1-" + port; string(put.Key) != want || string(put.Value) != "127.0.0.1:"+port {
		t.Fatalf("registered %s = %s; want %s = 127.0.0.1:%s", put.Key, put.Value, want, port)
	}
	if got, host := a.env(t, "APP_PORT"), a.env(t, "HOST_IP"); got != port || host != "127.0.0.1" {
		t.Fatalf("app env APP_PORT=%s HOST_IP=%s; want %s, 127.0.0.1", got, host, port)
	}
	ttl, err := h.cli.TimeToLive(ctx, clientv3.LeaseID(put.Lease))
	if err != nil || ttl.GrantedTTL != int64(testTTL/time.Second) {
		t.Fatalf("lease TTL = %+v, %v; want granted %v", ttl, err, testTTL)
	}
	claim := "/_ports/127.0.0.1/" + port
	resp, err := h.get(claim)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "web_PRE" || resp.Kvs[0].Lease != put.Lease {
		t.Fatalf("claim %s = %v, %v; want web_PRE on the instance's lease %x", claim, resp.Kvs, err, put.Lease)
	}

	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH} {
		r.sigs <- sig
		waitfor.Cond(t, 5*time.Second, "app got "+sig.String(), func() error {
			for _, ev := range a.events() {
				if ev.name == "sig" && strings.HasPrefix(ev.detail, signalName(sig)) {
					return nil
				}
			}
			return fmt.Errorf("events %v", a.events())
		})
	}

	r.sigs <- syscall.SIGTERM
	code, err := r.wait(t, 15*time.Second)
	if code != 7 || err != nil {
		t.Fatalf("registrar exit = %d, %v; want the app's 7", code, err)
	}
	if ev, _ := a.find("sigterm"); ev.detail != "key=absent" {
		t.Fatalf("app SIGTERM event %q; want key=absent (the key goes before the app is stopped)", ev.detail)
	}
	h.absent(claim, time.Second)
}

// TestRunReadiness: with --check tcp the key appears only once the app
// listens, with none at once (an app that never listens is registered);
// then the keep-alive holds it on the same lease for several TTLs.
func TestRunReadiness(t *testing.T) {
	tests := []struct {
		name, check string
		args        []string
		listens     bool
	}{
		{"tcp waits for the listener", "tcp", []string{"ready-delay=1s"}, true},
		{"none does not wait", "none", []string{"no-listen=1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.newApp()
			cfg := h.config(a, tc.args...)
			cfg.Check = tc.check
			dir := registry.ServiceDir("", "web", "PRE")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			wch := h.cli.Watch(ctx, dir, clientv3.WithPrefix())
			h.start(cfg)
			var put *mvccpb.KeyValue
			select {
			case wr := <-wch:
				if len(wr.Events) != 1 || wr.Events[0].Type != mvccpb.PUT {
					t.Fatalf("first events under %s = %v, %v; want one PUT", dir, wr.Events, wr.Err())
				}
				put = wr.Events[0].Kv
			case <-ctx.Done():
				t.Fatal("no registration within 30s")
			}
			registered := time.Now()
			if _, ok := a.find("listening"); ok != tc.listens {
				t.Fatalf("registered with the app listening %v; want %v (events %v)", ok, tc.listens, a.events())
			}
			key, value := h.instanceKey(t, a)
			if string(put.Key) != key || string(put.Value) != value {
				t.Fatalf("registered %s = %s; want %s = %s", put.Key, put.Value, key, value)
			}
			waitfor.Cond(t, 3*testTTL+5*time.Second, "key held for 3 TTLs", func() error {
				select {
				case wr := <-wch:
					t.Fatalf("%s changed while the app was healthy: %v, %v", key, wr.Events, wr.Err())
				default:
				}
				if d := time.Since(registered); d < 3*testTTL {
					return fmt.Errorf("held for %v", d)
				}
				return nil
			})
			if lease := h.registered(key, value, time.Second); lease != clientv3.LeaseID(put.Lease) {
				t.Fatalf("%s on lease %x; want the first lease %x, kept alive", key, lease, put.Lease)
			}
		})
	}
}

// TestRunStopTimeout: an app that ignores SIGTERM is killed after
// --stop-timeout and the registrar exits 128+9.
func TestRunStopTimeout(t *testing.T) {
	h := newHarness(t)
	a := h.newApp()
	cfg := h.config(a, "ignore-term=1", "exit=3")
	cfg.StopTimeout = time.Second
	r := h.start(cfg)
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)
	r.cancel() // the context, like a signal, stops it
	code, err := r.wait(t, 10*time.Second)
	returned := time.Now()
	term, _ := a.find("sigterm")
	if code != 128+int(syscall.SIGKILL) || err != nil {
		t.Fatalf("registrar exit = %d, %v; want 137", code, err)
	}
	if d := returned.Sub(term.at); d < cfg.StopTimeout-50*time.Millisecond || d > cfg.StopTimeout+2*time.Second {
		t.Fatalf("killed %v after SIGTERM; want about --stop-timeout %v", d, cfg.StopTimeout)
	}
}

// TestRunStopsProcessGroup: SIGINT stops like SIGTERM, and the app's
// SIGTERM goes to its whole process group, so what it started stops too.
func TestRunStopsProcessGroup(t *testing.T) {
	h := newHarness(t)
	a, member := h.newApp(), h.newApp()
	cfg := h.config(a, "group="+member.out)
	r := h.start(cfg)
	pid, _ := strconv.Atoi(a.wait(t, "member", 10*time.Second).detail)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	member.wait(t, "pid", 10*time.Second) // its handler is installed
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)
	r.sigs <- syscall.SIGINT
	if code, err := r.wait(t, 10*time.Second); code != 0 || err != nil {
		t.Fatalf("registrar exit = %d, %v; want 0", code, err)
	}
	member.wait(t, "sigterm", 5*time.Second)
}

// TestRunKillsLeftoverGroup: an app that exits by itself and leaves a
// process in its group behind: the registrar kills that process before it
// returns, so nothing the app started outlives the registrar.
func TestRunKillsLeftoverGroup(t *testing.T) {
	h := newHarness(t)
	a, member := h.newApp(), h.newApp()
	r := h.start(h.config(a, "group="+member.out, "exit-after=1s", "exit=3"))
	pid, _ := strconv.Atoi(a.wait(t, "member", 10*time.Second).detail)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) }) // only if it survived: a failure
	member.wait(t, "pid", 10*time.Second)
	if code, err := r.wait(t, 10*time.Second); code != 3 || err != nil {
		t.Fatalf("registrar exit = %d, %v; want the app's 3", code, err)
	}
	// SIGKILLed before Run returned: only its death is left to happen.
	waitfor.Cond(t, 500*time.Millisecond, "the app's leftover group member dies", func() error {
		if proc.Alive(pid) {
			return fmt.Errorf("member %d still running", pid)
		}
		return nil
	})
	if _, ok := member.find("sigterm"); ok {
		t.Errorf("leftover member got SIGTERM; want SIGKILL once the app is gone")
	}
}

// TestRunAppExits: an app that exits by itself is deregistered at once and
// its status is the registrar's.
func TestRunAppExits(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"exit code", []string{"exit-after=1s", "exit=3"}, 3},
		{"exit zero", []string{"exit-after=1s"}, 0},
		{"killed by signal", []string{"exit-after=1s", "kill-self=1"}, 128 + int(syscall.SIGKILL)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.newApp()
			cfg := h.config(a, tc.args...)
			cfg.Check = "none"
			r := h.start(cfg)
			key, value := h.instanceKey(t, a)
			h.registered(key, value, 10*time.Second)
			code, err := r.wait(t, 10*time.Second)
			if code != tc.want || err != nil {
				t.Fatalf("registrar exit = %d, %v; want %d", code, err, tc.want)
			}
			h.absent(key, time.Second)
		})
	}
}

func TestRunCommandNotFound(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(h.newApp())
	cfg.Command = []string{"/nonexistent/app"}
	r := h.start(cfg)
	code, err := r.wait(t, 10*time.Second)
	if code != 127 || err == nil {
		t.Fatalf("registrar exit = %d, %v; want 127 and an error", code, err)
	}
	resp, err := h.cli.Get(context.Background(), "/_ports/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("port claims left = %v, %v; want none", resp.Count, err)
	}
}

// TestRunReregisters: whatever removes the registration behind the
// registrar's back, the key is back within 2×TTL while the app keeps running.
func TestRunReregisters(t *testing.T) {
	tests := []struct {
		name     string
		act      func(ctx context.Context, cli *clientv3.Client, key string, lease clientv3.LeaseID) error
		newLease bool
	}{
		{"lease revoked", func(ctx context.Context, cli *clientv3.Client, key string, lease clientv3.LeaseID) error {
			_, err := cli.Revoke(ctx, lease)
			return err
		}, true},
		{"key deleted", func(ctx context.Context, cli *clientv3.Client, key string, lease clientv3.LeaseID) error {
			_, err := cli.Delete(ctx, key)
			return err
		}, false},
		{"key overwritten", func(ctx context.Context, cli *clientv3.Client, key string, lease clientv3.LeaseID) error {
			_, err := cli.Put(ctx, key, "10.9.9.9:1")
			return err
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.newApp()
			h.start(h.config(a))
			key, value := h.instanceKey(t, a)
			lease := h.registered(key, value, 10*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tc.act(ctx, h.cli, key, lease); err != nil {
				t.Fatal(err)
			}
			waitfor.Cond(t, 2*testTTL, key+" back", func() error {
				resp, err := h.get(key)
				if err != nil {
					return err
				}
				if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
					return fmt.Errorf("got %v", resp.Kvs)
				}
				if l := clientv3.LeaseID(resp.Kvs[0].Lease); l == 0 || (tc.newLease && l == lease) {
					return fmt.Errorf("lease %x", l)
				}
				return nil
			})
			a.alive(t)
		})
	}
}

// TestRunEtcdRestart: etcd stopped for longer than the TTL and started
// again on the same data: the key is back within 2×TTL of etcd answering,
// and the app kept running throughout.
//
// etcd extends every lease by its TTL when it starts, so the key put before
// the outage is still there right after the restart: only a key on a new
// lease shows the registrar registered again, and it must still be there
// once the old lease has expired.
func TestRunEtcdRestart(t *testing.T) {
	h := newHarness(t)
	a := h.newApp()
	h.start(h.config(a))
	key, value := h.instanceKey(t, a)
	old := h.registered(key, value, 10*time.Second)
	h.etcd.Stop()
	stopped := time.Now()
	waitfor.Cond(t, 30*time.Second, "registrar noticed the lease is lost", func() error { return h.logs.has("lost") })
	waitfor.Cond(t, 2*testTTL, "etcd down for longer than the TTL", func() error {
		if d := time.Since(stopped); d <= testTTL {
			return fmt.Errorf("down for %v", d)
		}
		return nil
	})
	h.etcd.Restart()
	answering := time.Now()
	h.reconnect()
	var lease clientv3.LeaseID
	waitfor.Cond(t, 2*testTTL-time.Since(answering), key+" on a new lease", func() error {
		resp, err := h.get(key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value {
			return fmt.Errorf("got %v", resp.Kvs)
		}
		if lease = clientv3.LeaseID(resp.Kvs[0].Lease); lease == 0 || lease == old {
			return fmt.Errorf("still on the lease %x from before the outage", old)
		}
		return nil
	})
	waitfor.Cond(t, 3*testTTL, fmt.Sprintf("old lease %x gone", old), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ttl, err := h.cli.TimeToLive(ctx, old)
		if err != nil {
			return err
		}
		if ttl.TTL != -1 {
			return fmt.Errorf("TTL %d left", ttl.TTL)
		}
		return nil
	})
	if got := h.registered(key, value, time.Second); got != lease {
		t.Fatalf("%s on lease %x after the old one went; want the new %x", key, got, lease)
	}
	a.alive(t)
}

// TestRunEtcdDownAtStart: the app starts while etcd is down (port picked by
// local checks, and said so) and is registered once etcd answers.
func TestRunEtcdDownAtStart(t *testing.T) {
	h := newHarness(t)
	h.etcd.Stop()
	a := h.newApp()
	h.start(h.config(a))
	a.wait(t, "listening", 30*time.Second)
	if err := h.logs.has("local checks only"); err != nil {
		t.Fatal(err)
	}
	h.etcd.Restart()
	h.reconnect()
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 2*testTTL)
	a.alive(t)
}

// TestRunUnhealthy: three failed health checks in a row deregister the
// instance (its port claim stays); passing again registers it again.
func TestRunUnhealthy(t *testing.T) {
	h := newHarness(t)
	a := h.newApp()
	sick := t.TempDir() + "/sick"
	cfg := h.config(a, "health-file="+sick)
	cfg.Check = "http://{{.Addr}}/health"
	h.start(cfg)
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.absent(key, 5*time.Second)
	resp, err := h.get("/_ports/127.0.0.1/" + a.env(t, "PORT"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("port claim while unhealthy = %v, %v; want kept", resp, err)
	}
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	h.registered(key, value, 5*time.Second)
	a.alive(t)
}

// TestRunConcurrent: 50 registrars on one host and one etcd, picking from a
// range barely larger than 50, get 50 distinct ports. The apps do not
// listen, so every bind test passes: only the etcd claim keeps them apart.
func TestRunConcurrent(t *testing.T) {
	h := newHarness(t)
	const n = 50
	lo := uint16(20000 + time.Now().UnixNano()%12000)
	var runs []*running
	var apps []app
	for range n {
		apps = append(apps, h.newApp())
		cfg := h.config(apps[len(apps)-1], "no-listen=1")
		cfg.Check = "none"
		cfg.PortRange = PortRange{lo, lo + n + 9}
		cfg.StopTimeout = 2 * time.Second
		// 50 clients at once on one race-instrumented etcd: slow, not down.
		cfg.TTL, cfg.DialTimeout = 5*time.Second, 5*time.Second
		runs = append(runs, h.start(cfg))
	}
	dir := registry.ServiceDir("", "web", "PRE")
	var resp *clientv3.GetResponse
	waitfor.Cond(t, 60*time.Second, fmt.Sprintf("%d instances registered", n), func() error {
		var err error
		resp, err = h.cli.Get(context.Background(), dir, clientv3.WithPrefix())
		if err != nil {
			return err
		}
		if len(resp.Kvs) != n {
			return fmt.Errorf("%d registered", len(resp.Kvs))
		}
		return nil
	})
	ports := map[string]bool{}
	for _, kv := range resp.Kvs {
		ports[string(kv.Value)] = true
	}
	if len(ports) != n {
		t.Fatalf("%d registrars got %d distinct ports: %v", n, len(ports), ports)
	}
	for _, a := range apps { // handling SIGTERM, not just started
		a.wait(t, "pid", 30*time.Second)
	}
	for _, r := range runs {
		r.cancel()
	}
	for _, r := range runs {
		if code, err := r.wait(t, 30*time.Second); code != 0 || err != nil {
			t.Fatalf("registrar exit = %d, %v; want 0", code, err)
		}
	}
	resp, err := h.cli.Get(context.Background(), "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("keys left after all stopped = %d, %v; want 0", resp.Count, err)
	}
}

// TestRunFixedPort: --port is used as given, claimed and registered.
func TestRunFixedPort(t *testing.T) {
	h := newHarness(t)
	_, port := busyRange(t) // a free port
	a := h.newApp()
	cfg := h.config(a)
	cfg.Port = port
	h.start(cfg)
	if got := a.env(t, "PORT"); got != fmt.Sprint(port) {
		t.Fatalf("app PORT = %s; want the fixed %d", got, port)
	}
	key, value := h.instanceKey(t, a)
	lease := h.registered(key, value, 10*time.Second)
	resp, err := h.get(fmt.Sprintf("/_ports/127.0.0.1/%d", port))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != lease {
		t.Fatalf("claim = %v, %v; want it on lease %x", resp, err, lease)
	}
}

// TestRunStopWithEtcdDown: when the revoke cannot reach etcd, the app is
// stopped once its key has expired with the lease (a TTL), not before and
// not after --drain-timeout.
func TestRunStopWithEtcdDown(t *testing.T) {
	h := newHarness(t)
	a := h.newApp()
	cfg := h.config(a)
	cfg.Check = "none"
	r := h.start(cfg)
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)
	h.etcd.Stop()
	sent := time.Now()
	r.sigs <- syscall.SIGTERM
	if code, err := r.wait(t, 15*time.Second); code != 0 || err != nil {
		t.Fatalf("registrar exit = %d, %v; want 0", code, err)
	}
	term, ok := a.find("sigterm")
	if d := term.at.Sub(sent); !ok || d < testTTL-100*time.Millisecond || d > testTTL+1500*time.Millisecond {
		t.Fatalf("app got SIGTERM %v after the registrar (%v); want about the TTL %v", d, ok, testTTL)
	}
}

// TestRunIPv6: an IPv6 advertised address gives key <ip>-<port> and value
// [ip]:port, and the app gets the bare address in HOST_IP.
func TestRunIPv6(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		l.Close()
	}
	h := newHarness(t)
	a := h.newApp()
	cfg := h.config(a)
	cfg.IP = netip.MustParseAddr("::1")
	cfg.Check = "http://{{.Addr}}/"
	h.start(cfg)
	port := a.env(t, "PORT")
	if ip := a.env(t, "HOST_IP"); ip != "::1" {
		t.Fatalf("app HOST_IP = %q; want ::1", ip)
	}
	key, value := "/web_PRE/::1-"+port, "[::1]:"+port
	h.registered(key, value, 10*time.Second)
	if _, err := registry.ParseInstance(key, value); err != nil {
		t.Fatalf("registered pair does not parse: %v", err)
	}
}

func TestPrimaryIPv4(t *testing.T) {
	t.Parallel()
	ip, err := primaryIPv4()
	if err != nil {
		t.Skip("no IPv4 route or interface here:", err)
	}
	if !ip.Is4() || ip.IsUnspecified() {
		t.Fatalf("primaryIPv4() = %v; want a usable IPv4 address", ip)
	}
}
