package etcdclient

import (
	"context"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/etcdtest"
)

// TestReconnectAfterOutage: after a 20s etcd outage, a client with the
// backoff cap answers within 2.5s of etcd's return. Without the cap
// (RetryCap 120s, gRPC's own) the same test fails: the next attempt comes
// seconds later, and the longer the outage the later.
func TestReconnectAfterOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd and waits out a 20s outage")
	}
	t.Parallel()
	srv := etcdtest.Start(t)
	cli, err := New(Config{Endpoints: []string{srv.Endpoint}, DialTimeout: time.Second, KeepAliveTime: time.Second, RetryCap: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	get := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := cli.Get(ctx, "k")
		return err
	}
	if err := get(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	// Keep the client trying for 20s, as the renderer's probe does.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); <-tick.C {
		if err := get(250 * time.Millisecond); err == nil {
			t.Fatal("Get succeeded while etcd was stopped")
		}
	}
	srv.Restart()
	back := time.Now()
	for get(250*time.Millisecond) != nil {
		if time.Since(back) > 2500*time.Millisecond {
			t.Fatalf("no answer %v after etcd came back; want one within the 1s backoff cap plus a dial", time.Since(back).Round(time.Millisecond))
		}
	}
	t.Logf("answered %v after etcd came back", time.Since(back).Round(time.Millisecond))
}
