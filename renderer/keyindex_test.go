package renderer

import (
	"slices"
	"testing"

	"github.com/rollcall/rollcall/registry"
)

// TestKeyIndex: the index finds exactly the resources registry.Covers says
// a key touches, for every shape of prefix.
func TestKeyIndex(t *testing.T) {
	t.Parallel()
	prefixes := map[string][]string{
		"root":     {"/"},
		"app":      {"/app_prod"},
		"appdir":   {"/app_prod/"},
		"two":      {"/a_x", "/b_x/sub"},
		"deep":     {"/p/q/r"},
		"relative": {"rel"},
	}
	x := newKeyIndex(prefixes)
	keys := []string{"/app_prod", "/app_prod/", "/app_prod/10.0.0.1-80", "/app_production/1", "/a_x/1", "/b_x/sub",
		"/b_x/sub/1", "/b_x/subway", "/p/q/r/s/t", "/p/q", "rel/x", "rel", "relx", "/", "/x//y"}
	for _, k := range keys {
		var want []string
		for id, ps := range prefixes {
			if slices.ContainsFunc(ps, func(p string) bool { return registry.Covers(p, k) }) {
				want = append(want, id)
			}
		}
		slices.Sort(want)
		got := x.touched([]string{k})
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("touched(%q) = %v; want %v", k, got, want)
		}
	}
	if got := x.touched(nil); len(got) != 0 {
		t.Errorf("touched(nil) = %v; want none", got)
	}
}
