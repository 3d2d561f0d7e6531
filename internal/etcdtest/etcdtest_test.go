package etcdtest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

func TestStartRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	s := Start(t)
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	resp, err := c.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart Get(/k) = %v; want v", resp.Kvs)
	}
}

// TestStartOnOtherPorts: a new server whose client port was taken after
// all starts on other ports.
func TestStartOnOtherPorts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	s := newServer(t)
	taken := s.client
	l, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s.startFresh()
	t.Cleanup(s.Stop)
	if s.Endpoint == taken {
		t.Fatalf("started on the taken %s", taken)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client(t).Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
}

// TestCluster: three members serve one history; an isolated member keeps
// running without a leader while the other two go on, and catches up once
// healed; a stopped leader is replaced.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	c := StartCluster(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/k", "v1"); err != nil {
		t.Fatal(err)
	}
	m := c.Members[0]
	if m.IsLeader() { // isolate a follower: the leader would step down too, slower
		m = c.Members[1]
	}
	c.Isolate(m, true)
	waitfor.Cond(t, 15*time.Second, "isolated member without a leader", isTrue(func() bool { return !m.HasLeader() }, "leaderless"))
	if l := c.WaitLeader(10 * time.Second); l == m {
		t.Fatal("the isolated member is the leader")
	}
	if _, err := cli.Put(ctx, "/k", "v2"); err != nil {
		t.Fatal(err)
	}
	c.Isolate(m, false)
	waitfor.Cond(t, 15*time.Second, "healed member has a leader", isTrue(m.HasLeader, "with a leader"))

	l := c.WaitLeader(10 * time.Second)
	l.Stop()
	if n := c.WaitLeader(15 * time.Second); n == l {
		t.Fatal("stopped leader still leads")
	}
	resp, err := cli.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" {
		t.Fatalf("Get(/k) after the leader stopped = %v, %v; want v2", resp, err)
	}
	l.Start()
}

func isTrue(cond func() bool, what string) func() error {
	return func() error {
		if !cond() {
			return fmt.Errorf("not %s", what)
		}
		return nil
	}
}
