package renderer

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestHungReloadIsolated: resource a's reload_cmd hangs until
// --command-timeout; meanwhile resource b's change is installed, reloaded
// and acknowledged for b's prefix within 1s (before: b waited for a's
// timeout on the loop). a's timeout is counted, a is reported failing in
// metrics and /readyz, and the global revision stays behind a's change.
func TestHungReloadIsolated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg.CommandTimeout = 3 * time.Second
	h.serveMetrics()
	works := filepath.Join(h.out, "a-works")
	if err := os.WriteFile(works, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	destA := h.resource("a", `"/a_prod"`, listTmpl, "")
	h.write("conf.d/a.toml", fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nkeys = [\"/a_prod\"]\nreload_cmd = %q\n",
		destA, fmt.Sprintf("test -e %s || sleep 60; echo a >> %s", works, h.reloads)))
	destB := h.resource("b", `"/b_prod"`, listTmpl, "")
	h.put(key("a_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.put(key("b_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(destA, "a_prod: 10.0.0.1:80\n")
	h.waitFile(destB, "b_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "first reloads", func() error {
		if n := h.reloadCount(); n != 2 {
			return fmt.Errorf("%d reloads", n)
		}
		return nil
	})
	if err := os.Remove(works); err != nil {
		t.Fatal(err)
	}
	revA := h.put(key("a_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.waitFile(destA, "a_prod: 10.0.0.1:80 10.0.0.2:80\n") // installed; its reload hangs now
	start := time.Now()
	revB := h.put(key("b_prod", "10.0.0.2", 80), "10.0.0.2:80")
	waitfor.Cond(t, time.Second, "b applied and acknowledged for its prefix while a hangs", func() error {
		if got := readFile(t, destB); got != "b_prod: 10.0.0.1:80 10.0.0.2:80\n" {
			return fmt.Errorf("b = %q", got)
		}
		if n := h.reloadCount(); n != 3 {
			return fmt.Errorf("%d reloads", n)
		}
		a, err := h.ack()
		if err != nil {
			return err
		}
		if got := a.RevisionFor(key("b_prod", "10.0.0.2", 80)); got < revB {
			return fmt.Errorf("ack for b's key %d < %d (%+v)", got, revB, a)
		}
		if got := a.RevisionFor(key("a_prod", "10.0.0.2", 80)); got >= revA {
			return fmt.Errorf("ack for a's key %d covers a's unreloaded change %d", got, revA)
		}
		if a.Revision >= revA {
			return fmt.Errorf("global ack %d covers a's unreloaded change %d", a.Revision, revA)
		}
		return nil
	})
	t.Logf("b applied and acknowledged %v after its change while a's reload hung", time.Since(start).Round(time.Millisecond))
	waitfor.Cond(t, 10*time.Second, "a's timeout counted and reported", func() error {
		if v := metric(t, h.reg, "rollcall_renderer_command_timeouts_total", "kind", "reload"); v < 1 {
			return fmt.Errorf("command_timeouts_total{reload} %v", v)
		}
		if v := metric(t, h.reg, "rollcall_renderer_resource_failing", "resource", "a.toml"); v != 1 {
			return fmt.Errorf("resource_failing{a.toml} %v", v)
		}
		if code, body := h.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "failing: a.toml") {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	if v := metric(t, h.reg, "rollcall_renderer_resource_failing", "resource", "b.toml"); v != 0 {
		t.Errorf("resource_failing{b.toml} %v", v)
	}
	// a works again: its retry (apart, with backoff) applies it.
	if err := os.WriteFile(works, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 15*time.Second, "a retried and acknowledged", func() error {
		a, err := h.ack()
		if err != nil || a.Revision < revA {
			return fmt.Errorf("ack %+v, %v", a, err)
		}
		if code, body := h.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
}
