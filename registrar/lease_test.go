package registrar

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestRevokeKeepsNewerKey: deregistering revokes the lease rather than
// deleting the key, so a key a newer instance put again on its own lease
// stays, while the port claim on our lease goes.
func TestRevokeKeepsNewerKey(t *testing.T) {
	h := newHarness(t)
	c := &conn{cfg: clientv3.Config{Endpoints: []string{h.etcd.Endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()}}
	defer c.close()
	k := newKeeper(c, keeperConfig{
		Key: "/web_PRE/127.0.0.1-1", Value: "127.0.0.1:1",
		ClaimKey: "/_ports/127.0.0.1/1", ClaimValue: "web_PRE",
		TTL: testTTL, OpTimeout: time.Second,
	}, h.log)
	k.setWant(true)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.run(ctx) }()
	ours := h.registered(k.key, k.value, 10*time.Second)
	stop()
	<-done

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	newer, err := h.cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.cli.Put(ctx, k.key, k.value, clientv3.WithLease(newer.ID)); err != nil {
		t.Fatal(err)
	}
	rev, err := k.revoke(ctx)
	if err != nil || rev == 0 {
		t.Fatalf("revoke() = %d, %v; want the revision of the removal", rev, err)
	}
	if ttl, err := h.cli.TimeToLive(ctx, ours); err != nil || ttl.TTL != -1 {
		t.Fatalf("our lease %x after revoke: %+v, %v; want gone", ours, ttl, err)
	}
	if got := h.registered(k.key, k.value, time.Second); got != newer.ID {
		t.Fatalf("%s on lease %x after our revoke; want the newer instance's %x kept", k.key, got, newer.ID)
	}
	h.absent(k.claimKey, time.Second)
}
