package confd

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/kelseyhightower/memkv"

	"github.com/rollcall/rollcall/registry"
)

// KV is one etcd pair with its absolute key. A KV made by NewKV also
// carries what registry.IsInstanceKey and registry.ParseInstance say of
// it, worked out once: a caller that keeps its KVs from one render to the
// next (the renderer's store) parses each instance once, not once per
// render — at 10,000 instances that parsing was most of a render. A
// literal KV{Key, Value} is parsed at every render, with the same result.
type KV struct {
	Key, Value string
	inst       *instanceInfo // nil: not parsed yet
}

// instanceInfo is a KV parsed as an instance.
type instanceInfo struct {
	isKey bool           // registry.IsInstanceKey(Key)
	addr  netip.AddrPort // registry.ParseInstance(Key, Value), when isKey
	err   error
}

// NewKV is KV{key, value} parsed as an instance once and for all.
func NewKV(key, value string) KV {
	info := &instanceInfo{isKey: registry.IsInstanceKey(key)}
	if info.isKey {
		info.addr, info.err = registry.ParseInstance(key, value)
	}
	return KV{Key: key, Value: value, inst: info}
}

// IsInstanceKey is registry.IsInstanceKey(kv.Key).
func (kv KV) IsInstanceKey() bool {
	if kv.inst != nil {
		return kv.inst.isKey
	}
	return registry.IsInstanceKey(kv.Key)
}

// instance is registry.ParseInstance(kv.Key, kv.Value).
func (kv KV) instance() (netip.AddrPort, error) {
	if kv.inst != nil && kv.inst.isKey {
		return kv.inst.addr, kv.inst.err
	}
	return registry.ParseInstance(kv.Key, kv.Value)
}

// Rendered is the output of one render.
type Rendered struct {
	Bytes   []byte
	Skipped []Skipped // registered values the typed functions refused (injection, bad form), by key
	// Services are the service dirs the typed `services` returned (nil when
	// the template did not call it): a caller that passes them back as
	// known keeps an app whose last instance went away (RenderKnown).
	Services []string
}

// Skipped is a registered pair a typed function left out, and why.
type Skipped struct {
	Key, Value string // the absolute etcd key and its value
	Err        error
}

// Render executes the template over kvs: all pairs under WatchPrefixes, with
// absolute keys; pairs outside them are ignored. It does no I/O except what
// confd's functions do (getenv, lookup*, fileExists, datetime). Errors carry
// the template file and line.
func (r *Resource) Render(kvs []KV) (Rendered, error) {
	return r.RenderContext(context.Background(), kvs)
}

// RenderContext is Render with a context bounding the lookup* functions.
func (r *Resource) RenderContext(ctx context.Context, kvs []KV) (Rendered, error) {
	return r.RenderKnown(ctx, kvs, nil)
}

// RenderKnown is RenderContext where the typed `services` also returns the
// known service dirs ("/<app>_<env>", as in Rendered.Services) that have no
// keys left, with no instances: an app whose last instance went away keeps
// its upstream (nginx answers 502) and its location, never a 404.
func (r *Resource) RenderKnown(ctx context.Context, kvs []KV, known []string) (Rendered, error) {
	if r.tmpl == nil {
		return Rendered{}, fmt.Errorf("render %s: resource not loaded (use Load)", r.Path)
	}
	st := newState(ctx, r, kvs)
	st.known = known
	t, err := r.tmpl.Clone()
	if err != nil {
		return Rendered{}, fmt.Errorf("render %s: %w", r.Src, err)
	}
	buf := bytes.NewBuffer(make([]byte, 0, r.cache.sizeHint()+r.cache.sizeHint()/8))
	if err := t.Funcs(st.funcs()).Execute(buf, nil); err != nil {
		return Rendered{}, err // "template: <src>:<line>:<col>: executing ..."
	}
	r.cache.store(st.insts, buf.Len())
	return Rendered{Bytes: buf.Bytes(), Skipped: st.skippedList(), Services: st.listed}, nil
}

// pair is one store entry: its key relative to the prefix (as the template
// sees it) and the pair with its absolute etcd key.
type pair struct {
	rel string
	*KV // into the render's kvs, which it only reads
}

// state is what one render's functions share. Not safe for concurrent use;
// every render has its own.
type state struct {
	ctx     context.Context
	r       *Resource
	pairs   []pair
	store   *memkv.Store             // built on first use by a memkv function
	byDir   map[string]memkv.KVPairs // the store by dir, built on first use by gets or getvs of a literal dir (glob.go)
	dirs    map[string][]int         // store dir -> indexes into pairs, built on first use by a typed function
	insts   map[string]cachedDir     // dir -> its instances, built on first use; kept for the next render (renderCache)
	skipped map[string]Skipped
	known   []string // service dirs `services` returns even without keys
	listed  []string // the dirs `services` returned
}

// newState keeps the pairs under the resource's prefixes and maps their keys
// into the store as confd's setVars does.
func newState(ctx context.Context, r *Resource, kvs []KV) *state {
	st := &state{ctx: ctx, r: r}
	if r == nil {
		return st
	}
	st.pairs = make([]pair, 0, len(kvs))
	for i := range kvs {
		if kv := &kvs[i]; r.Touches(kv.Key) {
			st.pairs = append(st.pairs, pair{rel: storeKey(r.Prefix, kv.Key), KV: kv})
		}
	}
	return st
}

// mem returns the memkv store of this render, building it once.
func (st *state) mem() *memkv.Store {
	if st.store == nil {
		s := memkv.New()
		for _, p := range st.pairs {
			s.Set(p.rel, p.Value)
		}
		st.store = &s
	}
	return st.store
}

func (st *state) skip(p pair, err error) {
	if st.skipped == nil {
		st.skipped = make(map[string]Skipped)
	}
	st.skipped[p.Key] = Skipped{Key: p.Key, Value: p.Value, Err: err}
}

func (st *state) skippedList() []Skipped {
	if len(st.skipped) == 0 {
		return nil
	}
	out := make([]Skipped, 0, len(st.skipped))
	for _, s := range st.skipped {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Skipped) int { return cmp.Compare(a.Key, b.Key) })
	return out
}
