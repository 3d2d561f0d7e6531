package renderer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rollcall/rollcall/internal/proc"
)

// TestChangeDuringApplyNotLost: a change the watcher stores while the loop
// takes its snapshot for an apply is applied later, never dropped with the
// pending changes the apply covered (issue 2: "never skipped").
func TestChangeDuringApplyNotLost(t *testing.T) {
	t.Parallel()
	dir, dests := testConfdir(t, listTmpl, map[string]string{"up": "/"})
	dest := dests["up"]
	r := newTestRenderer(dir)
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
	if !r.sched.Idle() || r.store.pendingChanges() {
		t.Errorf("loop not idle: scheduler idle %v, store changes waiting %v", r.sched.Idle(), r.store.pendingChanges())
	}
}

// testConfdir writes a confdir with one resource per name (prefix → its
// keys ["/"], template tmpl) and returns it with each resource's dest.
func testConfdir(t *testing.T, tmpl string, prefixes map[string]string) (dir string, dests map[string]string) {
	t.Helper()
	dir, out := t.TempDir(), t.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "templates/up.tmpl"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	dests = map[string]string{}
	for name, prefix := range prefixes {
		dests[name] = filepath.Join(out, name+".conf")
		toml := fmt.Sprintf("[template]\nsrc = \"up.tmpl\"\ndest = %q\nprefix = %q\nkeys = [\"/\"]\n", dests[name], prefix)
		if err := os.WriteFile(filepath.Join(dir, "conf.d", name+".toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, dests
}

// TestAckNotAheadOfBatch (issue 7 item 5): a change stored between the
// loop's collect and its snapshot is in the snapshot, but its resource is
// not in the batch; the acknowledgement must not cover it until that
// resource is applied (with a resource per app, the ack would otherwise
// cover a removal nginx never got, and its registrar would stop the app).
func TestAckNotAheadOfBatch(t *testing.T) {
	t.Parallel()
	dir, dests := testConfdir(t, `{{range getvs "/*"}}{{.}} {{end}}`, map[string]string{"a": "/a_prod", "b": "/b_prod"})
	r := newTestRenderer(dir)
	ctx := context.Background()
	r.store.Replace(map[string]string{
		key("a_prod", "10.0.0.1", 80): "10.0.0.1:80",
		key("b_prod", "10.0.0.1", 80): "10.0.0.1:80",
	}, 1, r.prefixes())
	r.applyDue(ctx, time.Now())
	if b, err := os.ReadFile(dests["b"]); r.sched.Ack() != 1 || string(b) != "10.0.0.1:80 " {
		t.Fatalf("after the first list: ack %d, b.conf %q, %v; want 1, \"10.0.0.1:80 \"", r.sched.Ack(), b, err)
	}
	r.store.Apply([]change{{key: key("a_prod", "10.0.0.2", 80), value: "10.0.0.2:80"}}, 2)
	r.testHookBeforeSnapshot = func() { // the watcher stores b's removal now
		r.testHookBeforeSnapshot = nil
		r.store.Apply([]change{{key: key("b_prod", "10.0.0.1", 80), del: true}}, 3)
	}
	r.applyDue(ctx, time.Now())
	if r.testHookBeforeSnapshot != nil {
		t.Fatal("the hook never ran")
	}
	b, err := os.ReadFile(dests["b"])
	if err != nil {
		t.Fatal(err)
	}
	if got, m := r.sched.Ack(), testutil.ToFloat64(r.m.appliedRevision); got != 2 || m != 2 || string(b) != "10.0.0.1:80 " {
		t.Fatalf("ack %d (applied_revision %v) after a batch of a only, b.conf %q; want 2: b's removal at 3 is not applied", got, m, b)
	}
	r.applyDue(ctx, time.Now())
	b, err = os.ReadFile(dests["b"])
	if want := ""; err != nil || string(b) != want {
		t.Errorf("b.conf = %q, %v; want %q", b, err, want)
	}
	if got := r.sched.Ack(); got != 3 {
		t.Errorf("ack %d once b is applied; want 3", got)
	}
}

// newTestRenderer is a Renderer without etcd for confdir dir, with no
// reload budget (every change due at once) and no commands' timeout to wait for.
func newTestRenderer(dir string) *Renderer {
	cfg := Config{ConfDir: dir, CommandTimeout: time.Second, ReloadBurst: DefaultReloadBurst}
	r := newRenderer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(nil))
	r.stdout = io.Discard
	r.loadResources(time.Now())
	return r
}

// TestCommandOutputLogged: what a successful command prints reaches the log
// at the default level (nginx's warnings); a failing one's output is in the
// error.
func TestCommandOutputLogged(t *testing.T) {
	t.Parallel()
	var logs proc.Buffer
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
