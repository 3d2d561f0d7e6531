package renderer

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestMetricsReported: every metric issue 2 asks for is served and moves
// with what the renderer does; /readyz is 503 while a seen change waits to
// be applied (here: a resource's wait) and 200 once it is.
func TestMetricsReported(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	port := proctest.FreePort(t)
	h.cfg.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	readyz := func() int {
		resp, err := http.Get("http://" + h.cfg.MetricsAddr + "/readyz")
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	dest := h.resource("up", `"/"`, listTmpl, "check_cmd = \"test -s {{.src}}\"\nwait = \"2s:4s\"\n")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.put(key("web_prod", "10.0.0.9", 80), "1.2.3.4:80; } server {") // skipped
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "ready", func() error {
		if c := readyz(); c != http.StatusOK {
			return fmt.Errorf("/readyz %d", c)
		}
		return nil
	})

	start := time.Now()
	rev := h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	waitfor.Cond(t, 2*time.Second, "/readyz 503 while the change waits", func() error {
		if c := readyz(); c != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d", c)
		}
		return nil
	})
	h.waitFile(dest, "web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	waitfor.Cond(t, 10*time.Second, "ready after the apply, metrics current", func() error {
		if c := readyz(); c != http.StatusOK {
			return fmt.Errorf("/readyz %d", c)
		}
		for _, c := range []struct {
			name   string
			labels []string
			min    float64
		}{
			{"rollcall_renderer_renders_total", []string{"resource", "up.toml", "result", "ok"}, 2},
			{"rollcall_renderer_checks_total", []string{"resource", "up.toml", "result", "ok"}, 2},
			{"rollcall_renderer_reloads_total", []string{"result", "ok"}, 2},
			{"rollcall_renderer_watch_events_total", nil, 1},
			{"rollcall_renderer_applied_revision", nil, float64(rev)},
			{"rollcall_renderer_watch_revision", nil, float64(rev)},
			{"rollcall_renderer_etcd_revision", nil, float64(rev)}, // probed every 2s
			{"rollcall_renderer_invalid_values_skipped_total", nil, 1},
			{"rollcall_renderer_etcd_up", nil, 1},
			{"rollcall_renderer_last_apply_success_timestamp_seconds", []string{"resource", "up.toml"}, float64(start.Unix())},
			{"rollcall_renderer_last_reload_success_timestamp_seconds", nil, float64(start.Unix())},
		} {
			if v := metric(t, h.reg, c.name, c.labels...); v < c.min {
				return fmt.Errorf("%s%q = %v; want >= %v", c.name, c.labels, v, c.min)
			}
		}
		for _, kind := range []string{"check", "reload"} {
			if n := series(t, h.reg, "rollcall_renderer_command_duration_seconds", "kind", kind).GetHistogram().GetSampleCount(); n < 2 {
				return fmt.Errorf("command_duration_seconds{kind=%q} count %d; want >= 2", kind, n)
			}
		}
		return nil
	})
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["rollcall_renderer_reloads_coalesced_total"] {
		t.Error("rollcall_renderer_reloads_coalesced_total not served")
	}
}
