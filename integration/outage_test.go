package integration_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestEtcdOutage: etcd down for 15 s and 60 s (150 s with
// ROLLCALL_LONG_OUTAGE=1), then back on the same data dir: a registration
// made right after is served through nginx within 1 s, whatever the outage
// lasted. The renderer's etcd client caps gRPC's reconnect backoff, and its
// watcher's own retries are cut short when etcd answers again; with gRPC's
// default backoff (capped at 120 s) the pickup after 60 s down took 9.5 s,
// after 150 s 49.5 s (issue 10).
func TestEtcdOutage(t *testing.T) {
	t.Parallel()
	outages := []time.Duration{15 * time.Second, 60 * time.Second}
	if os.Getenv("ROLLCALL_LONG_OUTAGE") != "" {
		outages = append(outages, 150*time.Second)
	}
	for _, outage := range outages {
		t.Run(outage.String(), func(t *testing.T) {
			t.Parallel()
			testOutage(t, outage)
		})
	}
}

func testOutage(t *testing.T, outage time.Duration) {
	const pickup = time.Second
	r := newRig(t)
	r.startShipped()
	r.startRenderer()
	r.serve(10*time.Second, "a_test", "b1")

	r.etcd.Stop()
	down := time.Now()
	// The outage itself; nginx keeps serving the last good config.
	waitfor.Cond(t, outage+30*time.Second, fmt.Sprintf("etcd down for %v", outage), func() error {
		if err := r.servedBy("a_test", "b1"); err != nil {
			t.Fatalf("during the outage: %v", err)
		}
		if d := time.Since(down); d < outage {
			return fmt.Errorf("down for %v", d.Round(time.Second))
		}
		return nil
	})
	r.etcd.Restart()
	r.kv = r.etcd.Client(t) // the old client may sit in its own reconnect backoff
	put := time.Now()
	r.register("a_test", newBackend(t, "b2"))
	r.waitServed(pickup+5*time.Second, "a_test", "b1", "b2")
	took := time.Since(put)
	t.Logf("etcd down %v: a registration made right after it returned was served in %v", time.Since(down).Round(time.Second), took.Round(time.Millisecond))
	if took > pickup {
		t.Fatalf("served %v after the put; want within %v", took.Round(time.Millisecond), pickup)
	}
}
