package confd

import (
	"slices"
	"strings"

	"github.com/kelseyhightower/memkv"
)

// memkv's gets and getvs match every key of the store against the pattern
// on every call. A confd-style template for all apps calls them once per
// app (`range lsdir "/"` then `getvs (printf "/%s/*" .)`), so at 10,000
// instances over 1,000 apps a render matched 10 million keys. A pattern
// that is a literal dir and "/*" selects exactly the keys whose part before
// the last "/" is that dir: those calls read a per-render index instead,
// with memkv's results (FuzzGlobDir holds them to memkv).

// literalDir returns dir when pattern is dir + "/*" and dir holds none of
// path.Match's special characters.
func literalDir(pattern string) (string, bool) {
	dir, ok := strings.CutSuffix(pattern, "/*")
	if !ok || strings.ContainsAny(dir, `*?[\`) {
		return "", false
	}
	return dir, true
}

// below returns the store's pairs directly below dir (memkv's keys matching
// dir + "/*"), sorted by key as memkv's gets returns them.
func (st *state) below(dir string) memkv.KVPairs {
	if st.byDir == nil {
		st.byDir = st.groupByDir()
	}
	return st.byDir[dir]
}

// groupByDir groups the store as memkv holds it (one value per key, the
// last set) by the part of each key before its last "/".
func (st *state) groupByDir() map[string]memkv.KVPairs {
	last := make(map[string]string, len(st.pairs))
	for _, p := range st.pairs {
		last[p.rel] = p.Value
	}
	g := make(map[string]memkv.KVPairs)
	for k, v := range last {
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			g[k[:i]] = append(g[k[:i]], memkv.KVPair{Key: k, Value: v})
		}
	}
	for _, kvs := range g {
		slices.SortFunc(kvs, func(a, b memkv.KVPair) int { return strings.Compare(a.Key, b.Key) })
	}
	return g
}

// gets is memkv's GetAll over this render's store.
func (st *state) gets(pattern string) (memkv.KVPairs, error) {
	dir, ok := literalDir(pattern)
	if !ok {
		return st.mem().GetAll(pattern)
	}
	kvs := st.below(dir)
	return append(make(memkv.KVPairs, 0, len(kvs)), kvs...), nil // non-nil when none, as memkv's
}

// getvs is memkv's GetAllValues over this render's store.
func (st *state) getvs(pattern string) ([]string, error) {
	dir, ok := literalDir(pattern)
	if !ok {
		return st.mem().GetAllValues(pattern)
	}
	kvs := st.below(dir)
	vs := make([]string, len(kvs))
	for i, kv := range kvs {
		vs[i] = kv.Value
	}
	slices.Sort(vs)
	return vs, nil
}
