package renderer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/etcdtest"
)

// TestWatchCompactedRelists: a watch from a compacted revision reports
// errCompacted (Run then lists again) instead of missing changes; a list
// reads every prefix at one revision and leaves out other keys.
func TestWatchCompactedRelists(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("etcd test")
	}
	e := etcdtest.Start(t)
	cli := e.Client(t)
	ctx := t.Context()
	var rev int64
	for _, k := range []string{"/a/1", "/a/2", "/ab/1", "/b/1", "/_renderers/x", "/a/_ports/x"} {
		resp, err := cli.Put(ctx, k, "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	s := newStore()
	w := &watcher{cli: cli, prefixes: []string{"/a", "/b"}, store: s, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		m: NewMetrics(nil), up: func(bool) {}, probeKey: "/_renderers/test"}
	got, err := w.list(ctx)
	if err != nil || got != rev {
		t.Fatalf("list = %d, %v; want %d", got, err, rev)
	}
	if kvs := s.Snapshot().kvs; len(kvs) != 3 || kvs[0].Key != "/a/1" || kvs[1].Key != "/a/2" || kvs[2].Key != "/b/1" {
		t.Errorf("listed %v; want /a/1 /a/2 /b/1", kvs)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.watch(wctx, 1); !errors.Is(err, errCompacted) {
		t.Errorf("watch from a compacted revision = %v; want errCompacted", err)
	}
}

// TestListManyPrefixes: past manyPrefixes the list is one ranged Get, with
// the same result: only keys the prefixes cover.
func TestListManyPrefixes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("etcd test")
	}
	e := etcdtest.Start(t)
	cli := e.Client(t)
	var prefixes []string
	want := map[string]string{}
	for i := range manyPrefixes + 4 {
		p := fmt.Sprintf("/app%02d_prod", i)
		prefixes = append(prefixes, p)
		for _, k := range []string{p + "/10.0.0.1-80", p + "x/10.0.0.1-80", p + "/_ports/x"} {
			if _, err := cli.Put(t.Context(), k, k); err != nil {
				t.Fatal(err)
			}
		}
		want[p+"/10.0.0.1-80"] = p + "/10.0.0.1-80"
	}
	s := newStore()
	w := &watcher{cli: cli, prefixes: collapse(prefixes), store: s, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		m: NewMetrics(nil), up: func(bool) {}, probeKey: "/_renderers/test"}
	if _, err := w.list(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range s.Snapshot().kvs {
		got[kv.Key] = kv.Value
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listed %d keys %v; want %d %v", len(got), got, len(want), want)
	}
}

// TestWatchSafetyRelist: with an interval, watch returns (Run lists again)
// when it is due.
func TestWatchSafetyRelist(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("etcd test")
	}
	e := etcdtest.Start(t)
	w := &watcher{cli: e.Client(t), prefixes: []string{"/a"}, store: newStore(), log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		m: NewMetrics(nil), up: func(bool) {}, probeKey: "/_renderers/test", interval: 300 * time.Millisecond}
	rev, err := w.list(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := w.watch(ctx, rev); err != nil || ctx.Err() != nil || time.Since(start) < 250*time.Millisecond {
		t.Errorf("watch with a 300ms interval = %v after %v (ctx %v); want nil after ~300ms", err, time.Since(start), ctx.Err())
	}
}
