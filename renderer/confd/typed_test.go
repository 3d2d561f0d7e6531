package confd

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
)

var typedKVs = []KV{
	{Key: "/search_PRE/10.0.0.10-80", Value: "10.0.0.10:80"},
	{Key: "/search_PRE/10.0.0.9-80", Value: "10.0.0.9:80"},
	{Key: "/search_PRE/::1-8080", Value: "[::1]:8080"},
	{Key: "/search_PRE/10.0.0.1-80", Value: "10.0.0.1:80; }"},
	{Key: "/search_PRE/10.0.0.2-80/deep", Value: "10.0.0.2:80"},
	{Key: "/web_prod/10.0.0.5-80", Value: "10.0.0.6:80"},
	{Key: "/_ports/10.0.0.9/80", Value: "search_PRE"},
	{Key: "/_renderers/gw", Value: "{}"},
	{Key: "/a_b_c/10.0.0.7-80", Value: "10.0.0.7:80"},
	{Key: "/nginx/domain", Value: "example.com"},
}

// parsedKVs is kvs as NewKV makes them (parsed once, as the renderer's
// store keeps them).
func parsedKVs(kvs []KV) []KV {
	out := make([]KV, len(kvs))
	for i, kv := range kvs {
		out[i] = NewKV(kv.Key, kv.Value)
	}
	return out
}

func TestTyped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, prefix, keys, tmpl, want string
		skipped                        []string
	}{
		{"instances fields", "", `["/"]`,
			`{{range instances "/search_PRE"}}{{.Key}} {{.Addr}} {{.IP}} {{.Port}} {{.}};{{end}}`,
			"/search_PRE/10.0.0.9-80 10.0.0.9:80 10.0.0.9 80 10.0.0.9:80;" +
				"/search_PRE/10.0.0.10-80 10.0.0.10:80 10.0.0.10 80 10.0.0.10:80;" +
				"/search_PRE/::1-8080 [::1]:8080 ::1 8080 [::1]:8080;",
			[]string{"/search_PRE/10.0.0.1-80"}},
		{"instances dir forms", "", `["/"]`,
			`{{len (instances "search_PRE/")}} {{len (instances "/search_PRE")}}`, "3 3",
			[]string{"/search_PRE/10.0.0.1-80"}},
		{"instances of an empty dir", "", `["/"]`, `{{len (instances "/none_prod")}}`, "0", nil},
		{"instances port arithmetic", "", `["/"]`, `{{range instances "/search_PRE"}}{{add .Port 1}} {{end}}`, "81 81 8081 ",
			[]string{"/search_PRE/10.0.0.1-80"}},
		{"services", "", `["/"]`,
			`{{range services}}{{.Name}}={{.App}}/{{.Env}}@{{.Dir}}:{{len .Instances}} {{end}}`,
			"search_PRE=search/PRE@/search_PRE:3 web_prod=web/prod@/web_prod:0 ",
			[]string{"/search_PRE/10.0.0.1-80", "/web_prod/10.0.0.5-80"}},
		{"services include listed dirs without data", "", `["/web_prod", "/new_prod", "/_ports", "/nginx"]`,
			`{{range services}}{{.Name}}:{{len .Instances}} {{end}}`, "new_prod:0 web_prod:0 ",
			[]string{"/web_prod/10.0.0.5-80"}},
		{"services under a prefix", "/search_PRE", `["/"]`, `{{len services}}`, "0", nil},
		{"service", "/search_PRE", `["/"]`,
			`{{with service}}{{.Name}} {{.App}} {{.Env}} {{.Dir}} {{range .Instances}}{{.}} {{end}}{{end}}`,
			"search_PRE search PRE / 10.0.0.9:80 10.0.0.10:80 [::1]:8080 ",
			[]string{"/search_PRE/10.0.0.1-80"}},
		{"service with no instances", "/new_prod", `["/"]`, `{{with service}}{{.Name}} {{len .Instances}}{{end}}`, "new_prod 0", nil},
		{"skipped once though asked twice", "", `["/"]`,
			`{{len (instances "/search_PRE")}}{{len (instances "/search_PRE")}}{{range services}}{{end}}`, "33",
			[]string{"/search_PRE/10.0.0.1-80", "/web_prod/10.0.0.5-80"}},
		{"raw functions report nothing", "", `["/"]`, `{{getv "/search_PRE/10.0.0.1-80"}}`, "10.0.0.1:80; }", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := newResource(t, fmt.Sprintf("prefix = %q\nkeys = %s", tc.prefix, tc.keys), tc.tmpl, "")
			if err != nil {
				t.Fatal(err)
			}
			// Literal pairs are parsed at the render, NewKV's once before:
			// the same output and the same refusals either way.
			for _, kvs := range [][]KV{typedKVs, parsedKVs(typedKVs)} {
				out, err := r.Render(kvs)
				if err != nil || string(out.Bytes) != tc.want {
					t.Errorf("render %s = %q, %v; want %q", tc.tmpl, out.Bytes, err, tc.want)
				}
				var skipped []string
				for _, s := range out.Skipped {
					skipped = append(skipped, s.Key)
				}
				if strings.Join(skipped, " ") != strings.Join(tc.skipped, " ") {
					t.Errorf("skipped = %q; want %q", skipped, tc.skipped)
				}
			}
		})
	}
}

func TestRenderIgnoresPairsOutsideKeys(t *testing.T) {
	t.Parallel()
	r, err := newResource(t, `keys = ["/app_prod"]`, `{{range gets "/*/*"}}{{.Key}} {{end}}{{range services}}{{.Name}}{{end}}`, "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render([]KV{
		{Key: "/app_prod/10.0.0.1-80", Value: "10.0.0.1:80"},
		{Key: "/app_production/10.0.0.2-80", Value: "10.0.0.2:80"},
		{Key: "/other/x", Value: "y"},
	})
	if want := "/app_prod/10.0.0.1-80 app_prod"; err != nil || string(out.Bytes) != want {
		t.Errorf("Render = %q, %v; want %q", out.Bytes, err, want)
	}
}

// TestRenderConcurrent renders one Resource from many goroutines (-race).
func TestRenderConcurrent(t *testing.T) {
	t.Parallel()
	r, err := newResource(t, `keys = ["/"]`, `{{range services}}{{.Name}}{{range .Instances}} {{.}}{{end}};{{end}}{{getv "/nginx/domain"}}`, "")
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.Render(typedKVs)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			out, err := r.Render(typedKVs)
			if err == nil && !bytes.Equal(out.Bytes, first.Bytes) {
				err = fmt.Errorf("render = %q; want %q", out.Bytes, first.Bytes)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestRenderUnloaded(t *testing.T) {
	t.Parallel()
	if _, err := (&Resource{Path: "x.toml"}).Render(nil); err == nil {
		t.Error("Render of a Resource not made by Load succeeded")
	}
}

// TestRenderCache: a Resource reuses a dir's instances from its previous
// render only while the dir holds the same parsed pairs. Each render of a
// sequence of changes gives what a fresh Resource gives, and a refused
// value is reported at every render, not only the first.
func TestRenderCache(t *testing.T) {
	t.Parallel()
	const tmpl = `{{range services}}{{.Name}}:{{range .Instances}} {{.}}{{end}};{{end}}`
	cached, err := newResource(t, `keys = ["/"]`, tmpl, "")
	if err != nil {
		t.Fatal(err)
	}
	kvs := map[string]string{
		"/a_prod/10.0.0.1-80": "10.0.0.1:80", "/a_prod/10.0.0.2-80": "10.0.0.2:80",
		"/b_prod/10.0.0.3-80": "10.0.0.3:80",
	}
	steps := []struct {
		name        string
		key, value  string // value "" deletes
		wantSkipped int
	}{
		{"start", "", "", 0},
		{"b gains one", "/b_prod/10.0.0.4-80", "10.0.0.4:80", 0},
		{"a loses one", "/a_prod/10.0.0.2-80", "", 0},
		{"a's value turns bad", "/a_prod/10.0.0.1-80", "10.0.0.9:80", 1},
		{"unchanged: refused again", "", "", 1},
		{"a's value good again", "/a_prod/10.0.0.1-80", "10.0.0.1:80", 0},
		{"c appears", "/c_prod/10.0.0.5-80", "10.0.0.5:80", 0},
	}
	parsed := map[string]KV{} // as the renderer's store keeps them: a new parse per change only
	for _, s := range steps {
		switch {
		case s.key == "":
		case s.value == "":
			delete(kvs, s.key)
		default:
			kvs[s.key] = s.value
		}
		var in []KV
		for _, k := range slices.Sorted(maps.Keys(kvs)) {
			if kv, ok := parsed[k]; !ok || kv.Value != kvs[k] {
				parsed[k] = NewKV(k, kvs[k])
			}
			in = append(in, parsed[k])
		}
		fresh, err := newResource(t, `keys = ["/"]`, tmpl, "")
		if err != nil {
			t.Fatal(err)
		}
		want, err := fresh.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := cached.Render(in)
		if err != nil || string(got.Bytes) != string(want.Bytes) {
			t.Fatalf("%s: render = %q, %v; want %q", s.name, got.Bytes, err, want.Bytes)
		}
		if len(got.Skipped) != s.wantSkipped || len(want.Skipped) != s.wantSkipped {
			t.Fatalf("%s: skipped %v (fresh: %v); want %d", s.name, got.Skipped, want.Skipped, s.wantSkipped)
		}
	}
}
