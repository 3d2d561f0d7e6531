package renderer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkChangeOneOf1000: a gateway with a resource per app (1,000 apps x
// 10 instances); one instance changes. Measures the loop's cost of one
// change: collect (which resources it touches), snapshot, render the one
// touched resource, compare, stage, install (no commands).
func BenchmarkChangeOneOf1000(b *testing.B) {
	dir, out := b.TempDir(), b.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "templates/up.tmpl"), []byte(`{{range $i := instances "/"}}server {{$i}};
{{end}}`), 0o644); err != nil {
		b.Fatal(err)
	}
	kvs := map[string]string{}
	for a := range 1000 {
		app := fmt.Sprintf("app%04d_prod", a)
		toml := fmt.Sprintf("[template]\nsrc = \"up.tmpl\"\ndest = %q\nprefix = \"/%s\"\nkeys = [\"/\"]\n", filepath.Join(out, app+".conf"), app)
		if err := os.WriteFile(filepath.Join(dir, "conf.d", app+".toml"), []byte(toml), 0o644); err != nil {
			b.Fatal(err)
		}
		for i := range 10 {
			kvs[fmt.Sprintf("/%s/10.0.%d.%d-80", app, a%250, i+1)] = fmt.Sprintf("10.0.%d.%d:80", a%250, i+1)
		}
	}
	r := newTestRenderer(dir)
	if len(r.states) != 1000 {
		b.Fatalf("%d resources loaded", len(r.states))
	}
	r.store.Replace(kvs, 1, r.prefixes())
	ctx := context.Background()
	r.applyDue(ctx, time.Now()) // full pass: every file written
	b.ResetTimer()
	for n := range b.N {
		key := "/app0500_prod/10.0.250.99-80"
		if n%2 == 0 {
			r.store.Apply([]change{{key: key, value: "10.0.250.99:80"}}, int64(n+2))
		} else {
			r.store.Apply([]change{{key: key, del: true}}, int64(n+2))
		}
		r.applyDue(ctx, time.Now())
		if !r.sched.Idle() {
			b.Fatal("change not applied")
		}
	}
}
