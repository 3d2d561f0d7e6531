package renderer

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// instancesView is the view of n instances of web_prod, numbered from first.
func instancesView(first, n int) view {
	var kvs []confd.KV
	for i := first; i < first+n; i++ {
		kvs = append(kvs, confd.KV{Key: key("web_prod", fmt.Sprintf("10.0.0.%d", i), 80), Value: fmt.Sprintf("10.0.0.%d:80", i)})
	}
	kvs = append(kvs, confd.KV{Key: "/cfg/x", Value: "not an instance"})
	return viewOf(kvs)
}

// TestGuardDecisions: which renders the guard holds. A rolling deploy, a
// scale-down by at most half (4 -> 2, 2 -> 1) and an app's last instance
// going (1 -> 0) pass; more than half of at least 2 instances at once
// (4 -> 1, 4 -> 0, 3 -> 1) is held.
func TestGuardDecisions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []view // applied in turn; the last is the one judged
		held  bool
	}{
		{"first render", []view{instancesView(1, 0)}, false},
		{"one of four", []view{instancesView(1, 4), instancesView(1, 3)}, false},
		{"rolling deploy step", []view{instancesView(1, 4), instancesView(1, 5), instancesView(2, 4)}, false},
		{"whole set replaced at once", []view{instancesView(1, 4), instancesView(5, 4)}, false},
		{"4 to 2", []view{instancesView(1, 4), instancesView(1, 2)}, false},
		{"2 to 1", []view{instancesView(1, 2), instancesView(1, 1)}, false},
		{"last instance", []view{instancesView(1, 1), instancesView(1, 0)}, false},
		{"3 to 1", []view{instancesView(1, 3), instancesView(1, 1)}, true},
		{"4 to 1", []view{instancesView(1, 4), instancesView(1, 1)}, true},
		{"all of four", []view{instancesView(1, 4), instancesView(1, 0)}, true},
		{"empty etcd", []view{instancesView(1, 100), instancesView(1, 0)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuard(0, time.Minute, slog.New(slog.DiscardHandler), func(string) {})
			now := time.Now()
			for i, v := range tc.steps {
				_, held := g.Check("r", "r.toml", nil, v, now)
				if i < len(tc.steps)-1 {
					if held {
						t.Fatalf("step %d (%d instances) held", i, v.n)
					}
					g.Commit("r")
					continue
				}
				if held != tc.held {
					t.Errorf("Check(%d -> %d instances) held = %v; want %v", tc.steps[i-1].n, v.n, held, tc.held)
				}
			}
		})
	}
}

// TestGuardRelease: a held render goes once the same view held for the
// grace period, or at once when confirmed; a different view starts the
// grace period again; one that removes little passes at once; share 1 is
// off.
func TestGuardRelease(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	holds := 0
	g := newGuard(0, 10*time.Second, slog.New(slog.NewTextHandler(&logs, nil)), func(string) { holds++ })
	now := time.Now()
	g.Check("r", "r.toml", nil, instancesView(1, 4), now)
	g.Commit("r")
	until, held := g.Check("r", "r.toml", nil, instancesView(1, 0), now)
	if !held || !until.Equal(now.Add(10*time.Second)) {
		t.Fatalf("Check(4 -> 0) = %v, %v; want held until now+10s", until, held)
	}
	if _, held := g.Check("r", "r.toml", nil, instancesView(1, 0), now.Add(5*time.Second)); !held {
		t.Fatal("released before the grace period")
	}
	// Another view (one instance came back): the grace period starts again.
	until, held = g.Check("r", "r.toml", nil, instancesView(1, 1), now.Add(6*time.Second))
	if !held || !until.Equal(now.Add(16*time.Second)) {
		t.Fatalf("changed view: %v, %v; want held until now+16s", until, held)
	}
	if r := g.Reason(func(id string) string { return id }); !strings.Contains(r, "r (4 -> 1 instances") {
		t.Errorf("Reason = %q", r)
	}
	if _, held := g.Check("r", "r.toml", nil, instancesView(1, 1), now.Add(16*time.Second)); held {
		t.Fatal("still held after the grace period")
	}
	g.Commit("r")
	if holds != 1 || strings.Count(logs.String(), "mass removal held") != 1 {
		t.Errorf("holds = %d, log:\n%s", holds, logs.String())
	}
	// Confirmed by the operator: goes at its next try.
	g.Check("r", "r.toml", nil, instancesView(1, 4), now)
	g.Commit("r")
	if _, held := g.Check("r", "r.toml", nil, instancesView(1, 0), now); !held {
		t.Fatal("4 -> 0 not held")
	}
	g.Confirm()
	if _, held := g.Check("r", "r.toml", nil, instancesView(1, 0), now); held {
		t.Fatal("held after Confirm")
	}
	if r := g.Reason(func(id string) string { return id }); r != "" {
		t.Errorf("Reason after release = %q", r)
	}
	// A resource's own share wins.
	own := 0.9
	g.Check("r", "r.toml", &own, instancesView(1, 10), now)
	g.Commit("r")
	if _, held := g.Check("r", "r.toml", &own, instancesView(1, 2), now); held {
		t.Error("10 -> 2 held with guard_share 0.9")
	}
	if _, held := g.Check("r", "r.toml", &own, instancesView(1, 0), now); !held {
		t.Error("10 -> 0 not held with guard_share 0.9")
	}
	// Off.
	off := newGuard(1, time.Minute, slog.New(slog.DiscardHandler), func(string) {})
	off.Check("r", "r.toml", nil, instancesView(1, 4), now)
	off.Commit("r")
	if _, held := off.Check("r", "r.toml", nil, instancesView(1, 0), now); held {
		t.Error("share 1 held a render")
	}
}
