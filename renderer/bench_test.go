package renderer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchConfdir writes a confdir with the shipped templates and, perApp, one
// resource per app (conf.d/upstream.toml.example's shape) or else one
// resource for all apps (conf.d/upstreams.toml's), without commands: what
// the benchmarks measure is the renderer's own share (tests may add some). It returns the
// confdir and 1,000 apps x 10 instances as etcd holds them.
func benchConfdir(tb testing.TB, apps int, perApp bool, check, reload string) (string, map[string]string) {
	tb.Helper()
	dir, out := tb.TempDir(), tb.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for _, t := range []string{"upstream.tmpl", "upstreams.tmpl"} {
		b, err := os.ReadFile(filepath.Join("..", "templates", t))
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "templates", t), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	res := func(name, src, prefix string) {
		toml := fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nprefix = %q\nkeys = [\"/\"]\ncheck_cmd = %q\nreload_cmd = %q\n",
			src, filepath.Join(out, name+".conf"), prefix, check, reload)
		if err := os.WriteFile(filepath.Join(dir, "conf.d", name+".toml"), []byte(toml), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if !perApp {
		res("upstreams", "upstreams.tmpl", "/")
	}
	kvs := map[string]string{}
	for a := range apps {
		app := fmt.Sprintf("app%04d_prod", a)
		if perApp {
			res(app, "upstream.tmpl", "/"+app)
		}
		for i := range 10 {
			kvs[fmt.Sprintf("/%s/10.0.%d.%d-%d", app, a%250, i+1, 20000+a)] = fmt.Sprintf("10.0.%d.%d:%d", a%250, i+1, 20000+a)
		}
	}
	return dir, kvs
}

// benchChange measures the loop's cost of one change at 10,000 instances
// over 1,000 apps: collect (which resources it touches), snapshot, render
// the touched resources, compare, stage, install (fsync included; no
// commands).
func benchChange(b *testing.B, perApp bool) {
	dir, kvs := benchConfdir(b, 1000, perApp, "", "")
	r := newTestRenderer(dir)
	if want := map[bool]int{true: 1000, false: 1}[perApp]; len(r.states) != want {
		b.Fatalf("%d resources loaded; want %d", len(r.states), want)
	}
	r.store.Replace(kvs, 1, r.prefixes())
	ctx := context.Background()
	r.applyDue(ctx, time.Now()) // full pass: every file written
	if !r.sched.Idle() {
		b.Fatal("first full render failed")
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		toggle(r.store, n)
		r.applyDue(ctx, time.Now())
		if !r.sched.Idle() {
			b.Fatal("change not applied")
		}
	}
}

// toggle is the benchmarks' change number n at revision n+1: one instance of
// app0500 added (odd n) or removed (even n).
func toggle(s *store, n int) {
	const key = "/app0500_prod/10.0.250.99-20500"
	if n%2 == 1 {
		s.Apply([]change{{key: key, value: "10.0.250.99:20500"}}, int64(n+1))
	} else {
		s.Apply([]change{{key: key, del: true}}, int64(n+1))
	}
}

// BenchmarkChangeOneOf1000: a resource per app; one instance changes.
func BenchmarkChangeOneOf1000(b *testing.B) { benchChange(b, true) }

// BenchmarkChangeOneForAll: one resource for all 1,000 apps; one instance
// changes.
func BenchmarkChangeOneForAll(b *testing.B) { benchChange(b, false) }

// BenchmarkStoreChange: the store's part of one change at 10,000 keys: the
// watcher's Apply, the loop's Take and a fresh snapshot, one app's keys.
func BenchmarkStoreChange(b *testing.B) {
	_, kvs := benchConfdir(b, 1000, false, "", "")
	s := newStore()
	s.Replace(kvs, 1, []string{"/"})
	s.Take()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		toggle(s, n)
		if c, _ := s.Take(); len(c.keys) != 1 {
			b.Fatalf("%d keys changed", len(c.keys))
		}
		if kvs := s.Snapshot().For([]string{"/app0500_prod"}); len(kvs) < 10 {
			b.Fatalf("%d keys for app0500_prod", len(kvs))
		}
	}
}

// BenchmarkFirstRender1000: the first full render of 1,000 per-app
// resources, each with a {{.src}} check_cmd (a process per resource).
func BenchmarkFirstRender1000(b *testing.B) {
	dir, kvs := benchConfdir(b, 1000, true, "test -s {{.src}}", "")
	for b.Loop() {
		b.StopTimer()
		r := newTestRenderer(dir)
		r.store.Replace(kvs, 1, r.prefixes())
		for _, st := range r.states {
			if err := os.Remove(st.res.Dest); err != nil && !os.IsNotExist(err) {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		r.applyDue(context.Background(), time.Now())
		if !r.sched.Idle() {
			b.Fatal("first full render failed")
		}
	}
}

// TestFirstRenderOneReload (issue 8): the first full render of a resource
// per app, each with a {{.src}} check, costs one reload, and every file is
// installed.
func TestFirstRenderOneReload(t *testing.T) {
	t.Parallel()
	log := filepath.Join(t.TempDir(), "reloads")
	dir, kvs := benchConfdir(t, 200, true, "test -s {{.src}}", "echo reload >> "+log)
	r := newTestRenderer(dir)
	r.store.Replace(kvs, 1, r.prefixes())
	start := time.Now()
	r.applyDue(context.Background(), time.Now())
	took := time.Since(start)
	if !r.sched.Idle() {
		t.Fatal("first full render left resources pending")
	}
	b, err := os.ReadFile(log)
	if err != nil || string(b) != "reload\n" {
		t.Errorf("reloads: %q, %v; want one", b, err)
	}
	for _, st := range r.states {
		if fi, err := os.Stat(st.res.Dest); err != nil || fi.Size() == 0 {
			t.Fatalf("%s not installed: %v", st.res.Dest, err)
		}
	}
	t.Logf("first render of %d resources with a {{.src}} check each: %v", len(r.states), took)
}
