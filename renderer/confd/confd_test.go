package confd

import (
	"path/filepath"
	"runtime"
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
	out, err := r.Render([]KV{{"/search_PRE/172.18.100.31-86", "172.18.100.31:86"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out.Bytes), "server 172.18.100.31:86;") {
		t.Errorf("Render = %s; want server 172.18.100.31:86", out.Bytes)
	}
}
