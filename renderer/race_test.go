package renderer

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// TestChangeDuringApplyNotLost: a change the watcher stores while the loop
// takes its snapshot for an apply is applied later, never dropped with the
// pending changes the apply covered (issue 2: "never skipped").
func TestChangeDuringApplyNotLost(t *testing.T) {
	t.Parallel()
	dir, out := t.TempDir(), t.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dest := filepath.Join(out, "up.conf")
	if err := os.WriteFile(filepath.Join(dir, "templates/up.tmpl"), []byte(listTmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	toml := "[template]\nsrc = \"up.tmpl\"\ndest = " + `"` + dest + `"` + "\nkeys = [\"/\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "conf.d/up.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Renderer{
		cfg: Config{ConfDir: dir, CommandTimeout: time.Second}, base: slog.New(slog.NewTextHandler(io.Discard, nil)),
		m: NewMetrics(nil), store: newStore(), groups: map[confd.Wait]*quiet{}, pending: map[*resState]bool{}, stdout: io.Discard,
	}
	r.log = r.base
	r.loadResources(time.Now())
	ctx := context.Background()
	r.store.Replace(map[string]string{key("web_prod", "10.0.0.1", 80): "10.0.0.1:80"}, 1, r.prefixes())
	r.applyDue(ctx, time.Now())

	r.store.Apply([]change{{key: key("web_prod", "10.0.0.2", 80), value: "10.0.0.2:80"}}, 2)
	late := change{key: key("web_prod", "10.0.0.3", 80), value: "10.0.0.3:80"}
	r.store.testHookSnapshot = func() { // the watcher wins the race once
		r.store.testHookSnapshot = nil
		r.store.Apply([]change{late}, 3)
	}
	// What the loop does: collect on Dirty, apply when due, until idle.
	for range 5 {
		r.collect(time.Now())
		r.applyDue(ctx, time.Now())
	}
	if r.store.testHookSnapshot != nil {
		t.Fatal("the hook never ran")
	}
	b, err := os.ReadFile(dest)
	if want := "web_prod: 10.0.0.1:80 10.0.0.2:80 10.0.0.3:80\n"; err != nil || string(b) != want {
		t.Fatalf("%s = %q, %v; want %q (a change stored during the apply was dropped)", dest, b, err, want)
	}
	if len(r.pending) != 0 || r.store.pendingChanges() {
		t.Errorf("loop not idle: %d pending, store changes waiting %v", len(r.pending), r.store.pendingChanges())
	}
}

// TestCommandOutputLogged: what a successful command prints reaches the log
// at the default level (nginx's warnings); a failing one's output is in the
// error.
func TestCommandOutputLogged(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	logs.w = io.Discard
	r := &Renderer{cfg: Config{CommandTimeout: 5 * time.Second}, m: NewMetrics(nil),
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	ctx := context.Background()
	if _, err := r.runCmd(ctx, "reload", "echo 'nginx: [warn] conflicting server name' >&2"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "conflicting server name") {
		t.Errorf("a successful command's output is not in the log: %q", logs.String())
	}
	err := r.check(ctx, "x.toml", "echo 'nginx: [emerg] unknown directive' >&2; exit 1")
	if err == nil || !strings.Contains(err.Error(), "unknown directive") {
		t.Errorf("failing check: %v; want its output", err)
	}
}
