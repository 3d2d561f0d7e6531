package renderer

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// logSince returns the bytes and lines at info level and above the
// harness logged after mark (an offset into its log).
func (h *harness) logSince(mark int) (bytes, lines int) {
	for l := range strings.Lines(h.logs.String()[mark:]) {
		if !strings.Contains(l, "level=DEBUG") {
			bytes += len(l)
			lines++
		}
	}
	return bytes, lines
}

// putMany writes kvs in transactions of 128 puts (etcd's default limit).
func (h *harness) putMany(kvs [][2]string) {
	h.t.Helper()
	for len(kvs) > 0 {
		n := min(len(kvs), 128)
		ops := make([]clientv3.Op, n)
		for i, kv := range kvs[:n] {
			ops[i] = clientv3.OpPut(kv[0], kv[1])
		}
		if _, err := h.cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			h.t.Fatal(err)
		}
		kvs = kvs[n:]
	}
}

// TestBadInputQuiet: invalid input is logged once per key (value and key
// cut short) and counted once, however many renders follow. Measured: a
// 1 MiB invalid value, then 20,000 invalid keys (half bad values, half
// under an invalid service dir), then an unrelated change.
func TestBadInputQuiet(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	counter := func(name string) float64 { return metric(t, h.reg, "rollcall_renderer_"+name) }
	// unrelated changes to render after the bad input: n more instances of ok_prod.
	okLine := "ok_prod:"
	unrelated := func(i int) {
		ip := fmt.Sprintf("10.9.0.%d", i)
		h.put(key("ok_prod", ip, 80), ip+":80")
		okLine += " " + ip + ":80"
		h.waitFile(dest, okLine+"\nweb_prod: 10.0.0.1:80\n")
	}

	mark := len(h.logs.String())
	huge := "1.2.3.4:80; } server { listen 82; } " + strings.Repeat("x", 1<<20)
	h.put(key("web_prod", "10.0.0.2", 80), huge)
	for i := 1; i <= 5; i++ {
		unrelated(i)
	}
	b, l := h.logSince(mark)
	t.Logf("1 MiB invalid value, then 5 unrelated changes: %d log bytes, %d lines; invalid_values_skipped_total %v", b, l, counter("invalid_values_skipped_total"))
	if strings.Count(h.logs.String()[mark:], "invalid instance value withheld") != 1 || b > 8<<10 {
		t.Errorf("1 MiB value: %d bytes, %d lines logged; want one warning and a few lines", b, l)
	}
	if v := counter("invalid_values_skipped_total"); v != 1 {
		t.Errorf("invalid_values_skipped_total %v; want 1", v)
	}

	const n = 10000
	var kvs [][2]string
	for i := range n {
		ip := fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)
		kvs = append(kvs, [2]string{key("web_prod", ip, 80), "nope"})
		kvs = append(kvs, [2]string{key("odd;}server{listen 82;}_env", ip, 80), ip + ":80"})
	}
	mark = len(h.logs.String())
	start := time.Now()
	h.putMany(kvs)
	waitfor.Cond(t, 30*time.Second, "20,000 invalid keys counted", func() error {
		if v, k := counter("invalid_values_skipped_total"), counter("invalid_keys_skipped_total"); v != n+1 || k != n {
			return fmt.Errorf("invalid_values_skipped_total %v, invalid_keys_skipped_total %v", v, k)
		}
		return nil
	})
	b, l = h.logSince(mark)
	t.Logf("20,000 invalid keys: %d log bytes, %d lines in %v", b, l, time.Since(start).Round(time.Millisecond))
	if l > 2*n+20 {
		t.Errorf("20,000 invalid keys: %d lines; want one per key", l)
	}
	mark = len(h.logs.String())
	unrelated(6)
	b, l = h.logSince(mark)
	t.Logf("then an unrelated change: %d log bytes, %d lines", b, l)
	if l > 5 {
		t.Errorf("unrelated change after 20,000 invalid keys: %d lines:\n%s", l, h.logs.String()[mark:])
	}
	if got := readFile(t, dest); strings.Contains(got, "odd") || strings.Contains(got, "listen") {
		t.Errorf("invalid input reached the file:\n%s", got)
	}
}

// TestLoadFailureNotReady: a resource whose template fails to load makes
// /readyz 503 naming it (at start and after a broken edit), until fixed.
func TestLoadFailureNotReady(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.serveMetrics()
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.resource("bad", `"/"`, "{{range services}\n", "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	notReady := func(want string) {
		t.Helper()
		waitfor.Cond(t, 10*time.Second, "/readyz "+want, func() error {
			code, body := h.readyz()
			if want == "" && code != http.StatusOK || want != "" && (code != http.StatusServiceUnavailable || !strings.Contains(body, want)) {
				return fmt.Errorf("/readyz %d %q", code, body)
			}
			return nil
		})
	}
	notReady("failed to load: bad.toml")
	if v := metric(t, h.reg, "rollcall_renderer_resources_load_failing"); v != 1 {
		t.Errorf("resources_load_failing %v", v)
	}
	h.write("templates/bad.tmpl", listTmpl)
	notReady("")
	h.write("templates/up.tmpl", "{{range services}\n") // broken edit: the previous version keeps running
	notReady("failed to load: up.toml")
	h.write("templates/up.tmpl", listTmpl)
	notReady("")
}
