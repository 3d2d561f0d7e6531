package rolling_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// clusterGateway is a gateway on a three-member etcd cluster; the renderer
// and the registrars get every member's endpoint.
func clusterGateway(t *testing.T, ttl time.Duration, before func(*gateway)) *gateway {
	t.Helper()
	bins.Need(t)
	return startGateway(t, gatewayConfig{
		server: rollingServer, resources: getvsResource("/", "/"+app+"_"+env),
		templates: map[string]string{"getvs.tmpl": getvsAt("/" + app + "_" + env)}, plainReload: true,
		members: 3, beforeRenderer: before, ttl: ttl,
	})
}

// deletions records every deletion under app_env's dir until the test ends.
func deletions(t *testing.T, g *gateway) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got []string
	)
	wch := g.cli.Watch(clientv3.WithRequireLeader(ctx), registry.ServiceDir("", app, env), clientv3.WithPrefix(), clientv3.WithFilterPut())
	wg.Go(func() {
		for wr := range wch {
			mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					got = append(got, string(ev.Kv.Key))
				}
			}
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// TestClusterLeaderKill: the etcd leader is killed (cut off from clients
// and peers at once); no registered instance is deregistered, and an
// instance registered after the kill is served within 5 s of it.
func TestClusterLeaderKill(t *testing.T) {
	t.Parallel()
	g := clusterGateway(t, 0, nil)
	url := g.nginx.URL("/")
	a, b := g.startBackend(t, 5*time.Second), g.startBackend(t, 5*time.Second)
	waitServed(t, url, addrs([]*backend{a, b}), 20*time.Second)
	deleted := deletions(t, g)

	l := g.cluster.Leader()
	if l == nil {
		t.Fatal("no leader")
	}
	killed := time.Now()
	g.cluster.Kill(l)
	c := g.startBackend(t, 5*time.Second)
	waitServed(t, url, addrs([]*backend{a, b, c}), 5*time.Second-time.Since(killed))
	t.Logf("leader %s killed: new instance served %v after", l.Name, time.Since(killed).Round(time.Millisecond))
	// Two TTLs more: a lease the kill lost would have expired by now.
	waitfor.Cond(t, 3*ttl, "two TTLs after the kill", func() error {
		if d := time.Since(killed); d < 2*ttl+time.Second {
			return fmt.Errorf("only %v", d)
		}
		return nil
	})
	if d := deleted(); len(d) > 0 {
		t.Fatalf("instances deregistered by the leader kill: %v", d)
	}
	waitServed(t, url, addrs([]*backend{a, b, c}), 5*time.Second)
}

// TestClusterWatchedMember: the member the renderer's watch uses is cut
// off — stopped, or isolated from the other two so it keeps answering
// without a leader — and the renderer notices and keeps applying through
// the other members: an instance registered then is served, and none is
// lost (the registrars' TTL is the default 10s: an isolated member ends
// the streams of its clients only after three election timeouts, and a
// lease kept alive through it must outlast that). The watched member is a
// follower (the leader's case is TestClusterLeaderKill); the renderer
// starts with the other two held off, so its list and watch go to it; they
// join once it acknowledged.
func TestClusterWatchedMember(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(c *etcdtest.Cluster, m *etcdtest.Member)
	}{
		{"stopped", func(_ *etcdtest.Cluster, m *etcdtest.Member) { m.Stop() }},
		{"isolated", func(c *etcdtest.Cluster, m *etcdtest.Member) { c.Isolate(m, true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var watched *etcdtest.Member
			var others []*etcdtest.Member
			g := clusterGateway(t, 10*time.Second, func(g *gateway) {
				watched = g.cluster.Follower()
				for _, m := range g.cluster.Members {
					if m != watched {
						others = append(others, m)
						m.Hold(true)
					}
				}
			})
			for _, m := range others {
				m.Hold(false)
			}
			// The renderer's and the test's clients reconnect to the others.
			waitfor.Cond(t, 30*time.Second, "clients back on every member", func() error {
				for _, m := range others {
					if n := m.Clients(); n < 2 {
						return fmt.Errorf("%s has %d clients", m.Name, n)
					}
				}
				return nil
			})
			url := g.nginx.URL("/")
			a := g.startBackend(t, 5*time.Second)
			waitServed(t, url, addrs([]*backend{a}), 20*time.Second)
			deleted := deletions(t, g)

			tc.cut(g.cluster, watched) // a stop takes seconds: etcd drains its streams
			cut := time.Now()
			b := g.startBackend(t, 5*time.Second) // its registrar, too, may first meet the cut-off member
			registered := time.Since(cut)
			waitServed(t, url, addrs([]*backend{a, b}), 5*time.Second)
			t.Logf("member %s %s: new instance registered %v, served %v after", watched.Name, tc.name, registered.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))
			if tc.name == "isolated" {
				proctest.AssertLogged(t, g.renderer, "watch broken, resuming")
			}
			if watched.HasLeader() {
				t.Errorf("the cut-off member still has a leader")
			}
			if d := deleted(); len(d) > 0 {
				t.Fatalf("instances deregistered: %v", d)
			}
		})
	}
}
