package confd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/internal/haproxytest"
)

// haproxyCases render the shipped HAProxy template (the confdir haproxy/)
// into testdata/haproxy/<case>/want.cfg. resource is a file of haproxy/, or
// "" for the case's resource.toml.
var haproxyCases = []struct {
	name, resource string
	skipped        []string
}{
	{"two-apps", "conf.d/haproxy.toml", nil},
	{"zero-instances", "", nil},
	{"no-apps", "conf.d/haproxy.toml", nil},
	{"injection", "conf.d/haproxy.toml", []string{"/search_PRE/1.2.3.4-80", "/search_PRE/1.2.3.5-80", "/search_PRE/1.2.3.6-80"}},
	{"ipv6", "conf.d/haproxy.toml", nil},
}

func TestGoldenHAProxy(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	for _, tc := range haproxyCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(root, "testdata", "haproxy", tc.name)
			checkGolden(t, filepath.Join(root, "haproxy"), dir, tc.resource, "want.cfg", tc.skipped)
		})
	}
}

// TestGoldenHAProxyCheck checks every want.cfg with `haproxy -c` after the
// shipped haproxy.cfg, as the shipped check_cmd runs it.
func TestGoldenHAProxyCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("haproxy in -short")
	}
	bin := haproxytest.Lookup(t)
	t.Parallel()
	root := repoRoot(t)
	for _, tc := range haproxyCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := filepath.Join(root, "testdata", "haproxy", tc.name, "want.cfg")
			if out, err := haproxytest.Check(t, bin, want); err != nil {
				t.Errorf("haproxy -c with %s: %v\n%s", want, err, out)
			}
		})
	}
}

// TestHAProxyCheckCanFail keeps TestGoldenHAProxyCheck honest: haproxy -c
// rejects a broken part, a duplicate backend and a server line carrying
// more than an address.
func TestHAProxyCheckCanFail(t *testing.T) {
	if testing.Short() {
		t.Skip("haproxy in -short")
	}
	bin := haproxytest.Lookup(t)
	t.Parallel()
	for _, part := range []string{
		"backend a\n    bogus directive\n",
		"backend a\n    mode http\nbackend a\n    mode http\n",
		"backend a\n    server x 1.2.3.4:80; } frontend z\n",
	} {
		f := filepath.Join(t.TempDir(), "part.cfg")
		if err := os.WriteFile(f, []byte(part), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := haproxytest.Check(t, bin, f); err == nil {
			t.Errorf("haproxy -c accepted %q: %s", strings.TrimSpace(part), out)
		}
	}
}
