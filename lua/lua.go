// Package lua ships rollcall's dynamic-upstream setup for nginx with
// Debian's Lua module: rollcall/peers.lua (the shared dict, the balancer,
// the update endpoint) and rollcall-peers.conf (the http{} snippet that
// wires them). The files are the product; this package embeds them so
// tests and the demo run exactly what is shipped, with their paths moved.
package lua

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

//go:embed rollcall-peers.conf rollcall/peers.lua
var files embed.FS

// The shipped snippet's defaults, replaced by Snippet.
const (
	DefaultLuaDir    = "/usr/share/rollcall/lua"
	DefaultPeersFile = "/etc/nginx/rollcall-peers.txt"
	DefaultListen    = "127.0.0.1:8089"
	DefaultDictSize  = "8m"
	// Path is the update endpoint's location.
	Path = "/rollcall/peers"
)

// Setup moves the shipped snippet's paths: empty fields keep the defaults.
type Setup struct {
	LuaDir    string // holds rollcall/peers.lua (see Install)
	PeersFile string // the rendered peers file loaded at start
	Listen    string // the update endpoint's listen address
	DictSize  string // lua_shared_dict size, e.g. "8m"
}

// Snippet returns the shipped rollcall-peers.conf with s's paths.
func Snippet(s Setup) ([]byte, error) {
	b, err := files.ReadFile("rollcall-peers.conf")
	if err != nil {
		return nil, err
	}
	for _, r := range []struct{ form, def, val string }{
		{`lua_package_path "%s/?.lua;;";`, DefaultLuaDir, s.LuaDir},
		{`file = "%s",`, DefaultPeersFile, s.PeersFile},
		{"listen %s;", DefaultListen, s.Listen},
		{"lua_shared_dict rollcall_peers %s;", DefaultDictSize, s.DictSize},
	} {
		old := []byte(fmt.Sprintf(r.form, r.def))
		if bytes.Count(b, old) != 1 {
			return nil, fmt.Errorf("rollcall-peers.conf: want %q exactly once", old)
		}
		if r.val != "" {
			b = bytes.Replace(b, old, []byte(fmt.Sprintf(r.form, r.val)), 1)
		}
	}
	return b, nil
}

// Install writes rollcall/peers.lua below dir (the snippet's LuaDir).
func Install(dir string) error {
	b, err := files.ReadFile("rollcall/peers.lua")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "rollcall"), 0o755); err != nil {
		return fmt.Errorf("install lua: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rollcall", "peers.lua"), b, 0o644); err != nil {
		return fmt.Errorf("install lua: %w", err)
	}
	return nil
}

// URL is the update endpoint for a listen address.
func URL(listen string) string { return "http://" + listen + Path }

// Listen is "127.0.0.1:<port>".
func Listen(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
