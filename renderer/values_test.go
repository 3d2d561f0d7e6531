package renderer

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer/confd"
)

// getvsTmpl is the classic confd upstream template: raw values, no typed
// functions.
const getvsTmpl = `upstream search_PRE {
{{- range getvs "/search_PRE/*"}}
    server {{.}};
{{- else}}
    server 127.0.0.1:1 down;
{{- end}}
}
`

var getvsLine = regexp.MustCompile(`^(upstream search_PRE \{|    server (\S+);|\})$`)

// loadGetvs loads a confd-style resource (prefix "/", keys the service dir)
// rendering getvsTmpl.
func loadGetvs(t testing.TB) *confd.Resource {
	t.Helper()
	dir := t.TempDir()
	for name, text := range map[string]string{
		"templates/getvs.tmpl": getvsTmpl,
		"conf.d/up.toml":       "[template]\nsrc = \"getvs.tmpl\"\ndest = \"/nonexistent/up.conf\"\nkeys = [\"/search_PRE\"]\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := confd.Load(dir, filepath.Join(dir, "conf.d", "up.toml"), "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// FuzzGetvsValues: whatever value an instance key carries, what the watcher
// lets into the store — from a list or from a watch event that replaces a
// valid value — renders through a getvs template into a file nginx -t
// accepts, holding nothing but canonical addresses. `go test -fuzz
// FuzzGetvsValues ./renderer` explores further; plain `go test` runs the
// seeds (here and in testdata/fuzz).
func FuzzGetvsValues(f *testing.F) {
	for _, seed := range [][2]string{
		{"127.0.0.1-1", "127.0.0.1:1"},
		{"127.0.0.1-1", "127.0.0.1:1; } server { listen 127.0.0.1:8080; return 200 injected; } upstream z { server 127.0.0.1:2"},
		{"127.0.0.1-1", "127.0.0.1:1\n}\nserver {"},
		{"127.0.0.1-1", "127.0.0.1:2"},
		{"127.0.0.1-1", "127.0.0.1:1 backup"},
		{"127.0.0.1-1", "127.0.0.1:01"},
		{"::1-80", "[::1]:80"},
		{"::1-80", "[::1]:80 down"},
		{"fe80::1-80", "[fe80::1%eth0]:80"},
		{"127.0.0.1-1", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	bin := nginxtest.Lookup(f)
	res := loadGetvs(f)
	f.Fuzz(func(t *testing.T, name, value string) {
		key := "/search_PRE/" + name
		if !registry.IsInstanceKey(key) {
			return // not an instance key: passed through untouched (TestGateLeavesOtherKeys)
		}
		g := newValueGate(true, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
		const ok = "/search_PRE/10.0.0.1-80"
		listed := map[string]string{key: value, ok: "10.0.0.1:80"}
		g.filter(listed)
		s := newStore()
		s.Replace(listed, 1, []string{"/search_PRE"})
		check(t, bin, res, s, key, value)

		a, _ := registry.ParseInstanceName(name)
		s.Apply([]change{{key: key, value: registry.Value(a)}}, 2)
		s.Apply([]change{g.change(change{key: key, value: value})}, 3)
		check(t, bin, res, s, key, value)
	})
}

func check(t *testing.T, bin string, res *confd.Resource, s *store, key, value string) {
	t.Helper()
	out, err := res.Render(s.Snapshot().For(res.WatchPrefixes()))
	if err != nil {
		t.Fatalf("render %q=%q: %v", key, value, err)
	}
	for line := range strings.Lines(string(out.Bytes)) {
		m := getvsLine.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		if m == nil {
			t.Fatalf("%q=%q wrote %q", key, value, line)
		}
		if m[2] != "" && m[2] != "127.0.0.1:1 down" {
			if a, err := registry.ParseAddr(m[2]); err != nil || registry.Value(a) != m[2] {
				t.Fatalf("%q=%q wrote the address %q: %v", key, value, m[2], err)
			}
		}
	}
	if !strings.Contains(string(out.Bytes), "server 10.0.0.1:80;") {
		t.Fatalf("%q=%q lost the valid instance:\n%s", key, value, out.Bytes)
	}
	if msg, err := nginxtest.Check(t, bin, string(out.Bytes)); err != nil {
		t.Fatalf("nginx -t on the render of %q=%q: %v\n%s\n%s", key, value, err, msg, out.Bytes)
	}
}

// TestGate: an invalid instance value is withheld (or, strict_values off,
// passed), logged and counted once per key and value; other keys pass
// untouched; a key whose value turns invalid is deleted from the store.
func TestGate(t *testing.T) {
	t.Parallel()
	for _, strict := range []bool{true, false} {
		var logs strings.Builder
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
		g := newValueGate(strict, slog.New(slog.NewTextHandler(&logs, nil)), c)
		evil := "1.2.3.4:80; } server { listen 8080; return 200 injected; } upstream z { server 1.2.3.4:81"
		kvs := map[string]string{
			"/web_prod/1.2.3.4-80": evil,
			"/web_prod/1.2.3.5-80": "1.2.3.5:80",
			"/web_prod/config":     evil, // not an instance key: untouched
			"/cfg/x":               "anything; }",
		}
		g.filter(kvs)
		if _, ok := kvs["/web_prod/1.2.3.4-80"]; ok == strict {
			t.Errorf("strict=%v: invalid instance value kept=%v", strict, ok)
		}
		if len(kvs) != 3+map[bool]int{true: 0, false: 1}[strict] {
			t.Errorf("strict=%v: other keys touched: %v", strict, kvs)
		}
		for range 3 { // the same value again, by list or event: no new report
			g.filter(map[string]string{"/web_prod/1.2.3.4-80": evil})
			g.change(change{key: "/web_prod/1.2.3.4-80", value: evil})
		}
		if n := testutil.ToFloat64(c); n != 1 {
			t.Errorf("strict=%v: counted %v; want 1", strict, n)
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "...(truncated)") {
			t.Errorf("strict=%v: logged %d times (want 1, value truncated):\n%s", strict, n, logs.String())
		}
		ch := g.change(change{key: "/web_prod/1.2.3.4-80", value: "1.2.3.4:81"})
		if want := (change{key: "/web_prod/1.2.3.4-80", del: true}); strict && ch != want {
			t.Errorf("value turning invalid: change %+v; want %+v", ch, want)
		}
		if n := testutil.ToFloat64(c); n != 2 {
			t.Errorf("strict=%v: a changed value counted %v in all; want 2", strict, n)
		}
		g.change(change{key: "/web_prod/1.2.3.4-80", del: true})
		g.change(change{key: "/web_prod/1.2.3.4-80", value: "1.2.3.4:81"}) // back after a delete: reported again
		if n := testutil.ToFloat64(c); n != 3 {
			t.Errorf("strict=%v: a value back after a delete counted %v in all; want 3", strict, n)
		}
	}
}
