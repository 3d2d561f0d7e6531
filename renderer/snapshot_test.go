package renderer

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer/confd"
)

// TestSnapshotPatched: snapshots patched from the previous one after a few
// changes hold exactly what a full sort of the store gives, and earlier
// snapshots stay as they were.
func TestSnapshotPatched(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	s := newStore()
	kvs := map[string]string{}
	for i := range 300 {
		kvs[fmt.Sprintf("/a%d_prod/10.0.0.%d-80", i%7, i)] = "v"
	}
	s.Replace(maps.Clone(kvs), 1, []string{"/"})
	type held struct {
		snap *snapshot
		want []confd.KV
	}
	var olds []held
	for round := range 200 {
		var chs []change
		for range 1 + rng.IntN(map[bool]int{true: 100, false: 5}[round%10 == 0]) { // now and then more than a patch takes
			k := fmt.Sprintf("/a%d_prod/10.0.0.%d-80", rng.IntN(7), rng.IntN(400))
			if rng.IntN(3) == 0 {
				chs = append(chs, change{key: k, del: true})
				delete(kvs, k)
			} else {
				v := fmt.Sprintf("10.0.0.%d:80", rng.IntN(5))
				chs = append(chs, change{key: k, value: v})
				kvs[k] = v
			}
		}
		s.Apply(chs, int64(round+2))
		snap := s.Snapshot()
		want := sortedKVs(kvs)
		if !slices.EqualFunc(snap.kvs, want, samePair) {
			t.Fatalf("round %d: snapshot differs from a full sort:\n got %v\nwant %v", round, snap.kvs, want)
		}
		olds = append(olds, held{snap, want})
	}
	for i, o := range olds {
		if !slices.EqualFunc(o.snap.kvs, o.want, samePair) {
			t.Fatalf("snapshot %d changed after later changes", i)
		}
	}
}

// samePair reports whether a store's pair is want, parsed as confd.NewKV
// parses it.
func samePair(got, want confd.KV) bool {
	return got.Key == want.Key && got.Value == want.Value && got.IsInstanceKey() == registry.IsInstanceKey(want.Key)
}

func sortedKVs(m map[string]string) []confd.KV {
	var kvs []confd.KV
	for k, v := range m {
		kvs = append(kvs, confd.KV{Key: k, Value: v})
	}
	slices.SortFunc(kvs, func(a, b confd.KV) int { return strings.Compare(a.Key, b.Key) })
	return kvs
}
