package renderer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
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
		m: NewMetrics(nil), up: func(bool) {}, probeKey: "/_renderers/test", registry: []string{"", "/a"}}
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
	w := &watcher{cli: cli, prefixes: registry.Collapse(prefixes), store: s, log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		m: NewMetrics(nil), up: func(bool) {}, probeKey: "/_renderers/test", registry: prefixes}
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

// TestEtcdRewound: etcd replaced by one with a shorter history (a new
// cluster, or one restored from a backup) on the same endpoint. The renderer
// lists again instead of waiting for revisions the new history reaches only
// much later, and its ack follows the new history.
func TestEtcdRewound(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	for i := range 30 { // a long history
		h.put("/web_prod/junk", strconv.Itoa(i))
	}
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "ack", func() error {
		a, err := h.ack()
		if err == nil && a.Revision < 31 {
			err = fmt.Errorf("ack at %d", a.Revision)
		}
		return err
	})

	h.replaceEtcd()
	h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.waitFile(dest, "web_prod: 10.0.0.2:80\n")
	waitfor.Cond(t, 10*time.Second, "ack in the new history", func() error {
		a, err := h.ack()
		if err != nil {
			return err
		}
		resp, err := h.cli.Get(context.Background(), "/", clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if a.Revision > resp.Header.Revision || a.Revision < 2 {
			return fmt.Errorf("ack at %d, etcd at %d", a.Revision, resp.Header.Revision)
		}
		return nil
	})
	h.stop()
}

// TestWatchProgressKeepsQuietWatch: a watch that sees no event while etcd
// moves on (writes outside its prefix) stays up, because its progress
// requests are answered on its own stream; the silence check would resume
// a watch whose member stopped answering.
func TestWatchProgressKeepsQuietWatch(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("etcd test")
	}
	e := etcdtest.Start(t)
	cli := e.Client(t)
	m := NewMetrics(nil)
	w := &watcher{cli: cli, prefixes: []string{"/a"}, store: newStore(), log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		m: m, up: func(bool) {}, probeKey: "/_renderers/test", progress: 100 * time.Millisecond}
	rev, err := w.list(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second) // 30 progress periods
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.watch(ctx, rev) }()
	for i := 0; ctx.Err() == nil; i++ {
		if _, err := cli.Put(ctx, "/zz", strconv.Itoa(i)); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // pace the writes; nothing is asserted on time
		}
	}
	if err := <-done; err != nil {
		t.Errorf("quiet watch ended with %v", err)
	}
	if n := testutil.ToFloat64(m.watchSilent); n != 0 {
		t.Errorf("watch_silent_total = %v; want 0: progress requests not answered", n)
	}
}
