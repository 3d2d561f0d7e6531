package confd

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/registry"
)

// shippedLine is every line the shipped upstreams template may write.
var shippedLine = regexp.MustCompile(`^(|# [A-Za-z ;:,.]+|upstream [A-Za-z0-9][A-Za-z0-9.-]*_[A-Za-z0-9][A-Za-z0-9.-]* \{|    server (\d+\.\d+\.\d+\.\d+|\[[0-9a-f:.]+\]):\d+;|    # [a-z0-9 :]+|    server 127\.0\.0\.1:1 down;|    keepalive 16;|\})$`)

// FuzzShippedUpstreams: whatever is registered, the shipped upstreams
// template writes only lines of its own grammar, every written address is a
// registered value that ParseInstance accepts, and every refused pair is
// reported. `go test -fuzz FuzzShippedUpstreams ./renderer/confd` explores
// further; plain `go test` runs the seeds.
func FuzzShippedUpstreams(f *testing.F) {
	for _, seed := range [][2]string{
		{"/search_PRE/1.2.3.4-80", "1.2.3.4:80"},
		{"/search_PRE/1.2.3.4-80", "1.2.3.4:80; } server { listen 8080; location / { root /etc; } }"},
		{"/search_PRE/1.2.3.4-80", "1.2.3.4:80\n}\nserver {"},
		{"/search_PRE/::1-80", "[::1]:80"},
		{"/search_PRE/fe80::1-80", "[fe80::1%eth0]:80"},
		{"/a;b_c/1.2.3.4-80", "1.2.3.4:80"},
		{"/a_b {/1.2.3.4-80", "1.2.3.4:80"},
		{"/a_b/1.2.3.4-80/x", "1.2.3.4:80"},
		{"/_ports/1.2.3.4/80", "a_b"},
		{"/x_y/1.2.3.4-80", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	root := repoRoot(f)
	r, err := Load(root, filepath.Join(root, "conf.d", "upstreams.toml"), "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		kvs := []KV{{Key: key, Value: value}, {Key: "/ok_prod/10.0.0.1-80", Value: "10.0.0.1:80"}}
		out, err := r.Render(kvs)
		if err != nil {
			t.Fatalf("Render(%q=%q): %v", key, value, err)
		}
		if parsed, err := r.Render(parsedKVs(kvs)); err != nil || !bytes.Equal(parsed.Bytes, out.Bytes) || len(parsed.Skipped) != len(out.Skipped) {
			t.Fatalf("Render(%q=%q) of NewKV pairs = %q, %v; want %q as of literal pairs", key, value, parsed.Bytes, err, out.Bytes)
		}
		for line := range strings.Lines(string(out.Bytes)) {
			if !shippedLine.MatchString(strings.TrimSuffix(line, "\n")) {
				t.Fatalf("Render(%q=%q) wrote %q", key, value, line)
			}
		}
		if !strings.Contains(string(out.Bytes), "server 10.0.0.1:80;") {
			t.Errorf("Render(%q=%q) lost the valid instance:\n%s", key, value, out.Bytes)
		}
		written := strings.Contains(string(out.Bytes), "server "+value+";")
		_, perr := registry.ParseInstance(key, value)
		if written && perr != nil && value != "10.0.0.1:80" {
			t.Errorf("Render wrote %q which ParseInstance refuses: %v", value, perr)
		}
		for _, s := range out.Skipped {
			if s.Key != key || s.Value != value || s.Err == nil {
				t.Errorf("Skipped %+v; want only %q=%q with a reason", s, key, value)
			}
		}
	})
}
