package lua

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSnippet(t *testing.T) {
	shipped, err := files.ReadFile("rollcall-peers.conf")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Snippet(Setup{}); err != nil || string(got) != string(shipped) {
		t.Fatalf("Snippet(Setup{}) = %v; want the shipped file as it is", err)
	}
	got, err := Snippet(Setup{LuaDir: "/l", PeersFile: "/p.txt", Listen: "127.0.0.1:9", DictSize: "12k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`lua_package_path "/l/?.lua;;";`, `file = "/p.txt",`, "listen 127.0.0.1:9;", "lua_shared_dict rollcall_peers 12k;"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("Snippet lacks %q:\n%s", want, got)
		}
	}
	for _, old := range []string{`lua_package_path "` + DefaultLuaDir, `file = "` + DefaultPeersFile, "listen " + DefaultListen} {
		if strings.Contains(string(got), old) {
			t.Errorf("Snippet still holds %q", old)
		}
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "rollcall", "peers.lua"))
	if err != nil || !strings.Contains(string(b), "function _M.balance") {
		t.Fatalf("installed peers.lua: %v", err)
	}
}
