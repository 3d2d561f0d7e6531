package confd

import (
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the module root: it holds the shipped templates/ and conf.d/,
// so it is itself a confdir.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func TestShippedRender(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	r, err := Load(root, filepath.Join(root, "conf.d", "upstreams.toml"), "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Render([]KV{{Key: "/search_PRE/172.18.100.31-86", Value: "172.18.100.31:86"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out.Bytes), "server 172.18.100.31:86;") {
		t.Errorf("Render = %s; want server 172.18.100.31:86", out.Bytes)
	}
}

// TestShippedResources: the repo root is a working confdir; the proxy reads
// the same keys as the upstreams it refers to, so both change in one batch.
func TestShippedResources(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	rs, errs := LoadDir(root, "")
	if len(errs) > 0 {
		t.Fatalf("LoadDir(repo root): %v", errs)
	}
	byName := map[string]*Resource{}
	for _, r := range rs {
		byName[filepath.Base(r.Path)] = r
	}
	up, proxy := byName["upstreams.toml"], byName["proxy.toml"]
	if up == nil || proxy == nil || len(rs) != 2 {
		t.Fatalf("shipped resources = %v; want upstreams.toml and proxy.toml", byName)
	}
	if !slices.Equal(up.WatchPrefixes(), proxy.WatchPrefixes()) {
		t.Errorf("proxy watches %q, upstreams %q; want the same", proxy.WatchPrefixes(), up.WatchPrefixes())
	}
	if _, err := Load(root, filepath.Join(root, "conf.d", "upstream.toml.example"), ""); err != nil {
		t.Errorf("Load(upstream.toml.example): %v", err)
	}
}
