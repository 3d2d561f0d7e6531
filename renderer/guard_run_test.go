package renderer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// serveMetrics gives the harness a metrics address; readyz reads /readyz.
func (h *harness) serveMetrics() {
	h.t.Helper()
	port := proctest.FreePort(h.t)
	h.cfg.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
}

func (h *harness) readyz() (int, string) {
	resp, err := http.Get("http://" + h.cfg.MetricsAddr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// replaceEtcd stops the harness's etcd and starts an empty one on the same
// address: a new data dir, as when etcd is replaced or restored from
// another backup.
func (h *harness) replaceEtcd() {
	h.t.Helper()
	h.etcd.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), embedetcd.StartTimeout)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{Dir: h.t.TempDir(), ClientAddr: h.etcd.Endpoint, NoFsync: true})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(srv.Close)
}

// guardHeld and guardHolds read the guard's metrics of resource up.toml.
func (h *harness) guardHeld() float64 {
	return metric(h.t, h.reg, "rollcall_renderer_guard_held", "resource", "up.toml")
}

func (h *harness) guardHolds() float64 {
	return metric(h.t, h.reg, "rollcall_renderer_guard_holds_total", "resource", "up.toml")
}

// webInstances puts web_prod instances 10.0.0.first.. and returns the
// listTmpl line of instances 1..last.
func (h *harness) webInstances(first, last int) string {
	line := "web_prod:"
	for i := first; i <= last; i++ {
		ip := fmt.Sprintf("10.0.0.%d", i)
		h.put(key("web_prod", ip, 80), ip+":80")
	}
	for i := 1; i <= last; i++ {
		line += fmt.Sprintf(" 10.0.0.%d:80", i)
	}
	return line + "\n"
}

// TestMassRemovalHeld: `etcdctl del --prefix /web_prod/` (4 -> 0) is held:
// the file stays, guard_held is 1, /readyz says why, one log line; the
// same view applies after --guard-grace. Held again, SIGHUP applies it at
// once.
func TestMassRemovalHeld(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		grace time.Duration
		hup   bool
	}{
		{"grace", 2 * time.Second, false},
		{"sighup", time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.cfg.GuardGrace = tc.grace
			hup := make(chan os.Signal, 1)
			h.cfg.Reload = hup
			h.serveMetrics()
			dest := h.resource("up", `"/web_prod"`, listTmpl, "")
			four := h.webInstances(1, 4)
			h.start()
			h.waitFile(dest, four)
			if _, err := h.cli.Delete(context.Background(), "/web_prod/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			deleted := time.Now()
			waitfor.Cond(t, 5*time.Second, "removal held", func() error {
				if v := h.guardHeld(); v != 1 {
					return fmt.Errorf("guard_held %v", v)
				}
				if code, body := h.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "mass removal held: up.toml (4 -> 0 instances") {
					return fmt.Errorf("/readyz %d %q", code, body)
				}
				return nil
			})
			if b, _ := os.ReadFile(dest); string(b) != four {
				t.Fatalf("held render installed: %q", b)
			}
			if n := strings.Count(h.logs.String(), "mass removal held"); n != 1 {
				t.Errorf("%d log lines 'mass removal held'; want 1", n)
			}
			if tc.hup {
				hup <- syscall.SIGHUP
			}
			h.waitFile(dest, "web_prod:\n")
			took := time.Since(deleted)
			switch {
			case tc.hup && took > 3*time.Second:
				t.Errorf("SIGHUP applied the held render after %v", took)
			case !tc.hup && took < tc.grace:
				t.Errorf("applied after %v, before the grace period %v", took, tc.grace)
			}
			t.Logf("held render applied %v after the deletion", took.Round(time.Millisecond))
			waitfor.Cond(t, 5*time.Second, "ready again", func() error {
				if code, body := h.readyz(); code != http.StatusOK {
					return fmt.Errorf("/readyz %d %q", code, body)
				}
				return nil
			})
			if v := h.guardHolds(); v != 1 {
				t.Errorf("guard_holds_total %v; want 1", v)
			}
		})
	}
}

// TestNormalChangesNotHeld: a rolling deploy (one instance at a time), a
// scale-down 4 -> 2 in one batch, 2 -> 1 and 1 -> 0 are applied at once.
func TestNormalChangesNotHeld(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg.GuardGrace = time.Minute
	dest := h.resource("up", `"/web_prod"`, listTmpl, "")
	h.start()
	h.waitFile(dest, h.webInstances(1, 4))
	// Rolling deploy: add .5, remove .1, add .6, remove .2.
	h.put(key("web_prod", "10.0.0.5", 80), "10.0.0.5:80")
	h.del(key("web_prod", "10.0.0.1", 80))
	h.waitFile(dest, "web_prod: 10.0.0.2:80 10.0.0.3:80 10.0.0.4:80 10.0.0.5:80\n")
	h.put(key("web_prod", "10.0.0.6", 80), "10.0.0.6:80")
	h.del(key("web_prod", "10.0.0.2", 80))
	h.waitFile(dest, "web_prod: 10.0.0.3:80 10.0.0.4:80 10.0.0.5:80 10.0.0.6:80\n")
	// 4 -> 2 in one transaction: half, not more.
	if _, err := h.cli.Txn(context.Background()).Then(
		clientv3.OpDelete(key("web_prod", "10.0.0.3", 80)), clientv3.OpDelete(key("web_prod", "10.0.0.4", 80))).Commit(); err != nil {
		t.Fatal(err)
	}
	h.waitFile(dest, "web_prod: 10.0.0.5:80 10.0.0.6:80\n")
	h.del(key("web_prod", "10.0.0.5", 80))
	h.waitFile(dest, "web_prod: 10.0.0.6:80\n")
	h.del(key("web_prod", "10.0.0.6", 80))
	h.waitFile(dest, "web_prod:\n")
	if v := h.guardHolds(); v != 0 {
		t.Errorf("guard_holds_total %v; want 0", v)
	}
}

// TestEmptyEtcdHeld: the renderer's etcd is replaced by an empty one on the
// same address (a new data dir). The re-list would remove every instance:
// held, the file kept. As registrars register again the view changes; once
// no more than half of the instances are missing it applies at once.
func TestEmptyEtcdHeld(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg.GuardGrace = time.Minute
	h.serveMetrics()
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("api_prod", "10.0.1.1", 80), "10.0.1.1:80")
	h.put(key("api_prod", "10.0.1.2", 80), "10.0.1.2:80")
	four := h.webInstances(1, 4)
	all := "api_prod: 10.0.1.1:80 10.0.1.2:80\n" + four
	h.start()
	h.waitFile(dest, all)

	h.replaceEtcd()
	waitfor.Cond(t, 15*time.Second, "empty etcd held", func() error {
		if v := h.guardHeld(); v != 1 {
			return fmt.Errorf("guard_held %v", v)
		}
		return nil
	})
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80") // registrars come back: 1 of 6, still held
	h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	waitfor.Cond(t, 5*time.Second, "held for the new view", func() error {
		if code, body := h.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "up.toml (6 -> 2 instances") {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	if got := readFile(t, dest); got != all {
		t.Fatalf("held render installed: %q", got)
	}
	h.put(key("web_prod", "10.0.0.3", 80), "10.0.0.3:80") // 3 of 6: half are back
	h.waitFile(dest, "api_prod:\nweb_prod: 10.0.0.1:80 10.0.0.2:80 10.0.0.3:80\n")
	if v := h.guardHeld(); v != 0 {
		t.Errorf("guard_held %v after the release", v)
	}
	if v := h.guardHolds(); v != 1 {
		t.Errorf("guard_holds_total %v; want 1 (one hold, its view changed)", v)
	}
}

// TestRestartOnEmptyEtcdHeld: the renderer restarts and finds an empty etcd
// (a new data dir on the same address). Its first render would remove every
// instance the installed file holds: held, as for a renderer that kept
// running (the instance count is remembered next to dest).
func TestRestartOnEmptyEtcdHeld(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg.GuardGrace = time.Minute
	dest := h.resource("up", `"/"`, listTmpl, "")
	four := h.webInstances(1, 4)
	h.start()
	h.waitFile(dest, four)
	h.stop()
	h.replaceEtcd()
	h.reg = prometheus.NewRegistry()
	h.start()
	waitfor.Cond(t, 10*time.Second, "first render held", func() error {
		if v := h.guardHeld(); v != 1 {
			return fmt.Errorf("guard_held %v", v)
		}
		return nil
	})
	if got := readFile(t, dest); got != four {
		t.Fatalf("held render installed: %q", got)
	}
}
