package renderer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	m := series(t, reg, name, labels...)
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// series is the first series of metric name having every label pair
// (name, value, name, value, ...), or nil.
func series(t *testing.T, reg *prometheus.Registry, name string, labels ...string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

// TestBurstCoalesces: 200 changes over 10 apps within one second cost at
// most 3 reloads (one resource per app, all sharing one reload_cmd), and the
// files end right.
func TestBurstCoalesces(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.cfg.Cooldown = time.Second
	dests := map[string]string{}
	for i := range 10 {
		app := fmt.Sprintf("app%d_prod", i)
		dests[app] = filepath.Join(h.out, app+".conf")
		h.write("conf.d/"+app+".toml", fmt.Sprintf("[template]\nsrc = \"list.tmpl\"\ndest = %q\nprefix = \"/%s\"\nkeys = [\"/\"]\nreload_cmd = \"echo reload >> %s\"\n",
			dests[app], app, h.reloads))
	}
	h.write("templates/list.tmpl", `{{range $i := instances "/"}}{{$i}}
{{end}}`)
	h.start()
	waitfor.Cond(t, 10*time.Second, "first full pass", func() error {
		if n := metric(t, h.reg, "rollcall_renderer_reloads_total", "result", "ok"); n != 1 {
			return fmt.Errorf("%v reloads", n)
		}
		return nil
	})
	base := h.reloadCount()
	start := time.Now()
	want := map[string][]string{}
	var last int64
	for i := range 200 {
		app := fmt.Sprintf("app%d_prod", i%10)
		port := 20000 + i
		last = h.put(key(app, "10.0.0.1", port), fmt.Sprintf("10.0.0.1:%d", port))
		want[app] = append(want[app], fmt.Sprintf("10.0.0.1:%d\n", port))
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 5 * time.Millisecond)))
	}
	span := time.Since(start)
	t.Logf("200 puts took %v", span)
	for app, lines := range want {
		h.waitFile(dests[app], strings.Join(lines, ""))
	}
	waitfor.Cond(t, 10*time.Second, "burst acknowledged", func() error {
		a, err := h.ack()
		if err == nil && a.Revision < last {
			err = fmt.Errorf("ack at %d, want %d", a.Revision, last)
		}
		return err
	})
	t.Logf("burst: %d reloads, %v coalesced", h.reloadCount()-base, metric(t, h.reg, "rollcall_renderer_reloads_coalesced_total"))
	// The budget allows 2 applies at once and one per cooldown after: within
	// 1s that is 3. A loaded machine can stretch the puts themselves.
	limit := 3
	if span > time.Second {
		limit = 2 + int((span+time.Second-1)/time.Second)
		t.Logf("the puts took %v, longer than the 1s the scenario is about: allowing %d reloads", span, limit)
	}
	if n := h.reloadCount() - base; n > limit || n < 1 {
		t.Errorf("burst of 200 changes: %d reloads; want 1..%d", n, limit)
	}
	if n := metric(t, h.reg, "rollcall_renderer_reloads_total", "result", "ok") - 1; n != float64(h.reloadCount()-base) {
		t.Errorf("reloads_total counted %v; the reload command ran %d times", n, h.reloadCount()-base)
	}
	if c := metric(t, h.reg, "rollcall_renderer_reloads_coalesced_total"); c < 190 {
		t.Errorf("reloads_coalesced_total = %v; want >= 190", c)
	}
}

// TestSharedCheckIsolatesBadResource: a whole-config check (no {{.src}})
// fails because of one resource: it is rolled back before any reload, the
// other resource of the batch applies, and the bad one is retried until it
// is fixed.
func TestSharedCheckIsolatesBadResource(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	check := fmt.Sprintf(`check_cmd = "! grep -l BAD %s/*.conf"`, h.out)
	good := h.resource("good", `"/good_prod"`, listTmpl, check)
	bad := h.resource("bad", `"/bad_prod"`, listTmpl, check)
	h.put(key("good_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.put(key("bad_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.start()
	h.waitFile(good, "good_prod: 10.0.0.1:80\n")
	h.waitFile(bad, "bad_prod: 10.0.0.2:80\n")
	reloads := h.reloadCount()

	// One batch: good changes validly, bad's template starts writing BAD.
	h.write("templates/bad.tmpl", "BAD "+listTmpl)
	h.put(key("good_prod", "10.0.0.3", 80), "10.0.0.3:80")
	h.waitFile(good, "good_prod: 10.0.0.1:80 10.0.0.3:80\n")
	waitfor.Cond(t, 10*time.Second, "bad check counted", func() error {
		if metric(t, h.reg, "rollcall_renderer_checks_total", "resource", "bad.toml", "result", "failure") == 0 {
			return errors.New("no failed check for bad.toml")
		}
		if !strings.Contains(h.logs.String(), "resource not applied") {
			return errors.New("no log about the failed resource")
		}
		return nil
	})
	if b, _ := os.ReadFile(bad); string(b) != "bad_prod: 10.0.0.2:80\n" {
		t.Errorf("bad resource not rolled back: %q", b)
	}
	// Fix the template: the retry applies it without any etcd change.
	h.write("templates/bad.tmpl", "fixed "+listTmpl)
	h.waitFile(bad, "fixed bad_prod: 10.0.0.2:80\n")
	if h.reloadCount() <= reloads {
		t.Error("no reload after the valid changes")
	}
}

// TestSrcCheckAndRetry: a check_cmd with {{.src}} checks the staged file;
// a failing one leaves dest alone, and the failure is retried with backoff
// (here it starts passing once a flag file exists) — never skipped.
func TestSrcCheckAndRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	flag := filepath.Join(h.out, "allow")
	dest := h.resource("up", `"/"`, listTmpl, fmt.Sprintf(`check_cmd = "grep -q web {{.src}} && test -e %s"`, flag))
	if err := os.WriteFile(dest, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	waitfor.Cond(t, 10*time.Second, "two failed checks (a retry)", func() error {
		if n := metric(t, h.reg, "rollcall_renderer_checks_total", "resource", "up.toml", "result", "failure"); n < 2 {
			return fmt.Errorf("%v failed checks", n)
		}
		return nil
	})
	if b, _ := os.ReadFile(dest); string(b) != "old\n" {
		t.Errorf("dest changed although its check failed: %q", b)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	ents, _ := os.ReadDir(h.out)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".rollcall-") {
			t.Errorf("staged file left behind: %s", e.Name())
		}
	}
}

// TestReloadRetried: a reload_cmd that fails, or hangs (nginx stuck) and is
// killed at --command-timeout, is counted as failed and retried although
// the file is already in place; the loop goes on meanwhile (a new change
// renders), and once the command works the reload applies.
func TestReloadRetried(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cmd     string // %[1]s: the flag file that makes it work, %[2]s: the reload log
		timeout time.Duration
		log     string
	}{
		{"failing", "test -e %[1]s && echo reload >> %[2]s", 10 * time.Second, "exit status 1"},
		{"hung", "test -e %[1]s || sleep 60; echo reload >> %[2]s", 300 * time.Millisecond, "timed out after 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.cfg.CommandTimeout = tc.timeout
			flag := filepath.Join(h.out, "nginx-up")
			dest := h.resource("up", `"/"`, listTmpl, "")
			cmd := fmt.Sprintf(tc.cmd, flag, h.reloads)
			h.write("conf.d/up.toml", fmt.Sprintf("[template]\nsrc = \"up.tmpl\"\ndest = %q\nkeys = [\"/\"]\nreload_cmd = %q\n", dest, cmd))
			h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
			h.start()
			h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
			waitfor.Cond(t, 10*time.Second, "failed reloads", func() error {
				if n := metric(t, h.reg, "rollcall_renderer_reloads_total", "result", "failure"); n < 2 {
					return fmt.Errorf("%v failed reloads", n)
				}
				if !strings.Contains(h.logs.String(), tc.log) {
					return fmt.Errorf("no %q in the log", tc.log)
				}
				return nil
			})
			h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
			h.waitFile(dest, "web_prod: 10.0.0.1:80 10.0.0.2:80\n")
			if n := h.reloadCount(); n != 0 {
				t.Fatalf("%d reloads completed while the command failed", n)
			}
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			waitfor.Cond(t, 15*time.Second, "reload retried until it works", func() error {
				if h.reloadCount() != 1 {
					return fmt.Errorf("%d reloads", h.reloadCount())
				}
				return nil
			})
		})
	}
}

// TestBrokenTemplateEdit: a template edited into a parse error leaves the
// installed file and the running resource alone and logs file and line;
// fixing it applies.
func TestBrokenTemplateEdit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	h.write("templates/up.tmpl", "line one\n{{range services}\n")
	waitfor.Cond(t, 10*time.Second, "load error logged", func() error {
		if !strings.Contains(h.logs.String(), "keeping its previous version") || !strings.Contains(h.logs.String(), "up.tmpl:2") {
			return errors.New("no log naming up.tmpl:2")
		}
		return nil
	})
	// The previous version keeps running: changes still apply.
	h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.waitFile(dest, "web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	h.write("templates/up.tmpl", "v2 "+listTmpl)
	h.waitFile(dest, "v2 web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	// A removed resource stops; a new one starts (with its own keys listed).
	if err := os.Remove(filepath.Join(h.dir, "conf.d/up.toml")); err != nil {
		t.Fatal(err)
	}
	other := h.resource("other", `"/other_prod"`, listTmpl, "")
	waitfor.Cond(t, 10*time.Second, "removal noticed", func() error {
		if !strings.Contains(h.logs.String(), "resource removed") {
			return errors.New("no log of the removal")
		}
		return nil
	})
	h.put(key("other_prod", "10.0.0.9", 80), "10.0.0.9:80")
	h.waitFile(other, "other_prod: 10.0.0.9:80\n")
	h.put(key("web_prod", "10.0.0.3", 80), "10.0.0.3:80")
	h.put(key("other_prod", "10.0.0.8", 80), "10.0.0.8:80")
	h.waitFile(other, "other_prod: 10.0.0.8:80 10.0.0.9:80\n")
	if b, _ := os.ReadFile(dest); !bytes.Equal(b, []byte("v2 web_prod: 10.0.0.1:80 10.0.0.2:80\n")) {
		t.Errorf("removed resource still rendered: %q", b)
	}
}

// TestUnchangedAndIgnored: bookkeeping keys cost nothing, a user key that
// merely contains "_ports" renders (equal output: no reload), and an
// injection value is withheld, counted and logged once.
func TestUnchangedAndIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	renders := func() float64 {
		return metric(t, h.reg, "rollcall_renderer_renders_total", "resource", "up.toml", "result", "unchanged")
	}
	h.put("/_ports/10.0.0.1/80", "web_prod")
	h.put("/_renderers/other", "{}")
	h.put("/web_prod/10.0.0.1-80", "10.0.0.1:80")                    // same value: no event change
	h.put(key("web_prod", "10.0.0.5", 80), "1.2.3.4:80; } server {") // injection: withheld, no render
	h.put(key("web_prod", "10.0.0.5", 80), "1.2.3.4:80; } server {") // the same again: not logged again
	h.put("/cfg/_ports/x", "1")                                      // a user's key: renders, same output
	waitfor.Cond(t, 10*time.Second, "injection counted", func() error {
		if n := metric(t, h.reg, "rollcall_renderer_invalid_values_skipped_total"); n != 1 {
			return fmt.Errorf("%v skipped; want 1", n)
		}
		if renders() < 1 {
			return errors.New("no unchanged render")
		}
		return nil
	})
	if b, _ := os.ReadFile(dest); string(b) != "web_prod: 10.0.0.1:80\n" {
		t.Errorf("file = %q", b)
	}
	if n := h.reloadCount(); n != 1 {
		t.Errorf("%d reloads; want 1 (bookkeeping keys and equal output reload nothing)", n)
	}
	if n := strings.Count(h.logs.String(), "invalid instance value withheld"); n != 1 {
		t.Errorf("the withheld value was logged %d times; want once", n)
	}
}

// TestEtcdDownAndBack: files stay, etcd_up and /readyz report it, and
// changes made after etcd returns are applied.
func TestEtcdDownAndBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	port := proctest.FreePort(t)
	h.cfg.MetricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	ready := func() (int, error) {
		resp, err := http.Get("http://" + h.cfg.MetricsAddr + "/readyz")
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "ready", func() error {
		if c, err := ready(); err != nil || c != 200 {
			return fmt.Errorf("/readyz %d %v", c, err)
		}
		return nil
	})
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + h.cfg.MetricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || path == "/metrics" && !bytes.Contains(b, []byte("rollcall_renderer_reloads_total{result=\"ok\"} 1")) {
			t.Errorf("GET %s = %d %.200q", path, resp.StatusCode, b)
		}
	}
	h.etcd.Stop()
	waitfor.Cond(t, 15*time.Second, "not ready while etcd is down", func() error {
		if c, err := ready(); err != nil || c != 503 {
			return fmt.Errorf("/readyz %d %v", c, err)
		}
		return nil
	})
	if up := metric(t, h.reg, "rollcall_renderer_etcd_up"); up != 0 {
		t.Errorf("etcd_up = %v while down", up)
	}
	if b, _ := os.ReadFile(dest); string(b) != "web_prod: 10.0.0.1:80\n" {
		t.Errorf("file changed while etcd is down: %q", b)
	}
	h.etcd.Restart()
	h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.waitFile(dest, "web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	waitfor.Cond(t, 15*time.Second, "ready again", func() error {
		if c, err := ready(); err != nil || c != 200 {
			return fmt.Errorf("/readyz %d %v", c, err)
		}
		return nil
	})
}

// TestOnetimeAndNoop: --onetime applies once and reports failures; --noop
// prints a diff and installs nothing.
func TestOnetimeAndNoop(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	log := slog.New(slog.NewTextHandler(h.logs, nil))
	run := func(cfg Config) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return Run(ctx, cfg, log, prometheus.NewRegistry())
	}
	var out bytes.Buffer
	noop := h.cfg
	noop.Onetime, noop.Noop, noop.Stdout = true, true, &out
	if err := run(noop); err != nil {
		t.Fatalf("noop: %v", err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("noop installed %s", dest)
	}
	if !strings.Contains(out.String(), "+web_prod: 10.0.0.1:80") || !strings.Contains(out.String(), "@@ -0,0 +1 @@") {
		t.Errorf("noop diff = %q", out.String())
	}
	once := h.cfg
	once.Onetime = true
	if err := run(once); err != nil {
		t.Fatalf("onetime: %v", err)
	}
	if b, _ := os.ReadFile(dest); string(b) != "web_prod: 10.0.0.1:80\n" || h.reloadCount() != 1 {
		t.Errorf("onetime: file %q, %d reloads", b, h.reloadCount())
	}
	h.resource("bad", `"/"`, listTmpl, `check_cmd = "false"`)
	if err := run(once); !errors.Is(err, ErrFailed) {
		t.Errorf("onetime with a failing check = %v; want ErrFailed", err)
	}
}

// TestEmbedEtcdOnetime: --embed-etcd starts etcd in-process with its data in
// DIR on --embed-listen, and the renderer uses it.
func TestEmbedEtcdOnetime(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	port := proctest.FreePort(t)
	cfg := h.cfg
	cfg.Endpoints, cfg.Onetime = nil, true
	cfg.EmbedEtcd, cfg.EmbedListen = t.TempDir(), fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Run(ctx, cfg, slog.New(slog.NewTextHandler(h.logs, nil)), prometheus.NewRegistry()); err != nil {
		t.Fatalf("Run with --embed-etcd: %v", err)
	}
	if b, err := os.ReadFile(dest); err != nil || len(b) != 0 {
		t.Errorf("rendered %q, %v; want an empty file (empty embedded etcd)", b, err)
	}
	if ents, _ := os.ReadDir(cfg.EmbedEtcd); len(ents) == 0 {
		t.Error("embedded etcd wrote nothing in its data dir")
	}
}
