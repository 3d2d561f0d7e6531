package renderer

import (
	"slices"
	"strings"
	"sync"

	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer/confd"
)

// store is the renderer's copy of the watched keys at one revision. The
// watcher fills it (Replace after a complete list, Apply per watch response,
// each under one lock) and signals Dirty; the loop collects the changed keys
// (Changes) and takes immutable snapshots to render from (Snapshot). It is
// never half-filled: until the first complete list it holds nothing and
// Snapshot returns nil.
type store struct {
	mu       sync.Mutex
	kvs      map[string]string
	rev      int64               // revision the store is complete at
	loaded   bool                // a complete list has been applied
	changed  map[string]struct{} // keys changed since the last Take
	all      bool                // everything changed (first list)
	snap     *snapshot           // cached snapshot of kvs, nil when stale
	prefixes []string            // what the last complete list covered
	dirty    chan struct{}       // cap 1: a change is waiting for Take

	testHookSnapshot func() // tests: runs after Snapshot, as a racing watcher would
}

// snapshot is an immutable view of the store: pairs sorted by key.
type snapshot struct {
	rev      int64
	kvs      []confd.KV
	prefixes []string // listed prefixes
}

func newStore() *store {
	return &store{kvs: map[string]string{}, changed: map[string]struct{}{}, dirty: make(chan struct{}, 1)}
}

// Dirty receives when changes wait to be taken.
func (s *store) Dirty() <-chan struct{} { return s.dirty }

func (s *store) poke() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Replace swaps in a complete list of prefixes at rev; the keys that differ
// from the previous contents count as changed (everything, the first time
// and when the prefixes differ).
func (s *store) Replace(kvs map[string]string, rev int64, prefixes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded || !slices.Equal(prefixes, s.prefixes) {
		s.all = true
	}
	s.prefixes = slices.Clone(prefixes)
	for k, v := range kvs {
		if old, ok := s.kvs[k]; !ok || old != v {
			s.changed[k] = struct{}{}
		}
	}
	for k := range s.kvs {
		if _, ok := kvs[k]; !ok {
			s.changed[k] = struct{}{}
		}
	}
	s.kvs, s.rev, s.loaded, s.snap = kvs, rev, true, nil
	s.poke()
}

// change is one put (del false) or delete.
type change struct {
	key, value string
	del        bool
}

// Apply applies one watch response's changes and its revision.
func (s *store) Apply(chs []change, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.rev {
		s.rev = rev
	}
	n := 0
	for _, c := range chs {
		old, ok := s.kvs[c.key]
		switch {
		case c.del && ok:
			delete(s.kvs, c.key)
		case !c.del && (!ok || old != c.value):
			s.kvs[c.key] = c.value
		default:
			continue
		}
		s.changed[c.key] = struct{}{}
		n++
	}
	if n > 0 {
		s.snap = nil
		s.poke()
	}
}

// Rev is the revision the store is complete at.
func (s *store) Rev() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Changes returns the keys changed since the last call (all is true after
// the first list or a change of the listed prefixes). ok is false until the
// first complete list.
func (s *store) Changes() (keys []string, all, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded {
		return nil, false, false
	}
	keys = make([]string, 0, len(s.changed))
	for k := range s.changed {
		keys = append(keys, k)
	}
	clear(s.changed)
	all, s.all = s.all, false
	return keys, all, true
}

// Loaded reports whether a complete list has been applied.
func (s *store) Loaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded
}

// pendingChanges reports whether changes wait for Changes.
func (s *store) pendingChanges() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.changed) > 0 || s.all
}

// Snapshot returns the current contents, or nil before the first list.
func (s *store) Snapshot() *snapshot {
	if h := s.testHookSnapshot; h != nil {
		defer h()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded {
		return nil
	}
	if s.snap == nil {
		kvs := make([]confd.KV, 0, len(s.kvs))
		for k, v := range s.kvs {
			kvs = append(kvs, confd.KV{Key: k, Value: v})
		}
		slices.SortFunc(kvs, func(a, b confd.KV) int { return strings.Compare(a.Key, b.Key) })
		s.snap = &snapshot{kvs: kvs, prefixes: s.prefixes}
	}
	return &snapshot{rev: s.rev, kvs: s.snap.kvs, prefixes: s.snap.prefixes}
}

// Has reports whether the snapshot was listed for every one of prefixes: a
// resource whose keys have not been listed yet must not render (it would
// see no instances, not "no instances").
func (sn *snapshot) Has(prefixes []string) bool {
	for _, p := range prefixes {
		if !slices.ContainsFunc(sn.prefixes, func(q string) bool { return registry.Covers(q, p) }) {
			return false
		}
	}
	return true
}

// For returns the pairs under any of prefixes (registry.Covers), each once,
// in key order. prefixes must be sorted.
func (sn *snapshot) For(prefixes []string) []confd.KV {
	var out []confd.KV
	for i, p := range prefixes {
		lo, _ := slices.BinarySearchFunc(sn.kvs, p, func(kv confd.KV, p string) int { return strings.Compare(kv.Key, p) })
		if p == "/" {
			lo = 0
		}
	next:
		for _, kv := range sn.kvs[lo:] {
			if p != "/" && !strings.HasPrefix(kv.Key, p) {
				break
			}
			if !registry.Covers(p, kv.Key) {
				continue
			}
			for _, q := range prefixes[:i] {
				if registry.Covers(q, kv.Key) {
					continue next
				}
			}
			out = append(out, kv)
		}
	}
	if len(prefixes) > 1 {
		slices.SortFunc(out, func(a, b confd.KV) int { return strings.Compare(a.Key, b.Key) })
	}
	return out
}
