package confd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/internal/nginxtest"
)

var update = flag.Bool("update", false, "rewrite testdata/render/*/want.conf")

// goldenCases render the SHIPPED templates (the repo root is a confdir).
// resource is a conf.d file of the repo, or "" for the case's resource.toml
// (whose src is a shipped template). context is where nginx takes the
// output: "http" (upstreams) or "server" (proxy locations).
var goldenCases = []struct {
	name, resource, context string
	skipped                 []string
}{
	{"two-apps", "conf.d/upstreams.toml", "http", nil},
	{"zero-instances", "", "http", nil},
	{"per-app", "conf.d/upstream.toml.example", "http", nil},
	{"per-app-zero", "conf.d/upstream.toml.example", "http", nil},
	{"injection", "conf.d/upstreams.toml", "http", []string{"/search_PRE/1.2.3.4-80", "/search_PRE/1.2.3.5-80", "/search_PRE/1.2.3.6-80"}},
	{"ipv6", "conf.d/upstreams.toml", "http", nil},
	{"key-order", "conf.d/upstreams.toml", "http", nil},
	{"value-disagrees", "conf.d/upstreams.toml", "http", []string{
		"/search_PRE/10.0.0.1-80", "/search_PRE/10.0.0.3-80", "/search_PRE/10.0.0.4-80", "/search_PRE/10.0.0.5-0",
		"/search_PRE/10.0.0.6-80", "/search_PRE/10.0.0.7-80", "/search_PRE/fe80::1-80", "/search_PRE/host-80",
	}},
	{"prefix-boundary", "", "http", nil},
	{"internal-dirs", "conf.d/upstreams.toml", "http", nil},
	{"proxy", "conf.d/proxy.toml", "server", nil},
	{"last-instance-gone", "conf.d/upstreams.toml", "http", nil},
	{"last-instance-gone-proxy", "conf.d/proxy.toml", "server", nil},
}

// readKV reads "key value" lines; the value is the rest of the line after
// the first space. Blank lines and lines starting with # are skipped.
func readKV(t testing.TB, path string) []KV {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kvs []KV
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		kvs = append(kvs, KV{Key: k, Value: v})
	}
	return kvs
}

// renderGolden renders the case's kv.txt with resource (or the case's
// resource.toml) and returns the resource and its output.
func renderGolden(t testing.TB, root, caseDir, resource string) (*Resource, []KV, Rendered) {
	t.Helper()
	path := filepath.Join(caseDir, "resource.toml")
	if resource != "" {
		path = filepath.Join(root, resource)
	}
	r, err := Load(root, path, "")
	if err != nil {
		t.Fatal(err)
	}
	kvs := readKV(t, filepath.Join(caseDir, "kv.txt"))
	out, err := r.RenderKnown(context.Background(), kvs, readKnown(t, caseDir))
	if err != nil {
		t.Fatal(err)
	}
	return r, kvs, out
}

// readKnown reads the case's optional known.txt: service dirs the renderer
// rendered before (one per line), whose keys may all be gone.
func readKnown(t testing.TB, caseDir string) []string {
	b, err := os.ReadFile(filepath.Join(caseDir, "known.txt"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var known []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			known = append(known, l)
		}
	}
	return known
}

func TestGolden(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(root, "testdata", "render", tc.name)
			r, kvs, out := renderGolden(t, root, dir, tc.resource)
			// Render twice: map order must never reach the output.
			again, err := r.RenderKnown(context.Background(), kvs, readKnown(t, dir))
			if err != nil || !bytes.Equal(again.Bytes, out.Bytes) {
				t.Fatalf("second render differs (%v):\n%s\nfirst:\n%s", err, again.Bytes, out.Bytes)
			}
			var skipped []string
			for _, s := range out.Skipped {
				skipped = append(skipped, s.Key)
				if strings.Contains(string(out.Bytes), s.Value) && s.Value != "" {
					t.Errorf("skipped value %q reached the output", s.Value)
				}
				if s.Err == nil {
					t.Errorf("skipped %s has no reason", s.Key)
				}
			}
			if !reflect.DeepEqual(skipped, tc.skipped) {
				t.Errorf("skipped = %q; want %q", skipped, tc.skipped)
			}
			want := filepath.Join(dir, "want.conf")
			if *update {
				if err := os.WriteFile(want, out.Bytes, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantBytes, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes, wantBytes) {
				t.Errorf("render %s:\n%s\nwant (%s):\n%s", tc.name, out.Bytes, want, wantBytes)
			}
		})
	}
}

// TestGoldenNginx checks every want.conf with nginx -t in a wrapper config.
func TestGoldenNginx(t *testing.T) {
	if testing.Short() {
		t.Skip("nginx in -short")
	}
	bin := nginxtest.Lookup(t)
	t.Parallel()
	root := repoRoot(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(root, "testdata", "render", tc.name)
			want := filepath.Join(dir, "want.conf")
			http := "include " + want + ";"
			if tc.context == "server" {
				// Proxy locations need the upstreams of the same keys.
				up := filepath.Join(t.TempDir(), "upstreams.conf")
				_, _, out := renderGolden(t, root, dir, "conf.d/upstreams.toml")
				writeFile(t, up, string(out.Bytes))
				http = "include " + up + ";\nserver { listen 127.0.0.1:1; include " + want + "; }"
			}
			if out, err := nginxtest.Check(t, bin, http); err != nil {
				t.Errorf("nginx -t with %s: %v\n%s", want, err, out)
			}
		})
	}
}

// TestNginxCheckCanFail keeps TestGoldenNginx honest: the wrapper rejects a
// broken fragment and an upstream without servers.
func TestNginxCheckCanFail(t *testing.T) {
	if testing.Short() {
		t.Skip("nginx in -short")
	}
	bin := nginxtest.Lookup(t)
	t.Parallel()
	for _, http := range []string{
		"upstream a { }",
		"upstream a { server 1.2.3.4:80; } server { listen 8080; location / { root /etc; } } upstream x { server 1.2.3.4:80; }\nupstream a { server 1.2.3.4:80; }",
		"location / { }",
	} {
		if out, err := nginxtest.Check(t, bin, http); err == nil {
			t.Errorf("nginx -t accepted %q: %s", http, out)
		}
	}
}

// TestConfdCompat renders a confdir written for confd's etcdv3 backend and
// compares with the output confd gives (want/<dest's base name>, derived by
// hand from confd v0.16 and memkv v0.1.1; never rewritten by -update).
func TestConfdCompat(t *testing.T) {
	t.Parallel()
	dir := filepath.Join("testdata", "confd-compat")
	rs, errs := LoadDir(dir, "")
	if len(errs) > 0 || len(rs) != 3 {
		t.Fatalf("LoadDir = %d resources, %v; want 3, none", len(rs), errs)
	}
	kvs := readKV(t, filepath.Join(dir, "kv.txt"))
	for _, r := range rs {
		out, err := r.Render(kvs)
		if err != nil {
			t.Errorf("render %s: %v", r.Path, err)
			continue
		}
		want, err := os.ReadFile(filepath.Join(dir, "want", filepath.Base(r.Dest)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes, want) {
			t.Errorf("render %s:\n%q\nwant:\n%q", r.Path, out.Bytes, want)
		}
	}
}
