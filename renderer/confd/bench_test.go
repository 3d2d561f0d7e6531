package confd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkRender1000x10 renders the shipped upstreams resource (keys ["/"])
// over 1,000 apps x 10 instances, with each instance's port claim under
// /_ports as etcd holds them: 20,000 pairs, 10,000 server lines. The pairs
// are literal KVs: every render parses every instance.
func BenchmarkRender1000x10(b *testing.B) { benchRender(b, false) }

// BenchmarkRender1000x10Parsed is BenchmarkRender1000x10 over pairs made
// by NewKV, as the renderer's store keeps them: parsed once, not per render.
func BenchmarkRender1000x10Parsed(b *testing.B) { benchRender(b, true) }

// BenchmarkRenderGetvs1000x10 is BenchmarkRender1000x10Parsed through the
// template a confd user keeps for all apps: one `getvs "/<app>/*"` per app
// (glob.go's index; memkv alone matched all 20,000 keys once per app).
func BenchmarkRenderGetvs1000x10(b *testing.B) {
	dir := b.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var tmpl strings.Builder
	for app := range 1000 {
		fmt.Fprintf(&tmpl, "upstream app%04d_prod {\n{{range getvs \"/app%04d_prod/*\"}}    server {{.}};\n{{end}}}\n", app, app)
	}
	files := map[string]string{
		"conf.d/all.toml":    "[template]\nsrc = \"all.tmpl\"\ndest = \"/tmp/all.conf\"\nkeys = [\"/\"]\n",
		"templates/all.tmpl": tmpl.String(),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	r, err := Load(dir, filepath.Join(dir, "conf.d", "all.toml"), "")
	if err != nil {
		b.Fatal(err)
	}
	benchRenderOf(b, r, true)
}

func benchRender(b *testing.B, parsed bool) {
	root := repoRoot(b)
	r, err := Load(root, filepath.Join(root, "conf.d", "upstreams.toml"), "")
	if err != nil {
		b.Fatal(err)
	}
	benchRenderOf(b, r, parsed)
}

// benchRenderOf renders r over 1,000 apps x 10 instances and their port
// claims.
func benchRenderOf(b *testing.B, r *Resource, parsed bool) {
	kvs := make([]KV, 0, 20000)
	for app := range 1000 {
		for i := range 10 {
			ip := fmt.Sprintf("10.%d.%d.%d", app/250, app%250, i+1)
			port := 20000 + app
			svc := fmt.Sprintf("app%04d_prod", app)
			kvs = append(kvs,
				KV{Key: fmt.Sprintf("/%s/%s-%d", svc, ip, port), Value: fmt.Sprintf("%s:%d", ip, port)},
				KV{Key: fmt.Sprintf("/_ports/%s/%d", ip, port), Value: svc})
		}
	}
	if parsed {
		kvs = parsedKVs(kvs)
	}
	out, err := r.Render(kvs)
	if err != nil || len(out.Skipped) > 0 {
		b.Fatalf("render: %v, skipped %d", err, len(out.Skipped))
	}
	b.SetBytes(int64(len(out.Bytes)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Render(kvs); err != nil {
			b.Fatal(err)
		}
	}
}
