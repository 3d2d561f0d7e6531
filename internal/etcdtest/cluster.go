package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/internal/proctest"
)

// Cluster is an embedded etcd cluster on loopback, owned by one test. Each
// member's client endpoint and peer URL are proxies the test controls:
// Hold keeps clients off a member, Isolate cuts its raft traffic while it
// keeps running (it answers clients, without a leader).
type Cluster struct {
	t       testing.TB
	Members []*Member
	initial string // etcd's --initial-cluster
}

// Member is one member of a Cluster.
type Member struct {
	Name     string
	Endpoint string // "127.0.0.1:port" through its client proxy; stable across Stop/Start
	c        *Cluster
	dir      string
	client   string // real client listener
	peer     string // real peer listener
	peerURL  string // advertised: its peer proxy
	e        *embed.Etcd
	cp       *clientProxy
	pp       *peerProxy
}

// StartCluster starts n members and waits until they serve; they stop at
// test cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var initial []string
	for i := range n {
		m := &Member{
			Name: fmt.Sprintf("m%d", i), c: c, dir: t.TempDir(),
			Endpoint: freeAddr(t), client: freeAddr(t), peer: freeAddr(t), peerURL: "http://" + freeAddr(t),
		}
		m.cp = newClientProxy(t, m.Endpoint, m.client)
		m.pp = newPeerProxy(t, strings.TrimPrefix(m.peerURL, "http://"), m.peer)
		initial = append(initial, m.Name+"="+m.peerURL)
		c.Members = append(c.Members, m)
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(c.close)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.Members {
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func freeAddr(t testing.TB) string { return fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t)) }

// start runs the member on its data dir and waits until it serves.
func (m *Member) start() error {
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.UnsafeNoFsync = m.Name, m.dir, true
	cfg.InitialCluster, cfg.InitialClusterToken = m.c.initial, "rollcall-test"
	cu := url.URL{Scheme: "http", Host: m.client}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{{Scheme: "http", Host: m.Endpoint}}
	cfg.ListenPeerUrls = []url.URL{{Scheme: "http", Host: m.peer}}
	pu, err := url.Parse(m.peerURL)
	if err != nil {
		return err
	}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zaptest.NewLogger(m.c.t, zaptest.Level(zapcore.ErrorLevel)))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s: %w", m.Name, err)
	case <-time.After(2 * embedetcd.StartTimeout):
		e.Close()
		return fmt.Errorf("member %s not ready after %v", m.Name, 2*embedetcd.StartTimeout)
	}
	m.e = e
	return nil
}

// Stop stops the member, keeping its data; a no-op when stopped.
func (m *Member) Stop() {
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

// Start starts a stopped member again on its data dir and ports.
func (m *Member) Start() {
	m.c.t.Helper()
	if err := m.start(); err != nil {
		m.c.t.Fatal(err)
	}
}

// Hold refuses clients this member's endpoint (and drops their open
// connections), or (false) accepts them again.
func (m *Member) Hold(held bool) { m.cp.hold(held) }

// Clients is the number of client connections open to the member.
func (m *Member) Clients() int { return m.cp.active() }

// ID is the member's raft ID, in raft's hex form.
func (m *Member) ID() string { return m.e.Server.MemberID().String() }

// IsLeader reports whether the member is running and the leader.
func (m *Member) IsLeader() bool {
	return m.e != nil && m.e.Server.Leader() == m.e.Server.MemberID()
}

// HasLeader reports whether the running member knows a leader.
func (m *Member) HasLeader() bool { return m.e != nil && m.e.Server.Leader() != 0 }

// Endpoints are every member's client endpoint.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Endpoint)
	}
	return eps
}

// Leader returns the current leader among the running members, or nil.
func (c *Cluster) Leader() *Member {
	for _, m := range c.Members {
		if m.IsLeader() {
			return m
		}
	}
	return nil
}

// Isolate cuts m's raft traffic both ways (on=true), or restores it: m
// keeps running and answering clients, and loses its leader.
func (c *Cluster) Isolate(m *Member, on bool) {
	id := m.ID()
	for _, o := range c.Members {
		if o == m {
			o.pp.cut(true, "", on)
		} else {
			o.pp.cut(false, id, on)
		}
	}
}

// Kill cuts m off from clients and peers at once: what the others see of a
// kill -9 (open connections drop, nothing reaches it, it reaches no one).
// Stop is no kill: it hands leadership over and drains its streams first.
// The member's server stops at cleanup.
func (c *Cluster) Kill(m *Member) {
	m.Hold(true)
	c.Isolate(m, true)
}

// Follower returns a running member that is not the leader.
func (c *Cluster) Follower() *Member {
	c.t.Helper()
	l := c.WaitLeader(10 * time.Second)
	for _, m := range c.Members {
		if m != l && m.e != nil {
			return m
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// Client returns a client of every member, closed at test cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// WaitLeader waits until a running member is the leader and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) *Member {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if l := c.Leader(); l != nil {
			return l
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("no leader after %v", timeout)
			return nil
		case <-tick.C:
		}
	}
}

func (c *Cluster) close() {
	var wg sync.WaitGroup
	for _, m := range c.Members {
		wg.Go(m.Stop)
	}
	wg.Wait()
	for _, m := range c.Members {
		m.cp.close()
		m.pp.close()
	}
}
