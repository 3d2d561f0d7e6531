package renderer

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

func TestSnapshotFor(t *testing.T) {
	t.Parallel()
	s := newStore()
	s.Replace(map[string]string{
		"/app_prod/1.1.1.1-80":       "a",
		"/app_prod":                  "dir-value",
		"/app_production/2.2.2.2-80": "b",
		"/app_prod-x/3.3.3.3-80":     "c",
		"/other/x":                   "d",
		"/z":                         "e",
	}, 7, []string{"/"})
	snap := s.Snapshot()
	keys := func(kvs []confd.KV) []string {
		var ks []string
		for _, kv := range kvs {
			ks = append(ks, kv.Key)
		}
		return ks
	}
	tests := []struct {
		prefixes []string
		want     []string
	}{
		{[]string{"/app_prod"}, []string{"/app_prod", "/app_prod/1.1.1.1-80"}},
		{[]string{"/app_prod/"}, []string{"/app_prod/1.1.1.1-80"}},
		{[]string{"/app_production"}, []string{"/app_production/2.2.2.2-80"}},
		{[]string{"/app_prod", "/other"}, []string{"/app_prod", "/app_prod/1.1.1.1-80", "/other/x"}},
		{[]string{"/"}, []string{"/app_prod", "/app_prod-x/3.3.3.3-80", "/app_prod/1.1.1.1-80", "/app_production/2.2.2.2-80", "/other/x", "/z"}},
		{[]string{"/nothing"}, nil},
	}
	for _, tc := range tests {
		if got := keys(snap.For(tc.prefixes)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("For(%q) = %q; want %q", tc.prefixes, got, tc.want)
		}
	}
	if snap.rev != 7 || !snap.Has([]string{"/a", "/b/c"}) {
		t.Errorf("snapshot rev %d, Has = %v; want 7, true", snap.rev, snap.Has([]string{"/a"}))
	}
}

func TestStoreChanges(t *testing.T) {
	t.Parallel()
	s := newStore()
	if _, _, ok := s.Changes(); ok || s.Snapshot() != nil {
		t.Fatal("store reports loaded before the first list")
	}
	s.Replace(map[string]string{"/a/1": "x", "/a/2": "y"}, 5, []string{"/a"})
	<-s.Dirty()
	if _, all, ok := s.Changes(); !ok || !all {
		t.Fatalf("first list: all=%v ok=%v; want both", all, ok)
	}
	s.Apply([]change{{key: "/a/1", value: "x"}, {key: "/a/3", value: "z"}, {key: "/a/2", del: true}, {key: "/a/9", del: true}}, 8)
	keys, all, _ := s.Changes()
	slices.Sort(keys)
	if all || !reflect.DeepEqual(keys, []string{"/a/2", "/a/3"}) || s.Rev() != 8 {
		t.Errorf("after Apply: keys %q all %v rev %d; want [/a/2 /a/3] false 8 (an equal put is no change)", keys, all, s.Rev())
	}
	<-s.Dirty()     // the Apply above left one
	s.Apply(nil, 9) // progress only
	select {
	case <-s.Dirty():
		t.Error("progress notification made the store dirty")
	default:
	}
	s.Replace(map[string]string{"/a/1": "x", "/a/3": "changed"}, 12, []string{"/a"})
	keys, all, _ = s.Changes()
	if all || !reflect.DeepEqual(keys, []string{"/a/3"}) {
		t.Errorf("re-list diff: %q all=%v; want [/a/3] false", keys, all)
	}
	s.Replace(map[string]string{}, 13, []string{"/a", "/b"})
	if _, all, _ = s.Changes(); !all {
		t.Error("new prefixes listed: want a full pass")
	}
}

// TestWatcherKeeps: only the reserved subtrees directly under a registry
// prefix are ignored; a "_ports" or "_renderers" segment elsewhere is a
// user's key.
func TestWatcherKeeps(t *testing.T) {
	t.Parallel()
	w := &watcher{prefixes: []string{"/"}, registry: []string{"", "/services"}}
	for key, want := range map[string]bool{
		"/_renderers/gw1":               false,
		"/_ports/10.0.0.1/20000":        false,
		"/services/_renderers/gw1":      false,
		"/services/_ports/10.0.0.1/80":  false,
		"/p/_renderers/gw1":             true,
		"/cfg/_ports/x":                 true,
		"/app_prod/10.0.0.1-20000":      true,
		"/my_renderers/x":               true,
		"/services/app_prod/10.0.0.1-1": true,
	} {
		if got := w.keeps(key); got != want {
			t.Errorf("keeps(%q) = %v; want %v", key, got, want)
		}
	}
	w.prefixes = []string{"/services"}
	if w.keeps("/other/x") {
		t.Error("keeps a key outside the watched prefixes")
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	for cmd, want := range map[string]bool{
		"nginx -t -c {{.src}}":   true,
		"nginx -t -c {{ .src }}": true,
		"nginx -t":               false,
		"cp {{.dest}} /backup":   false,
		"{{if .src}}x{{end}}":    false, // refers to it, but never prints it
		"nginx -t -c {{.src":     true,  // unparsable: decide by text
		"{{.unknown}} {{.src}}":  true,
	} {
		if got := usesSrc(cmd); got != want {
			t.Errorf("usesSrc(%q) = %v; want %v", cmd, got, want)
		}
	}
	got, err := expandCmd("check {{.src}} {{.dest}}", "/tmp/a b/.x", "/etc/nginx/x.conf")
	if want := `check '/tmp/a b/.x' /etc/nginx/x.conf`; err != nil || got != want {
		t.Errorf("expandCmd = %q, %v; want %q", got, err, want)
	}
	if _, err := expandCmd("x {{.key}}", "s", "d"); err == nil {
		t.Error("expandCmd with {{.key}}: no error; only src and dest exist")
	}
	if s := shellQuote("it's"); s != `'it'\''s'` {
		t.Errorf("shellQuote = %s", s)
	}

	ctx := context.Background()
	out, err := runCommand(ctx, "echo out; echo err >&2; exit 3", 5*time.Second)
	if err == nil || !strings.Contains(out, "out") || !strings.Contains(out, "err") {
		t.Errorf("runCommand: %q, %v; want both streams and exit status 3", out, err)
	}
	start := time.Now()
	_, err = runCommand(ctx, "sleep 30 & sleep 30; wait", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") || time.Since(start) > 6*time.Second {
		t.Errorf("runCommand of a hung command: %v after %v; want a timeout well under 6s", err, time.Since(start))
	}
}

func TestStageInstallRestore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dest := filepath.Join(dir, "x.conf")
	res := &confd.Resource{Dest: dest, Mode: 0o640, UID: -1, GID: -1}
	cur, err := readState(dest)
	if err != nil || cur.exists {
		t.Fatalf("readState(missing) = %+v, %v", cur, err)
	}
	want := target(res, []byte("one\n"), cur)
	p, err := stageFile(dest, want)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) != dir || !strings.HasPrefix(filepath.Base(p), ".x.conf.rollcall-") {
		t.Errorf("staged at %s; want a hidden temp file in %s", p, dir)
	}
	if err := install(p, dest); err != nil {
		t.Fatal(err)
	}
	got, err := readState(dest)
	if err != nil || !got.same(want) || got.mode != 0o640 {
		t.Fatalf("installed %+v, %v; want %+v", got, err, want)
	}
	// Unset mode keeps the installed file's.
	res2 := &confd.Resource{Dest: dest, UID: -1, GID: -1}
	if t2 := target(res2, []byte("two\n"), got); t2.mode != 0o640 || got.same(t2) {
		t.Errorf("target with unset mode = %v (same=%v); want 0640 and different bytes", t2.mode, got.same(t2))
	}
	// A mode change alone is a change.
	if got.same(target(&confd.Resource{Dest: dest, Mode: 0o600, UID: -1, GID: -1}, []byte("one\n"), got)) {
		t.Error("same() ignores the mode")
	}
	if err := restore(dest, cur); err != nil { // did not exist before
		t.Fatal(err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("restore to nothing left %v", err)
	}
	if err := restore(dest, got); err != nil {
		t.Fatal(err)
	}
	if back, _ := readState(dest); !back.same(got) {
		t.Errorf("restored %+v; want %+v", back, got)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir holds %d entries; want only x.conf (no temp files left)", len(ents))
	}
}
