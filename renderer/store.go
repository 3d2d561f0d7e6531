package renderer

import (
	"slices"
	"strings"
	"sync"
	"time"

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
	kvs      map[string]confd.KV // parsed once (confd.NewKV) when the key arrives, not at every render
	rev      int64               // revision the store is complete at
	loaded   bool                // a complete list has been applied
	changed  map[string]struct{} // keys changed since the last Take
	all      bool                // everything changed (first list)
	since    time.Time           // when the oldest change waiting for Take arrived
	snap     *snapshot           // the last snapshot built; nil after a Replace
	mods     map[string]struct{} // keys changed since snap was built
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
	return &store{kvs: map[string]confd.KV{}, changed: map[string]struct{}{}, mods: map[string]struct{}{}, dirty: make(chan struct{}, 1)}
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
	next := make(map[string]confd.KV, len(kvs))
	for k, v := range kvs {
		old, ok := s.kvs[k]
		if !ok || old.Value != v {
			s.changed[k] = struct{}{}
			old = confd.NewKV(k, v)
		}
		next[k] = old
	}
	for k := range s.kvs {
		if _, ok := kvs[k]; !ok {
			s.changed[k] = struct{}{}
		}
	}
	s.kvs, s.rev, s.loaded, s.snap = next, rev, true, nil
	clear(s.mods)
	s.arrived()
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
		case !c.del && (!ok || old.Value != c.value):
			s.kvs[c.key] = confd.NewKV(c.key, c.value)
		default:
			continue
		}
		s.changed[c.key] = struct{}{}
		s.mods[c.key] = struct{}{}
		n++
	}
	if n > 0 {
		s.arrived()
		s.poke()
	}
}

// arrived notes when the oldest change waiting for Take came (s.mu held).
func (s *store) arrived() {
	if s.since.IsZero() {
		s.since = time.Now()
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
	c, ok := s.Take()
	return c.keys, c.all, ok
}

// taken is what Take returns.
type taken struct {
	keys  []string
	all   bool
	rev   int64     // the store's revision: every change up to it is in keys (or all)
	since time.Time // when the oldest of them arrived
}

// Take returns the changes since the last Take (or Changes) with the
// revision they reach, read under one lock. ok is false until the first
// complete list.
func (s *store) Take() (c taken, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.loaded {
		return taken{}, false
	}
	c.keys = make([]string, 0, len(s.changed))
	for k := range s.changed {
		c.keys = append(c.keys, k)
	}
	clear(s.changed)
	c.all, s.all = s.all, false
	c.rev, c.since, s.since = s.rev, s.since, time.Time{}
	return c, true
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
	if s.snap == nil || len(s.mods) > 0 {
		s.snap = &snapshot{kvs: s.sorted(), prefixes: s.prefixes}
		clear(s.mods)
	}
	return &snapshot{rev: s.rev, kvs: s.snap.kvs, prefixes: s.snap.prefixes}
}

// sorted returns the pairs sorted by key (s.mu held). After a few changes
// it patches a copy of the last snapshot's pairs (O(keys) copy per change,
// no sort): at 10,000 keys a full sort is most of what a change costs.
func (s *store) sorted() []confd.KV {
	byKey := func(kv confd.KV, k string) int { return strings.Compare(kv.Key, k) }
	if s.snap != nil && len(s.mods) <= 64 {
		kvs := make([]confd.KV, len(s.snap.kvs), len(s.snap.kvs)+len(s.mods))
		copy(kvs, s.snap.kvs) // snapshots are immutable: patch a copy
		for k := range s.mods {
			i, found := slices.BinarySearchFunc(kvs, k, byKey)
			kv, ok := s.kvs[k]
			switch {
			case ok && found:
				kvs[i] = kv
			case ok:
				kvs = slices.Insert(kvs, i, kv)
			case found:
				kvs = slices.Delete(kvs, i, i+1)
			}
		}
		return kvs
	}
	kvs := make([]confd.KV, 0, len(s.kvs))
	for _, kv := range s.kvs {
		kvs = append(kvs, kv)
	}
	slices.SortFunc(kvs, func(a, b confd.KV) int { return strings.Compare(a.Key, b.Key) })
	return kvs
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
// in key order. prefixes must be sorted. The result may share the
// snapshot's array: read it, never modify it.
func (sn *snapshot) For(prefixes []string) []confd.KV {
	if len(prefixes) == 1 && (prefixes[0] == "/" || prefixes[0] == "") {
		return sn.kvs // everything: no copy of 10,000 pairs per render
	}
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
