package renderer

import "strings"

// keyIndex maps a changed key to the resources whose watch prefixes cover
// it (registry.Covers) in O(depth of the key), not O(resources): with a
// resource per app, 1,000 resources and a burst of keys, a scan of every
// resource for every key is what a change would cost otherwise.
type keyIndex struct {
	all    []string            // resources watching "/" (or ""): every key
	exact  map[string][]string // prefix "/a/b" covers "/a/b" and "/a/b/..."
	folder map[string][]string // prefix "/a/b/" covers "/a/b/..."
}

// newKeyIndex indexes resources by their watch prefixes (id → prefixes).
func newKeyIndex(prefixes map[string][]string) keyIndex {
	x := keyIndex{exact: map[string][]string{}, folder: map[string][]string{}}
	for id, ps := range prefixes {
		for _, p := range ps {
			switch {
			case p == "" || p == "/":
				x.all = append(x.all, id)
			case strings.HasSuffix(p, "/"):
				x.folder[p] = append(x.folder[p], id)
			default:
				x.exact[p] = append(x.exact[p], id)
			}
		}
	}
	return x
}

// touched returns the resources any of keys touches, each once, in no
// particular order.
func (x keyIndex) touched(keys []string) []string {
	seen := map[string]bool{}
	var ids []string
	add := func(l []string) {
		for _, id := range l {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	if len(keys) > 0 {
		add(x.all)
	}
	for _, k := range keys {
		add(x.exact[k])
		for i := 1; i < len(k); i++ {
			if k[i] == '/' {
				add(x.exact[k[:i]])
				add(x.folder[k[:i+1]])
			}
		}
	}
	return ids
}
