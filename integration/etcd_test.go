package integration_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestEtcdRestart: with etcd stopped the renderer keeps its files and nginx
// keeps serving, /readyz and etcd_up say it is down; after etcd restarts on
// the same data dir, changes made then are applied.
func TestEtcdRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startShipped()
	r.startRenderer()
	r.serve(5*time.Second, "a_test", "b1")
	up := filepath.Join(r.out, "upstreams.conf")
	before := read(t, up)

	t0 := time.Now()
	r.etcd.Stop() // takes seconds: the embedded server drains its streams
	stopped := time.Since(t0)
	waitfor.Cond(t, 15*time.Second, "renderer does not report etcd down", func() error {
		if _, err := r.get("/readyz"); err == nil {
			return fmt.Errorf("/readyz is 200")
		}
		if m := r.metric("rollcall_renderer_etcd_up"); m != 0 {
			return fmt.Errorf("etcd_up = %v", m)
		}
		return nil
	})
	t.Logf("etcd down noticed %v after Stop began (Stop took %v)", time.Since(t0).Round(time.Millisecond), stopped.Round(time.Millisecond))
	if err := r.servedBy("a_test", "b1"); err != nil {
		t.Fatalf("etcd down: nginx: %v", err)
	}
	if got := read(t, up); got != before {
		t.Fatalf("etcd down: upstreams.conf changed:\n%s", got)
	}
	if err := r.renderer.Exited(); err != nil {
		t.Fatal(err)
	}

	r.etcd.Restart()
	t1 := time.Now()
	r.register("a_test", newBackend(t, "b2"))
	r.waitServed(15*time.Second, "a_test", "b1", "b2")
	r.waitReady(10 * time.Second)
	t.Logf("change after restart applied in %v", time.Since(t1).Round(time.Millisecond))
	if m := r.metric("rollcall_renderer_etcd_up"); m != 1 {
		t.Fatalf("etcd_up = %v after restart; want 1", m)
	}
}
