package registrar

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestHoldEtcdDownBeforeWatch: etcd stops between the put and the key's
// watch; hold must still notice the lease lost (the watch cannot open until
// etcd answers, and once waited for it: the loss went unnoticed until etcd
// came back).
func TestHoldEtcdDownBeforeWatch(t *testing.T) {
	h := newHarness(t)
	k := h.keeper()
	k.setWant(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.register(ctx); err != nil {
		t.Fatal(err)
	}
	h.etcd.Stop()
	stopped := time.Now()
	err := k.hold(ctx)
	// The first keep-alive's deadline (dial timeout + 1s), then the
	// client's once-a-second check.
	if limit := 3*time.Second + time.Second; err == nil || time.Since(stopped) > limit {
		t.Fatalf("hold() = %v after %v; want the lease lost within %v", err, time.Since(stopped), limit)
	}
	if k.lease != 0 {
		t.Fatalf("lease %x kept after the loss", k.lease)
	}
}

// TestRevokeKeepsNewerKey: deregistering revokes the lease rather than
// deleting the key, so a key a newer instance put again on its own lease
// stays, while the port claim on our lease goes.
func TestRevokeKeepsNewerKey(t *testing.T) {
	h := newHarness(t)
	k := h.keeper()
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

// keeper is a keeper of a fixed instance on the harness's etcd, with its own
// client (closed at cleanup).
func (h *harness) keeper() *keeper {
	c := &conn{cfg: clientv3.Config{Endpoints: []string{h.etcd.Endpoint}, DialTimeout: time.Second, Logger: zap.NewNop()}}
	h.t.Cleanup(func() { c.close() })
	return newKeeper(c, keeperConfig{
		Key: "/web_PRE/127.0.0.1-1", Value: "127.0.0.1:1",
		ClaimKey: "/_ports/127.0.0.1/1", ClaimValue: "web_PRE",
		TTL: testTTL, OpTimeout: time.Second,
	}, h.log)
}
