package renderer

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/nginxpush"
)

// TestPushDeltaFromConfirmed: the first push after a start is the full
// state; each change after it is a delta of the changed app only, from the
// version nginx confirmed; the peers file always holds the full state.
func TestPushDeltaFromConfirmed(t *testing.T) {
	t.Parallel()
	r, f, dest, _ := newPushRenderer(t, 50, false)
	if f.fulls != 1 || f.deltas != 0 || f.held != 1 {
		t.Fatalf("first push: %d full, %d deltas, nginx holds %d; want one full state at 1", f.fulls, f.deltas, f.held)
	}
	ctx := context.Background()
	for n := 1; n <= 4; n++ {
		toggleApp(r.store, "app0010_prod", "10.0.10.99:20010", n)
		r.applyDue(ctx, time.Now())
		if !r.sched.Idle() {
			t.Fatalf("change %d not applied", n)
		}
		want := "version " + itoa(n+1) + " from " + itoa(n) + "\napp0010_prod"
		if f.fulls != 1 || f.deltas != n || !strings.HasPrefix(f.lastBody, want) || strings.Count(f.lastBody, "\n") != 2 {
			t.Fatalf("change %d: %d full, %d deltas, last %q; want a delta of app0010_prod from %d", n, f.fulls, f.deltas, f.lastBody, n)
		}
		file, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		p, err := nginxpush.Decode(file)
		if err != nil || p.Version != int64(n+1) || len(p.Services) != 50 || len(p.Services["app0010_prod"]) != 10+n%2 {
			t.Fatalf("peers file after change %d: version %d, %d services, %v", n, p.Version, len(p.Services), err)
		}
	}
}

// TestPushFullWhenDictLost: nginx that lost its dict (restart) refuses
// the next delta; the renderer then pushes the full state before the change
// counts as applied. With nothing changed, a lost dict is noticed by its
// version and the full state pushed again.
func TestPushFullWhenDictLost(t *testing.T) {
	t.Parallel()
	r, f, _, _ := newPushRenderer(t, 20, false)
	ctx := context.Background()
	f.lose()
	toggleApp(r.store, "app0003_prod", "10.0.3.99:20003", 1)
	r.applyDue(ctx, time.Now())
	if !r.sched.Idle() || f.refusedDeltas != 1 || f.fulls != 2 || f.held != 2 {
		t.Fatalf("after a lost dict: idle %v, %d deltas refused, %d full, holds %d; want the full state at 2", r.sched.Idle(), f.refusedDeltas, f.fulls, f.held)
	}
	if !strings.HasPrefix(f.lastBody, "version 2\n") || strings.Count(f.lastBody, "\n") != 21 {
		t.Fatalf("full push %q; want version 2 and 20 services", f.lastBody[:min(len(f.lastBody), 80)])
	}
	// The next change is a delta again.
	toggleApp(r.store, "app0003_prod", "10.0.3.99:20003", 2)
	r.applyDue(ctx, time.Now())
	if f.deltas != 2 || f.fulls != 2 || !strings.HasPrefix(f.lastBody, "version 3 from 2\n") {
		t.Fatalf("after the full push: %d deltas, %d full, last %q; want a delta from 2", f.deltas, f.fulls, f.lastBody)
	}
	// Nothing changed (a key that is no instance), nginx lost it again.
	f.lose()
	r.store.Apply([]change{{key: "/config/feature", value: "on"}}, 4)
	r.applyDue(ctx, time.Now())
	if f.fulls != 3 || f.held != 3 {
		t.Fatalf("unchanged peers, lost dict: %d full, holds %d; want the full state at 3 again", f.fulls, f.held)
	}
}

// toggleApp adds (odd n) or removes (even n) one instance of app at
// revision n+1.
func toggleApp(s *store, app, addr string, n int) {
	key := "/" + app + "/" + strings.ReplaceAll(addr, ":", "-")
	if n%2 == 1 {
		s.Apply([]change{{key: key, value: addr}}, int64(n+1))
	} else {
		s.Apply([]change{{key: key, del: true}}, int64(n+1))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestPushTemplateEditSameRevision: a peers template edited while etcd is
// quiet renders other peers at the revision already pushed. nginx keeps a
// version it holds (it answers 200 "ignored ... not newer"), so the edit
// goes out at the next version, and the peers file says so too.
func TestPushTemplateEditSameRevision(t *testing.T) {
	t.Parallel()
	r, f, dest, _ := newPushRenderer(t, 20, false)
	tmpl := filepath.Join(r.cfg.ConfDir, "templates", "peers.tmpl")
	b, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	// The edit lists no app: every app's peers go (a delta removing them).
	edited := "{{- /* emptied */ -}}\n"
	if !strings.Contains(string(b), "{{") {
		t.Fatalf("peers.tmpl %q is no template", b)
	}
	if err := os.WriteFile(tmpl, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	r.loadResources(time.Now())
	r.applyDue(context.Background(), time.Now())
	if !r.sched.Idle() {
		t.Fatal("template edit not applied")
	}
	if f.held != 2 || !strings.HasPrefix(f.lastBody, "version 2 from 1\n") {
		t.Fatalf("after the edit nginx holds %d, last push %q; want a delta to version 2 from 1", f.held, f.lastBody[:min(len(f.lastBody), 40)])
	}
	file, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := nginxpush.Decode(file); err != nil || p.Version != 2 || len(p.Services) != 0 {
		t.Fatalf("peers file after the edit: %+v, %v; want version 2 and no service", p, err)
	}
}
