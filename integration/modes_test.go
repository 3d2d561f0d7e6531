package integration_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestOnetimeAndNoop: --onetime renders, checks, installs and reloads once
// and exits 0, non-zero when a check fails; --noop prints a unified diff and
// installs and reloads nothing.
func TestOnetimeAndNoop(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startShipped() // runs --onetime with nothing registered
	up := filepath.Join(r.out, "upstreams.conf")
	b1 := newBackend(t, "b1")
	r.register("a_test", b1)
	n := len(r.reloads())
	r.onetime()
	if err := r.servedBy("a_test", "b1"); err != nil {
		t.Fatalf("after --onetime: %v", err)
	}
	if got := len(r.reloads()) - n; got != 1 {
		t.Fatalf("--onetime ran reload_cmd %d times; want 1", got)
	}

	b2 := newBackend(t, "b2")
	r.register("a_test", b2)
	before, n := read(t, up), len(r.reloads())
	code, stdout, stderr := proctest.Run(t, 30*time.Second, bins.Path("renderer"), "--noop", "--onetime", "--confdir", r.confdir, "--endpoints", r.etcd.Endpoint)
	if code != 0 {
		t.Fatalf("--noop exited %d:\n%s", code, stderr)
	}
	for _, want := range []string{"--- " + up, "+++ ", "+    server " + b2.addr.String() + ";", " server " + b1.addr.String() + ";"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("--noop diff lacks %q:\n%s", want, stdout)
		}
	}
	if got := read(t, up); got != before {
		t.Fatalf("--noop changed %s:\n%s", up, got)
	}
	if got := len(r.reloads()) - n; got != 0 {
		t.Fatalf("--noop ran reload_cmd %d times", got)
	}
	r.onlyFiles("proxy.conf", "upstreams.conf")
	if err := r.servedBy("a_test", "b1"); err != nil {
		t.Fatalf("after --noop: %v", err)
	}

	// A resource that fails nginx -t: exit non-zero, its file rolled back.
	dup := r.resource("dup", "upstream.toml.example", "dup.conf", "/a_test")
	if err := r.nginx.WriteConf(r.shippedConf(dup)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dup, placeholder, 0o644)
	code, _, stderr = proctest.Run(t, 30*time.Second, bins.Path("renderer"), "--onetime", "--confdir", r.confdir, "--endpoints", r.etcd.Endpoint)
	if code == 0 {
		t.Fatalf("--onetime with a failing check exited 0:\n%s", stderr)
	}
	if got := read(t, dup); got != placeholder {
		t.Fatalf("dup.conf = %q after the failed check; want %q", got, placeholder)
	}
	if err := r.servedBy("a_test", "b1", "b2"); err != nil {
		t.Fatalf("the valid resources were not applied by the failing --onetime: %v", err)
	}
}

// TestSighup: SIGHUP (systemd's ExecReload, supervisor's signal) makes the
// renderer reload its resources without exiting; unchanged output reloads
// nothing, and it keeps following etcd.
func TestSighup(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startShipped()
	p := r.startRenderer()
	r.serve(5*time.Second, "a_test", "b1")
	n, offset := len(r.reloads()), len(p.Output())

	hup := time.Now()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.logSince(5*time.Second, offset, regexp.MustCompile(`SIGHUP`))
	waitfor.Cond(t, 5*time.Second, "no full pass after SIGHUP", func() error {
		if last := r.lastApply(); last.Before(hup) {
			return fmt.Errorf("last apply at %v, before SIGHUP at %v", last, hup)
		}
		return nil
	})
	if err := p.Exited(); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	if got := len(r.reloads()) - n; got != 0 {
		t.Fatalf("SIGHUP with nothing changed ran reload_cmd %d times", got)
	}
	r.register("a_test", newBackend(t, "b2"))
	r.waitServed(5*time.Second, "a_test", "b1", "b2")
}

// TestRendererRestart: changes made while the renderer is stopped are applied
// when it starts again; nginx serves the last files meanwhile.
func TestRendererRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startShipped()
	first := r.startRenderer()
	r.serve(5*time.Second, "a_test", "b1")
	if err := first.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("renderer on SIGTERM: %v", err)
	}
	r.renderer = nil

	r.register("a_test", newBackend(t, "b2"))
	if err := r.servedBy("a_test", "b1"); err != nil {
		t.Fatalf("renderer stopped: nginx: %v", err)
	}
	r.startRenderer()
	r.waitServed(5*time.Second, "a_test", "b1", "b2")
	r.waitReady(5 * time.Second)
}

// TestEmbeddedEtcd: --embed-etcd runs etcd inside the renderer on
// --embed-listen; registrations written there are served through nginx, and
// the data survives a restart of the renderer.
func TestEmbeddedEtcd(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	port := proctest.FreePort(t)
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	data := t.TempDir()
	args := []string{"--embed-etcd", data, "--embed-listen", listen}
	r.startShipped()
	p := r.startRenderer(args...)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{listen}, DialTimeout: opTimeout, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	r.kv = cli // register through the embedded etcd
	r.serve(10*time.Second, "a_test", "b1")

	if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("renderer on SIGTERM: %v", err)
	}
	r.startRenderer(args...)
	r.register("a_test", newBackend(t, "b2"))
	r.waitServed(10*time.Second, "a_test", "b1", "b2")
}
