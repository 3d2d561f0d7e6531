package nginxtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/lua"
)

// Lua is the shipped dynamic-upstream setup (package lua) installed in a
// Server's prefix: splice Main and HTTP into its Config.
type Lua struct {
	Main      string // loads Debian's modules (ModulesConf)
	HTTP      string // includes the shipped rollcall-peers.conf
	URL       string // the update endpoint: http://127.0.0.1:<port>/rollcall/peers
	Listen    string // the update endpoint's address
	PeersFile string // the peers file nginx loads at start (absent at first)
}

// Lua installs the shipped Lua and snippet below s.Prefix with a free
// port for the update endpoint and the given dict size ("" = shipped).
// It skips the test (fails it under CI) when the Lua module is missing.
func (s *Server) Lua(t testing.TB, dictSize string) Lua {
	t.Helper()
	LookupLua(t)
	port := proctest.FreePort(t)
	dir := filepath.Join(s.Prefix, "lua")
	if err := lua.Install(dir); err != nil {
		t.Fatal(err)
	}
	l := Lua{
		Main:      ModulesConf,
		Listen:    lua.Listen(port),
		PeersFile: filepath.Join(s.Prefix, "rollcall-peers.txt"),
	}
	l.URL = lua.URL(l.Listen)
	snip, err := lua.Snippet(lua.Setup{LuaDir: dir, PeersFile: l.PeersFile, Listen: l.Listen, DictSize: dictSize})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(s.Prefix, "rollcall-peers.conf")
	if err := os.WriteFile(conf, snip, 0o644); err != nil {
		t.Fatal(err)
	}
	l.HTTP = "include " + conf + ";\n"
	return l
}
