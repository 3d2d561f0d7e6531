package renderer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// runDying runs a renderer on h's config that dies (runtime.Goexit of the
// installing goroutine with the loop stopped: no check, no reload, no
// rollback, as kill -9 would leave it) right after it installs a file for
// the second time, and waits for that.
func runDying(t *testing.T, h *harness) {
	t.Helper()
	cfg := h.cfg
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("run", "dying")
	r := newRenderer(cfg, log, NewMetrics(prometheus.NewRegistry()))
	cli, _, err := newClient(cfg, cfg.Endpoints)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r.cli = cli
	r.loadResources(time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	installs := 0
	died := make(chan struct{})
	r.testHookInstall = func(string) { // in the flight (flight.go): stop the loop too
		if installs++; installs == 2 {
			cancel()
			close(died)
			runtime.Goexit()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	dest := filepath.Join(h.out, "up.conf")
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "first reload", func() error {
		if h.reloadCount() != 1 {
			return fmt.Errorf("%d reloads", h.reloadCount())
		}
		return nil
	})
	h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	select {
	case <-died:
	case <-time.After(10 * time.Second):
		t.Fatal("second install never came")
	}
	<-done
}

// TestCrashBetweenInstallAndReload: a renderer dies after installing a file
// and before its check and reload. The restarted renderer removes stale
// stage files, checks and reloads that resource although the file already
// holds its output, and acknowledges the revision only after the reload.
func TestCrashBetweenInstallAndReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	checks := filepath.Join(h.out, "checks.log")
	dest := h.resource("up", `"/"`, listTmpl, fmt.Sprintf("check_cmd = \"echo check >> %s\"\n", checks))
	// The reload takes a while, so an early ack would show.
	h.write("conf.d/up.toml", strings.Replace(readFile(t, filepath.Join(h.dir, "conf.d/up.toml")),
		`reload_cmd = "echo`, `reload_cmd = "sleep 0.3; echo`, 1))
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	runDying(t, h)
	want := "web_prod: 10.0.0.1:80 10.0.0.2:80\n"
	if got := readFile(t, dest); got != want {
		t.Fatalf("after the crash dest = %q; want the installed %q", got, want)
	}
	if _, err := os.Stat(pendingMark(dest)); err != nil {
		t.Fatalf("no pending mark after the crash: %v", err)
	}
	nChecks := strings.Count(readFile(t, checks), "\n")
	stale := filepath.Join(h.out, ".up.conf.rollcall-123456")
	if err := os.WriteFile(stale, []byte("half a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	rev, err := h.cli.Get(context.Background(), "/web_prod/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	changeRev := rev.Header.Revision

	h.start()
	var early []int64
	waitfor.Cond(t, 10*time.Second, "reload after the restart", func() error {
		if a, err := h.ack(); err == nil && a.Revision >= changeRev && h.reloadCount() < 2 {
			early = append(early, a.Revision)
		}
		if n := h.reloadCount(); n != 2 {
			return fmt.Errorf("%d reloads", n)
		}
		return nil
	})
	if len(early) > 0 {
		t.Errorf("acknowledged %v before the reload", early)
	}
	waitfor.Cond(t, 10*time.Second, "ack after the reload", func() error {
		a, err := h.ack()
		if err != nil || a.Revision < changeRev {
			return fmt.Errorf("ack %+v, %v; want revision >= %d", a, err, changeRev)
		}
		return nil
	})
	if n := strings.Count(readFile(t, checks), "\n"); n != nChecks+1 {
		t.Errorf("%d checks after the restart; want 1", n-nChecks)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale stage file still there: %v", err)
	}
	if _, err := os.Stat(pendingMark(dest)); !os.IsNotExist(err) {
		t.Errorf("pending mark still there after the reload: %v", err)
	}
	if got := readFile(t, dest); got != want {
		t.Errorf("dest = %q; want %q", got, want)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
